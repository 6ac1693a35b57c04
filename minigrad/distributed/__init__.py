"""Training beyond one process: process groups and collectives on MPI and NCCL (PyTorch's ``torch.distributed``).

Start every rank with an MPI launcher; each process joins the group and
finds its rank and the world size there::

    mpiexec -n 4 python train.py              # or: mpiexec -n 4 python -m mpi4py train.py

    import minigrad.distributed as dist
    dist.init_process_group()                 # "mpi" (default); "nccl" for CUDA tensors
    rank, world = dist.get_rank(), dist.get_world_size()
    t = minigrad.tensor([float(rank)])
    dist.all_reduce(t, op=dist.ReduceOp.SUM)  # in place, on every rank
    dist.destroy_process_group()

* ``init_process_group(backend=None)``, ``destroy_process_group()``,
  ``is_initialized()``, ``get_rank()``, ``get_world_size()``,
  ``get_backend()``;
* collectives on Tensors of either device: ``all_reduce`` (``ReduceOp``
  SUM, AVG, PRODUCT, MAX, MIN), ``broadcast``, ``all_gather``, ``barrier``;
  ``async_op=True`` returns a ``Work`` to ``wait()`` on;
* ``DistributedSampler``: each rank's share of a dataset (also in
  ``minigrad.data`` and ``minigrad.utils.data``);
* built on them: ``minigrad.nn.parallel.DistributedDataParallel`` and
  ``minigrad.nn.SyncBatchNorm``.

The engines are optional: ``pip install 'minigrad-bn[distributed]'`` brings
mpi4py and the MPICH wheel (``mpiexec`` included); "nccl" also needs
CuPy. ``import minigrad`` never imports them. With more than one rank an
uncaught exception on any rank aborts the whole job (see
``init_process_group``). docs/distributed.md has the details.
"""

from ..utils import data as _data
from . import mpi, nccl  # noqa: F401 - their process-group classes register themselves (process_group.py)
from .collectives import all_gather, all_reduce, barrier, broadcast
from .sampler import DistributedSampler
from .process_group import (DistributedError, ProcessGroup, ReduceOp, Work, destroy_process_group, get_backend,
                            get_rank, get_world_size, init_process_group, is_available, is_initialized,
                            is_mpi_available, is_nccl_available)

__all__ = [
    "DistributedError", "DistributedSampler", "ProcessGroup", "ReduceOp", "Work", "all_gather", "all_reduce", "barrier", "broadcast",
    "destroy_process_group", "get_backend", "get_rank", "get_world_size", "init_process_group", "is_available",
    "is_initialized", "is_mpi_available", "is_nccl_available",
]

# PyTorch also offers DistributedSampler as torch.utils.data.DistributedSampler. minigrad.utils.data is the layer
# below this package (the sampler builds on its Sampler), so the name is added there from here.
_data.DistributedSampler = DistributedSampler
_data.__all__.append("DistributedSampler")
