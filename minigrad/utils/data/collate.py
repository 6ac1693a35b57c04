"""``default_collate`` and ``default_convert``: samples to batches of CPU Tensors, as PyTorch's.

Tensors and NumPy arrays are stacked along a new first dimension; Python
floats become a float64 tensor, ints int64, bools bool; strings stay a
list; dicts, named tuples, tuples and lists are collated field by field
(a tuple gives a list, as in PyTorch).
"""

from __future__ import annotations

import collections.abc
import numbers

import numpy as np

from ..._ext._engine import TensorBase, make_tensor
from ...backends import get_backend

__all__ = ["default_collate", "default_convert"]

_ERROR = ("default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; found {}")


def _cpu_tensor(array) -> TensorBase:
    return make_tensor(np.ascontiguousarray(array), get_backend("cpu"))


def _host(t) -> np.ndarray:
    return t.backend.to_numpy(t.array)


def default_collate(batch):
    """Collate a list of samples into a batch (see the module docstring).

    Example::

        >>> from minigrad.utils.data import default_collate
        >>> x, y = default_collate([(np.zeros(2, np.float32), 0), (np.ones(2, np.float32), 1)])
        >>> x.shape, y.tolist()
        ((2, 2), [0, 1])
    """
    elem = batch[0]
    if isinstance(elem, TensorBase):
        return _cpu_tensor(np.stack([_host(t) for t in batch]))
    if isinstance(elem, np.ndarray):
        if elem.dtype.kind not in "biuf":
            raise TypeError(_ERROR.format(elem.dtype))
        return _cpu_tensor(np.stack(batch))
    if isinstance(elem, np.generic):
        return _cpu_tensor(np.asarray(batch))
    if isinstance(elem, bool):
        return _cpu_tensor(np.asarray(batch, dtype=np.bool_))
    if isinstance(elem, numbers.Integral):
        return _cpu_tensor(np.asarray(batch, dtype=np.int64))
    if isinstance(elem, numbers.Real):
        return _cpu_tensor(np.asarray(batch, dtype=np.float64))
    if isinstance(elem, (str, bytes)):
        return list(batch)
    if isinstance(elem, collections.abc.Mapping):
        return {key: default_collate([d[key] for d in batch]) for key in elem}
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # a named tuple keeps its type
        return type(elem)(*(default_collate(list(s)) for s in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        size = len(elem)
        if any(len(s) != size for s in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        return [default_collate(list(s)) for s in zip(*batch)]
    raise TypeError(_ERROR.format(type(elem)))


def tensor_dataset_batch(dataset, indices) -> list:
    """``default_collate`` of the samples of a ``TensorDataset`` at ``indices``, by fancy indexing."""
    idx = np.asarray(indices, dtype=np.int64)
    return [_cpu_tensor(a[idx]) for a in dataset.arrays]


def default_convert(data):
    """Convert NumPy arrays (and those inside containers) to CPU Tensors without batching.

    The collate function of a ``DataLoader`` with ``batch_size=None``.
    """
    if isinstance(data, np.ndarray) and data.dtype.kind in "biuf":
        return _cpu_tensor(data)
    if isinstance(data, np.generic) and data.dtype.kind in "biuf":
        return _cpu_tensor(np.asarray(data))
    if isinstance(data, collections.abc.Mapping):
        return {key: default_convert(v) for key, v in data.items()}
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(v) for v in data))
    if isinstance(data, (list, tuple)):
        return [default_convert(v) for v in data]
    return data
