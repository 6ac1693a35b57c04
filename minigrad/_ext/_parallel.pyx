# cython: language_level=3
"""Thread control for minigrad's OpenMP kernels."""

from minigrad._ext._omp_compat cimport MINIGRAD_HAVE_OPENMP, omp_get_max_threads, omp_set_num_threads


def have_openmp():
    """True if the extension modules were built with OpenMP."""
    return bool(MINIGRAD_HAVE_OPENMP)


def get_num_threads():
    """Number of threads the OpenMP kernels use."""
    return omp_get_max_threads()


def set_num_threads(int n):
    """Set the number of threads the OpenMP kernels use."""
    if n < 1:
        raise ValueError(f"the number of threads must be >= 1, got {n}")
    omp_set_num_threads(n)
