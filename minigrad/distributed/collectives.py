"""Collectives on Tensors: ``all_reduce``, ``broadcast``, ``all_gather``, ``barrier`` (PyTorch's signatures).

Every rank calls the same collective in the same order with a tensor of
the same dtype and shape (on any device: CPU tensors travel over MPI,
CUDA tensors over NCCL with the "nccl" backend, or through a host copy
with "mpi"). Results are written into the given tensors in place. The
arguments are checked on every rank before any data moves, and the
ranks' dtypes and shapes are compared (one small exchange of
descriptions): a mismatch raises the same ``DistributedError`` on every
rank, naming what each rank passed, instead of a hang or silently
wrong numbers.
"""

from __future__ import annotations

from .._dtypes import is_floating
from .._ext._engine import TensorBase
from .process_group import DistributedError, ReduceOp, _group

__all__ = ["all_reduce", "broadcast", "all_gather", "barrier"]

#: The dtypes every backend reduces (MPI and NCCL both).
DTYPES = ("float32", "float64", "int32", "int64")


def _check_tensor(fname, tensor, what="tensor"):
    if not isinstance(tensor, TensorBase):
        raise TypeError(f"{fname}: {what} must be a minigrad Tensor, got {type(tensor).__name__}")
    if tensor.dtype.name not in DTYPES:
        raise TypeError(f"{fname}: {what} has dtype {tensor.dtype}; the collectives support {', '.join(DTYPES)}")


def _check_op(fname, op, tensor):
    if not isinstance(op, ReduceOp):
        raise TypeError(f"{fname}: op must be a minigrad.distributed.ReduceOp (SUM, AVG, PRODUCT, MAX, MIN), "
                        f"got {op!r}")
    if op is ReduceOp.AVG and not is_floating(tensor.dtype):
        raise TypeError(f"{fname}: ReduceOp.AVG needs a floating tensor, got dtype {tensor.dtype}")


def _describe(tensor) -> tuple:
    return tensor.dtype.name, tuple(tensor.shape), tensor.device.type


def check_same_on_all_ranks(fname, group, description) -> None:
    """Raise the same ``DistributedError`` on every rank unless all ranks passed ``description``.

    ``description`` is a small picklable value (e.g. dtype, shape, device
    type); one allgather of descriptions lets every rank see the
    disagreement, so all of them raise and none waits in a collective the
    others never join.
    """
    seen = group.allgather_object(description)
    if any(d != seen[0] for d in seen):
        listing = "; ".join(f"rank {r}: {_text(d)}" for r, d in enumerate(seen))
        raise DistributedError(f"{fname}: the ranks passed different tensors ({listing}); every rank must pass "
                               f"the same dtype and shape")


def _text(description) -> str:
    if isinstance(description, tuple) and len(description) == 3:
        dtype, shape, device = description
        return f"{dtype} {shape} on {device}"
    return repr(description)


def _contiguous(tensor):
    """``(array, work -> work)``: a C-contiguous array to communicate, and what copies it back into a view."""
    array = tensor.array
    if array.flags.c_contiguous:
        return array, lambda work: work
    buf = tensor.backend.xp.ascontiguousarray(array)

    def write_back():
        array[...] = buf

    return buf, lambda work: work.then(write_back)


def _finish(tensors, work, async_op):
    """Count the in-place write in each tensor's version, and return what PyTorch returns."""
    for t in tensors:
        t._bump_version()
    if async_op:
        return work
    work.wait()
    return None


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce ``tensor`` over all ranks, in place: afterwards every rank holds the result.

    ``op``: ``ReduceOp.SUM`` (default), ``AVG`` (floating tensors),
    ``PRODUCT``, ``MAX``, ``MIN``. Tensors of float32, float64, int32 or
    int64, on any device. Returns None, or a ``Work`` with ``async_op=True``
    (call ``.wait()`` before reading the tensor).

    Example::

        t = minigrad.tensor([float(dist.get_rank())])
        dist.all_reduce(t)                        # every rank: 0 + 1 + ... + (size-1)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    """
    fname = "all_reduce"
    g = _group(group)
    _check_tensor(fname, tensor)
    _check_op(fname, op, tensor)
    check_same_on_all_ranks(fname, g, _describe(tensor))
    array, copied_back = _contiguous(tensor)
    return _finish([tensor], copied_back(g.allreduce(array, op, tensor.backend, async_op)), async_op)


def broadcast(tensor, src=0, group=None, async_op=False):
    """Overwrite ``tensor`` on every rank with rank ``src``'s values (in place).

    Example::

        w = minigrad.randn(3, 3)
        dist.broadcast(w, src=0)                  # every rank now has rank 0's w
    """
    fname = "broadcast"
    g = _group(group)
    _check_tensor(fname, tensor)
    if not isinstance(src, int) or isinstance(src, bool) or not 0 <= src < g.size:
        raise ValueError(f"{fname}: src must be a rank in [0, {g.size}), got {src!r}")
    check_same_on_all_ranks(fname, g, _describe(tensor) + (src,))
    array, copied_back = _contiguous(tensor)
    return _finish([tensor], copied_back(g.broadcast(array, src, tensor.backend, async_op)), async_op)


def all_gather(tensor_list, tensor, group=None, async_op=False):
    """Gather every rank's ``tensor`` into ``tensor_list`` (``tensor_list[r]`` = rank r's), on every rank.

    ``tensor_list``: a list of ``world_size`` tensors of ``tensor``'s
    dtype, shape and device, overwritten in place.

    Example::

        parts = [minigrad.zeros(2) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, minigrad.full((2,), float(dist.get_rank())))
    """
    fname = "all_gather"
    g = _group(group)
    _check_tensor(fname, tensor)
    if not isinstance(tensor_list, (list, tuple)) or len(tensor_list) != g.size:
        got = f"{len(tensor_list)} entries" if isinstance(tensor_list, (list, tuple)) else type(tensor_list).__name__
        raise ValueError(f"{fname}: tensor_list must be a list of world_size={g.size} tensors, got {got}")
    for i, t in enumerate(tensor_list):
        _check_tensor(fname, t, f"tensor_list[{i}]")
        if _describe(t) != _describe(tensor) or t.backend is not tensor.backend:
            raise ValueError(f"{fname}: tensor_list[{i}] is {_text(_describe(t))} on {t.device}, but the input is "
                             f"{_text(_describe(tensor))} on {tensor.device}; they must match")
    check_same_on_all_ranks(fname, g, _describe(tensor))
    src, _ = _contiguous(tensor)
    out = tensor.backend.xp.empty((g.size,) + tuple(tensor.shape), dtype=tensor.dtype)

    def scatter_out():
        for r, t in enumerate(tensor_list):
            t.array[...] = out[r]

    work = g.allgather(src, out, tensor.backend, async_op).then(scatter_out)
    return _finish(tensor_list, work, async_op)


def barrier(group=None) -> None:
    """Block until every rank of ``group`` has reached the barrier.

    Example::

        if dist.get_rank() == 0:
            minigrad.save(model.state_dict(), "model.mg")
        dist.barrier()                            # the file exists for every rank after this
    """
    _group(group).barrier()
