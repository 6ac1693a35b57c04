"""Every backend keeps the base interface: same public methods, same signatures.

This is what makes backends interchangeable (Thinc's test_ops_consistency):
an override with a different signature would work on one device and break
on another.
"""

import inspect
import os
import subprocess
import sys

import pytest

from minigrad.backends import Backend, backend_class

KINDS = ["cpu", "cuda"]


def _public_methods(cls):
    return {n: m for n, m in inspect.getmembers(cls, callable) if not n.startswith("_")}


@pytest.mark.parametrize("kind", KINDS)
def test_backend_overrides_keep_base_signatures(kind):
    try:
        cls = backend_class(kind)
    except ImportError as exc:
        pytest.skip(f"the {kind} backend module cannot be imported here: {exc}")
    base = _public_methods(Backend)
    for name, method in _public_methods(cls).items():
        if name not in base:
            continue
        got, want = inspect.signature(method), inspect.signature(base[name])
        assert list(got.parameters) == list(want.parameters), f"{cls.__name__}.{name}{got} != Backend.{name}{want}"


def test_import_minigrad_needs_no_gpu_library_or_torch():
    # Importing minigrad (and touching the CPU) must not pull in CuPy or PyTorch.
    code = (
        "import sys, minigrad as mg; mg.ones(2).sum(); import minigrad.nn, minigrad.optim; "
        "bad = [m for m in ('cupy', 'torch') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert proc.returncode == 0, proc.stdout + proc.stderr
