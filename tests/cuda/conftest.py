"""Fixtures of the CUDA tests.

* ``emu``: a ``CUDABackend`` whose CuPy is ``emu/fake_cupy.FakeCupy``: NumPy
  arrays, and the real kernel sources compiled with g++ and the CUDA
  emulation ``emu/cuda_emu.h``. It runs the backend's real host code and
  kernels on the CPU (skipped when g++ is missing).
* ``ref``: the NumPy reference ``Backend`` the kernels are compared with.
* ``gpu``: the real CUDA backend, skipped with the reason where CuPy or a GPU
  is missing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import minigrad
from minigrad.backends.base import Backend
from minigrad.device import Device

EMU_DIR = Path(__file__).resolve().parent / "emu"


def _load_fake_cupy():
    name = "minigrad_tests_fake_cupy"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EMU_DIR / "fake_cupy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


fake_cupy = _load_fake_cupy()

NO_GXX = fake_cupy.compiler() is None
requires_gxx = pytest.mark.skipif(NO_GXX, reason="g++ not found: the CUDA emulation needs a C++20 compiler")


def make_emulated_backend(threads=64, sm_count=2, order=2, seed=0):
    """A CUDABackend on the emulated GPU (small blocks and few SMs keep the thread count low;
    ``threads=None`` keeps the GPU's setting)."""
    from minigrad.backends.cuda_backend import CUDABackend

    backend = CUDABackend(Device("cuda"), xp=fake_cupy.FakeCupy(sm_count=sm_count, order=order, seed=seed))
    if threads is not None:
        backend.launcher.threads = threads
    return backend


@pytest.fixture(scope="session")
def _emu_session():
    if NO_GXX:
        pytest.skip("g++ not found: the CUDA emulation needs a C++20 compiler")
    return make_emulated_backend()


@pytest.fixture
def emu(_emu_session):
    """The emulated CUDA backend (64 threads per block, 2 SMs), launch log cleared."""
    _emu_session.xp.launches.clear()
    _emu_session.launcher.threads = 64
    return _emu_session


@pytest.fixture(scope="session")
def emu_factory():
    """``make_emulated_backend`` (skipped when g++ is missing)."""
    if NO_GXX:
        pytest.skip("g++ not found: the CUDA emulation needs a C++20 compiler")
    return make_emulated_backend


@pytest.fixture(scope="session")
def ref():
    """The NumPy reference implementation of every kernel."""
    return Backend(Device("cpu"))


@pytest.fixture(scope="session")
def gpu():
    """The real CUDA backend (skipped without CuPy or a GPU)."""
    if not minigrad.cuda.is_available():
        pytest.skip(f"no CUDA device: {minigrad.cuda.unavailable_reason()}")
    from minigrad.backends import get_backend

    return get_backend("cuda")
