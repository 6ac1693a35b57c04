"""DLPack interop: share a tensor's memory with NumPy, CuPy, PyTorch, JAX, ... without a copy.

``minigrad.from_dlpack(obj)`` wraps any object that implements the DLPack
protocol (``__dlpack__`` and ``__dlpack_device__``) as a minigrad Tensor on
the matching device, sharing its memory; ``Tensor.__dlpack__`` lets the
other libraries do the same with minigrad tensors
(``torch.from_dlpack(t)``, ``cupy.from_dlpack(t)``, ``numpy.from_dlpack(t)``).

Example::

    import torch, minigrad
    t = torch.arange(6.0).reshape(2, 3)
    m = minigrad.from_dlpack(t)      # no copy: t[0, 0] = 5 shows in m
    back = torch.from_dlpack(m)      # no copy either
"""

from __future__ import annotations

import numpy as np

from ._ext._engine import make_tensor
from .backends import get_backend

__all__ = ["from_dlpack"]

# DLDeviceType codes (dlpack.h).
_CPU, _CUDA, _CUDA_HOST, _CUDA_MANAGED = 1, 2, 3, 13
_NAMES = {1: "CPU", 2: "CUDA", 3: "CUDA host", 4: "OpenCL", 7: "Vulkan", 8: "Metal", 9: "VPI", 10: "ROCm",
          11: "ROCm host", 13: "CUDA managed", 14: "oneAPI", 15: "WebGPU", 16: "Hexagon"}


def from_dlpack(obj):
    """A Tensor sharing memory with ``obj`` (anything implementing the DLPack protocol).

    CPU (and CUDA-host) memory becomes a CPU tensor through NumPy; CUDA
    memory becomes a "cuda" tensor through CuPy (which must be installed,
    with a GPU). The tensor does not require grad; its dtype must be bool,
    an integer or a floating type. Strides are kept (no copy is ever made).
    """
    if not (hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__")):
        raise TypeError(
            f"from_dlpack expects an object implementing the DLPack protocol (__dlpack__ and "
            f"__dlpack_device__), got {type(obj).__name__}"
        )
    device_type, device_id = obj.__dlpack_device__()
    device_type, device_id = int(device_type), int(device_id)
    if device_type in (_CPU, _CUDA_HOST):
        backend = get_backend("cpu")
        array = np.from_dlpack(obj)
    elif device_type in (_CUDA, _CUDA_MANAGED):
        backend = get_backend(f"cuda:{device_id}")  # raises, naming what is missing, without CuPy/GPU
        array = backend.xp.from_dlpack(obj)
    else:
        name = _NAMES.get(device_type, f"type {device_type}")
        raise ValueError(f"from_dlpack: memory on a {name} device is not supported (only CPU and CUDA)")
    if array.dtype.kind not in "biuf":
        raise TypeError(f"from_dlpack: unsupported dtype {array.dtype}; minigrad supports bool, integer and float")
    return make_tensor(array, backend)
