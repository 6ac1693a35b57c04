"""Utilities with PyTorch's ``torch.utils`` names.

* ``minigrad.utils.data``: datasets, samplers and the ``DataLoader`` (worker
  processes included), as ``torch.utils.data``;
* ``minigrad.utils.weights``: PyTorch ``.pt``/``.pth`` state dicts (read
  without PyTorch) and ``.safetensors`` files (read and written).
"""

from . import data, weights

__all__ = ["data", "weights"]
