"""Without CuPy or without a GPU: ``import minigrad`` and CPU work are unaffected,
``minigrad.cuda.is_available()`` is False, and asking for "cuda" raises an error
naming which of the two is missing."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

import minigrad as mg
from minigrad.backends import cuda_launch
from minigrad.backends.cuda_backend import CUDABackend, CUDAUnavailableError

HAVE_GPU = mg.cuda.is_available()


@pytest.fixture
def fresh(monkeypatch):
    """Forget the cached CuPy import and device probe (restored afterwards)."""
    monkeypatch.setattr(cuda_launch, "_CUPY", None)
    monkeypatch.setattr(cuda_launch, "_CUPY_ERROR", None)
    monkeypatch.setattr(CUDABackend, "_probe_result", None)
    from minigrad import backends

    monkeypatch.setattr(backends, "_INSTANCES", dict(backends._INSTANCES))
    monkeypatch.setattr(backends, "_BY_NAME", {k: v for k, v in backends._BY_NAME.items() if not k.startswith("cuda")})


def _without_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # "import cupy" raises ImportError


def _cupy_without_gpu(monkeypatch):
    class NoDevice(RuntimeError):
        pass

    def get_count():
        raise NoDevice("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake = types.SimpleNamespace(__version__="14.0.0",
                                 cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_count)))
    monkeypatch.setitem(sys.modules, "cupy", fake)


def test_import_minigrad_does_not_import_cupy():
    code = "import sys, minigrad; minigrad.tensor([1.0]) + 1; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_cupy(fresh, monkeypatch):
    _without_cupy(monkeypatch)
    assert mg.cuda.is_available() is False
    assert mg.cuda.device_count() == 0
    assert "CuPy is not installed" in mg.cuda.unavailable_reason()
    with pytest.raises(CUDAUnavailableError, match=r"CuPy is not installed.*minigrad-bn\[cuda\]"):
        mg.tensor([1.0], device="cuda")
    with pytest.raises(CUDAUnavailableError):
        mg.zeros(3).to("cuda")
    assert (mg.tensor([1.0, 2.0]) * 2).tolist() == [2.0, 4.0]  # CPU work unaffected


def test_cupy_without_a_gpu(fresh, monkeypatch):
    _cupy_without_gpu(monkeypatch)
    assert mg.cuda.is_available() is False
    assert mg.cuda.device_count() == 0
    reason = mg.cuda.unavailable_reason()
    assert "CuPy 14.0.0 is installed but no usable CUDA GPU" in reason and "cudaErrorNoDevice" in reason
    with pytest.raises(CUDAUnavailableError, match="no usable CUDA GPU"):
        mg.tensor([1.0], device="cuda")
    with pytest.raises(CUDAUnavailableError, match="no usable CUDA GPU"):
        with mg.device("cuda"):
            mg.ones(2)


@pytest.mark.skipif(HAVE_GPU, reason="this machine has a GPU")
def test_this_machine(fresh):
    assert mg.cuda.is_available() is False
    with pytest.raises(CUDAUnavailableError) as info:
        mg.tensor([1.0], device="cuda")
    assert "CuPy" in str(info.value) and ("not installed" in str(info.value) or "no usable CUDA GPU" in str(info.value))


def _emulated_cupy(monkeypatch, request, **kw):
    """``import cupy`` gives the emulated CuPy (a GPU whose kernels run through the g++ emulation)."""
    request.getfixturevalue("emu_factory")  # skipped without g++
    fake = sys.modules["minigrad_tests_fake_cupy"].FakeCupy(**kw)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    return fake


def test_available_means_a_kernel_compiled_and_ran(fresh, monkeypatch, request):
    fake = _emulated_cupy(monkeypatch, request)
    assert mg.cuda.is_available() is True and mg.cuda.unavailable_reason() is None
    assert [name for name, _, _ in fake.launches] == ["mg_probe<float>"]
    mg.cuda.is_available()
    assert fake.builds == 1, "the probe runs once per process"


class _CompileException(Exception):
    pass


def test_a_gpu_without_a_working_compiler_is_unavailable(fresh, monkeypatch, request):
    """CuPy imports and sees a GPU, but NVRTC cannot compile (no CUDA headers without [ctk] or a toolkit)."""
    fake = _emulated_cupy(monkeypatch, request)

    def no_nvrtc(**kw):
        raise _CompileException("catastrophic error: cannot open source file \"cuda_fp16.h\"")

    monkeypatch.setattr(fake, "RawModule", no_nvrtc)
    assert mg.cuda.is_available() is False
    assert mg.cuda.device_count() == 1
    reason = mg.cuda.unavailable_reason()
    assert "cannot be compiled and run on the 1 CUDA device(s)" in reason and "cuda_fp16.h" in reason
    assert "[ctk]" in reason
    with pytest.raises(CUDAUnavailableError, match="cannot be compiled"):
        mg.tensor([1.0], device="cuda")


def test_a_kernel_that_computes_garbage_is_unavailable(fresh, monkeypatch, request):
    fake = _emulated_cupy(monkeypatch, request)
    module = type("Module", (), {"get_function": lambda self, name: lambda grid, block, args: None})
    monkeypatch.setattr(fake, "RawModule", lambda **kw: module())
    assert "wrote wrong values" in mg.cuda.unavailable_reason()


def test_only_cuda_0_is_supported(fresh, monkeypatch, request):
    _emulated_cupy(monkeypatch, request, device_count=2)
    assert mg.cuda.device_count() == 2
    with pytest.raises(NotImplementedError, match="only cuda:0"):
        CUDABackend.create(mg.Device("cuda:1"))
    with pytest.raises(ValueError, match="has 2 CUDA device"):
        CUDABackend.create(mg.Device("cuda:5"))


def test_device_fixture_skips_cuda_with_a_reason(request):
    """The suites' ``device`` fixture has a cuda case; without a GPU it is skipped, not passed."""
    if HAVE_GPU:
        pytest.skip("this machine has a GPU")
    from minigrad.testing.strategies import available_devices

    assert available_devices() == ["cpu"]
    assert mg.cuda.unavailable_reason()
