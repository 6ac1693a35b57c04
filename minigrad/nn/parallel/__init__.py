"""Parallel training wrappers: ``DistributedDataParallel`` (PyTorch's ``torch.nn.parallel``).

Example::

    import minigrad.distributed as dist
    from minigrad.nn.parallel import DistributedDataParallel

    dist.init_process_group()
    model = DistributedDataParallel(model)
"""

from .distributed import DistributedDataParallel

__all__ = ["DistributedDataParallel"]
