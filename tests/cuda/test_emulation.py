"""The CUDA emulation itself can fail: broken kernels are caught.

Each test feeds a deliberately wrong kernel (or a wrong launch) through the
same harness the kernel tests use and checks that the error shows: a
missing barrier gives a wrong result, a divergent barrier or an
out-of-bounds write raises, a scalar of the wrong C type is refused, and a
mutation of the real sources (a barrier removed from the block reduction)
makes the batch-norm statistics wrong.
"""

from __future__ import annotations

import numpy as np
import pytest

from minigrad.backends import cuda_launch

TOY = r"""
// Sum of a block's values through shared memory.
template <typename T>
__global__ void block_sum(const T* x, T* out, int with_barrier) {
    __shared__ T buf[256];
    buf[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
    if (with_barrier) __syncthreads();
    if (threadIdx.x == 0) {
        T s = 0;
        for (unsigned i = 0; i < blockDim.x; ++i) s += buf[i];
        out[blockIdx.x] = s;
    }
}

// A barrier only some threads reach.
template <typename T>
__global__ void divergent_barrier(T* out) {
    if (threadIdx.x < 16) __syncthreads();
    out[threadIdx.x] = T(1);
}

// Writes one element past the end.
template <typename T>
__global__ void write_past_end(T* out, long long n) {
    if (threadIdx.x == 0) out[n] = T(7);
}

// Reads one element past the end.
template <typename T>
__global__ void read_past_end(const T* x, T* out, long long n) {
    if (threadIdx.x == 0) out[0] = x[n];
}

// Writes through a pointer-to-const.
template <typename T>
__global__ void write_const(const T* x) {
    if (threadIdx.x == 0) const_cast<T*>(x)[0] = T(3);
}

// Warp reduction with shuffles.
template <typename T>
__global__ void warp_sum(const T* x, T* out) {
    T v = x[threadIdx.x];
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    if ((threadIdx.x & 31) == 0) out[threadIdx.x >> 5] = v;
}
"""
NAMES = ["block_sum<float>", "divergent_barrier<float>", "write_past_end<float>", "read_past_end<float>",
         "write_const<float>", "warp_sum<double>"]


@pytest.fixture(scope="module")
def toy(request):
    fake_cupy = request.getfixturevalue("emu_factory") and __import__("minigrad_tests_fake_cupy")

    def get(name, order=2):
        xp = fake_cupy.FakeCupy(order=order)
        return xp.RawModule(code=TOY, name_expressions=NAMES).get_function(name), fake_cupy

    get.device = fake_cupy.FakeCupy().asarray  # the arguments a kernel takes: device arrays
    return get


def test_missing_barrier_gives_a_wrong_result(toy):
    d = toy.device
    x = np.arange(64, dtype=np.float32)
    results = set()
    for order in (0, 1, 2):
        k, _ = toy("block_sum<float>", order)
        out = d(np.zeros(1, np.float32))
        k((1,), (64,), (d(x), out, np.int32(0)))
        results.add(float(out[0]))
    assert any(r != x.sum() for r in results), results
    k, _ = toy("block_sum<float>", 1)
    out = d(np.zeros(1, np.float32))
    k((1,), (64,), (d(x), out, np.int32(1)))
    assert out[0] == x.sum()


def test_divergent_barrier_is_reported(toy):
    k, fc = toy("divergent_barrier<float>")
    with pytest.raises(fc.EmulationError, match="deadlock"):
        k((1,), (32,), (toy.device(np.zeros(32, np.float32)),))


def test_out_of_bounds_write_is_reported(toy):
    k, fc = toy("write_past_end<float>")
    with pytest.raises(fc.EmulationError, match="out-of-bounds write"):
        k((1,), (32,), (toy.device(np.zeros(5, np.float32)), np.int64(5)))


def test_out_of_bounds_read_poisons_the_result(toy):
    k, _ = toy("read_past_end<float>")
    out = toy.device(np.zeros(1, np.float32))
    k((1,), (32,), (toy.device(np.ones(5, np.float32)), out, np.int64(5)))
    assert np.isnan(out[0])


def test_write_through_const_is_reported(toy):
    k, fc = toy("write_const<float>")
    with pytest.raises(fc.EmulationError, match="const"):
        k((1,), (32,), (toy.device(np.zeros(4, np.float32)),))


def test_argument_types_must_match_the_c_signature(toy):
    k, fc = toy("write_past_end<float>")
    d = toy.device
    with pytest.raises(fc.EmulationError, match="expected int64"):
        k((1,), (32,), (d(np.zeros(5, np.float32)), 4))  # a Python int: its C type is a guess
    with pytest.raises(fc.EmulationError, match="float64 for a pointer to 'f'"):
        k((1,), (32,), (d(np.zeros(5, np.float64)), np.int64(4)))
    with pytest.raises(fc.EmulationError, match="takes 2 arguments"):
        k((1,), (32,), (d(np.zeros(5, np.float32)),))
    with pytest.raises(fc.EmulationError, match="invalid configuration"):
        k((0,), (32,), (d(np.zeros(5, np.float32)), np.int64(0)))
    with pytest.raises(TypeError, match="host numpy.ndarray"):  # CuPy passes only device arrays by pointer
        k((1,), (32,), (np.zeros(5, np.float32), np.int64(0)))


def test_warp_shuffles(toy):
    k, _ = toy("warp_sum<double>")
    x = np.arange(64, dtype=np.float64)
    out = toy.device(np.zeros(2))
    k((1,), (64,), (toy.device(x), out))
    np.testing.assert_array_equal(np.asarray(out), [x[:32].sum(), x[32:].sum()])  # asarray: a host view


def test_a_barrier_removed_from_the_real_sources_is_caught(emu_factory, ref, monkeypatch):
    """Mutation test: block_reduce without its first __syncthreads gives wrong statistics."""
    original = cuda_launch.kernel_source
    marker = "    if (lane == 0) smem[warp] = s;\n    __syncthreads();\n"
    assert marker in original("batchnorm.cu")
    monkeypatch.setattr(cuda_launch, "kernel_source",
                        lambda f: original(f).replace(marker, "    if (lane == 0) smem[warp] = s;\n"))
    x = np.random.default_rng(0).standard_normal((8, 2, 256))
    expected = ref.batch_norm_forward_train(x, None, None, 1e-5)[1]
    wrong = 0
    for order in (0, 1, 2):
        be = emu_factory(threads=128, order=order)
        mean = be.to_numpy(be.batch_norm_forward_train(be.from_numpy(x), None, None, 1e-5)[1])
        wrong += not np.allclose(mean, expected, rtol=1e-12, atol=1e-12)
    assert wrong > 0


def test_the_fake_cupy_keeps_cupys_rules(emu_factory):
    """Host/device mix-ups fail in the emulation as they do with CuPy (a NumPy-backed fake would accept them)."""
    xp = emu_factory().xp
    dev, host = xp.arange(6.0).reshape(2, 3), np.ones((2, 3))
    for mixed in (lambda: dev + host, lambda: host * dev, lambda: xp.maximum(dev, host), lambda: xp.where(dev > 0, host, dev),
                  lambda: xp.concatenate([dev, host]), lambda: np.concatenate([dev, host])):
        with pytest.raises(TypeError, match="Unsupported type"):
            mixed()
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray"):
        dev[...] = host  # CuPy fills with a host value: a scalar only
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray"):
        dev[0] = [1.0, 2.0, 3.0]
    dev[...] = 2.0
    dev[0] = xp.asarray(host)[:1]  # a device value: leading unit axes dropped, then broadcast (CuPy >= 11)
    with pytest.raises(ValueError):
        dev[0] = xp.ones((2, 3))
    zero_d = xp.zeros((), dtype=np.int64)
    zero_d[...] = xp.asarray(np.array([7]))  # (1,) into (): CuPy drops the leading unit axis
    assert int(zero_d) == 7
    total = dev.sum()
    assert isinstance(total, xp.ndarray) and total.shape == ()  # CuPy reductions are 0-d device arrays
    data = np.zeros(3)
    copy = xp.asarray(data)
    data[0] = 1.0
    assert float(copy[0]) == 0.0, "host data is copied to the device, never shared"
