"""Datasets: indexable collections of samples."""

from __future__ import annotations

import numpy as np

from .._ext._engine import TensorBase

__all__ = ["Dataset", "TensorDataset"]


class Dataset:
    """An indexable collection of samples: subclasses define ``__len__`` and ``__getitem__``.

    ``__getitem__(i)`` returns one sample, typically a tuple such as
    ``(image, label)`` of NumPy arrays or numbers; ``DataLoader`` stacks
    samples into batches.
    """

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} does not implement __len__")

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} does not implement __getitem__")


def _host(value) -> np.ndarray:
    if isinstance(value, TensorBase):
        return np.asarray(value.backend.to_numpy(value.array))
    return np.asarray(value)


class TensorDataset(Dataset):
    """Samples are the rows of equally long arrays: ``ds[i] == (a[i], b[i], ...)``.

    Accepts NumPy arrays, minigrad Tensors (copied to the host once) or
    anything ``numpy.asarray`` takes. The data stays on the host; the
    ``DataLoader`` moves each batch to its device.

    Example::

        ds = TensorDataset(images, labels)    # images (N, 784), labels (N,)
        x, y = ds[0]
    """

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("TensorDataset needs at least one array")
        hosts = [_host(a) for a in arrays]
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

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index):
        return tuple(a[index] for a in self.arrays)
