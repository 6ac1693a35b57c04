"""``DistributedSampler``: each rank's share of a dataset (PyTorch's ``torch.utils.data.DistributedSampler``).

Also importable as ``minigrad.data.DistributedSampler`` and
``minigrad.utils.data.DistributedSampler``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..utils.data.sampler import Sampler
from .process_group import get_rank, get_world_size, is_initialized

__all__ = ["DistributedSampler"]


class DistributedSampler(Sampler):
    """The indices of ``dataset`` this rank visits in one epoch: every ``num_replicas``-th of a shared order.

    ``DistributedSampler(dataset, num_replicas=None, rank=None, shuffle=True,
    seed=0, drop_last=False)``. All ranks draw the same order (a
    permutation seeded with ``seed + epoch`` when ``shuffle``, else
    ``0 .. len-1``) and rank r takes positions ``r, r + num_replicas, ...``,
    so the ranks together visit the dataset once per epoch. When the
    length does not divide evenly, the order is padded by repeating its
    first indices (every rank gets ``ceil(len/num_replicas)`` samples), or,
    with ``drop_last``, cut to a multiple of ``num_replicas``.
    ``num_replicas``/``rank`` default to the world size and rank of the
    default process group. Call ``set_epoch(epoch)`` before each epoch
    for a new order. Pass it to ``DataLoader(..., sampler=sampler)``.

    Example::

        sampler = DistributedSampler(train_set, shuffle=True, seed=0)
        loader = DataLoader(train_set, batch_size=8, sampler=sampler)
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            for xb, yb in loader: ...
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        if num_replicas is None or rank is None:
            if not is_initialized():
                raise RuntimeError("DistributedSampler: pass num_replicas and rank, or call "
                                   "minigrad.distributed.init_process_group() first")
            num_replicas = get_world_size() if num_replicas is None else num_replicas
            rank = get_rank() if rank is None else rank
        if not _is_int(num_replicas) or num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be a positive int, got {num_replicas!r}")
        if not _is_int(rank) or not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler: invalid rank {rank!r}, rank should be in the interval "
                             f"[0, {num_replicas - 1}]")
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"DistributedSampler: seed must be a non-negative int, got {seed!r}")
        self.dataset = dataset
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0
        n = len(dataset)
        if self.drop_last and n % self.num_replicas:
            self.num_samples = math.ceil((n - self.num_replicas) / self.num_replicas)
        else:
            self.num_samples = math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Use the order of epoch ``epoch`` (call it on every rank, with the same value, before each epoch)."""
        if not _is_int(epoch) or epoch < 0:
            raise ValueError(f"DistributedSampler.set_epoch: epoch must be a non-negative int, got {epoch!r}")
        self.epoch = int(epoch)

    def _epoch_indices(self) -> np.ndarray:
        """This rank's indices for the current epoch, at once (the loader slices its batches from them)."""
        n = len(self.dataset)
        order = (np.random.default_rng(self.seed + self.epoch).permutation(n) if self.shuffle
                 else np.arange(n, dtype=np.int64))
        if self.total_size > n and n:
            order = np.resize(order, self.total_size)  # pad by repeating the order from its start
        order = order[:self.total_size]
        return order[self.rank:self.total_size:self.num_replicas]

    def __iter__(self):
        return iter(self._epoch_indices().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (f"DistributedSampler(num_replicas={self.num_replicas}, rank={self.rank}, shuffle={self.shuffle}, "
                f"seed={self.seed}, drop_last={self.drop_last}, epoch={self.epoch})")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
