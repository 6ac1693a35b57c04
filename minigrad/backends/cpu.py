"""The CPU backend: NumPy arrays, with minigrad's Cython kernels where they pay off.

Overrides keep the base signatures; everything not overridden falls back to
the NumPy reference in ``base.py``. The Cython kernels take contiguous
arrays, so the wrappers here make non-contiguous inputs contiguous first
(a copy) and validate what a kernel cannot check itself.
"""

from __future__ import annotations

import numpy as np

from .base import Backend

__all__ = ["CPUBackend"]


class CPUBackend(Backend):
    """NumPy arrays; Cython kernels for the fused operations."""

    name = "cpu"
    xp = np

    def asarray(self, data, dtype=None):
        return np.asarray(data, dtype=dtype)

    def to_numpy(self, array):
        return array

    def from_numpy(self, array):
        return np.array(array, copy=True)

    def manual_seed(self, seed):
        self._seed = int(seed)
        self._rng = np.random.Generator(np.random.PCG64(self._seed))
