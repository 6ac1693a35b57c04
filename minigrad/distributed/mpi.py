"""``MPIProcessGroup``: collectives over MPI (mpi4py), the default backend.

Host (NumPy) arrays are handed to MPI in place; a CUDA array goes through
a host copy that is written back when the collective completes. Arrays
are C-contiguous (the Tensor-level functions make them so). Every
operation is started non-blocking (``Iallreduce``, ``Ibcast``,
``Iallgather``) when the caller wants a ``Work`` to overlap, blocking
otherwise. The group owns a duplicate of the communicator it was given,
so its traffic never mixes with the program's own MPI messages.
"""

from __future__ import annotations

import numpy as np

from .process_group import _IMPLEMENTATIONS, ProcessGroup, ReduceOp, Work

__all__ = ["MPIProcessGroup"]


class MPIProcessGroup(ProcessGroup):
    """A process group over an mpi4py communicator (``MPI.COMM_WORLD`` for the default group).

    Example (what ``init_process_group("mpi")`` builds)::

        from mpi4py import MPI
        group = MPIProcessGroup(MPI.COMM_WORLD)
    """

    backend = "mpi"

    def __init__(self, comm):
        from mpi4py import MPI

        self._MPI = MPI
        self.comm = comm.Dup()
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self._ops = {ReduceOp.SUM: MPI.SUM, ReduceOp.AVG: MPI.SUM, ReduceOp.PRODUCT: MPI.PROD,
                     ReduceOp.MAX: MPI.MAX, ReduceOp.MIN: MPI.MIN}

    def allreduce(self, array, op, backend, async_op=True) -> Work:
        """Reduce ``array`` in place over all ranks (``AVG``: the sum divided by the size)."""
        host, write_back = _host_buffer(array, backend)
        size = self.size

        def finish():
            if op is ReduceOp.AVG:
                host[...] /= size
            write_back()

        if async_op:
            return Work(self.comm.Iallreduce(self._MPI.IN_PLACE, host, op=self._ops[op]), finish)
        self.comm.Allreduce(self._MPI.IN_PLACE, host, op=self._ops[op])
        return Work.completed(finish)

    def broadcast(self, array, src, backend, async_op=True) -> Work:
        """Overwrite ``array`` with rank ``src``'s values."""
        host, write_back = _host_buffer(array, backend)
        if async_op:
            return Work(self.comm.Ibcast(host, root=src), write_back)
        self.comm.Bcast(host, root=src)
        return Work.completed(write_back)

    def allgather(self, array, out, backend, async_op=True) -> Work:
        """``out[r]`` = rank r's ``array`` for every rank r."""
        send, _ = _host_buffer(array, backend)
        recv, write_back = _host_buffer(out, backend)
        if async_op:
            return Work(self.comm.Iallgather(send, recv), write_back)
        self.comm.Allgather(send, recv)
        return Work.completed(write_back)

    def barrier(self) -> None:
        """Block until every rank has entered the barrier."""
        self.comm.Barrier()

    def allgather_object(self, obj) -> list:
        """Every rank's ``obj`` (pickled), in rank order."""
        return self.comm.allgather(obj)

    def abort(self, code: int = 1) -> None:
        """``MPI_Abort`` on the world communicator: the launcher ends every rank."""
        self._MPI.COMM_WORLD.Abort(code)

    def destroy(self) -> None:
        """Free the group's communicator (MPI itself stays initialized)."""
        if self.comm != self._MPI.COMM_NULL and not self._MPI.Is_finalized():
            self.comm.Free()


def _nothing():
    pass


def _host_buffer(array, backend):
    """``(buffer, write_back)``: a C-contiguous host array MPI can use for ``array`` (itself contiguous).

    A host array is used in place (``write_back`` does nothing); a device
    array is copied to the host, and ``write_back`` copies the buffer back
    once the collective has completed.
    """
    host = backend.to_numpy(array)
    if host is array:
        return array, _nothing
    buf = np.ascontiguousarray(host)

    def write_back():
        array[...] = backend.from_numpy(buf)

    return buf, write_back


_IMPLEMENTATIONS["mpi"] = MPIProcessGroup
