"""``minigrad.utils.data``: datasets, samplers and the ``DataLoader``, as ``torch.utils.data``.

* datasets: ``Dataset`` (map-style), ``IterableDataset``, ``TensorDataset``,
  ``Subset``, ``ConcatDataset``, ``random_split``;
* samplers: ``Sampler``, ``SequentialSampler``, ``RandomSampler``,
  ``SubsetRandomSampler``, ``WeightedRandomSampler``, ``BatchSampler``
  (``DistributedSampler`` comes from ``minigrad.distributed``, which adds
  it here);
* ``DataLoader`` with worker processes (``num_workers``), ``default_collate``,
  ``default_convert`` and ``get_worker_info``.

Random orders draw from ``numpy.random.Generator`` s (PyTorch's
``torch.Generator`` has no minigrad twin); ``DataLoader(seed=...)`` is a
shorthand for one.

Example::

    from minigrad.utils.data import DataLoader, TensorDataset, random_split

    train, val = random_split(TensorDataset(x, y), [0.9, 0.1])
    for xb, yb in DataLoader(train, batch_size=64, shuffle=True, num_workers=2):
        ...
"""

from ._worker import WorkerInfo, get_worker_info
from .collate import default_collate, default_convert
from .dataloader import DataLoader
from .dataset import ConcatDataset, Dataset, IterableDataset, Subset, TensorDataset, random_split
from .sampler import (BatchSampler, RandomSampler, Sampler, SequentialSampler, SubsetRandomSampler,
                      WeightedRandomSampler)

__all__ = [
    "BatchSampler", "ConcatDataset", "DataLoader", "Dataset", "IterableDataset", "RandomSampler", "Sampler",
    "SequentialSampler", "Subset", "SubsetRandomSampler", "TensorDataset", "WeightedRandomSampler", "WorkerInfo",
    "default_collate", "default_convert", "get_worker_info", "random_split",
]
