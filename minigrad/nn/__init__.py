"""Neural-network layers, losses and initialisation (PyTorch's ``torch.nn`` API).

``minigrad.nn.utils`` has gradient clipping, ``minigrad.nn.lazy`` the lazy
layers. The normalization layers (``BatchNorm1d``, ``BatchNorm2d``,
``LayerNorm``, ``GroupNorm``, ``InstanceNorm1d``, ``InstanceNorm2d``, the
lazy BatchNorms) are names of this package too, but they live in
``minigrad.norm``, the layer above (its normalizers are ``Module``s):
``minigrad.norm`` adds every built-in normalizer here when it loads, which
``import minigrad`` does, so this package names none of them.
"""

from . import functional, init, utils
from .layers import (AdaptiveAvgPool2d, AvgPool2d, BCELoss, BCEWithLogitsLoss, Conv2d, CrossEntropyLoss, Dropout,
                     Dropout2d, Embedding, Flatten, GELU, Identity, LeakyReLU, Linear, LogSoftmax, MaxPool2d,
                     ModuleDict, ModuleList, MSELoss, NLLLoss, ReLU, Sequential, Sigmoid, Softmax, Softplus, Tanh)
from .lazy import LazyConv2d, LazyLinear, UninitializedBuffer, UninitializedParameter
from .module import Module, Parameter
from . import parallel
from .parallel import DistributedDataParallel

__all__ = [
    "AdaptiveAvgPool2d", "AvgPool2d", "BCELoss", "BCEWithLogitsLoss", "Conv2d", "CrossEntropyLoss", "Dropout",
    "Dropout2d", "Embedding", "Flatten", "GELU", "Identity", "LazyConv2d", "LazyLinear", "LeakyReLU", "Linear",
    "LogSoftmax", "MaxPool2d", "Module", "ModuleDict", "ModuleList", "MSELoss", "NLLLoss", "Parameter", "ReLU",
    "Sequential", "Sigmoid", "Softmax", "Softplus", "Tanh", "UninitializedBuffer", "UninitializedParameter",
    "functional", "init", "utils",
]
__all__ += ["DistributedDataParallel", "parallel"]
