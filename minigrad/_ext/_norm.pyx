# cython: language_level=3
"""Fused normalization kernels (float32 and float64 from one source).

Two canonical views serve every normalizer:

* per-channel kernels on an ``(N, C, S)`` view (statistics of channel c over
  N·S values): ``batch_norm_forward_train``, ``batch_norm_backward`` and the
  inference multiply-add ``channel_affine``. BatchNorm1d on (N, C) is S = 1,
  on (N, C, L) S = L, BatchNorm2d S = H·W;
* per-row kernels on an ``(R, K)`` view: ``row_norm_forward`` and
  ``row_norm_backward`` (LayerNorm R = N, InstanceNorm R = N·C, GroupNorm
  R = N·G).

How they are fast and accurate:

* Fused per channel (or row): the statistics pass streams the channel from
  memory once; the second and third passes find it in L2 (a channel of a
  (32, 64, 56, 56) float32 tensor is 400 KB), so a training forward moves
  about 3·S bytes (read x, write y and its write-allocate) instead of 5·S.
  Each thread takes a contiguous range of channels and overlaps the output
  pass of one channel with the memory-bound statistics pass of the next
  (same for the two passes of the backward).
* Statistics by two passes (mean, then squared deviations from it), never
  E[x²] - E[x]²; sums accumulate in double with several independent
  accumulators so a reduction is not bound by the latency of one add.
* Outputs are computed in the input's precision from centred values:
  ``(x - mean_hi) - mean_lo`` with the double mean split into two floats,
  which keeps float32 outputs accurate to rounding even when the mean is
  large compared with the spread (a mean of 1e4 and a std of 1).
* For S = 1 the (N, C) matrix is walked row by row, accumulating a block
  of per-channel vectors (contiguous, vectorizable), never down columns.
* The GIL is released; channels (rows, for the affine pass) are spread over
  OpenMP threads once an input is large enough to pay for the fork/join.
* Outputs of ``STREAM_MIN_BYTES`` (16 MiB) and more are written with
  streaming stores: they bypass the caches and skip the write-allocate
  read, so a large training forward moves 2·S bytes instead of 3·S.
* Compiled twice from this one source: baseline x86-64 here, and AVX2+FMA
  in ``_norm_avx2`` (which includes this file), picked at run time by the
  CPU backend; the reductions convert float32 to double, which 256-bit
  vectors do twice as fast.

Every function writes into caller-allocated outputs (the CPU backend
allocates them) and checks only what it must: shapes must agree (the
caller's job), and the last axis of every array must have unit stride
(checked here); any other strides are fine.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt, NAN

from minigrad._ext._omp_compat cimport omp_get_max_threads

cdef extern from *:
    """
    /* _norm_avx2.pyx defines MINIGRAD_NORM_SIMD before including this file. */
    #ifndef MINIGRAD_NORM_SIMD
    #define MINIGRAD_NORM_SIMD "baseline"
    #endif
    static int minigrad_cpu_has_avx2_fma(void) {
    #if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    #else
        return 0;
    #endif
    }
    """
    const char* MINIGRAD_NORM_SIMD
    int minigrad_cpu_has_avx2_fma() nogil

# Streaming (non-temporal) stores for the output passes of large tensors: an
# output bigger than the caches is not read back soon, and a normal store
# first reads every line it writes (the write-allocate), a third of a
# training forward's traffic. x86 only (SSE2, or AVX in the AVX2 build);
# elsewhere these are the plain loops.
cdef extern from *:
    r"""
    #include <stdint.h>
    #if defined(__AVX__)
      #include <immintrin.h>
      #define MG_NT 32
    #elif defined(__SSE2__) || defined(_M_X64)
      #include <emmintrin.h>
      #define MG_NT 16
    #else
      #define MG_NT 0
    #endif
    #if MG_NT == 32 && defined(__FMA__)
      #define MG_MADD_PS(v, a, b) _mm256_fmadd_ps(v, a, b)
      #define MG_MADD_PD(v, a, b) _mm256_fmadd_pd(v, a, b)
      #define MG_NMADD_PS(c, d, t) _mm256_fnmadd_ps(c, d, t)
      #define MG_NMADD_PD(c, d, t) _mm256_fnmadd_pd(c, d, t)
    #elif MG_NT == 32
      #define MG_MADD_PS(v, a, b) _mm256_add_ps(_mm256_mul_ps(v, a), b)
      #define MG_MADD_PD(v, a, b) _mm256_add_pd(_mm256_mul_pd(v, a), b)
      #define MG_NMADD_PS(c, d, t) _mm256_sub_ps(t, _mm256_mul_ps(c, d))
      #define MG_NMADD_PD(c, d, t) _mm256_sub_pd(t, _mm256_mul_pd(c, d))
    #elif MG_NT == 16
      #define MG_MADD_PS(v, a, b) _mm_add_ps(_mm_mul_ps(v, a), b)
      #define MG_MADD_PD(v, a, b) _mm_add_pd(_mm_mul_pd(v, a), b)
      #define MG_NMADD_PS(c, d, t) _mm_sub_ps(t, _mm_mul_ps(c, d))
      #define MG_NMADD_PD(c, d, t) _mm_sub_pd(t, _mm_mul_pd(c, d))
    #endif
    #if MG_NT == 32
      #define MG_VF __m256
      #define MG_VD __m256d
      #define MG_SET1_PS _mm256_set1_ps
      #define MG_SET1_PD _mm256_set1_pd
      #define MG_LOAD_PS _mm256_loadu_ps
      #define MG_LOAD_PD _mm256_loadu_pd
      #define MG_SUB_PS _mm256_sub_ps
      #define MG_SUB_PD _mm256_sub_pd
      #define MG_STREAM_PS _mm256_stream_ps
      #define MG_STREAM_PD _mm256_stream_pd
    #elif MG_NT == 16
      #define MG_VF __m128
      #define MG_VD __m128d
      #define MG_SET1_PS _mm_set1_ps
      #define MG_SET1_PD _mm_set1_pd
      #define MG_LOAD_PS _mm_loadu_ps
      #define MG_LOAD_PD _mm_loadu_pd
      #define MG_SUB_PS _mm_sub_ps
      #define MG_SUB_PD _mm_sub_pd
      #define MG_STREAM_PS _mm_stream_ps
      #define MG_STREAM_PD _mm_stream_pd
    #endif

    static inline void mg_store_fence(void) {
    #if MG_NT
        _mm_sfence();  /* streaming stores are weakly ordered: publish them */
    #endif
    }

    /* One generator per type: T the scalar, V the vector, W elements per vector. */
    #define MG_NT_KERNELS(T, SUF, V, W, SET1, LOAD, SUB, STREAM, MADD, NMADD)                           \
    static void mg_nt_centred_##SUF(const T* x, T* y, Py_ssize_t n, T h, T l, T a, T b) {                   \
        Py_ssize_t i = 0;                                                                                   \
        MG_NT_BODY_CENTRED(T, V, W, SET1, LOAD, SUB, STREAM, MADD)                                          \
        for (; i < n; i++) y[i] = ((x[i] - h) - l) * a + b;                                                  \
    }                                                                                                       \
    static void mg_nt_madd_##SUF(const T* x, T* y, Py_ssize_t n, T a, T b) {                                \
        Py_ssize_t i = 0;                                                                                   \
        MG_NT_BODY_MADD(T, V, W, SET1, LOAD, STREAM, MADD)                                                  \
        for (; i < n; i++) y[i] = x[i] * a + b;                                                              \
    }                                                                                                       \
    static void mg_nt_dx_##SUF(const T* g, const T* x, T* d, Py_ssize_t n, T a, T b, T c, T h, T l) {        \
        Py_ssize_t i = 0;                                                                                   \
        MG_NT_BODY_DX(T, V, W, SET1, LOAD, SUB, STREAM, MADD, NMADD)                                        \
        for (; i < n; i++) d[i] = a * g[i] + b - c * ((x[i] - h) - l);                                      \
    }

    #if MG_NT
    #define MG_PEEL(out, expr) for (; i < n && ((uintptr_t)(out + i) % MG_NT); i++) out[i] = expr;
    #define MG_NT_BODY_CENTRED(T, V, W, SET1, LOAD, SUB, STREAM, MADD)                                      \
        MG_PEEL(y, ((x[i] - h) - l) * a + b)                                                                \
        { const V vh = SET1(h), vl = SET1(l), va = SET1(a), vb = SET1(b);                                   \
          for (; i + W <= n; i += W) STREAM(y + i, MADD(SUB(SUB(LOAD(x + i), vh), vl), va, vb)); }
    #define MG_NT_BODY_MADD(T, V, W, SET1, LOAD, STREAM, MADD)                                              \
        MG_PEEL(y, x[i] * a + b)                                                                            \
        { const V va = SET1(a), vb = SET1(b);                                                               \
          for (; i + W <= n; i += W) STREAM(y + i, MADD(LOAD(x + i), va, vb)); }
    #define MG_NT_BODY_DX(T, V, W, SET1, LOAD, SUB, STREAM, MADD, NMADD)                                    \
        MG_PEEL(d, a * g[i] + b - c * ((x[i] - h) - l))                                                     \
        { const V va = SET1(a), vb = SET1(b), vc = SET1(c), vh = SET1(h), vl = SET1(l);                     \
          for (; i + W <= n; i += W)                                                                        \
              STREAM(d + i, NMADD(vc, SUB(SUB(LOAD(x + i), vh), vl), MADD(LOAD(g + i), va, vb))); }
    MG_NT_KERNELS(float, f32, MG_VF, (MG_NT / 4), MG_SET1_PS, MG_LOAD_PS, MG_SUB_PS, MG_STREAM_PS, MG_MADD_PS,
                  MG_NMADD_PS)
    MG_NT_KERNELS(double, f64, MG_VD, (MG_NT / 8), MG_SET1_PD, MG_LOAD_PD, MG_SUB_PD, MG_STREAM_PD, MG_MADD_PD,
                  MG_NMADD_PD)
    #else
    #define MG_NT_BODY_CENTRED(T, V, W, SET1, LOAD, SUB, STREAM, MADD)
    #define MG_NT_BODY_MADD(T, V, W, SET1, LOAD, STREAM, MADD)
    #define MG_NT_BODY_DX(T, V, W, SET1, LOAD, SUB, STREAM, MADD, NMADD)
    MG_NT_KERNELS(float, f32, void, 1, _, _, _, _, _, _)
    MG_NT_KERNELS(double, f64, void, 1, _, _, _, _, _, _)
    #endif
    """
    int MG_NT
    void mg_store_fence() nogil
    void mg_nt_centred_f32(const float* x, float* y, Py_ssize_t n, float h, float l, float a, float b) nogil
    void mg_nt_centred_f64(const double* x, double* y, Py_ssize_t n, double h, double l, double a,
                           double b) nogil
    void mg_nt_madd_f32(const float* x, float* y, Py_ssize_t n, float a, float b) nogil
    void mg_nt_madd_f64(const double* x, double* y, Py_ssize_t n, double a, double b) nogil
    void mg_nt_dx_f32(const float* g, const float* x, float* d, Py_ssize_t n, float a, float b, float c, float h,
                      float l) nogil
    void mg_nt_dx_f64(const double* g, const double* x, double* d, Py_ssize_t n, double a, double b, double c,
                      double h, double l) nogil

# Inputs smaller than this many elements run on one thread: the fork/join of
# an OpenMP region costs a few microseconds, more than it saves below ~64K.
cdef Py_ssize_t PARALLEL_MIN_SIZE = 1 << 16
# Outputs of at least this many bytes are written with streaming stores
# (larger than a typical last-level cache share: the data is not reused soon).
cdef Py_ssize_t STREAM_MIN_BYTES = 16 << 20
# Channels processed together by the S = 1 kernels (stack buffers of this
# many doubles; a block of 256 float32 channels × 256 rows is 256 KB).
cdef enum:
    BLOCK = 256
    # Elements per step of the pipelined loops (a few KB: stays in L1).
    PIPE_BLOCK = 512


def simd():
    """The instruction set this build of the kernels targets: "baseline" or "avx2"."""
    return MINIGRAD_NORM_SIMD.decode()


def cpu_has_avx2_fma():
    """True if this processor (and its OS) can run the AVX2+FMA build, ``_norm_avx2``."""
    return bool(minigrad_cpu_has_avx2_fma())


def parallel_min_size():
    """Number of elements from which the kernels use several threads."""
    return PARALLEL_MIN_SIZE


def stream_vector_bytes():
    """Width in bytes of this build's streaming stores (32 AVX, 16 SSE2, 0 none: plain stores)."""
    return MG_NT


def stream_min_bytes():
    """Output size (bytes) from which the per-channel kernels use streaming stores."""
    return STREAM_MIN_BYTES


def set_stream_min_bytes(Py_ssize_t n):
    """Set the streaming-store threshold (0: always, for tests; a huge value: never)."""
    global STREAM_MIN_BYTES
    if n < 0:
        raise ValueError(f"the threshold must be >= 0, got {n}")
    STREAM_MIN_BYTES = n


def set_parallel_min_size(Py_ssize_t n):
    """Set the size threshold for multithreading (for benchmarks and tests)."""
    global PARALLEL_MIN_SIZE
    if n < 0:
        raise ValueError(f"the threshold must be >= 0, got {n}")
    PARALLEL_MIN_SIZE = n


# ------------------------------------------------------------------ helpers
cdef int _check_strides(Py_ssize_t* shape, Py_ssize_t* strides, int ndim, size_t itemsize,
                        str name) except -1:
    """The kernels walk the last axis with unit stride and step the others in items."""
    cdef int i
    if shape[ndim - 1] > 1 and strides[ndim - 1] != <Py_ssize_t>itemsize:
        raise ValueError(f"{name}: the last axis must be contiguous (stride {itemsize} bytes), "
                         f"got stride {strides[ndim - 1]}")
    for i in range(ndim):
        if strides[i] % <Py_ssize_t>itemsize:
            raise ValueError(f"{name}: strides must be multiples of the item size, got {strides[i]}")
    return 0


cdef inline double _sum(const floating* p, Py_ssize_t n) noexcept nogil:
    """Σ p[i] in double, eight independent accumulators."""
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        a0 += p[i]
        a1 += p[i + 1]
        a2 += p[i + 2]
        a3 += p[i + 3]
        a4 += p[i + 4]
        a5 += p[i + 5]
        a6 += p[i + 6]
        a7 += p[i + 7]
        i += 8
    while i < n:
        a0 += p[i]
        i += 1
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


cdef inline double _sum_sq_dev(const floating* p, Py_ssize_t n, double mean) noexcept nogil:
    """Σ (p[i] - mean)² in double (the second pass of a two-pass variance)."""
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0
    cdef double d0, d1, d2, d3, d4, d5, d6, d7
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        d0 = p[i] - mean
        d1 = p[i + 1] - mean
        d2 = p[i + 2] - mean
        d3 = p[i + 3] - mean
        d4 = p[i + 4] - mean
        d5 = p[i + 5] - mean
        d6 = p[i + 6] - mean
        d7 = p[i + 7] - mean
        a0 += d0 * d0
        a1 += d1 * d1
        a2 += d2 * d2
        a3 += d3 * d3
        a4 += d4 * d4
        a5 += d5 * d5
        a6 += d6 * d6
        a7 += d7 * d7
        i += 8
    while i < n:
        d0 = p[i] - mean
        a0 += d0 * d0
        i += 1
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


cdef inline void _sum_g_gd(const floating* g, const floating* x, Py_ssize_t n, floating mhi, floating mlo,
                           double* sum_g, double* sum_gd) noexcept nogil:
    """Adds Σ g[i] and Σ g[i]·((x[i] - mhi) - mlo) to the two double outputs.

    The centred products are formed in the working precision (one rounding
    per term, like any float32 product) a block at a time into an L1
    buffer, and every sum is accumulated in double by ``_sum`` (a fused
    loop mixing float products and double accumulators does not vectorize).
    """
    cdef floating prod[PIPE_BLOCK]
    cdef Py_ssize_t i0 = 0, nb, j
    cdef double sg = 0, sp = 0
    while i0 < n:
        nb = min(<Py_ssize_t>PIPE_BLOCK, n - i0)
        for j in range(nb):
            prod[j] = g[i0 + j] * ((x[i0 + j] - mhi) - mlo)
        sg += _sum(g + i0, nb)
        sp += _sum(&prod[0], nb)
        i0 += nb
    sum_g[0] += sg
    sum_gd[0] += sp


cdef inline void _centred_affine(const floating* x, floating* y, Py_ssize_t n, floating mhi, floating mlo,
                                 floating a, floating b, bint stream) noexcept nogil:
    """y = ((x - mhi) - mlo)·a + b in the input's precision (mhi + mlo = the mean)."""
    cdef Py_ssize_t i
    if stream:
        if floating is float:
            mg_nt_centred_f32(x, y, n, mhi, mlo, a, b)
        else:
            mg_nt_centred_f64(x, y, n, mhi, mlo, a, b)
        return
    for i in range(n):
        y[i] = ((x[i] - mhi) - mlo) * a + b


cdef inline void _dx_affine(const floating* g, const floating* x, floating* dx, Py_ssize_t n, floating a,
                            floating b, floating c, floating mhi, floating mlo, bint stream) noexcept nogil:
    """dx = a·g + b - c·((x - mhi) - mlo)."""
    cdef Py_ssize_t i
    if stream:
        if floating is float:
            mg_nt_dx_f32(g, x, dx, n, a, b, c, mhi, mlo)
        else:
            mg_nt_dx_f64(g, x, dx, n, a, b, c, mhi, mlo)
        return
    for i in range(n):
        dx[i] = a * g[i] + b - c * ((x[i] - mhi) - mlo)


cdef inline void _multiply_add(const floating* x, floating* y, Py_ssize_t n, floating a, floating b,
                               bint stream) noexcept nogil:
    """y = x·a + b."""
    cdef Py_ssize_t i
    if stream:
        if floating is float:
            mg_nt_madd_f32(x, y, n, a, b)
        else:
            mg_nt_madd_f64(x, y, n, a, b)
        return
    for i in range(n):
        y[i] = x[i] * a + b


cdef inline void _split(double v, floating* hi, floating* lo) noexcept nogil:
    """v ≈ hi + lo with both in the working precision (lo = 0 for double)."""
    hi[0] = <floating>v
    lo[0] = <floating>(v - <double>hi[0])


# ------------------------------------------ per-channel kernels, S > 1
cdef void _bn_train_channels(const floating* x, floating* y, Py_ssize_t c_begin, Py_ssize_t c_end, Py_ssize_t N,
                             Py_ssize_t S, Py_ssize_t xs0, Py_ssize_t xs1, Py_ssize_t ys0, Py_ssize_t ys1,
                             const floating* w, const floating* b, double eps, floating* mean_out,
                             floating* var_out, bint stream) noexcept nogil:
    """Channels [c_begin, c_end): x[n·xs0 + c·xs1 + s] (y likewise).

    Software-pipelined: the output pass of channel c (from L2) runs
    interleaved, block by block, with the first statistics pass of channel
    c + 1 (from memory), so the thread keeps memory busy while it computes.
    """
    cdef Py_ssize_t n, c, s0, ns
    cdef double m = <double>(N * S)
    cdef double total = 0, ss, mean, var, a, beta
    cdef const floating* xc
    cdef const floating* xn
    cdef floating* yc
    cdef floating mhi, mlo
    if c_begin >= c_end:
        return
    for n in range(N):
        total += _sum(x + c_begin * xs1 + n * xs0, S)
    for c in range(c_begin, c_end):
        xc = x + c * xs1
        yc = y + c * ys1
        mean = total / m
        ss = 0
        for n in range(N):
            ss += _sum_sq_dev(xc + n * xs0, S, mean)
        var = ss / m
        a = 1.0 / sqrt(var + eps)
        if w != NULL:
            a = a * w[c]
        beta = b[c] if b != NULL else 0.0
        _split(mean, &mhi, &mlo)
        total = 0
        if c + 1 < c_end:
            xn = x + (c + 1) * xs1
            for n in range(N):
                s0 = 0
                while s0 < S:
                    ns = min(PIPE_BLOCK, S - s0)
                    _centred_affine(xc + n * xs0 + s0, yc + n * ys0 + s0, ns, mhi, mlo, <floating>a, <floating>beta,
                                    stream)
                    total += _sum(xn + n * xs0 + s0, ns)
                    s0 += ns
        else:
            for n in range(N):
                _centred_affine(xc + n * xs0, yc + n * ys0, S, mhi, mlo, <floating>a, <floating>beta, stream)
        mean_out[c] = <floating>mean
        var_out[c] = <floating>var
    if stream:
        mg_store_fence()


cdef void _bn_backward_channels(const floating* g, const floating* x, floating* dx, Py_ssize_t c_begin,
                                Py_ssize_t c_end, Py_ssize_t N, Py_ssize_t S, Py_ssize_t gs0, Py_ssize_t gs1,
                                Py_ssize_t xs0, Py_ssize_t xs1, Py_ssize_t ds0, Py_ssize_t ds1,
                                const floating* mean, const floating* invstd, const floating* w, bint training,
                                floating* dw_out, floating* db_out, bint stream) noexcept nogil:
    """Channels [c_begin, c_end): the sums Σg, Σg·x̂ (pass 1), then dx (pass 2).

    Pipelined like the forward: pass 2 of channel c runs block by block
    interleaved with pass 1 of channel c + 1.
    """
    cdef Py_ssize_t n, c, s0, ns
    cdef double m = <double>(N * S)
    cdef double sg = 0, sgx = 0, nsg, nsgx, k, inv, dweight
    cdef floating mhi, mlo, nhi, nlo, ka, kb, kc
    cdef const floating* gc
    cdef const floating* xc
    cdef floating* dc
    cdef const floating* gn
    cdef const floating* xn
    if c_begin >= c_end:
        return
    _split(<double>mean[c_begin], &mhi, &mlo)
    for n in range(N):
        _sum_g_gd(g + c_begin * gs1 + n * gs0, x + c_begin * xs1 + n * xs0, S, mhi, mlo, &sg, &sgx)
    for c in range(c_begin, c_end):
        gc = g + c * gs1
        xc = x + c * xs1
        dc = dx + c * ds1
        inv = invstd[c]
        dweight = sgx * inv  # Σ g·x̂
        k = inv * (w[c] if w != NULL else 1.0)
        # dx = k·(g - Σg/m - x̂·Σg·x̂/m) = k·g - k·Σg/m - (k·invstd·Σg·x̂/m)·(x - mean)
        ka = <floating>k
        kb = <floating>(-k * sg / m)
        kc = <floating>(k * inv * dweight / m)
        dw_out[c] = <floating>dweight
        db_out[c] = <floating>sg
        nsg = 0
        nsgx = 0
        if c + 1 < c_end:
            gn = g + (c + 1) * gs1
            xn = x + (c + 1) * xs1
            _split(<double>mean[c + 1], &nhi, &nlo)
            for n in range(N):
                s0 = 0
                while s0 < S:
                    ns = min(<Py_ssize_t>PIPE_BLOCK, S - s0)
                    if training:
                        _dx_affine(gc + n * gs0 + s0, xc + n * xs0 + s0, dc + n * ds0 + s0, ns, ka, kb, kc, mhi,
                                   mlo, stream)
                    else:  # fixed statistics: dx = k·g (x does not enter)
                        _multiply_add(gc + n * gs0 + s0, dc + n * ds0 + s0, ns, ka, <floating>0, stream)
                    _sum_g_gd(gn + n * gs0 + s0, xn + n * xs0 + s0, ns, nhi, nlo, &nsg, &nsgx)
                    s0 += ns
            mhi, mlo = nhi, nlo
        else:
            for n in range(N):
                if training:
                    _dx_affine(gc + n * gs0, xc + n * xs0, dc + n * ds0, S, ka, kb, kc, mhi, mlo, stream)
                else:
                    _multiply_add(gc + n * gs0, dc + n * ds0, S, ka, <floating>0, stream)
        sg, sgx = nsg, nsgx
    if stream:
        mg_store_fence()


# ------------------------------------------- per-channel kernels, S == 1
cdef void _bn_train_block(const floating* x, floating* y, Py_ssize_t N, Py_ssize_t nb, Py_ssize_t ldx,
                          Py_ssize_t ldy, const floating* w, const floating* b, double eps, floating* mean_out,
                          floating* var_out) noexcept nogil:
    """Channels [0, nb) of an (N, ·) matrix with row strides ldx/ldy (nb <= BLOCK).

    Each pass walks the rows and updates a vector of per-channel sums;
    four rows go into one update, so the sums are loaded and stored once
    per four rows (the loop is bound by that traffic, not by the adds).
    """
    cdef double acc[BLOCK]
    cdef double mean[BLOCK]
    cdef floating mhi[BLOCK]
    cdef floating mlo[BLOCK]
    cdef floating a[BLOCK]
    cdef floating sh[BLOCK]
    cdef Py_ssize_t n, j
    cdef const floating* r0
    cdef const floating* r1
    cdef const floating* r2
    cdef const floating* r3
    cdef floating* o0
    cdef floating* o1
    cdef double d0, d1, d2, d3, var, inv_m = 1.0 / <double>N
    for j in range(nb):
        acc[j] = 0
    n = 0
    while n + 4 <= N:
        r0 = x + n * ldx
        r1 = r0 + ldx
        r2 = r1 + ldx
        r3 = r2 + ldx
        for j in range(nb):
            acc[j] += (<double>r0[j] + <double>r1[j]) + (<double>r2[j] + <double>r3[j])
        n += 4
    while n < N:
        r0 = x + n * ldx
        for j in range(nb):
            acc[j] += r0[j]
        n += 1
    for j in range(nb):
        mean[j] = acc[j] * inv_m
        acc[j] = 0
    n = 0
    while n + 4 <= N:
        r0 = x + n * ldx
        r1 = r0 + ldx
        r2 = r1 + ldx
        r3 = r2 + ldx
        for j in range(nb):
            d0 = r0[j] - mean[j]
            d1 = r1[j] - mean[j]
            d2 = r2[j] - mean[j]
            d3 = r3[j] - mean[j]
            acc[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
        n += 4
    while n < N:
        r0 = x + n * ldx
        for j in range(nb):
            d0 = r0[j] - mean[j]
            acc[j] += d0 * d0
        n += 1
    for j in range(nb):
        var = acc[j] * inv_m
        d0 = 1.0 / sqrt(var + eps)
        if w != NULL:
            d0 = d0 * w[j]
        a[j] = <floating>d0
        sh[j] = b[j] if b != NULL else 0
        _split(mean[j], &mhi[j], &mlo[j])
        mean_out[j] = <floating>mean[j]
        var_out[j] = <floating>var
    n = 0
    while n + 2 <= N:
        r0 = x + n * ldx
        r1 = r0 + ldx
        o0 = y + n * ldy
        o1 = o0 + ldy
        for j in range(nb):
            o0[j] = ((r0[j] - mhi[j]) - mlo[j]) * a[j] + sh[j]
            o1[j] = ((r1[j] - mhi[j]) - mlo[j]) * a[j] + sh[j]
        n += 2
    if n < N:
        r0 = x + n * ldx
        o0 = y + n * ldy
        for j in range(nb):
            o0[j] = ((r0[j] - mhi[j]) - mlo[j]) * a[j] + sh[j]


cdef void _bn_backward_block(const floating* g, const floating* x, floating* dx, Py_ssize_t N, Py_ssize_t nb,
                             Py_ssize_t ldg, Py_ssize_t ldx, Py_ssize_t ldd, const floating* mean,
                             const floating* invstd, const floating* w, bint training, floating* dw_out,
                             floating* db_out) noexcept nogil:
    """Backward of ``_bn_train_block``'s channels: the sums over four rows per update, then dx."""
    cdef double sg[BLOCK]
    cdef double sgx[BLOCK]
    cdef double mu[BLOCK]
    cdef floating ka[BLOCK]
    cdef floating kb[BLOCK]
    cdef floating kc[BLOCK]
    cdef floating mhi[BLOCK]
    cdef floating mlo[BLOCK]
    cdef Py_ssize_t n, j
    cdef const floating* g0
    cdef const floating* g1
    cdef const floating* g2
    cdef const floating* g3
    cdef const floating* x0
    cdef const floating* x1
    cdef const floating* x2
    cdef const floating* x3
    cdef floating* d0
    cdef double v0, v1, v2, v3, m, k, dweight, inv_m = 1.0 / <double>N
    for j in range(nb):
        sg[j] = 0
        sgx[j] = 0
        mu[j] = mean[j]
    n = 0
    while n + 4 <= N:
        g0 = g + n * ldg
        g1 = g0 + ldg
        g2 = g1 + ldg
        g3 = g2 + ldg
        x0 = x + n * ldx
        x1 = x0 + ldx
        x2 = x1 + ldx
        x3 = x2 + ldx
        for j in range(nb):
            v0 = g0[j]
            v1 = g1[j]
            v2 = g2[j]
            v3 = g3[j]
            m = mu[j]
            sg[j] += (v0 + v1) + (v2 + v3)
            sgx[j] += (v0 * (x0[j] - m) + v1 * (x1[j] - m)) + (v2 * (x2[j] - m) + v3 * (x3[j] - m))
        n += 4
    while n < N:
        g0 = g + n * ldg
        x0 = x + n * ldx
        for j in range(nb):
            v0 = g0[j]
            sg[j] += v0
            sgx[j] += v0 * (x0[j] - mu[j])
        n += 1
    for j in range(nb):
        dweight = sgx[j] * invstd[j]
        k = invstd[j] * (w[j] if w != NULL else 1.0)
        ka[j] = <floating>k
        kb[j] = <floating>(-k * sg[j] * inv_m)
        kc[j] = <floating>(k * invstd[j] * dweight * inv_m)
        _split(mu[j], &mhi[j], &mlo[j])
        dw_out[j] = <floating>dweight
        db_out[j] = <floating>sg[j]
    for n in range(N):
        g0 = g + n * ldg
        x0 = x + n * ldx
        d0 = dx + n * ldd
        if training:
            for j in range(nb):
                d0[j] = ka[j] * g0[j] + kb[j] - kc[j] * ((x0[j] - mhi[j]) - mlo[j])
        else:
            for j in range(nb):
                d0[j] = ka[j] * g0[j]


# ------------------------------------------------------------ entry points
def batch_norm_forward_train(const floating[:, :, :] x, const floating[::1] weight, const floating[::1] bias,
                             double eps, floating[:, :, :] y, floating[::1] mean, floating[::1] var):
    """Training batch norm of an (N, C, S) view into ``y``, ``mean``, ``var`` (biased).

    ``weight``/``bias`` may be None. ``y`` has x's shape; ``mean``/``var``
    shape (C,). N·S must be positive.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t c, nblocks, blk, c0, nb
    cdef bint has_w = weight is not None, has_b = bias is not None
    cdef const floating* wp = &weight[0] if has_w else NULL
    cdef const floating* bp = &bias[0] if has_b else NULL
    cdef bint par = N * C * S >= PARALLEL_MIN_SIZE
    if N * S == 0 or C == 0:
        raise ValueError("batch_norm_forward_train needs at least one value per channel")
    _check_strides(x.shape, x.strides, x.ndim, sizeof(floating), "x")
    _check_strides(y.shape, y.strides, y.ndim, sizeof(floating), "y")
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* yp = &y[0, 0, 0]
    cdef Py_ssize_t xs0 = x.strides[0] // sizeof(floating), xs1 = x.strides[1] // sizeof(floating)
    cdef Py_ssize_t ys0 = y.strides[0] // sizeof(floating), ys1 = y.strides[1] // sizeof(floating)
    if S == 1 and xs1 == 1 and ys1 == 1:
        nblocks = (C + BLOCK - 1) // BLOCK
        with nogil:
            for blk in prange(nblocks, schedule="static", use_threads_if=par and nblocks > 1):
                c0 = blk * BLOCK
                nb = min(BLOCK, C - c0)
                _bn_train_block(xp + c0, yp + c0, N, nb, xs0, ys0, wp + c0 if has_w else NULL,
                                bp + c0 if has_b else NULL, eps, &mean[c0], &var[c0])
        return
    cdef Py_ssize_t nchunks = min(C, omp_get_max_threads()) if par else 1
    cdef bint stream = N * C * S * <Py_ssize_t>sizeof(floating) >= STREAM_MIN_BYTES
    with nogil:
        for blk in prange(nchunks, schedule="static", use_threads_if=nchunks > 1):
            _bn_train_channels(xp, yp, blk * C // nchunks, (blk + 1) * C // nchunks, N, S, xs0, xs1, ys0, ys1,
                               wp, bp, eps, &mean[0], &var[0], stream)


def batch_norm_backward(const floating[:, :, :] grad, const floating[:, :, :] x, const floating[::1] mean,
                        const floating[::1] invstd, const floating[::1] weight, bint training,
                        floating[:, :, :] dx, floating[::1] dweight, floating[::1] dbias):
    """Gradients of batch norm on an (N, C, S) view into ``dx``, ``dweight``, ``dbias``.

    ``dweight = Σ grad·x̂``, ``dbias = Σ grad`` per channel; ``dx`` uses the
    batch statistics' dependence on x when ``training``. ``weight`` may be None.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t c, nblocks, blk, c0, nb
    cdef bint has_w = weight is not None
    cdef const floating* wp = &weight[0] if has_w else NULL
    cdef bint par = N * C * S >= PARALLEL_MIN_SIZE
    if C == 0:
        return
    if N * S == 0:
        dweight[:] = 0
        dbias[:] = 0
        return
    _check_strides(grad.shape, grad.strides, grad.ndim, sizeof(floating), "grad")
    _check_strides(x.shape, x.strides, x.ndim, sizeof(floating), "x")
    _check_strides(dx.shape, dx.strides, dx.ndim, sizeof(floating), "dx")
    cdef const floating* gp = &grad[0, 0, 0]
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* dp = &dx[0, 0, 0]
    cdef Py_ssize_t gs0 = grad.strides[0] // sizeof(floating), gs1 = grad.strides[1] // sizeof(floating)
    cdef Py_ssize_t xs0 = x.strides[0] // sizeof(floating), xs1 = x.strides[1] // sizeof(floating)
    cdef Py_ssize_t ds0 = dx.strides[0] // sizeof(floating), ds1 = dx.strides[1] // sizeof(floating)
    if S == 1 and gs1 == 1 and xs1 == 1 and ds1 == 1:
        nblocks = (C + BLOCK - 1) // BLOCK
        with nogil:
            for blk in prange(nblocks, schedule="static", use_threads_if=par and nblocks > 1):
                c0 = blk * BLOCK
                nb = min(BLOCK, C - c0)
                _bn_backward_block(gp + c0, xp + c0, dp + c0, N, nb, gs0, xs0, ds0, &mean[c0], &invstd[c0],
                                   wp + c0 if has_w else NULL, training, &dweight[c0], &dbias[c0])
        return
    cdef Py_ssize_t nchunks = min(C, omp_get_max_threads()) if par else 1
    cdef bint stream = N * C * S * <Py_ssize_t>sizeof(floating) >= STREAM_MIN_BYTES
    with nogil:
        for blk in prange(nchunks, schedule="static", use_threads_if=nchunks > 1):
            _bn_backward_channels(gp, xp, dp, blk * C // nchunks, (blk + 1) * C // nchunks, N, S, gs0, gs1, xs0,
                                  xs1, ds0, ds1, &mean[0], &invstd[0], wp, training, &dweight[0], &dbias[0],
                                  stream)


def channel_affine(const floating[:, :, :] x, const floating[::1] scale, const floating[::1] shift,
                   floating[:, :, :] y):
    """``y[n, c, s] = x[n, c, s]·scale[c] + shift[c]`` (inference batch norm)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t r, n, c, j
    cdef bint par = N * C * S >= PARALLEL_MIN_SIZE
    cdef bint stream = N * C * S * <Py_ssize_t>sizeof(floating) >= STREAM_MIN_BYTES
    if N * C * S == 0:
        return
    _check_strides(x.shape, x.strides, x.ndim, sizeof(floating), "x")
    _check_strides(y.shape, y.strides, y.ndim, sizeof(floating), "y")
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* yp = &y[0, 0, 0]
    cdef const floating* sc = &scale[0]
    cdef const floating* sh = &shift[0]
    cdef Py_ssize_t xs0 = x.strides[0] // sizeof(floating), xs1 = x.strides[1] // sizeof(floating)
    cdef Py_ssize_t ys0 = y.strides[0] // sizeof(floating), ys1 = y.strides[1] // sizeof(floating)
    cdef const floating* xr
    cdef floating* yr
    if S == 1 and xs1 == 1 and ys1 == 1:
        with nogil:
            for n in prange(N, schedule="static", use_threads_if=par and N > 1):
                xr = xp + n * xs0
                yr = yp + n * ys0
                for j in range(C):
                    yr[j] = xr[j] * sc[j] + sh[j]
        return
    with nogil:
        for r in prange(N * C, schedule="static", use_threads_if=par and N * C > 1):
            n = r // C
            c = r - n * C
            _multiply_add(xp + n * xs0 + c * xs1, yp + n * ys0 + c * ys1, S, sc[c], sh[c], stream)
            if stream:
                mg_store_fence()


# ---------------------------------------------------------- per-row kernels
cdef void _row_forward(const floating* x, floating* xhat, Py_ssize_t K, double eps, floating* mean_out,
                       floating* invstd_out) noexcept nogil:
    cdef double mean = _sum(x, K) / <double>K
    cdef double var = _sum_sq_dev(x, K, mean) / <double>K
    cdef double inv = 1.0 / sqrt(var + eps)
    cdef floating mhi, mlo
    _split(mean, &mhi, &mlo)
    _centred_affine(x, xhat, K, mhi, mlo, <floating>inv, <floating>0, False)
    mean_out[0] = <floating>mean
    invstd_out[0] = <floating>inv


cdef void _row_backward(const floating* g, const floating* xhat, floating* dx, Py_ssize_t K,
                        double invstd) noexcept nogil:
    cdef double sg = 0, sgx = 0
    cdef double inv_k = 1.0 / <double>K
    _sum_g_gd(g, xhat, K, <floating>0, <floating>0, &sg, &sgx)
    # dx = invstd·(g - mean(g) - x̂·mean(g·x̂))
    _dx_affine(g, xhat, dx, K, <floating>invstd, <floating>(-invstd * sg * inv_k),
               <floating>(invstd * sgx * inv_k), <floating>0, <floating>0, False)


def row_norm_forward(const floating[:, :] x, double eps, floating[:, :] xhat, floating[::1] mean,
                     floating[::1] invstd):
    """Normalize each row of an (R, K) view: ``xhat = (x - mean)·invstd`` (biased variance)."""
    cdef Py_ssize_t R = x.shape[0], K = x.shape[1], r
    cdef bint par = R * K >= PARALLEL_MIN_SIZE
    if R == 0:
        return
    if K == 0:
        mean[:] = NAN
        invstd[:] = NAN
        return
    _check_strides(x.shape, x.strides, x.ndim, sizeof(floating), "x")
    _check_strides(xhat.shape, xhat.strides, xhat.ndim, sizeof(floating), "xhat")
    cdef const floating* xp = &x[0, 0]
    cdef floating* hp = &xhat[0, 0]
    cdef Py_ssize_t xs0 = x.strides[0] // sizeof(floating), hs0 = xhat.strides[0] // sizeof(floating)
    with nogil:
        for r in prange(R, schedule="static", use_threads_if=par and R > 1):
            _row_forward(xp + r * xs0, hp + r * hs0, K, eps, &mean[r], &invstd[r])


def row_norm_backward(const floating[:, :] grad, const floating[:, :] xhat, const floating[::1] invstd,
                      floating[:, :] dx):
    """``dx = invstd·(g - mean(g) - x̂·mean(g·x̂))`` per row of an (R, K) view."""
    cdef Py_ssize_t R = grad.shape[0], K = grad.shape[1], r
    cdef bint par = R * K >= PARALLEL_MIN_SIZE
    if R == 0 or K == 0:
        return
    _check_strides(grad.shape, grad.strides, grad.ndim, sizeof(floating), "grad")
    _check_strides(xhat.shape, xhat.strides, xhat.ndim, sizeof(floating), "xhat")
    _check_strides(dx.shape, dx.strides, dx.ndim, sizeof(floating), "dx")
    cdef const floating* gp = &grad[0, 0]
    cdef const floating* hp = &xhat[0, 0]
    cdef floating* dp = &dx[0, 0]
    cdef Py_ssize_t gs0 = grad.strides[0] // sizeof(floating), hs0 = xhat.strides[0] // sizeof(floating)
    cdef Py_ssize_t ds0 = dx.strides[0] // sizeof(floating)
    with nogil:
        for r in prange(R, schedule="static", use_threads_if=par and R > 1):
            _row_backward(gp + r * gs0, hp + r * hs0, dp + r * ds0, K, invstd[r])
