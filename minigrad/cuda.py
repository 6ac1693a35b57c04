"""``minigrad.cuda``: is a GPU usable, and how many.

Importing this module never imports CuPy; the questions below do, lazily.
The backend itself is ``minigrad.backends.cuda_backend.CUDABackend``.

Example::

    >>> import minigrad as mg
    >>> mg.cuda.is_available() or mg.cuda.unavailable_reason() is not None
    True
"""

from __future__ import annotations

__all__ = ["is_available", "device_count", "synchronize", "unavailable_reason"]


def _backend_class():
    from .backends import backend_class

    return backend_class("cuda")


def is_available() -> bool:
    """True if CuPy is installed, a CUDA device is present and a test kernel compiles and runs on it.

    The first call asks the CUDA runtime and compiles one tiny kernel with
    NVRTC, as the backend compiles its own (cached for the process); where
    that fails, ``unavailable_reason()`` says why.
    """
    try:
        return bool(_backend_class().is_available())
    except ImportError:
        return False


def unavailable_reason() -> str | None:
    """Why "cuda" cannot be used here (None when it can)."""
    try:
        return _backend_class().unavailable_reason()
    except ImportError as exc:
        return f"the CUDA backend could not be imported: {exc}"


def device_count() -> int:
    """Number of usable CUDA devices (0 without CuPy or a GPU)."""
    try:
        return int(_backend_class().device_count())
    except ImportError:
        return 0


def synchronize(device=None) -> None:
    """Wait for all work queued on a CUDA device."""
    from .backends import get_backend

    get_backend(device if device is not None else "cuda").synchronize()
