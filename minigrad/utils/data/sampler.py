"""Samplers: the orders in which a ``DataLoader`` visits the indices of a map-style dataset.

A sampler is an iterable of indices (``BatchSampler``: of lists of indices)
with a ``__len__``. Random samplers draw from a ``numpy.random.Generator``;
without one they seed a fresh one from minigrad's CPU generator at every
``iter()``, so ``minigrad.manual_seed`` makes them reproducible and every
epoch differs, as in PyTorch. ``DistributedSampler`` (``minigrad.distributed``)
is a ``Sampler`` too.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..._ext._engine import TensorBase

__all__ = ["Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler", "WeightedRandomSampler",
           "BatchSampler"]


def _generator(generator) -> np.random.Generator:
    if generator is None:
        from ...backends import get_backend

        seed = int(get_backend("cpu").randint(0, 2**63 - 1, (), np.int64))
        return np.random.default_rng(seed)
    if not isinstance(generator, np.random.Generator):
        raise TypeError(f"generator must be a numpy.random.Generator, got {type(generator).__name__}")
    return generator


def _positive_int(value, name):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} should be a positive integer value, but got {name}={value!r}")
    return int(value)


class Sampler:
    """Base class: an iterable of dataset indices, with a ``__len__`` where the length is known."""

    def __iter__(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement __iter__")


class SequentialSampler(Sampler):
    """``0, 1, ..., len(data_source) - 1``, in order."""

    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def _epoch_indices(self) -> np.ndarray:
        return np.arange(len(self.data_source))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler):
    """The indices in a random order (a new one each epoch), or drawn with replacement.

    ``num_samples`` (default ``len(data_source)``) indices per epoch; without
    replacement and more than the dataset, several permutations follow each
    other.
    """

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None):
        if not isinstance(replacement, bool):
            raise TypeError(f"replacement should be a boolean value, but got replacement={replacement!r}")
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = None if num_samples is None else _positive_int(num_samples, "num_samples")
        self.generator = generator if generator is None else _generator(generator)

    @property
    def num_samples(self) -> int:
        """Indices per epoch."""
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self):
        return iter(self._epoch_indices().tolist())

    def _epoch_indices(self) -> np.ndarray:
        """One epoch's indices at once (the loader slices batches from it without a loop per sample)."""
        n, k = len(self.data_source), self.num_samples
        rng = _generator(self.generator)
        if self.replacement:
            return rng.integers(0, n, size=k)
        return np.concatenate([rng.permutation(n) for _ in range(-(-k // n))])[:k] if n else np.arange(0)

    def __len__(self) -> int:
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given ``indices`` in a random order (a new one each epoch)."""

    def __init__(self, indices, generator=None):
        self.indices = list(indices)
        self.generator = generator if generator is None else _generator(generator)

    def __iter__(self):
        for i in _generator(self.generator).permutation(len(self.indices)):
            yield self.indices[i]

    def __len__(self) -> int:
        return len(self.indices)


class WeightedRandomSampler(Sampler):
    """``num_samples`` indices in ``[0, len(weights))`` drawn with probabilities proportional to ``weights``.

    Example (balance two classes)::

        weights = 1.0 / class_counts[labels]
        loader = DataLoader(ds, batch_size=64, sampler=WeightedRandomSampler(weights, len(ds)))
    """

    def __init__(self, weights, num_samples, replacement=True, generator=None):
        if not isinstance(replacement, bool):
            raise TypeError(f"replacement should be a boolean value, but got replacement={replacement!r}")
        w = np.asarray(weights.backend.to_numpy(weights.array) if isinstance(weights, TensorBase) else weights,
                       dtype=np.float64)
        if w.ndim != 1 or w.size == 0:
            raise ValueError(f"weights should be a non-empty 1-d sequence, but given weights have shape {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError("weights must be finite, non-negative and not all zero")
        self.weights = w
        self.num_samples = _positive_int(num_samples, "num_samples")
        if not replacement and self.num_samples > np.count_nonzero(w):
            raise ValueError(f"cannot draw {self.num_samples} samples without replacement from "
                             f"{np.count_nonzero(w)} non-zero weights")
        self.replacement = replacement
        self.generator = generator if generator is None else _generator(generator)

    def __iter__(self):
        rng = _generator(self.generator)
        yield from rng.choice(len(self.weights), size=self.num_samples, replace=self.replacement,
                              p=self.weights / self.weights.sum()).tolist()

    def __len__(self) -> int:
        return self.num_samples


class BatchSampler(Sampler):
    """Groups the indices of ``sampler`` into lists of ``batch_size`` (the last one shorter unless ``drop_last``).

    Example::

        >>> from minigrad.utils.data import BatchSampler, SequentialSampler
        >>> list(BatchSampler(SequentialSampler(range(5)), batch_size=2, drop_last=False))
        [[0, 1], [2, 3], [4]]
    """

    def __init__(self, sampler, batch_size, drop_last):
        self.sampler = sampler
        self.batch_size = _positive_int(batch_size, "batch_size")
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last should be a boolean value, but got drop_last={drop_last!r}")
        self.drop_last = drop_last

    def _index_batches(self):
        """The batches as index arrays, sliced from the whole epoch when the sampler can give it at once."""
        epoch = getattr(self.sampler, "_epoch_indices", None)
        if epoch is None:
            yield from self
            return
        order = epoch()
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        for start in range(0, stop, self.batch_size):
            yield order[start:start + self.batch_size]

    def __iter__(self):
        batch = []
        for idx in self.sampler:
            batch.append(idx)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
