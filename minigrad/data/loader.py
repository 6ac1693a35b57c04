"""``DataLoader``: mini-batches of a Dataset as minigrad Tensors on a device."""

from __future__ import annotations

import math

import numpy as np

from .. import random as _random
from ..tensor import as_tensor
from .dataset import TensorDataset, _host

__all__ = ["DataLoader"]


def _check_positive_int(value, name):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


class DataLoader:
    """Iterate over a dataset in mini-batches, each a tuple of Tensors on ``device``.

    Args:
        dataset: a ``Dataset`` (a ``TensorDataset`` is batched by fancy
            indexing, without a per-sample loop).
        batch_size: samples per batch.
        shuffle: visit the samples in a new random order every epoch.
        drop_last: drop the last batch when it is smaller than ``batch_size``.
        seed: seeds the shuffling generator; with neither ``seed`` nor
            ``generator``, the seed is ``minigrad.initial_seed()``, so a
            program that calls ``minigrad.manual_seed`` is reproducible.
        generator: a ``numpy.random.Generator`` to draw the orders from
            (give either this or ``seed``).
        device: where the batches go (default: the default device).
        sampler: an iterable of sample indices with ``len`` (e.g. a
            ``DistributedSampler``) giving each epoch's order instead of
            ``shuffle``.

    A batch is a tuple of Tensors when the samples are tuples (as with
    ``TensorDataset``), else a single Tensor. Each ``iter(loader)`` is one epoch; successive epochs draw successive
    permutations from the same generator, so two loaders with the same
    seed give the same batches epoch after epoch.

    Example::

        loader = DataLoader(TensorDataset(x, y), batch_size=60, shuffle=True, seed=0, device="cpu")
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, *, seed=None, generator=None,
                 device=None, sampler=None):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"DataLoader needs a Dataset (with __len__ and __getitem__), got {type(dataset).__name__}")
        self.dataset = dataset
        self.batch_size = _check_positive_int(batch_size, "batch_size")
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.device = device
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle")
        self.sampler = sampler
        if seed is not None and generator is not None:
            raise ValueError("DataLoader: give either seed or generator, not both")
        if generator is not None:
            if not isinstance(generator, np.random.Generator):
                raise TypeError(f"generator must be a numpy.random.Generator, got {type(generator).__name__}")
            self.generator = generator
        else:
            if seed is None:
                seed = _random.initial_seed()
            elif not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
                raise ValueError(f"seed must be a non-negative int, got {seed!r}")
            self.generator = np.random.default_rng(int(seed))

    def __len__(self) -> int:
        """Number of batches per epoch."""
        n = len(self.dataset) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _order(self):
        if self.sampler is not None:
            return np.fromiter(iter(self.sampler), dtype=np.int64)
        n = len(self.dataset)
        return self.generator.permutation(n) if self.shuffle else np.arange(n)

    def _collate(self, indices):
        """The batch as host arrays: a tuple, or a single array for non-tuple samples."""
        if isinstance(self.dataset, TensorDataset):
            return tuple(a[indices] for a in self.dataset.arrays)
        samples = [self.dataset[int(i)] for i in indices]
        first = samples[0]
        if isinstance(first, (tuple, list)):
            return tuple(np.stack([_host(s[k]) for s in samples]) for k in range(len(first)))
        return np.stack([_host(s) for s in samples])

    def _to_device(self, array):
        return as_tensor(np.ascontiguousarray(array), device=self.device)

    def __iter__(self):
        order = self._order()
        n = len(order)
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            batch = self._collate(order[start:start + self.batch_size])
            if isinstance(batch, tuple):
                yield tuple(self._to_device(a) for a in batch)
            else:
                yield self._to_device(batch)

    def __repr__(self) -> str:
        return (f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, device={self.device!r})")
