// Device helpers shared by minigrad's CUDA kernels.
//
// Everything here is header-only device code whose only #includes are
// CUDA's half-precision types (cuda_fp16.h, cuda_bf16.h: CuPy puts them on
// NVRTC's include path, as its own float16 kernels need them), so the same
// text compiles under NVRTC (CuPy's RawModule, which gets this header
// inlined into each kernel source), under nvcc (the PTX test) and under g++
// with tests/cuda/emu/cuda_emu.h (the CPU emulation test, which has its own
// stand-ins for the two headers).
//
// Conventions of every kernel in kernels/*.cu:
// * one template per kernel, instantiated for T = float and T = double; the
//   normalization kernels also for T = __half and __nv_bfloat16, which are
//   storage types only: values are widened to acc_t<T> = float on load,
//   computed in float (sums in double, as for float) and rounded once on
//   store; their per-channel vectors and statistics are acc_t<T> (float32),
//   so a float16 input has float32 statistics and parameters;
// * sizes are `long long`, flags `int`, epsilons `double`, optimizer
//   hyper-parameters `T`; optional pointers may be null;
// * grid-stride loops, so any grid size is correct (the host picks one that
//   fills the GPU);
// * blocks are whole warps (blockDim.x * blockDim.y a multiple of 32, at
//   most 1024 threads); the host wrappers guarantee it;
// * reductions accumulate in double, merge partial results with Chan's
//   formula (Welford) or plain sums in a fixed order, so results are
//   deterministic for a given launch configuration.
#ifndef MINIGRAD_KERNELS_COMMON_CUH
#define MINIGRAD_KERNELS_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace mg {

constexpr unsigned FULL_MASK = 0xffffffffu;

// ------------------------------------------------------- storage vs compute
// acc_t<T>: the type values of T are computed in and the type of the
// per-channel vectors and statistics that go with T data.
template <typename T> struct Acc { using type = T; };
template <> struct Acc<__half> { using type = float; };
template <> struct Acc<__nv_bfloat16> { using type = float; };
template <typename T> using acc_t = typename Acc<T>::type;

// widen(v): a value of T as acc_t<T> (exact); narrow<T>(a): rounded to T
// (to nearest even), once, when it is stored.
__device__ __forceinline__ float widen(float v) { return v; }
__device__ __forceinline__ double widen(double v) { return v; }
__device__ __forceinline__ float widen(__half v) { return __half2float(v); }
__device__ __forceinline__ float widen(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T narrow(acc_t<T> a) { return a; }
template <> __device__ __forceinline__ __half narrow<__half>(float a) { return __float2half_rn(a); }
template <> __device__ __forceinline__ __nv_bfloat16 narrow<__nv_bfloat16>(float a) {
    return __float2bfloat16_rn(a);
}

// --------------------------------------------------------------- small math
__device__ __forceinline__ long long lmin(long long a, long long b) { return a < b ? a : b; }
__device__ __forceinline__ long long lmax(long long a, long long b) { return a > b ? a : b; }

__device__ __forceinline__ float tanh_(float x) { return tanhf(x); }
__device__ __forceinline__ double tanh_(double x) { return tanh(x); }
__device__ __forceinline__ float sqrt_(float x) { return sqrtf(x); }
__device__ __forceinline__ double sqrt_(double x) { return sqrt(x); }

template <typename T> __device__ __forceinline__ T neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return __int_as_float(0xff800000); }
template <> __device__ __forceinline__ double neg_inf<double>() {
    return __longlong_as_double(0xfff0000000000000ULL);
}

// atomicAdd for float and double; double atomics are native from sm_60 on,
// older GPUs (CUDA 12 still supports sm_50/52) get a compare-and-swap loop.
__device__ __forceinline__ void atomic_add(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(double* p, double v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 600
    unsigned long long* address = reinterpret_cast<unsigned long long*>(p);
    unsigned long long old = *address, assumed;
    do {
        assumed = old;
        old = atomicCAS(address, assumed,
                        __double_as_longlong(v + __longlong_as_double(assumed)));
    } while (assumed != old);
#else
    atomicAdd(p, v);
#endif
}

// ------------------------------------------------------- vectorised access
// A 16-byte pack: 8 halves, 4 floats or 2 doubles, loaded/stored with one instruction
// (LDG.128 / STG.128) when the address is 16-byte aligned.
template <typename T>
struct alignas(16) Pack {
    static constexpr int N = 16 / sizeof(T);
    T v[N];
};

template <typename T>
__device__ __forceinline__ bool aligned16(const T* p) {
    return (reinterpret_cast<unsigned long long>(p) & 15ULL) == 0;
}

// Load up to Pack<T>::N consecutive elements starting at p, of which `avail`
// exist; returns how many were loaded. One vector load when all N exist and
// p is aligned, scalar loads otherwise (tails, misaligned planes).
template <typename T>
__device__ __forceinline__ int load_batch(const T* p, long long avail, T (&v)[Pack<T>::N]) {
    constexpr int V = Pack<T>::N;
    if (avail >= V && aligned16(p)) {
        const Pack<T> q = *reinterpret_cast<const Pack<T>*>(p);
#pragma unroll
        for (int i = 0; i < V; ++i) v[i] = q.v[i];
        return V;
    }
    const int cnt = avail < V ? static_cast<int>(avail) : V;
#pragma unroll
    for (int i = 0; i < V; ++i) v[i] = i < cnt ? p[i] : T();
    return cnt;
}

// Store the first `cnt` elements of v at p (vector store when all N and aligned).
template <typename T>
__device__ __forceinline__ void store_batch(T* p, int cnt, const T (&v)[Pack<T>::N]) {
    constexpr int V = Pack<T>::N;
    if (cnt == V && aligned16(p)) {
        Pack<T> q;
#pragma unroll
        for (int i = 0; i < V; ++i) q.v[i] = v[i];
        *reinterpret_cast<Pack<T>*>(p) = q;
        return;
    }
#pragma unroll
    for (int i = 0; i < V; ++i)
        if (i < cnt) p[i] = v[i];
}

// ------------------------------------------------------------------ cursor
// A position (outer, inner) in a row-major walk where every outer index has
// `inner_size` inner ones (and the outer index wraps at `outer_size`; 0: it
// never wraps), moved without an integer division per move: next() by a
// fixed stride (a grid- or block-stride loop), step() a copy by one element.
// E.g. the channel of element i of an (N, C, S) array: inner = s, outer = c
// with sizes S and C; or unit u of a plane of `upp` units: inner = k, outer = n.
struct Cursor {
    long long inner, outer, d_inner, d_outer, inner_size, outer_size;
    __device__ __forceinline__ Cursor(long long first, long long stride, long long inner_size_,
                                      long long outer_size_)
        : inner(first % inner_size_), outer(wrap(first / inner_size_, outer_size_)),
          d_inner(stride % inner_size_), d_outer(wrap(stride / inner_size_, outer_size_)),
          inner_size(inner_size_), outer_size(outer_size_) {}
    __device__ __forceinline__ static long long wrap(long long v, long long size) { return size ? v % size : v; }
    __device__ __forceinline__ void next() {
        inner += d_inner;
        outer += d_outer;
        if (inner >= inner_size) {
            inner -= inner_size;
            ++outer;
        }
        if (outer_size && outer >= outer_size) outer -= outer_size;
    }
    __device__ __forceinline__ void step(long long& i, long long& o) const {
        if (++i == inner_size) {
            i = 0;
            if (++o == outer_size) o = 0;
        }
    }
};

// ------------------------------------------------------------ reductions
// Running statistics of a set of values: count, mean and M2 = Σ(x - mean)².
// Plain aggregate (no constructors) so it can live in __shared__ memory.
struct Welford {
    double n, mean, m2;
};

__device__ __forceinline__ Welford welford_empty() {
    Welford w;
    w.n = 0.0;
    w.mean = 0.0;
    w.m2 = 0.0;
    return w;
}

// Chan et al.'s pairwise merge: exact for any split, no E[x²] - E[x]².
__device__ __forceinline__ Welford merge(Welford a, Welford b) {
    if (b.n == 0.0) return a;
    if (a.n == 0.0) return b;
    const double n = a.n + b.n;
    const double d = b.mean - a.mean;
    const double wb = b.n / n;
    Welford r;
    r.n = n;
    r.mean = a.mean + d * wb;
    r.m2 = a.m2 + b.m2 + d * d * a.n * wb;
    return r;
}

// Statistics of a batch of k (1..N) values by two passes over registers:
// the mean first, then the squared deviations. Batching amortises the one
// division of the merge over N elements.
template <typename T>
__device__ __forceinline__ Welford welford_batch(const T (&v)[Pack<T>::N], int k) {
    constexpr int V = Pack<T>::N;
    double s = 0.0;
#pragma unroll
    for (int i = 0; i < V; ++i)
        if (i < k) s += static_cast<double>(widen(v[i]));
    const double mean = k == V ? s * (1.0 / V) : s / k;  // 1/V is exact (V = 2, 4 or 8)
    double m2 = 0.0;
#pragma unroll
    for (int i = 0; i < V; ++i) {
        if (i < k) {
            const double d = static_cast<double>(widen(v[i])) - mean;
            m2 += d * d;
        }
    }
    Welford w;
    w.n = static_cast<double>(k);
    w.mean = mean;
    w.m2 = m2;
    return w;
}

// Two running sums (used by the backward passes: Σg and Σg·(x - mean)).
struct Sum2 {
    double a, b;
};

__device__ __forceinline__ Sum2 sum2_empty() {
    Sum2 s;
    s.a = 0.0;
    s.b = 0.0;
    return s;
}

__device__ __forceinline__ Sum2 merge(Sum2 x, Sum2 y) {
    Sum2 r;
    r.a = x.a + y.a;
    r.b = x.b + y.b;
    return r;
}

__device__ __forceinline__ Welford shfl_down(Welford w, int offset) {
    Welford o;
    o.n = __shfl_down_sync(FULL_MASK, w.n, offset);
    o.mean = __shfl_down_sync(FULL_MASK, w.mean, offset);
    o.m2 = __shfl_down_sync(FULL_MASK, w.m2, offset);
    return o;
}

__device__ __forceinline__ Sum2 shfl_down(Sum2 s, int offset) {
    Sum2 o;
    o.a = __shfl_down_sync(FULL_MASK, s.a, offset);
    o.b = __shfl_down_sync(FULL_MASK, s.b, offset);
    return o;
}

// Tree reduction over the 32 lanes of a warp; lane 0 holds the result.
// Every lane of the warp must call it (full mask).
template <typename S>
__device__ __forceinline__ S warp_reduce(S s) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) s = merge(s, shfl_down(s, offset));
    return s;
}

__device__ __forceinline__ int linear_tid() {
    return static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}

__device__ __forceinline__ int block_threads() {
    return static_cast<int>(blockDim.x * blockDim.y * blockDim.z);
}

// Reduction over all threads of the block; the result is valid in thread 0.
// `smem` is a __shared__ array of at least 32 states (one per warp). Every
// thread of the block must call it; it ends with a barrier so smem can be
// reused right away.
template <typename S>
__device__ __forceinline__ S block_reduce(S s, S* smem, S empty) {
    const int tid = linear_tid();
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int nwarps = (block_threads() + 31) >> 5;
    s = warp_reduce(s);
    if (lane == 0) smem[warp] = s;
    __syncthreads();
    if (warp == 0) {
        s = lane < nwarps ? smem[lane] : empty;
        s = warp_reduce(s);
    }
    __syncthreads();
    return s;
}

// Statistics of the rows of a block whose threads are laid out (TX, TY): the
// TX threads (whole warps) of y-slice ty reduce row `row` (K values from
// `xr`, in units of Pack<T>::N; Welford per thread, Chan merges across the
// row's warps, in double) and, after the call, stat[ty] = {mean, invstd}
// with invstd = 1/sqrt(biased var + eps); thread tx == 0 also writes them to
// mean_out[row]/invstd_out[row] (acc_t<T>) when `active`. `wsm` (>= 32 states) and
// `stat` (>= TY pairs) are __shared__; every thread of the block must call
// it (it contains barriers). Used by the per-row kernels of groupnorm.cu.
template <typename T>
__device__ void block_row_stats(const T* xr, long long K, long long row, bool active, double eps,
                                acc_t<T>* mean_out, acc_t<T>* invstd_out, Welford* wsm, double (*stat)[2]) {
    constexpr int V = Pack<T>::N;
    const int tx = threadIdx.x, ty = threadIdx.y, TX = blockDim.x;
    const int wpr = TX >> 5;  // warps per row
    const long long upr = (K + V - 1) / V;
    Welford w = welford_empty();
    if (active) {
        for (long long u = tx; u < upr; u += TX) {
            T v[V];
            const int cnt = load_batch(xr + u * V, K - u * V, v);
            w = merge(w, welford_batch(v, cnt));
        }
    }
    w = warp_reduce(w);
    if ((tx & 31) == 0) wsm[ty * wpr + (tx >> 5)] = w;
    __syncthreads();
    if (tx == 0) {
        Welford t = wsm[ty * wpr];
        for (int i = 1; i < wpr; ++i) t = merge(t, wsm[ty * wpr + i]);
        const double mean = t.mean;
        const double invstd = 1.0 / sqrt(t.m2 / t.n + eps);
        stat[ty][0] = mean;
        stat[ty][1] = invstd;
        if (active) {
            mean_out[row] = static_cast<acc_t<T>>(mean);
            invstd_out[row] = static_cast<acc_t<T>>(invstd);
        }
    }
    __syncthreads();
}

}  // namespace mg

#endif  // MINIGRAD_KERNELS_COMMON_CUH
