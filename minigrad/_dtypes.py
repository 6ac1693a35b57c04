"""The floating dtypes minigrad knows, half precision included.

NumPy has float16; bfloat16 (8 exponent bits, as float32, and 8 of
mantissa) comes from the ``ml_dtypes`` package, an optional dependency
(``pip install 'minigrad-bn[bfloat16]'``). Without it ``bfloat16`` is None
and only float16 is a half type. ml_dtypes gives bfloat16 the dtype kind
"V", so code asks ``is_floating`` rather than ``dtype.kind == "f"``.

Half-precision inputs are computed with float32 accumulation: the
statistics of a normalizer and its parameter gradients are float32
(``accumulation_dtype``), as cuDNN and PyTorch do.
"""

from __future__ import annotations

import numpy as np

try:
    import ml_dtypes
except ImportError:  # optional: bfloat16 support
    ml_dtypes = None

__all__ = ["bfloat16", "HALF_DTYPES", "is_floating", "is_half", "accumulation_dtype"]

float16 = np.dtype(np.float16)
float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
#: ``ml_dtypes.bfloat16`` as a NumPy dtype, or None without ml_dtypes.
bfloat16 = np.dtype(ml_dtypes.bfloat16) if ml_dtypes is not None else None
#: The 16-bit floating dtypes available here.
HALF_DTYPES = (float16,) if bfloat16 is None else (float16, bfloat16)


def is_floating(dtype) -> bool:
    """Whether ``dtype`` is a floating type (float16/32/64, or bfloat16 with ml_dtypes).

    Example::

        assert is_floating(np.dtype("float16")) and not is_floating(np.dtype("int64"))
    """
    return dtype.kind == "f" or (dtype.kind == "V" and bfloat16 is not None and dtype == bfloat16)


def is_half(dtype) -> bool:
    """Whether ``dtype`` is a 16-bit floating type (float16, bfloat16).

    Example::

        assert is_half(np.dtype("float16")) and not is_half(np.dtype("float32"))
    """
    return dtype in HALF_DTYPES


def accumulation_dtype(dtype):
    """The dtype sums, statistics and parameter gradients of ``dtype`` data are kept in.

    float64 for float64, float32 for float32 and the half types (so the
    statistics of a float16 input are never rounded to float16).

    Example::

        assert accumulation_dtype(np.dtype("float16")) == np.float32
    """
    return float64 if dtype == float64 else float32
