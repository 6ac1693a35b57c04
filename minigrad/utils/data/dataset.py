"""Datasets: map-style (``Dataset``) and iterable (``IterableDataset``), and ways to combine them."""

from __future__ import annotations

import bisect
import math
import numbers

import numpy as np

from ..._ext._engine import TensorBase, make_tensor
from ...backends import get_backend

__all__ = ["Dataset", "IterableDataset", "TensorDataset", "Subset", "ConcatDataset", "random_split"]


class Dataset:
    """A map-style dataset: subclasses define ``__len__`` and ``__getitem__``.

    ``__getitem__(i)`` returns one sample, typically a tuple such as
    ``(image, label)`` of Tensors, NumPy arrays or numbers; ``DataLoader``
    collates samples into batches. ``a + b`` concatenates two datasets.

    Example::

        class Squares(Dataset):
            def __len__(self):
                return 10

            def __getitem__(self, i):
                return float(i), i * i
    """

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} does not implement __len__")

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} does not implement __getitem__")

    def __add__(self, other):
        return ConcatDataset([self, other])


class IterableDataset(Dataset):
    """A dataset that is a stream: subclasses define ``__iter__``.

    With ``DataLoader(num_workers=N)`` every worker iterates its own copy;
    use ``minigrad.utils.data.get_worker_info()`` inside ``__iter__`` to give
    each worker its share, as in PyTorch.
    """

    def __iter__(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement __iter__")

    def __getitem__(self, index):
        raise TypeError(f"{type(self).__name__} is an IterableDataset: iterate over it, it cannot be indexed")


def _host(value) -> np.ndarray:
    if isinstance(value, TensorBase):
        return np.asarray(value.backend.to_numpy(value.array))
    return np.asarray(value)


class TensorDataset(Dataset):
    """Samples are the rows of equally long arrays: ``ds[i] == (a[i], b[i], ...)``, as CPU Tensors.

    Accepts minigrad Tensors (copied to the host once when on a GPU),
    NumPy arrays or anything ``numpy.asarray`` takes. The data stays on the
    host (``arrays``); ``DataLoader`` batches it by fancy indexing, without
    a per-sample loop, and moves each batch to its device.

    Example::

        >>> import numpy as np
        >>> from minigrad.utils.data import TensorDataset
        >>> ds = TensorDataset(np.zeros((5, 3), np.float32), np.arange(5))
        >>> x, y = ds[2]
        >>> x.shape, int(y)
        ((3,), 2)
    """

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset needs at least one array")
        hosts = [_host(a) for a in tensors]
        for i, a in enumerate(hosts):
            if a.ndim == 0:
                raise ValueError(f"TensorDataset: array {i} is a scalar; each array needs a leading sample axis")
        n = len(hosts[0])
        for i, a in enumerate(hosts[1:], start=1):
            if len(a) != n:
                raise ValueError(
                    f"TensorDataset: all arrays need the same number of samples, array 0 has {n} and array {i} has {len(a)}"
                )
        self.arrays = tuple(hosts)

    @property
    def tensors(self) -> tuple:
        """The data as CPU Tensors (sharing memory with ``arrays``)."""
        cpu = get_backend("cpu")
        return tuple(make_tensor(a, cpu) for a in self.arrays)

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index):
        cpu = get_backend("cpu")
        return tuple(make_tensor(np.asarray(a[index]), cpu) for a in self.arrays)


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = [int(i) for i in indices]

    def __getitem__(self, idx):
        return self.dataset[self.indices[idx]]

    def __len__(self) -> int:
        return len(self.indices)


class ConcatDataset(Dataset):
    """Several map-style datasets one after the other."""

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset needs at least one dataset")
        for d in self.datasets:
            if isinstance(d, IterableDataset):
                raise TypeError("ConcatDataset does not support IterableDataset")
        self.cumulative_sizes = np.cumsum([len(d) for d in self.datasets]).tolist()

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def __getitem__(self, idx):
        if idx < 0:
            if -idx > len(self):
                raise IndexError(f"index {idx} is out of range for a dataset of {len(self)} samples")
            idx += len(self)
        which = bisect.bisect_right(self.cumulative_sizes, idx)
        if which == len(self.datasets):
            raise IndexError(f"index {idx} is out of range for a dataset of {len(self)} samples")
        start = self.cumulative_sizes[which - 1] if which else 0
        return self.datasets[which][idx - start]


def random_split(dataset, lengths, generator=None) -> list:
    """Split ``dataset`` into non-overlapping random ``Subset`` s of the given ``lengths``.

    ``lengths`` are counts adding up to ``len(dataset)``, or fractions adding
    up to 1 (the remainder is given out one sample at a time, round-robin,
    as PyTorch does). ``generator`` is a ``numpy.random.Generator`` (default:
    one seeded from minigrad's CPU generator, so ``manual_seed`` makes the
    split reproducible).

    Example::

        train, val = random_split(dataset, [0.8, 0.2], generator=np.random.default_rng(0))
    """
    n = len(dataset)
    lengths = list(lengths)
    if lengths and all(isinstance(x, float) for x in lengths) and math.isclose(sum(lengths), 1.0):
        for i, frac in enumerate(lengths):
            if not 0.0 <= frac <= 1.0:
                raise ValueError(f"random_split: fraction at index {i} is not between 0 and 1: {frac}")
        counts = [int(math.floor(n * frac)) for frac in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        lengths = counts
    if not all(isinstance(x, numbers.Integral) and x >= 0 for x in lengths):
        raise ValueError(f"random_split: lengths must be non-negative ints or fractions summing to 1, got {lengths}")
    if sum(lengths) != n:
        raise ValueError(f"random_split: the lengths add up to {sum(lengths)}, the dataset has {n} samples")
    from .sampler import _generator

    order = _generator(generator).permutation(n).tolist()
    out, start = [], 0
    for length in lengths:
        out.append(Subset(dataset, order[start:start + length]))
        start += length
    return out
