"""Neural-network layers, losses and initialisation (PyTorch's ``torch.nn`` API).

The normalization layers (``BatchNorm1d``, ``BatchNorm2d``, ``LayerNorm``,
``GroupNorm``, ``InstanceNorm1d``, ``InstanceNorm2d``) live in
``minigrad.norm``, where they are registered as plugins; they and the lazy
modules (``minigrad.nn.lazy``, which build on them) are re-exported here on
first access. ``minigrad.nn.utils`` has gradient clipping.
"""

from . import functional, init, utils
from .layers import (AdaptiveAvgPool2d, AvgPool2d, BCELoss, BCEWithLogitsLoss, Conv2d, CrossEntropyLoss, Dropout,
                     Dropout2d, Embedding, Flatten, GELU, Identity, LeakyReLU, Linear, LogSoftmax, MaxPool2d, ModuleDict,
                     ModuleList, MSELoss, NLLLoss, ReLU, Sequential, Sigmoid, Softmax, Softplus, Tanh)
from .module import Module, Parameter
from . import parallel
from .parallel import DistributedDataParallel

_NORM_LAYERS = ("BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d")
_NORM_LAYERS += ("SyncBatchNorm",)
_LAZY = ("LazyLinear", "LazyConv2d", "LazyBatchNorm1d", "LazyBatchNorm2d", "UninitializedParameter",
         "UninitializedBuffer")

__all__ = [
    "AdaptiveAvgPool2d", "AvgPool2d", "BCELoss", "BCEWithLogitsLoss", "Conv2d", "CrossEntropyLoss", "Dropout",
    "Dropout2d", "Embedding", "Flatten", "GELU", "Identity", "LeakyReLU", "Linear", "LogSoftmax", "MaxPool2d", "Module", "ModuleDict",
    "ModuleList", "MSELoss", "NLLLoss", "Parameter", "ReLU", "Sequential", "Sigmoid", "Softmax", "Softplus", "Tanh",
    "functional", "init", "utils", *_NORM_LAYERS, *_LAZY,
]
__all__ += ["DistributedDataParallel", "parallel"]


def __getattr__(name):
    # Imported lazily: minigrad.norm builds on minigrad.nn.Module.
    if name in _NORM_LAYERS:
        from .. import norm

        return getattr(norm, name)
    if name in _LAZY:
        from . import lazy

        return getattr(lazy, name)
    raise AttributeError(f"module 'minigrad.nn' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
