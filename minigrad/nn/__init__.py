"""Neural-network layers, losses and initialisation (PyTorch's ``torch.nn`` API).

The normalization layers (``BatchNorm1d``, ``BatchNorm2d``, ``LayerNorm``,
``GroupNorm``, ``InstanceNorm1d``, ``InstanceNorm2d``) live in
``minigrad.norm``, where they are registered as plugins; they are
re-exported here on first access.
"""

from . import functional, init
from .layers import (AvgPool2d, Conv2d, CrossEntropyLoss, Dropout, Flatten, Identity, Linear, LogSoftmax,
                     MaxPool2d, ModuleList, MSELoss, NLLLoss, ReLU, Sequential, Sigmoid, Softmax, Tanh)
from .module import Module, Parameter
from . import parallel
from .parallel import DistributedDataParallel

_NORM_LAYERS = ("BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d")
_NORM_LAYERS += ("SyncBatchNorm",)

__all__ = [
    "AvgPool2d", "Conv2d", "CrossEntropyLoss", "Dropout", "Flatten", "Identity", "Linear", "LogSoftmax",
    "MaxPool2d", "Module", "ModuleList", "MSELoss", "NLLLoss", "Parameter", "ReLU", "Sequential", "Sigmoid",
    "Softmax", "Tanh", "functional", "init", *_NORM_LAYERS,
]
__all__ += ["DistributedDataParallel", "parallel"]


def __getattr__(name):
    # Imported lazily: minigrad.norm builds on minigrad.nn.Module.
    if name in _NORM_LAYERS:
        from .. import norm

        return getattr(norm, name)
    raise AttributeError(f"module 'minigrad.nn' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
