"""DLPack interop: ``minigrad.from_dlpack`` and ``Tensor.__dlpack__`` share memory, never copy.

CPU cases run everywhere (NumPy, and PyTorch CPU where installed); the CUDA
cases (CuPy, PyTorch CUDA) need a GPU and are skipped with the reason here.
"""

from __future__ import annotations

import numpy as np
import pytest

import minigrad as mg


def test_numpy_round_trip_shares_memory():
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    t = mg.from_dlpack(a)
    assert t.device == "cpu" and t.dtype == np.float64 and t.shape == (2, 3)
    assert not t.requires_grad
    a[0, 0] = 42.0
    assert t[0, 0].item() == 42.0
    back = np.from_dlpack(t)
    back[1, 2] = -1.0
    assert a[1, 2] == -1.0


def test_strides_are_kept():
    a = np.arange(12, dtype=np.float32).reshape(3, 4).T  # not C-contiguous
    t = mg.from_dlpack(a)
    np.testing.assert_array_equal(t.numpy(), a)
    assert np.shares_memory(t.numpy(), a)


def test_tensor_from_dlpack_works_with_autograd():
    a = np.array([1.0, 2.0, 3.0])
    x = mg.from_dlpack(a).requires_grad_()
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0, 6.0])


def test_a_minigrad_tensor_is_accepted():
    t = mg.arange(5)
    u = mg.from_dlpack(t)
    assert np.shares_memory(u.numpy(), t.numpy())


def test_objects_without_the_protocol_are_refused():
    with pytest.raises(TypeError, match="DLPack protocol"):
        mg.from_dlpack([1.0, 2.0])


def test_unsupported_devices_and_dtypes_are_refused():
    class OnVulkan:
        def __dlpack__(self, **kw):
            raise AssertionError("must not be exported")

        def __dlpack_device__(self):
            return (7, 0)

    with pytest.raises(ValueError, match="Vulkan"):
        mg.from_dlpack(OnVulkan())
    with pytest.raises(TypeError, match="complex"):
        mg.from_dlpack(np.zeros(3, dtype=np.complex64))


@pytest.mark.skipif(mg.cuda.is_available(), reason="checks the error raised without a GPU")
def test_cuda_memory_without_a_gpu_names_what_is_missing():
    class OnCuda:
        def __dlpack__(self, **kw):
            raise AssertionError("must not be exported")

        def __dlpack_device__(self):
            return (2, 0)

    with pytest.raises(RuntimeError, match="CuPy|GPU"):
        mg.from_dlpack(OnCuda())


# -------------------------------------------------------------- PyTorch CPU
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "bool"])
def test_torch_cpu_to_minigrad_without_copy(dtype):
    torch = pytest.importorskip("torch")
    t = torch.zeros(2, 3, dtype=getattr(torch, dtype))
    m = mg.from_dlpack(t)
    assert m.device == "cpu" and m.dtype == np.dtype(dtype) and m.shape == (2, 3)
    t[1, 2] = 1
    assert m.numpy()[1, 2] == 1


def test_minigrad_to_torch_cpu_without_copy():
    torch = pytest.importorskip("torch")
    m = mg.tensor([[1.0, 2.0], [3.0, 4.0]])
    t = torch.from_dlpack(m)
    assert t.dtype == torch.float32 and tuple(t.shape) == (2, 2)
    t[0, 1] = 7.0
    assert m[0, 1].item() == 7.0
    m.numpy()[1, 0] = -3.0
    assert t[1, 0].item() == -3.0


def test_torch_views_keep_their_strides():
    torch = pytest.importorskip("torch")
    base = torch.arange(12.0).reshape(3, 4)
    m = mg.from_dlpack(base.t())
    np.testing.assert_array_equal(m.numpy(), base.t().numpy())
    base[2, 1] = 100.0
    assert m[1, 2].item() == 100.0


# ------------------------------------------------------------------- CUDA
requires_gpu = pytest.mark.skipif(not mg.cuda.is_available(), reason=f"no CUDA device: {mg.cuda.unavailable_reason()}")


@pytest.mark.cuda
@requires_gpu
def test_cupy_round_trip_without_copy():
    import cupy

    a = cupy.arange(6, dtype=cupy.float32)
    m = mg.from_dlpack(a)
    assert m.device == "cuda:0"
    a[0] = 9
    assert m[0].item() == 9
    back = cupy.from_dlpack(m)
    back[1] = -2
    assert m[1].item() == -2


@pytest.mark.cuda
@requires_gpu
def test_torch_cuda_round_trip_without_copy():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("this PyTorch build has no CUDA")
    t = torch.zeros(4, device="cuda")
    m = mg.from_dlpack(t)
    assert m.device == "cuda:0"
    t[2] = 5.0
    assert m[2].item() == 5.0
    u = torch.from_dlpack(m)
    u[3] = 6.0
    assert m[3].item() == 6.0
