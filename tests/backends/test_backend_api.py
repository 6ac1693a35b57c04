"""Backends are interchangeable: every override keeps the signature of ``Backend``.

The CUDA backend class is imported without CuPy (its module must import
anywhere), so this runs on every machine.
"""

from __future__ import annotations

import inspect

import pytest

from minigrad.backends import backend_class
from minigrad.backends.base import Backend

PUBLIC = sorted(
    name for name, member in inspect.getmembers(Backend)
    if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, (classmethod, staticmethod))
                                     or inspect.ismethod(member))
)
FUSED = ["batch_norm_forward_train", "channel_affine", "batch_norm_forward_eval", "batch_norm_backward", "group_norm_forward",
         "group_norm_backward", "im2col", "col2im", "max_pool2d_forward", "max_pool2d_backward",
         "avg_pool2d_forward", "avg_pool2d_backward", "sigmoid", "sgd_update", "adam_update"]


def _params(fn):
    """Names, kinds and defaults of the parameters (annotations are documentation only)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("kind", ["cpu", "cuda"])
@pytest.mark.parametrize("name", PUBLIC)
def test_signatures_match_the_base(kind, name):
    cls = backend_class(kind)
    assert _params(getattr(cls, name)) == _params(getattr(Backend, name)), (
        f"{cls.__name__}.{name} changed the signature of Backend.{name}"
    )


@pytest.mark.parametrize("name", FUSED)
def test_cuda_overrides_the_fused_kernels(name):
    cls = backend_class("cuda")
    assert getattr(cls, name) is not getattr(Backend, name), f"CUDABackend does not override {name}"


def test_cuda_availability_api():
    cls = backend_class("cuda")
    for name in ("is_available", "unavailable_reason", "device_count", "create"):
        assert isinstance(inspect.getattr_static(cls, name), classmethod), name
    assert isinstance(cls.is_available(), bool)
    assert isinstance(cls.device_count(), int)


def test_import_minigrad_needs_no_gpu_library_or_torch():
    # Importing minigrad (and computing on the CPU) must not pull in CuPy or PyTorch.
    import os
    import subprocess
    import sys

    code = (
        "import sys, minigrad as mg; mg.ones(2).sum(); import minigrad.nn, minigrad.optim; "
        "bad = [m for m in ('cupy', 'torch') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
