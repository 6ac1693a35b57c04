"""Thread count of minigrad's parallel CPU kernels (and of BLAS, when threadpoolctl is installed)."""

from __future__ import annotations

from ._ext import _parallel

__all__ = ["get_num_threads", "set_num_threads", "have_openmp"]

have_openmp = _parallel.have_openmp


def get_num_threads() -> int:
    """Number of threads minigrad's OpenMP kernels use (1 without OpenMP)."""
    return _parallel.get_num_threads()


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in minigrad's kernels.

    NumPy's BLAS (used for matrix products) is limited too when the optional
    package ``threadpoolctl`` is installed; otherwise set ``OMP_NUM_THREADS``
    / ``OPENBLAS_NUM_THREADS`` before starting Python.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of threads must be a positive int, got {n!r}")
    _parallel.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=n, user_api="blas")
