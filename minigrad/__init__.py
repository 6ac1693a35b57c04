"""minigrad: a small, fast, honest deep-learning framework.

A reverse-mode autograd engine compiled with Cython, CPU (Cython kernels)
and CUDA (CuPy RawKernels) backends behind one interface, PyTorch-style
layers and optimizers, and a plugin registry of normalizers centred on
Batch Normalization.

Example::

    import minigrad as mg
    from minigrad import nn, optim

    model = nn.Sequential(nn.Linear(784, 100), nn.BatchNorm1d(100), nn.Sigmoid(), nn.Linear(100, 10))
    opt = optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
"""

from . import _dtypes, accelerator, cuda, data, distributed, linalg, nn, norm, ops, optim, return_types, testing, utils
from ._ext._engine import Function
from .autograd import enable_grad, grad, is_grad_enabled, no_grad, set_grad_enabled
from .device import Device, device, get_default_device, set_default_device
from .dlpack import from_dlpack
from .ops import (abs, amax, amin, argmax, argmin, cat, clamp, concatenate, erf, exp, flatten, log, log_softmax,
                  logsumexp, matmul, max, maximum, mean, min, minimum, permute, relu, reshape, sigmoid, softmax,
                  sqrt, squeeze, stack, std, sum, tanh, transpose, unsqueeze, var, where)
from .random import initial_seed, manual_seed, seed
from .serialization import CheckpointError, load, save
from .tensor import (Tensor, arange, as_tensor, bool_, empty, empty_like, eye, float16, float32, float64,
                     from_numpy, full, full_like, get_default_dtype, int8, int16, int32, int64, linspace,
                     ones, ones_like, rand, rand_like, randint, randn, randn_like, set_default_dtype, tensor,
                     uint8, zeros, zeros_like)
from .threads import get_num_threads, set_num_threads

if _dtypes.bfloat16 is not None:
    from .tensor import bfloat16

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "Device", "Function", "Tensor", "accelerator", "amax", "amin", "erf", "return_types",
    "utils", "cuda", "data", "distributed", "load", "nn", "norm", "optim", "save", "testing", "abs", "arange", "argmax", "argmin", "as_tensor", "bool_", "cat",
    "clamp", "concatenate", "device", "empty", "empty_like", "enable_grad", "exp", "eye", "flatten",
    "float16", "float32", "float64", "from_dlpack", "from_numpy", "full", "full_like", "get_default_device",
    "get_default_dtype", "get_num_threads", "grad", "initial_seed", "int8", "int16", "int32", "int64",
    "is_grad_enabled", "linspace", "log", "log_softmax", "logsumexp", "manual_seed", "matmul", "max",
    "maximum", "mean", "min", "minimum", "no_grad", "ones", "ones_like", "ops", "permute", "rand",
    "rand_like", "randint", "randn", "randn_like", "relu", "reshape", "seed", "set_default_device",
    "set_default_dtype", "set_grad_enabled", "set_num_threads", "sigmoid", "softmax", "sqrt", "squeeze",
    "stack", "std", "sum", "tanh", "tensor", "transpose", "uint8", "unsqueeze", "var", "where", "zeros",
    "zeros_like",
] + (["bfloat16"] if _dtypes.bfloat16 is not None else [])


def __getattr__(name):
    if name == "bfloat16":  # without ml_dtypes: a clear error, never a None that .to() would ignore
        from .tensor import _bfloat16_dtype

        try:
            _bfloat16_dtype()
        except TypeError as exc:
            raise AttributeError(f"minigrad.{exc}") from None
    raise AttributeError(f"module 'minigrad' has no attribute {name!r}")
