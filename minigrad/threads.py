"""minigrad's thread budget: one number for its OpenMP kernels and the BLAS behind its matrix products.

``set_num_threads(n)`` is process-wide, like ``torch.set_num_threads``: it
applies to every thread of the process, including threads started later,
and it limits the BLAS library NumPy uses (through ``threadpoolctl``, as
scikit-learn does), so that minigrad's work never runs more than ``n``
threads. The BLAS limit is the BLAS library's own process-wide setting: the
user's own NumPy matrix products in the same process use ``n`` threads from
then on too (``threadpoolctl.threadpool_limits`` changes it back, for a
block or for good).

The default is OpenMP's: ``OMP_NUM_THREADS`` if set, else one thread per
logical CPU the process may run on.

After ``os.fork`` (``multiprocessing``'s default start method on Linux), a
child whose parent had already run minigrad's kernels on several threads
runs them on one: GNU OpenMP cannot restart its worker pool in a forked
child (it would wait forever for the parent's workers). Use the "spawn" or
"forkserver" start method for workers that need several threads each.

Example::

    import minigrad as mg

    mg.set_num_threads(1)          # one thread for minigrad's kernels and for BLAS
    assert mg.get_num_threads() == 1
"""

from __future__ import annotations

import numbers
import os
import warnings

from ._ext import _parallel

__all__ = ["get_num_threads", "set_num_threads", "have_openmp", "max_threads"]

have_openmp = _parallel.have_openmp
max_threads = _parallel.max_threads


def get_num_threads() -> int:
    """Number of threads minigrad's kernels use (1 without OpenMP).

    Example::

        import minigrad as mg
        n = mg.get_num_threads()
    """
    return _parallel.get_num_threads() if have_openmp() else 1


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for minigrad's kernels and for BLAS, in every thread of the process.

    ``n`` must be an int in ``[1, max_threads()]`` (256). In a child forked
    after the parent had run threaded kernels the kernels stay on one thread
    (see the module documentation) and a request for more warns.

    Example::

        import minigrad as mg
        mg.set_num_threads(2)
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"set_num_threads: the number of threads must be an int, got {type(n).__name__} {n!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: the number of threads must be at least 1, got {n}")
    cap = max_threads()
    if n > cap:
        raise ValueError(f"set_num_threads: at most {cap} threads are supported, got {n} "
                         f"(this machine has {os.cpu_count()} logical CPUs)")
    if n > 1 and _parallel.forked_child():
        warnings.warn("set_num_threads: this process was forked after minigrad's kernels had started threads; "
                      "GNU OpenMP cannot restart them in a forked child, so the kernels stay on one thread "
                      "(start workers with the 'spawn' or 'forkserver' method to use several)",
                      RuntimeWarning, stacklevel=2)
    _parallel.set_num_threads(n)
    _limit_blas(n)


def _limit_blas(n: int) -> None:
    """Limit every BLAS library loaded in the process (NumPy's OpenBLAS, an MKL) to ``n`` threads."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n, user_api="blas")


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_parallel.after_fork_in_child)
