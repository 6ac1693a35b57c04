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

    return get


def test_missing_barrier_gives_a_wrong_result(toy):
    x = np.arange(64, dtype=np.float32)
    results = set()
    for order in (0, 1, 2):
        k, _ = toy("block_sum<float>", order)
        out = np.zeros(1, np.float32)
        k((1,), (64,), (x, out, np.int32(0)))
        results.add(float(out[0]))
    assert any(r != x.sum() for r in results), results
    k, _ = toy("block_sum<float>", 1)
    out = np.zeros(1, np.float32)
    k((1,), (64,), (x, out, np.int32(1)))
    assert out[0] == x.sum()


def test_divergent_barrier_is_reported(toy):
    k, fc = toy("divergent_barrier<float>")
    with pytest.raises(fc.EmulationError, match="deadlock"):
        k((1,), (32,), (np.zeros(32, np.float32),))


def test_out_of_bounds_write_is_reported(toy):
    k, fc = toy("write_past_end<float>")
    with pytest.raises(fc.EmulationError, match="out-of-bounds write"):
        k((1,), (32,), (np.zeros(5, np.float32), np.int64(5)))


def test_out_of_bounds_read_poisons_the_result(toy):
    k, _ = toy("read_past_end<float>")
    out = np.zeros(1, np.float32)
    k((1,), (32,), (np.ones(5, np.float32), out, np.int64(5)))
    assert np.isnan(out[0])


def test_write_through_const_is_reported(toy):
    k, fc = toy("write_const<float>")
    with pytest.raises(fc.EmulationError, match="const"):
        k((1,), (32,), (np.zeros(4, np.float32),))


def test_argument_types_must_match_the_c_signature(toy):
    k, fc = toy("write_past_end<float>")
    with pytest.raises(fc.EmulationError, match="expected int64"):
        k((1,), (32,), (np.zeros(5, np.float32), 4))  # a Python int: its C type is a guess
    with pytest.raises(fc.EmulationError, match="float64 for a pointer to 'f'"):
        k((1,), (32,), (np.zeros(5, np.float64), np.int64(4)))
    with pytest.raises(fc.EmulationError, match="takes 2 arguments"):
        k((1,), (32,), (np.zeros(5, np.float32),))
    with pytest.raises(fc.EmulationError, match="invalid configuration"):
        k((0,), (32,), (np.zeros(5, np.float32), np.int64(0)))


def test_warp_shuffles(toy):
    k, _ = toy("warp_sum<double>")
    x = np.arange(64, dtype=np.float64)
    out = np.zeros(2)
    k((1,), (64,), (x, out))
    np.testing.assert_array_equal(out, [x[:32].sum(), x[32:].sum()])


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
        mean = be.batch_norm_forward_train(be.from_numpy(x), None, None, 1e-5)[1]
        wrong += not np.allclose(mean, expected, rtol=1e-12, atol=1e-12)
    assert wrong > 0
