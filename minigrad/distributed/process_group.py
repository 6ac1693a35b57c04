"""The process group: who takes part in training, and the engine that moves the data.

A process group is ``size`` processes (ranks ``0 .. size-1``) started by an
MPI launcher (``mpiexec -n 4 python train.py``); every collective is
called by all of them, in the same order. Two engines, both existing
libraries (never a home-made protocol):

* ``"mpi"`` (the default): MPI through mpi4py; host (NumPy) arrays go to
  MPI directly, CUDA arrays through a host copy;
* ``"nccl"``: NCCL through CuPy (``cupy.cuda.nccl``) for CUDA arrays, its
  unique id shared over MPI; host arrays still go over MPI.

A group works on raw backend arrays (the Tensor-level functions live in
``minigrad.distributed.collectives``); every operation returns a ``Work``
whose ``wait()`` completes it, so a caller can overlap communication with
computation (``DistributedDataParallel`` does).
"""

from __future__ import annotations

import enum
import os
import sys

__all__ = ["ReduceOp", "Work", "ProcessGroup", "DistributedError", "init_process_group", "destroy_process_group",
           "is_initialized", "is_available", "is_mpi_available", "is_nccl_available", "get_rank",
           "get_world_size", "get_backend", "default_group"]

#: Backends ``init_process_group`` accepts.
BACKENDS = ("mpi", "nccl")


class DistributedError(RuntimeError):
    """A collective cannot run: no process group, or ranks that disagree (dtype, shape, device)."""


class ReduceOp(enum.Enum):
    """How ``all_reduce`` combines the ranks' values (PyTorch's ``dist.ReduceOp``).

    ``SUM``, ``AVG`` (the sum divided by the world size; floating tensors
    only), ``PRODUCT``, ``MAX``, ``MIN``.

    Example::

        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    """

    SUM = "sum"
    AVG = "avg"
    PRODUCT = "product"
    MAX = "max"
    MIN = "min"


class Work:
    """A collective in flight (PyTorch's ``Work``): ``wait()`` finishes it.

    ``wait()`` blocks until the result is in the tensor (for NCCL: until
    it is queued on the current CUDA stream, so later work on that stream
    sees it) and returns True; ``is_completed()`` asks without blocking.
    ``finish`` runs once after completion (e.g. copying a host staging
    buffer back to the device, or dividing a sum for ``AVG``).
    """

    __slots__ = ("_request", "_finish", "_done")

    def __init__(self, request=None, finish=None):
        self._request = request
        self._finish = finish
        self._done = False

    def _complete(self) -> None:
        self._done = True
        self._request = None
        finish, self._finish = self._finish, None
        if finish is not None:
            finish()

    def wait(self) -> bool:
        """Block until the collective has completed; returns True."""
        if not self._done:
            if self._request is not None:
                self._request.Wait()
            self._complete()
        return True

    def is_completed(self) -> bool:
        """Whether the collective has completed (drives MPI progress; does not block)."""
        if not self._done and (self._request is None or self._request.Test()):
            self._complete()
        return self._done

    def then(self, fn) -> "Work":
        """Run ``fn()`` once the collective has completed (at once if it has); returns this Work."""
        if self._done:
            fn()
        else:
            first = self._finish
            self._finish = fn if first is None else (lambda: (first(), fn()))
        return self

    @classmethod
    def completed(cls, finish=None) -> "Work":
        """A Work for an operation that is already complete (or queued in order on a CUDA stream); runs ``finish``."""
        work = cls(None, finish)
        work.wait()
        return work


class ProcessGroup:
    """The interface of a process group (``MPIProcessGroup``, ``NCCLProcessGroup``).

    ``rank``, ``size`` and ``backend`` (its name) are attributes. The
    collectives take contiguous backend arrays and the tensor's
    ``Backend`` (for host copies), work in place and return a ``Work``:

    * ``allreduce(array, op, backend)``: every rank ends with the
      reduction over all ranks;
    * ``broadcast(array, src, backend)``: every rank ends with rank
      ``src``'s values;
    * ``allgather(array, out, backend)``: ``out`` (shape ``(size,) +
      array.shape``) holds every rank's ``array``, in rank order;

    plus ``barrier()``, ``allgather_object(obj)`` (small picklable Python
    objects, on the host) and ``abort(code)`` (ends every rank).
    """

    backend = "base"
    rank = 0
    size = 1

    def allreduce(self, array, op, backend) -> Work:
        """Reduce ``array`` over all ranks in place with ``op`` (a ``ReduceOp``)."""
        raise NotImplementedError

    def broadcast(self, array, src, backend) -> Work:
        """Overwrite ``array`` with rank ``src``'s."""
        raise NotImplementedError

    def allgather(self, array, out, backend) -> Work:
        """Gather every rank's ``array`` into ``out[rank]``."""
        raise NotImplementedError

    def barrier(self) -> None:
        """Block until every rank has called ``barrier``."""
        raise NotImplementedError

    def allgather_object(self, obj) -> list:
        """Every rank's ``obj`` (a small picklable object), as a list in rank order."""
        raise NotImplementedError

    def abort(self, code: int = 1) -> None:
        """End every rank of the job with exit status ``code``."""
        raise NotImplementedError

    def destroy(self) -> None:
        """Release the group's communicators."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} backend={self.backend!r} rank={self.rank} size={self.size}>"


# ------------------------------------------------------------------ state
_DEFAULT: ProcessGroup | None = None
_PREVIOUS_EXCEPTHOOK = None


#: The process-group classes by backend name. Their modules (mpi.py, nccl.py) build on this one and add
#: themselves here when the package loads them, so this module never imports them.
_IMPLEMENTATIONS: dict[str, type] = {}


def is_available() -> bool:
    """True: ``minigrad.distributed`` is part of every install (the engines are optional)."""
    return True


def is_mpi_available() -> bool:
    """Whether mpi4py (the ``"mpi"`` backend, and the launcher of every backend) can be imported."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def is_nccl_available() -> bool:
    """Whether CuPy with NCCL support (``cupy.cuda.nccl``) can be imported."""
    try:
        from cupy.cuda import nccl
    except Exception:  # ImportError, or CuPy without NCCL/CUDA raising something else
        return False
    return nccl.available if hasattr(nccl, "available") else True


def is_initialized() -> bool:
    """Whether ``init_process_group`` has been called (and not destroyed)."""
    return _DEFAULT is not None


def default_group() -> ProcessGroup:
    """The group ``init_process_group`` created; raises ``DistributedError`` before it."""
    if _DEFAULT is None:
        raise DistributedError(
            "the default process group is not initialized: call minigrad.distributed.init_process_group() first "
            "(and start the program with an MPI launcher, e.g. `mpiexec -n 2 python train.py`)"
        )
    return _DEFAULT


def _group(group) -> ProcessGroup:
    """``group`` itself, or the default group for None."""
    if group is None:
        return default_group()
    if not isinstance(group, ProcessGroup):
        raise TypeError(f"group must be a ProcessGroup or None, got {type(group).__name__}")
    return group


def get_rank(group=None) -> int:
    """This process's rank in ``group`` (default: the default group)."""
    return _group(group).rank


def get_world_size(group=None) -> int:
    """The number of processes in ``group`` (default: the default group)."""
    return _group(group).size


def get_backend(group=None) -> str:
    """The backend name of ``group``: ``"mpi"`` or ``"nccl"``."""
    return _group(group).backend


def _tune_mpich_waiting() -> dict:
    """Before MPI starts, with more ranks on this machine than cores: let MPICH's waiting ranks sleep.

    A rank waiting in a collective busy-polls, yielding its core now and
    then; with more ranks than cores the rank being waited for is then
    scheduled late. ``MPIR_CVAR_ENABLE_HEAVY_YIELD=1`` makes the waiting
    rank sleep instead. Measured on a shared 2-core machine (load 12-15), a
    16-double allreduce over 4 ranks took 7-11 ms by default and 0.85-1.9 ms
    with it (docs/distributed.md); with 2 ranks nothing changed, so nothing
    is set there. A value already in the environment wins, only MPICH reads
    the variable, and ``MINIGRAD_MPI_TUNING=0`` leaves it alone. Returns
    what was set.
    """
    if "mpi4py.MPI" in sys.modules or os.environ.get("MINIGRAD_MPI_TUNING", "1").strip().lower() in {
            "0", "false", "no", "off"}:
        return {}
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    settings = {"MPIR_CVAR_ENABLE_HEAVY_YIELD": "1"} if local_rank_and_size()[1] > cores else {}
    applied = {k: v for k, v in settings.items() if k not in os.environ}
    os.environ.update(applied)
    return applied


def _mpi():
    """mpi4py's ``MPI`` module, or an ImportError that says how to install it."""
    _tune_mpich_waiting()
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            "minigrad.distributed needs mpi4py and an MPI library: pip install 'minigrad-bn[distributed]' "
            f"(installs the mpi4py and mpich wheels) ({exc})"
        ) from exc
    return MPI


def init_process_group(backend: str | None = None, *, world_size: int = -1, rank: int = -1, device=None,
                       abort_on_exception: bool = True) -> ProcessGroup:
    """Join the job's default process group; rank and world size come from the MPI launcher.

    ``backend``: ``"mpi"`` (the default) or ``"nccl"`` (CUDA tensors over
    NCCL; this process uses ``device``, default ``cuda:<local rank mod
    GPU count>``). ``world_size``/``rank``, if given, must equal what the
    launcher says (PyTorch code passes them). With more than one rank, an
    uncaught exception on any rank prints its traceback and aborts the
    whole job (``MPI_Abort``), so no rank waits forever in a collective;
    ``abort_on_exception=False`` leaves ``sys.excepthook`` alone
    (``python -m mpi4py train.py`` gives the same protection).

    Launch::

        mpiexec -n 4 python train.py

    Example::

        import minigrad.distributed as dist
        dist.init_process_group()
        print(dist.get_rank(), "of", dist.get_world_size())
    """
    global _DEFAULT
    if _DEFAULT is not None:
        raise DistributedError("init_process_group: the default process group is already initialized "
                               "(call destroy_process_group() first)")
    name = "mpi" if backend is None else backend
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"init_process_group: unknown backend {backend!r}; expected one of {BACKENDS} (or None "
                         f"for 'mpi')")
    name = name.lower()
    group = _IMPLEMENTATIONS["mpi"](_mpi().COMM_WORLD)
    for what, given, actual in (("world_size", world_size, group.size), ("rank", rank, group.rank)):
        if given not in (-1, None) and given != actual:
            group.destroy()
            raise ValueError(f"init_process_group: {what}={given} but the MPI launcher started this process "
                             f"with {what} {actual}")
    if name == "nccl":
        try:
            group = _IMPLEMENTATIONS["nccl"](group, device=device)
        except BaseException:
            group.destroy()
            raise
    _DEFAULT = group
    if abort_on_exception and group.size > 1:
        _install_abort_hook(group)
    return group


def destroy_process_group(group=None) -> None:
    """Leave ``group`` (default: the default group, which is then uninitialized).

    MPI itself stays initialized (mpi4py finalizes it at exit), so
    ``init_process_group`` may be called again.
    """
    global _DEFAULT
    target = _group(group)
    target.destroy()
    if target is _DEFAULT:
        _DEFAULT = None
        _remove_abort_hook()


def _install_abort_hook(group) -> None:
    """Abort the job on an uncaught exception (after printing it), instead of leaving the other ranks waiting."""
    global _PREVIOUS_EXCEPTHOOK
    previous = sys.excepthook

    def abort_job(exc_type, exc, tb):
        previous(exc_type, exc, tb)
        try:
            sys.stderr.write(f"minigrad.distributed: rank {group.rank} raised {exc_type.__name__}; "
                             f"aborting all {group.size} ranks\n")
            sys.stderr.flush()
        finally:
            group.abort(1)

    _PREVIOUS_EXCEPTHOOK = previous
    sys.excepthook = abort_job


def _remove_abort_hook() -> None:
    global _PREVIOUS_EXCEPTHOOK
    if _PREVIOUS_EXCEPTHOOK is not None:
        sys.excepthook = _PREVIOUS_EXCEPTHOOK
        _PREVIOUS_EXCEPTHOOK = None


def local_rank_and_size() -> tuple[int, int]:
    """``(local rank, local size)``: this process among the job's processes on the same machine.

    Read from the launcher's environment (MPICH/Hydra ``MPI_LOCALRANKID``/
    ``MPI_LOCALNRANKS``, Open MPI ``OMPI_COMM_WORLD_LOCAL_*``); ``(0, 1)``
    when run without a launcher.
    """
    for rank_var, size_var in (("MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
                               ("OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE")):
        if rank_var in os.environ and size_var in os.environ:
            return int(os.environ[rank_var]), int(os.environ[size_var])
    return 0, 1
