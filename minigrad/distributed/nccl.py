"""``NCCLProcessGroup``: collectives on CUDA arrays over NCCL (``cupy.cuda.nccl``).

Rank 0 creates NCCL's unique id; it reaches the other ranks over MPI (the
launcher's communicator), and every rank then builds its
``NcclCommunicator`` on its own GPU. Arrays that expose
``__cuda_array_interface__`` go to NCCL, queued on the current CUDA
stream, so later work on that stream sees the result without a host
synchronization; host arrays still go over MPI (the group keeps the MPI
group it was built from). Each rank uses ``cuda:<local rank mod GPU
count>`` unless told otherwise.
"""

from __future__ import annotations

from .process_group import _IMPLEMENTATIONS, DistributedError, ProcessGroup, ReduceOp, Work, local_rank_and_size

__all__ = ["NCCLProcessGroup"]


class NCCLProcessGroup(ProcessGroup):
    """A process group whose CUDA collectives run on NCCL.

    ``NCCLProcessGroup(host_group, device=None, *, cupy=None)``:
    ``host_group`` (an ``MPIProcessGroup``) shares the unique id and
    carries host arrays; ``device`` is this rank's GPU (``"cuda:1"``, 1,
    or None for the local rank's); ``cupy`` is the CuPy module (tests pass
    a stand-in).

    Example (what ``init_process_group("nccl")`` builds)::

        group = NCCLProcessGroup(MPIProcessGroup(MPI.COMM_WORLD))
    """

    backend = "nccl"

    def __init__(self, host_group: ProcessGroup, device=None, *, cupy=None):
        if cupy is None:
            try:
                import cupy
                from cupy.cuda import nccl  # noqa: F401
            except Exception as exc:
                raise DistributedError(
                    f"the 'nccl' backend needs CuPy built with NCCL on a CUDA machine ({type(exc).__name__}: {exc}); "
                    f"install minigrad-bn[cuda] or use backend='mpi'"
                ) from exc
        self._cupy = cupy
        self._nccl = cupy.cuda.nccl
        self.host = host_group
        self.rank, self.size = host_group.rank, host_group.size
        self.device_index = self._device_index(device)
        nccl = self._nccl
        self._types = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64, "int32": nccl.NCCL_INT32,
                       "int64": nccl.NCCL_INT64}
        self._ops = {ReduceOp.SUM: nccl.NCCL_SUM, ReduceOp.AVG: nccl.NCCL_SUM, ReduceOp.PRODUCT: nccl.NCCL_PROD,
                     ReduceOp.MAX: nccl.NCCL_MAX, ReduceOp.MIN: nccl.NCCL_MIN}
        unique_id = nccl.get_unique_id() if self.rank == 0 else None
        unique_id = host_group.allgather_object(unique_id)[0]
        with cupy.cuda.Device(self.device_index):
            self.comm = nccl.NcclCommunicator(self.size, unique_id, self.rank)

    def _device_index(self, device) -> int:
        count = self._cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            raise DistributedError("the 'nccl' backend needs a CUDA device, and this machine has none")
        if device is None:
            return local_rank_and_size()[0] % count
        index = device if isinstance(device, int) else _parse_cuda_index(device)
        if not 0 <= index < count:
            raise DistributedError(f"init_process_group: device {device!r} does not exist (this machine has "
                                   f"{count} CUDA device(s))")
        return index

    # --------------------------------------------------------- dispatch
    def _nccl_args(self, array, backend, what):
        """(pointer, count, NCCL type, stream) of a CUDA array, or None for a host array."""
        interface = getattr(array, "__cuda_array_interface__", None)
        if interface is None:
            return None
        index = backend.device.index or 0
        if index != self.device_index:
            raise DistributedError(f"{what}: the tensor is on {backend.device} but this rank's NCCL communicator "
                                   f"is on cuda:{self.device_index}; move it with .to('cuda:{self.device_index}')")
        if not array.flags.c_contiguous:
            raise DistributedError(f"{what}: NCCL needs a contiguous array")  # the Tensor layer makes it so
        try:
            dtype = self._types[array.dtype.name]
        except KeyError:
            raise DistributedError(f"{what}: NCCL does not reduce {array.dtype} arrays") from None
        stream = self._cupy.cuda.get_current_stream().ptr
        return interface["data"][0], array.size, dtype, stream

    def _run(self, what, array, backend, over_mpi, over_nccl, finish=None) -> Work:
        """``over_nccl(ptr, count, nccl_type, stream)`` for a CUDA array, else ``over_mpi()``."""
        args = self._nccl_args(array, backend, what)
        if args is None:
            return over_mpi()
        over_nccl(*args)
        return Work.completed(finish)

    def allreduce(self, array, op, backend, async_op=True) -> Work:
        """Reduce a CUDA ``array`` in place over NCCL (host arrays over MPI)."""
        size = self.size

        def average():
            array[...] /= size  # queued on the same stream, after the sum

        return self._run("all_reduce", array, backend, lambda: self.host.allreduce(array, op, backend, async_op),
                         lambda ptr, count, dtype, stream: self.comm.allReduce(ptr, ptr, count, dtype, self._ops[op],
                                                                               stream),
                         average if op is ReduceOp.AVG else None)

    def broadcast(self, array, src, backend, async_op=True) -> Work:
        """Overwrite a CUDA ``array`` with rank ``src``'s (host arrays over MPI)."""
        return self._run("broadcast", array, backend, lambda: self.host.broadcast(array, src, backend, async_op),
                         lambda ptr, count, dtype, stream: self.comm.bcast(ptr, count, dtype, src, stream))

    def allgather(self, array, out, backend, async_op=True) -> Work:
        """``out[r]`` = rank r's CUDA ``array`` (host arrays over MPI)."""
        def gather(ptr, count, dtype, stream):
            self.comm.allGather(ptr, self._nccl_args(out, backend, "all_gather")[0], count, dtype, stream)

        return self._run("all_gather", array, backend, lambda: self.host.allgather(array, out, backend, async_op),
                         gather)

    def barrier(self) -> None:
        """Wait for this rank's queued GPU work, then for every rank (over MPI)."""
        self._cupy.cuda.get_current_stream().synchronize()
        self.host.barrier()

    def allgather_object(self, obj) -> list:
        """Every rank's ``obj``, over MPI."""
        return self.host.allgather_object(obj)

    def abort(self, code: int = 1) -> None:
        """End every rank (``MPI_Abort``)."""
        self.host.abort(code)

    def destroy(self) -> None:
        """Destroy the NCCL communicator and the MPI group."""
        if self.comm is not None:
            self.comm.destroy()
            self.comm = None
        self.host.destroy()


def _parse_cuda_index(device) -> int:
    from ..device import Device

    dev = Device(device)
    if dev.type != "cuda":
        raise DistributedError(f"init_process_group: the 'nccl' backend needs a CUDA device, got {device!r}")
    return dev.index or 0


_IMPLEMENTATIONS["nccl"] = NCCLProcessGroup
