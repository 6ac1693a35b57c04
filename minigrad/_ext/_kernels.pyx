# cython: language_level=3
"""Fused normalization kernels (float32 and float64 from one source).

Three canonical views serve every normalizer:

* per-channel kernels on an ``(N, C, S)`` view (statistics of channel c over
  N·S values): ``batch_norm_forward_train``, ``batch_norm_backward`` and the
  inference multiply-add ``channel_affine``. BatchNorm1d on (N, C) is S = 1,
  on (N, C, L) S = L, BatchNorm2d S = H·W;
* per-group kernels on an ``(N, C, S)`` view with G groups (statistics of
  each sample's C/G consecutive channels, the affine per channel):
  ``group_norm_forward`` and ``group_norm_backward`` (GroupNorm; LayerNorm
  is (R, K, 1) with one group and a per-element affine, InstanceNorm G = C);
* per-row kernels on an ``(R, K)`` view producing x̂ only:
  ``row_norm_forward`` and ``row_norm_backward`` (for plugins).

How they are fast and accurate:

* The inner loops are the vector primitives of ``_norm_simd.h`` (GCC
  vector extensions at the build's width); this file orchestrates them.
* Statistics in one read of the data: blocks small enough for L1 get two
  passes each (mean, then squared deviations), merged with Chan's formula,
  never E[x²] - E[x]²; every sum accumulates in double.
* Fused per channel (or row): the statistics pass streams the channel from
  memory once, the output pass finds it in L2, so a training forward moves
  about 3·S bytes (read x, write y and its write-allocate) instead of 5·S.
  Each thread takes a contiguous range of channels and overlaps the output
  pass of one channel with the statistics pass of the next, block by
  block, and prefetches the statistics stream a few KiB ahead in software:
  the hardware prefetchers stop at every 4 KiB page and at every row, and
  without this a thread waited on memory for most of the pass.
* Outputs are computed in the input's precision from centred values:
  ``(x - mean_hi) - mean_lo`` with the double mean split into two floats,
  which keeps float32 outputs accurate to rounding even when the mean is
  large compared with the spread (a mean of 1e4 and a std of 1).
* For S = 1 the (N, C) matrix is walked row by row, accumulating a block
  of per-channel vectors (contiguous, vectorizable), never down columns.
* The GIL is released; channels, rows or flat ranges are spread over
  OpenMP threads once an input is large enough to pay for the fork/join.
* Outputs of ``STREAM_MIN_BYTES`` (16 MiB) and more are written with
  streaming stores: they bypass the caches and skip the write-allocate
  read, so a large training forward moves 2·S bytes instead of 3·S.
* Compiled three times from this one source: baseline x86-64 here,
  AVX2+FMA in ``_norm_avx2`` and AVX-512 in ``_norm_avx512`` (which
  include this file), picked at run time by the CPU backend; the
  reductions convert float32 to double, which wider vectors do faster.

Every function writes into caller-allocated outputs (the CPU backend
allocates them) and checks only what it must: shapes must agree (the
caller's job), and the last axis of every array must have unit stride
(checked here); any other strides are fine.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport sqrt, NAN
from libc.stdlib cimport calloc, free, malloc

from minigrad._ext._omp_compat cimport minigrad_omp_barrier, omp_get_max_threads, omp_get_num_threads, omp_get_thread_num

cdef extern from *:
    """
    /* _norm_avx2.pyx / _norm_avx512.pyx define MINIGRAD_NORM_SIMD before including this file. */
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
    static int minigrad_cpu_has_avx512(void) {
    #if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
        __builtin_cpu_init();
        return minigrad_cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f")
            && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")
            && __builtin_cpu_supports("avx512dq");
    #else
        return 0;
    #endif
    }
    """
    const char* MINIGRAD_NORM_SIMD
    int minigrad_cpu_has_avx2_fma() nogil
    int minigrad_cpu_has_avx512() nogil

cdef extern from "_norm_simd.h" nogil:
    int MG_VBYTES
    int MG_NT_BYTES
    ctypedef struct mg_stats:
        double n
        double mean
        double m2
    void mg_store_fence()
    void mg_prefetch(const void* p, Py_ssize_t nbytes)
    void mg_stats_merge(mg_stats* s, double n, double mean, double m2)
    double mg_sum_f32(const float* p, Py_ssize_t n)
    double mg_sum_f64(const double* p, Py_ssize_t n)
    void mg_stats_f32(const float* p, Py_ssize_t n, mg_stats* st)
    void mg_stats_f64(const double* p, Py_ssize_t n, mg_stats* st)
    void mg_sum2_f32(const float* g, const float* x, Py_ssize_t n, double m, double* sg, double* sgd)
    void mg_sum2_f64(const double* g, const double* x, Py_ssize_t n, double m, double* sg, double* sgd)
    void mg_sum2_vec_f32(const float* g, const float* x, const float* w, Py_ssize_t n, double m, double inv,
                         double* swg, double* swgd, double* dw, double* db)
    void mg_sum2_vec_f64(const double* g, const double* x, const double* w, Py_ssize_t n, double m, double inv,
                         double* swg, double* swgd, double* dw, double* db)
    void mg_affine_f32(const float* x, float* y, Py_ssize_t n, float h, float l, float a, float b, int nt)
    void mg_affine_f64(const double* x, double* y, Py_ssize_t n, double h, double l, double a, double b, int nt)
    void mg_madd_f32(const float* x, float* y, Py_ssize_t n, float a, float b, int nt)
    void mg_madd_f64(const double* x, double* y, Py_ssize_t n, double a, double b, int nt)
    void mg_dx_f32(const float* g, const float* x, float* d, Py_ssize_t n, float a, float b, float c, float h,
                   float l, int nt)
    void mg_dx_f64(const double* g, const double* x, double* d, Py_ssize_t n, double a, double b, double c,
                   double h, double l, int nt)
    void mg_affine_vec_f32(const float* x, float* y, Py_ssize_t n, float h, float l, float inv, const float* w,
                           const float* b, int nt)
    void mg_affine_vec_f64(const double* x, double* y, Py_ssize_t n, double h, double l, double inv,
                           const double* w, const double* b, int nt)
    void mg_dx_vec_f32(const float* g, const float* x, const float* w, float* d, Py_ssize_t n, float inv, float b,
                       float c, float h, float l, int nt)
    void mg_dx_vec_f64(const double* g, const double* x, const double* w, double* d, Py_ssize_t n, double inv,
                       double b, double c, double h, double l, int nt)
    void mg_channel_affine_flat_f32(const float* x, float* y, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t S,
                                    Py_ssize_t C, const float* scale, const float* shift, int nt)
    void mg_channel_affine_flat_f64(const double* x, double* y, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t S,
                                    Py_ssize_t C, const double* scale, const double* shift, int nt)

# Inputs smaller than this many elements run on one thread: the fork/join of
# an OpenMP region costs a few microseconds, more than it saves below ~64K.
cdef Py_ssize_t PARALLEL_MIN_SIZE = 1 << 16
# Outputs of at least this many bytes are written with streaming stores
# (larger than a typical last-level cache share: the data is not reused soon).
cdef Py_ssize_t STREAM_MIN_BYTES = 16 << 20
# Per-channel kernels (S > 1) split the work in one of two ways: each thread
# its own range of channels, or every channel by the whole team (each
# thread a slice of it, the sums meeting after a barrier per channel). The
# team split keeps every thread busy when there are few channels, and it
# halves what each core must hold in L2 between the two passes over a
# channel: a BatchNorm2d (32, 64, 56, 56) backward re-reads 800 KB of grad
# and x per channel, which with the next channel streaming in no longer
# fits a 1 MB L2. TEAM_MODE: -1 choose (below), 0 never, 1 always.
cdef int TEAM_MODE = -1
# In automatic mode the team split is used when a channel's streams (x; or
# grad and x) hold at least this many bytes, or there are fewer than four
# channels per thread.
cdef Py_ssize_t TEAM_MIN_CHANNEL_BYTES = 512 * 1024
cdef enum:
    # Channels processed together by the S = 1 kernels (stack buffers of this
    # many doubles; a block of 256 float32 channels × 256 rows is 256 KB).
    BLOCK = 256
    # Elements per step of the pipelined loops (a few KB: stays in L1).
    PIPE_BLOCK = 512
    # How far ahead (bytes) the statistics stream is prefetched: enough to
    # cover the memory latency at a few tens of GB/s, little enough for L1.
    PREFETCH_BYTES = 4096
    # Rows up to this many bytes are prefetched whole while the previous row
    # is written (per-group kernels); longer rows would only evict each other.
    ROW_PREFETCH_MAX = 256 * 1024
    # The same for the backward's two input streams (bytes of one row of one stream).
    ROW_PREFETCH_MAX_BACKWARD = 16 * 1024


def simd():
    """The instruction set this build of the kernels targets: "baseline", "avx2" or "avx512"."""
    return MINIGRAD_NORM_SIMD.decode()


def cpu_has_avx2_fma():
    """True if this processor (and its OS) can run the AVX2+FMA build, ``_norm_avx2``."""
    return bool(minigrad_cpu_has_avx2_fma())


def cpu_has_avx512():
    """True if this processor (and its OS) can run the AVX-512 (F, BW, VL, DQ) build, ``_norm_avx512``."""
    return bool(minigrad_cpu_has_avx512())


def vector_bytes():
    """Width in bytes of this build's vectors (64 AVX-512, 32 AVX2, 16 SSE2/NEON, 0 scalar)."""
    return MG_VBYTES


def parallel_min_size():
    """Number of elements from which the kernels use several threads."""
    return PARALLEL_MIN_SIZE


def stream_vector_bytes():
    """Width in bytes of this build's streaming stores (64, 32, 16; 0: none, plain stores)."""
    return MG_NT_BYTES


def stream_min_bytes():
    """Output size (bytes) from which the kernels use streaming stores."""
    return STREAM_MIN_BYTES


def set_stream_min_bytes(Py_ssize_t n):
    """Set the streaming-store threshold (0: always, for tests; a huge value: never)."""
    global STREAM_MIN_BYTES
    if n < 0:
        raise ValueError(f"the threshold must be >= 0, got {n}")
    STREAM_MIN_BYTES = n


def set_team_mode(int mode):
    """How the per-channel kernels share channels among threads: -1 automatic, 0 a range of channels
    per thread, 1 every channel by the whole team (for benchmarks and tests)."""
    global TEAM_MODE
    if mode not in (-1, 0, 1):
        raise ValueError(f"the team mode must be -1, 0 or 1, got {mode}")
    TEAM_MODE = mode


def team_mode():
    """The current team mode (see ``set_team_mode``)."""
    return TEAM_MODE


cdef bint _use_team(Py_ssize_t C, Py_ssize_t channel_bytes, int threads) noexcept nogil:
    if threads < 2 or TEAM_MODE == 0:
        return False
    return TEAM_MODE == 1 or C < 4 * threads or channel_bytes >= TEAM_MIN_CHANNEL_BYTES


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


# Typed entry points to the C primitives (one per fused type).
cdef inline void _stats(const floating* p, Py_ssize_t n, mg_stats* st) noexcept nogil:
    if floating is float:
        mg_stats_f32(p, n, st)
    else:
        mg_stats_f64(p, n, st)


cdef inline void _sum2(const floating* g, const floating* x, Py_ssize_t n, double m, double* sg,
                       double* sgd) noexcept nogil:
    """*sg += Σ g, *sgd += Σ g·(x - m), in double."""
    if floating is float:
        mg_sum2_f32(g, x, n, m, sg, sgd)
    else:
        mg_sum2_f64(g, x, n, m, sg, sgd)


cdef inline void _affine(const floating* x, floating* y, Py_ssize_t n, floating h, floating l, floating a,
                         floating b, bint nt) noexcept nogil:
    """y = ((x - h) - l)·a + b in the input's precision (h + l = the mean)."""
    if floating is float:
        mg_affine_f32(x, y, n, h, l, a, b, nt)
    else:
        mg_affine_f64(x, y, n, h, l, a, b, nt)


cdef inline void _madd(const floating* x, floating* y, Py_ssize_t n, floating a, floating b,
                       bint nt) noexcept nogil:
    """y = x·a + b."""
    if floating is float:
        mg_madd_f32(x, y, n, a, b, nt)
    else:
        mg_madd_f64(x, y, n, a, b, nt)


cdef inline void _dx(const floating* g, const floating* x, floating* d, Py_ssize_t n, floating a, floating b,
                     floating c, floating h, floating l, bint nt) noexcept nogil:
    """d = a·g + b - c·((x - h) - l)."""
    if floating is float:
        mg_dx_f32(g, x, d, n, a, b, c, h, l, nt)
    else:
        mg_dx_f64(g, x, d, n, a, b, c, h, l, nt)


cdef inline void _split(double v, floating* hi, floating* lo) noexcept nogil:
    """v ≈ hi + lo with both in the working precision (lo = 0 for double)."""
    hi[0] = <floating>v
    lo[0] = <floating>(v - <double>hi[0])


# ------------------------------------------ per-channel kernels, S > 1
# One software-pipelined walk serves both ways of sharing channels among
# threads. With a range of channels per thread, the thread walks all of a
# channel's N rows (in blocks of ``bl`` elements, ``nb`` blocks a row). With
# the whole team on every channel (``team``: called by every thread of a
# parallel region), thread t of T walks its own contiguous range of the
# N·nb blocks; the team split keeps every thread busy when there are few
# channels and halves what each core holds in L2 between the two passes
# over a channel. The per-thread sums of a channel go to ``part`` (two
# buffers, alternating by channel, so a fast thread writing the next
# channel's sums never overwrites sums a slow one is still reading), and
# after a barrier every thread merges them in the same order, so all
# threads (and every run) get identical statistics.
cdef struct mg_walk:
    Py_ssize_t S, bl, nb, b0, b1, ahead
    int t, T


cdef inline void _walk_init(mg_walk* wk, Py_ssize_t N, Py_ssize_t S, size_t itemsize, bint team) noexcept nogil:
    cdef Py_ssize_t B
    wk.t = omp_get_thread_num() if team else 0
    wk.T = omp_get_num_threads() if team else 1
    wk.S = S
    wk.bl = min(<Py_ssize_t>PIPE_BLOCK, S)
    wk.nb = (S + wk.bl - 1) // wk.bl
    B = N * wk.nb
    wk.b0 = wk.t * B // wk.T
    wk.b1 = (wk.t + 1) * B // wk.T
    wk.ahead = max(1, <Py_ssize_t>PREFETCH_BYTES // (wk.bl * <Py_ssize_t>itemsize))


cdef inline void _walk_start(const mg_walk* wk, Py_ssize_t* n, Py_ssize_t* s0) noexcept nogil:
    """Row and offset of the thread's first block."""
    n[0] = wk.b0 // wk.nb
    s0[0] = (wk.b0 - n[0] * wk.nb) * wk.bl


cdef inline Py_ssize_t _walk_next(const mg_walk* wk, Py_ssize_t* n, Py_ssize_t* s0) noexcept nogil:
    """Length of the block at (n, s0); moves (n, s0) on to the next block (no division per block)."""
    cdef Py_ssize_t ns = min(wk.bl, wk.S - s0[0])
    s0[0] += wk.bl
    if s0[0] >= wk.S:
        s0[0] = 0
        n[0] += 1
    return ns


cdef inline void _prefetch_block(const floating* base, Py_ssize_t ld, const mg_walk* wk,
                                 Py_ssize_t b) noexcept nogil:
    """Prefetch block ``b`` of the walk over the rows (stride ``ld``) at ``base``, if it is the thread's."""
    cdef Py_ssize_t n, s
    if b < wk.b1:
        n = b // wk.nb
        s = (b - n * wk.nb) * wk.bl
        mg_prefetch(base + n * ld + s, min(wk.bl, wk.S - s) * <Py_ssize_t>sizeof(floating))


cdef inline void _prefetch_first(const floating* base, Py_ssize_t ld, const mg_walk* wk) noexcept nogil:
    """Prefetch the thread's first ``ahead`` blocks of a channel, before its walk starts."""
    cdef Py_ssize_t blk
    for blk in range(wk.b0, min(wk.b1, wk.b0 + wk.ahead)):
        _prefetch_block(base, ld, wk, blk)


cdef inline void _team_stats(mg_stats* st, double* part, const mg_walk* wk) noexcept nogil:
    """Publish this thread's statistics of a channel (3 doubles a thread), wait for the team, merge all."""
    cdef int i
    cdef double* mine = part + 3 * wk.t
    mine[0] = st.n
    mine[1] = st.mean
    mine[2] = st.m2
    minigrad_omp_barrier()
    st[0] = mg_stats(n=0, mean=0, m2=0)
    for i in range(wk.T):
        mg_stats_merge(st, part[3 * i], part[3 * i + 1], part[3 * i + 2])


cdef inline void _team_sums(double* sg, double* sgx, double* part, const mg_walk* wk) noexcept nogil:
    """Publish this thread's two sums of a channel, wait for the team, add all in thread order."""
    cdef int i
    part[2 * wk.t] = sg[0]
    part[2 * wk.t + 1] = sgx[0]
    minigrad_omp_barrier()
    sg[0] = 0
    sgx[0] = 0
    for i in range(wk.T):
        sg[0] += part[2 * i]
        sgx[0] += part[2 * i + 1]


cdef inline void _forward_coeffs(double mean, double var, double eps, const floating* w, const floating* b,
                                 Py_ssize_t c, floating* a, floating* beta, floating* mhi,
                                 floating* mlo) noexcept nogil:
    """y = ((x - mhi) - mlo)·a + beta: the training forward of channel c as one multiply-add."""
    cdef double k = 1.0 / sqrt(var + eps)
    if w != NULL:
        k = k * w[c]
    a[0] = <floating>k
    beta[0] = b[c] if b != NULL else 0
    _split(mean, mhi, mlo)


cdef inline double _backward_coeffs(double sg, double sgx, double mean, double inv, const floating* w,
                                    Py_ssize_t c, double inv_m, floating* ka, floating* kb, floating* kc,
                                    floating* mhi, floating* mlo) noexcept nogil:
    """dx = ka·g + kb - kc·((x - mhi) - mlo) for channel c, from Σg and Σg·(x - mean); returns Σg·x̂."""
    cdef double dweight = sgx * inv
    cdef double k = inv * (w[c] if w != NULL else 1.0)
    # dx = k·(g - Σg/m - x̂·Σg·x̂/m) = k·g - k·Σg/m - (k·invstd·Σg·x̂/m)·(x - mean)
    ka[0] = <floating>k
    kb[0] = <floating>(-k * sg * inv_m)
    kc[0] = <floating>(k * inv * dweight * inv_m)
    _split(mean, mhi, mlo)
    return dweight


cdef inline void _dx_block(const floating* g, const floating* x, floating* d, Py_ssize_t n, bint training,
                           floating ka, floating kb, floating kc, floating mhi, floating mlo,
                           bint stream) noexcept nogil:
    if training:
        _dx(g, x, d, n, ka, kb, kc, mhi, mlo, stream)
    else:  # fixed statistics: dx = ka·g (x does not enter)
        _madd(g, d, n, ka, <floating>0, stream)


cdef void _bn_train_pipe(const floating* x, floating* y, Py_ssize_t c_begin, Py_ssize_t c_end, Py_ssize_t N,
                         Py_ssize_t S, Py_ssize_t xs0, Py_ssize_t xs1, Py_ssize_t ys0, Py_ssize_t ys1,
                         const floating* w, const floating* b, double eps, floating* mean_out,
                         floating* var_out, bint stream, bint team, double* part) noexcept nogil:
    """Channels [c_begin, c_end): x[n·xs0 + c·xs1 + s] (y likewise).

    The output pass of channel c (from L2) runs interleaved, block by
    block, with the statistics pass of channel c + 1 (from memory,
    prefetched ``PREFETCH_BYTES`` ahead), so the thread keeps memory busy
    while it computes. ``team``: see above; ``part`` holds 2·3·T doubles.
    """
    cdef mg_walk wk
    cdef Py_ssize_t n, c, blk, s0, ns
    cdef double var
    cdef const floating* xc
    cdef const floating* xn
    cdef floating* yc
    cdef floating a, beta, mhi, mlo
    cdef mg_stats st, nx
    if c_begin >= c_end:
        return
    _walk_init(&wk, N, S, sizeof(floating), team)
    st = mg_stats(n=0, mean=0, m2=0)
    xc = x + c_begin * xs1
    _prefetch_first(xc, xs0, &wk)
    _walk_start(&wk, &n, &s0)
    for blk in range(wk.b0, wk.b1):
        _prefetch_block(xc, xs0, &wk, blk + wk.ahead)
        _stats(xc + n * xs0 + s0, min(wk.bl, S - s0), &st)
        _walk_next(&wk, &n, &s0)
    for c in range(c_begin, c_end):
        if team:
            _team_stats(&st, part + 3 * (c % 2) * wk.T, &wk)
        var = st.m2 / st.n
        _forward_coeffs(st.mean, var, eps, w, b, c, &a, &beta, &mhi, &mlo)
        if wk.t == 0:
            mean_out[c] = <floating>st.mean
            var_out[c] = <floating>var
        xc = x + c * xs1
        yc = y + c * ys1
        xn = xc + xs1
        nx = mg_stats(n=0, mean=0, m2=0)
        if c + 1 < c_end:
            _prefetch_first(xn, xs0, &wk)
        _walk_start(&wk, &n, &s0)
        for blk in range(wk.b0, wk.b1):
            ns = min(wk.bl, S - s0)
            _affine(xc + n * xs0 + s0, yc + n * ys0 + s0, ns, mhi, mlo, a, beta, stream)
            if c + 1 < c_end:
                _prefetch_block(xn, xs0, &wk, blk + wk.ahead)
                _stats(xn + n * xs0 + s0, ns, &nx)
            _walk_next(&wk, &n, &s0)
        st = nx
    if stream:
        mg_store_fence()


cdef void _bn_backward_pipe(const floating* g, const floating* x, floating* dx, Py_ssize_t c_begin,
                            Py_ssize_t c_end, Py_ssize_t N, Py_ssize_t S, Py_ssize_t gs0, Py_ssize_t gs1,
                            Py_ssize_t xs0, Py_ssize_t xs1, Py_ssize_t ds0, Py_ssize_t ds1,
                            const floating* mean, const floating* invstd, const floating* w, bint training,
                            floating* dw_out, floating* db_out, bint stream, bint team,
                            double* part) noexcept nogil:
    """Channels [c_begin, c_end): the sums Σg, Σg·(x - mean) (pass 1), then dx (pass 2).

    Pipelined like the forward: pass 2 of channel c runs block by block
    interleaved with pass 1 of channel c + 1, whose two streams (grad and
    x) are prefetched ahead. ``part`` holds 2·2·T doubles.
    """
    cdef mg_walk wk
    cdef Py_ssize_t n, c, blk, s0, ns
    cdef double inv_m = 1.0 / <double>(N * S)
    cdef double sg = 0, sgx = 0, nsg, nsgx, dweight
    cdef floating mhi, mlo, ka, kb, kc
    cdef const floating* gc
    cdef const floating* xc
    cdef floating* dc
    cdef const floating* gn
    cdef const floating* xn
    if c_begin >= c_end:
        return
    _walk_init(&wk, N, S, sizeof(floating), team)
    gc = g + c_begin * gs1
    xc = x + c_begin * xs1
    _prefetch_first(gc, gs0, &wk)
    _prefetch_first(xc, xs0, &wk)
    _walk_start(&wk, &n, &s0)
    for blk in range(wk.b0, wk.b1):
        _prefetch_block(gc, gs0, &wk, blk + wk.ahead)
        _prefetch_block(xc, xs0, &wk, blk + wk.ahead)
        _sum2(gc + n * gs0 + s0, xc + n * xs0 + s0, min(wk.bl, S - s0), <double>mean[c_begin], &sg, &sgx)
        _walk_next(&wk, &n, &s0)
    for c in range(c_begin, c_end):
        if team:
            _team_sums(&sg, &sgx, part + 2 * (c % 2) * wk.T, &wk)
        gc = g + c * gs1
        xc = x + c * xs1
        dc = dx + c * ds1
        gn = gc + gs1
        xn = xc + xs1
        dweight = _backward_coeffs(sg, sgx, <double>mean[c], <double>invstd[c], w, c, inv_m, &ka, &kb, &kc,
                                   &mhi, &mlo)
        if wk.t == 0:
            dw_out[c] = <floating>dweight
            db_out[c] = <floating>sg
        nsg = 0
        nsgx = 0
        if c + 1 < c_end:
            _prefetch_first(gn, gs0, &wk)
            _prefetch_first(xn, xs0, &wk)
        _walk_start(&wk, &n, &s0)
        for blk in range(wk.b0, wk.b1):
            ns = min(wk.bl, S - s0)
            _dx_block(gc + n * gs0 + s0, xc + n * xs0 + s0, dc + n * ds0 + s0, ns, training, ka, kb, kc, mhi,
                      mlo, stream)
            if c + 1 < c_end:
                _prefetch_block(gn, gs0, &wk, blk + wk.ahead)
                _prefetch_block(xn, xs0, &wk, blk + wk.ahead)
                _sum2(gn + n * gs0 + s0, xn + n * xs0 + s0, ns, <double>mean[c + 1], &nsg, &nsgx)
            _walk_next(&wk, &n, &s0)
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
        _forward_coeffs(mean[j], var, eps, w, b, j, &a[j], &sh[j], &mhi[j], &mlo[j])
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
    cdef double v0, v1, v2, v3, m, dweight, inv_m = 1.0 / <double>N
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
        dweight = _backward_coeffs(sg[j], sgx[j], mu[j], <double>invstd[j], w, j, inv_m, &ka[j], &kb[j], &kc[j],
                                   &mhi[j], &mlo[j])
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




cdef inline Py_ssize_t _part_bound(const floating* y, Py_ssize_t t, Py_ssize_t nparts,
                                   Py_ssize_t total) noexcept nogil:
    """Start of part t of [0, total) split into ``nparts``: rounded down to a 64-byte boundary of y,
    so the lines two threads stream out never overlap."""
    if t <= 0:
        return 0
    if t >= nparts:
        return total
    cdef Py_ssize_t per_line = 64 // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t skew = ((64 - (<size_t>y) % 64) % 64) // sizeof(floating)  # first aligned element
    cdef Py_ssize_t b = t * total // nparts
    if b < skew:
        return b
    return skew + (b - skew) // per_line * per_line


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
        if not (par and nblocks > 1):  # no parallel region at all: even an inactive one costs ~0.5 µs
            with nogil:
                for blk in range(nblocks):
                    c0 = blk * BLOCK
                    _bn_train_block(xp + c0, yp + c0, N, min(BLOCK, C - c0), xs0, ys0, wp + c0 if has_w else NULL,
                                    bp + c0 if has_b else NULL, eps, &mean[c0], &var[c0])
            return
        with nogil:
            for blk in prange(nblocks, schedule="static"):
                c0 = blk * BLOCK
                nb = min(BLOCK, C - c0)
                _bn_train_block(xp + c0, yp + c0, N, nb, xs0, ys0, wp + c0 if has_w else NULL,
                                bp + c0 if has_b else NULL, eps, &mean[c0], &var[c0])
        return
    cdef int threads = omp_get_max_threads() if par else 1
    cdef Py_ssize_t nchunks = min(C, threads)
    cdef bint stream = N * C * S * <Py_ssize_t>sizeof(floating) >= STREAM_MIN_BYTES
    cdef double* part
    if _use_team(C, N * S * <Py_ssize_t>sizeof(floating), threads):
        part = <double*>calloc(2 * 3 * threads, sizeof(double))
        if part == NULL:
            raise MemoryError()
        with nogil, parallel(num_threads=threads):
            _bn_train_pipe(xp, yp, 0, C, N, S, xs0, xs1, ys0, ys1, wp, bp, eps, &mean[0], &var[0], stream, True,
                           part)
        free(part)
        return
    if nchunks == 1:
        with nogil:
            _bn_train_pipe(xp, yp, 0, C, N, S, xs0, xs1, ys0, ys1, wp, bp, eps, &mean[0], &var[0], stream, False,
                           NULL)
        return
    with nogil:
        for blk in prange(nchunks, schedule="static"):
            _bn_train_pipe(xp, yp, blk * C // nchunks, (blk + 1) * C // nchunks, N, S, xs0, xs1, ys0, ys1, wp, bp,
                           eps, &mean[0], &var[0], stream, False, NULL)


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
        if not (par and nblocks > 1):
            with nogil:
                for blk in range(nblocks):
                    c0 = blk * BLOCK
                    _bn_backward_block(gp + c0, xp + c0, dp + c0, N, min(BLOCK, C - c0), gs0, xs0, ds0, &mean[c0],
                                       &invstd[c0], wp + c0 if has_w else NULL, training, &dweight[c0], &dbias[c0])
            return
        with nogil:
            for blk in prange(nblocks, schedule="static"):
                c0 = blk * BLOCK
                nb = min(BLOCK, C - c0)
                _bn_backward_block(gp + c0, xp + c0, dp + c0, N, nb, gs0, xs0, ds0, &mean[c0], &invstd[c0],
                                   wp + c0 if has_w else NULL, training, &dweight[c0], &dbias[c0])
        return
    cdef int threads = omp_get_max_threads() if par else 1
    cdef Py_ssize_t nchunks = min(C, threads)
    cdef bint stream = N * C * S * <Py_ssize_t>sizeof(floating) >= STREAM_MIN_BYTES
    cdef double* part
    if _use_team(C, 2 * N * S * <Py_ssize_t>sizeof(floating), threads):
        part = <double*>calloc(2 * 2 * threads, sizeof(double))
        if part == NULL:
            raise MemoryError()
        with nogil, parallel(num_threads=threads):
            _bn_backward_pipe(gp, xp, dp, 0, C, N, S, gs0, gs1, xs0, xs1, ds0, ds1, &mean[0], &invstd[0], wp,
                              training, &dweight[0], &dbias[0], stream, True, part)
        free(part)
        return
    if nchunks == 1:
        with nogil:
            _bn_backward_pipe(gp, xp, dp, 0, C, N, S, gs0, gs1, xs0, xs1, ds0, ds1, &mean[0], &invstd[0], wp,
                              training, &dweight[0], &dbias[0], stream, False, NULL)
        return
    with nogil:
        for blk in prange(nchunks, schedule="static"):
            _bn_backward_pipe(gp, xp, dp, blk * C // nchunks, (blk + 1) * C // nchunks, N, S, gs0, gs1, xs0, xs1,
                              ds0, ds1, &mean[0], &invstd[0], wp, training, &dweight[0], &dbias[0], stream, False,
                              NULL)


def channel_affine(const floating[:, :, :] x, const floating[::1] scale, const floating[::1] shift,
                   floating[:, :, :] y):
    """``y[n, c, s] = x[n, c, s]·scale[c] + shift[c]`` (inference batch norm)."""
    if x.shape[0] * x.shape[1] * x.shape[2] == 0:
        return
    _check_strides(x.shape, x.strides, x.ndim, sizeof(floating), "x")
    _check_strides(y.shape, y.strides, y.ndim, sizeof(floating), "y")
    _channel_affine(&x[0, 0, 0], &y[0, 0, 0], x.shape[0], x.shape[1], x.shape[2], x.strides[0] // sizeof(floating),
                    x.strides[1] // sizeof(floating), y.strides[0] // sizeof(floating),
                    y.strides[1] // sizeof(floating), &scale[0], &shift[0])


def batch_norm_forward_eval(const floating[:, :, :] x, const floating[::1] mean, const floating[::1] var,
                            const floating[::1] weight, const floating[::1] bias, double eps, floating[:, :, :] y):
    """Inference batch norm of an (N, C, S) view into ``y``, with fixed statistics.

    ``y = x·scale[c] + shift[c]`` with ``scale = weight/sqrt(var + eps)`` and
    ``shift = bias - mean·scale`` computed here per channel in double
    (``weight``/``bias`` may be None): one multiply-add per value, and no
    temporaries for the caller to build.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c
    cdef floating small[2 * 256]
    cdef floating* sc = small
    cdef double a
    if N * C * S == 0:
        return
    _check_strides(x.shape, x.strides, x.ndim, sizeof(floating), "x")
    _check_strides(y.shape, y.strides, y.ndim, sizeof(floating), "y")
    if C > 256:
        sc = <floating*>malloc(2 * C * sizeof(floating))
        if sc == NULL:
            raise MemoryError()
    for c in range(C):
        a = 1.0 / sqrt(<double>var[c] + eps)
        if weight is not None:
            a *= weight[c]
        sc[c] = <floating>a
        sc[C + c] = <floating>((bias[c] if bias is not None else 0.0) - mean[c] * a)
    try:
        _channel_affine(&x[0, 0, 0], &y[0, 0, 0], N, C, S, x.strides[0] // sizeof(floating),
                        x.strides[1] // sizeof(floating), y.strides[0] // sizeof(floating),
                        y.strides[1] // sizeof(floating), sc, sc + C)
    finally:
        if sc != small:
            free(sc)


cdef int _channel_affine(const floating* xp, floating* yp, Py_ssize_t N, Py_ssize_t C, Py_ssize_t S,
                         Py_ssize_t xs0, Py_ssize_t xs1, Py_ssize_t ys0, Py_ssize_t ys1, const floating* sc,
                         const floating* sh) except -1:
    """y[n, c, s] = x[n, c, s]·sc[c] + sh[c] (strides in items; the last axis contiguous)."""
    cdef Py_ssize_t t, total = N * C * S
    cdef int nparts = omp_get_max_threads() if total >= PARALLEL_MIN_SIZE else 1
    cdef bint stream = total * <Py_ssize_t>sizeof(floating) >= STREAM_MIN_BYTES
    if nparts == 1:
        with nogil:
            _channel_affine_part(xp, yp, N, C, S, xs0, xs1, ys0, ys1, sc, sh, 0, 1, stream)
        return 0
    with nogil:
        for t in prange(nparts, schedule="static"):
            _channel_affine_part(xp, yp, N, C, S, xs0, xs1, ys0, ys1, sc, sh, t, nparts, stream)
    return 0


cdef void _channel_affine_part(const floating* xp, floating* yp, Py_ssize_t N, Py_ssize_t C, Py_ssize_t S,
                               Py_ssize_t xs0, Py_ssize_t xs1, Py_ssize_t ys0, Py_ssize_t ys1, const floating* sc,
                               const floating* sh, Py_ssize_t t, Py_ssize_t nparts, bint stream) noexcept nogil:
    """Part t of ``nparts`` of ``_channel_affine``.

    Contiguous x and y (the usual case) are walked as one flat array split
    into equal parts, whatever S is: a short S (196) then costs no per-row
    fence or unaligned streaming store. With S = 1 the parts are ranges of
    rows of C channels (vectors along C); otherwise ranges of (n, c) runs.
    """
    cdef Py_ssize_t r, n, c, j, lo, hi, total = N * C * S
    cdef const floating* xr
    cdef floating* yr
    if S == 1 and xs1 == 1 and ys1 == 1:
        for n in range(t * N // nparts, (t + 1) * N // nparts):
            xr = xp + n * xs0
            yr = yp + n * ys0
            for j in range(C):
                yr[j] = xr[j] * sc[j] + sh[j]
        return
    if (xs1 == S or C == 1) and (ys1 == S or C == 1) and xs0 == C * S and ys0 == C * S:
        lo = _part_bound(yp, t, nparts, total)
        hi = _part_bound(yp, t + 1, nparts, total)
        if floating is float:
            mg_channel_affine_flat_f32(xp, yp, lo, hi, S, C, sc, sh, stream)
        else:
            mg_channel_affine_flat_f64(xp, yp, lo, hi, S, C, sc, sh, stream)
    else:
        for r in range(t * (N * C) // nparts, (t + 1) * (N * C) // nparts):
            n = r // C
            c = r - n * C
            _madd(xp + n * xs0 + c * xs1, yp + n * ys0 + c * ys1, S, sc[c], sh[c], stream)
    if stream:
        mg_store_fence()


# ------------------------------------------------------- per-group kernels
# A row is one (sample, group): C/G consecutive channels of S values each.
# With S = 1 (LayerNorm's (R, K, 1) view) the row is one contiguous run of
# C/G values and the affine is per element; otherwise the affine is per
# channel, one scalar pair per run of S values.
cdef inline void _prefetch_run(const floating* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """Prefetch the block of the run p[0:n] that starts PREFETCH_BYTES after element i."""
    cdef Py_ssize_t j = i + <Py_ssize_t>PREFETCH_BYTES // <Py_ssize_t>sizeof(floating)
    if j < n:
        mg_prefetch(p + j, min(<Py_ssize_t>PIPE_BLOCK, n - j) * <Py_ssize_t>sizeof(floating))


cdef void _gn_forward_rows(const floating* x, floating* y, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t G,
                           Py_ssize_t Cg, Py_ssize_t S, Py_ssize_t xs0, Py_ssize_t xs1, Py_ssize_t ys0,
                           Py_ssize_t ys1, const floating* w, const floating* b, double eps, floating* mean_out,
                           floating* invstd_out, bint stream) noexcept nogil:
    """Rows [r0, r1) (row r = sample r // G, group r % G): statistics, then the affine output.

    The statistics pass reads the row once; the output pass finds it in
    cache and prefetches the same place of the next row, so the next
    statistics pass starts warm (only the first row, or rows too long to
    hold, are prefetched ahead within the row by the statistics pass: a
    second request for every line measured slower with warm data).
    """
    cdef bint elementwise = S == 1
    cdef Py_ssize_t K = Cg * S
    cdef bint one_run = elementwise or xs1 == S or Cg == 1  # the row is one contiguous run of K values
    cdef Py_ssize_t r, n, grp, j, c, i0, ni, s0
    cdef double mean, inv
    cdef floating mhi, mlo, a, beta
    cdef const floating* xr
    cdef const floating* xs
    cdef const floating* xnext
    cdef floating* yr
    cdef mg_stats st
    cdef bint warm_next = K * <Py_ssize_t>sizeof(floating) <= ROW_PREFETCH_MAX
    cdef bint ahead
    for r in range(r0, r1):
        n = r // G
        grp = r - n * G
        xr = x + n * xs0 + grp * Cg * xs1
        yr = y + n * ys0 + grp * Cg * ys1
        xnext = NULL
        if warm_next and r + 1 < r1:
            xnext = x + ((r + 1) // G) * xs0 + ((r + 1) % G) * Cg * xs1
        st.n = 0
        st.mean = 0
        st.m2 = 0
        ahead = r == r0 or not warm_next  # else the previous row's output pass prefetched this row
        if one_run:
            i0 = 0
            while i0 < K:
                ni = min(<Py_ssize_t>PIPE_BLOCK, K - i0)
                if ahead:
                    _prefetch_run(xr, i0, K)
                _stats(xr + i0, ni, &st)
                i0 += ni
        else:
            for j in range(Cg):
                xs = xr + j * xs1
                s0 = 0
                while s0 < S:
                    ni = min(<Py_ssize_t>PIPE_BLOCK, S - s0)
                    if ahead:
                        _prefetch_run(xs, s0, S)
                    _stats(xs + s0, ni, &st)
                    s0 += ni
        mean = st.mean
        inv = 1.0 / sqrt(st.m2 / st.n + eps)
        mean_out[r] = <floating>mean
        invstd_out[r] = <floating>inv
        _split(mean, &mhi, &mlo)
        if elementwise:
            i0 = 0
            while i0 < K:
                ni = min(<Py_ssize_t>PIPE_BLOCK, K - i0)
                if w != NULL:
                    if floating is float:
                        mg_affine_vec_f32(xr + i0, yr + i0, ni, mhi, mlo, <float>inv, w + grp * Cg + i0,
                                          b + grp * Cg + i0, stream)
                    else:
                        mg_affine_vec_f64(xr + i0, yr + i0, ni, mhi, mlo, inv, w + grp * Cg + i0,
                                          b + grp * Cg + i0, stream)
                else:
                    _affine(xr + i0, yr + i0, ni, mhi, mlo, <floating>inv, <floating>0, stream)
                if xnext != NULL:
                    mg_prefetch(xnext + i0, ni * <Py_ssize_t>sizeof(floating))
                i0 += ni
        else:
            for j in range(Cg):
                c = grp * Cg + j
                a = <floating>(inv * w[c]) if w != NULL else <floating>inv
                beta = b[c] if b != NULL else <floating>0
                s0 = 0
                while s0 < S:
                    ni = min(<Py_ssize_t>PIPE_BLOCK, S - s0)
                    _affine(xr + j * xs1 + s0, yr + j * ys1 + s0, ni, mhi, mlo, a, beta, stream)
                    if xnext != NULL:
                        mg_prefetch(xnext + j * xs1 + s0, ni * <Py_ssize_t>sizeof(floating))
                    s0 += ni
    if stream:
        mg_store_fence()


cdef void _gn_backward_rows(const floating* g, const floating* x, floating* dx, Py_ssize_t r0, Py_ssize_t r1,
                            Py_ssize_t G, Py_ssize_t Cg, Py_ssize_t S, Py_ssize_t gs0, Py_ssize_t gs1,
                            Py_ssize_t xs0, Py_ssize_t xs1, Py_ssize_t ds0, Py_ssize_t ds1, const floating* mean,
                            const floating* invstd, const floating* w, double* dw_part, double* db_part,
                            bint stream) noexcept nogil:
    """Rows [r0, r1): the row sums and this part's Σg·x̂, Σg per channel (pass 1), then dx (pass 2).

    With x̂ = (x - μ)·σ⁻¹ and dx̂ = γ_c·g, per row of K values:
    ``dx = σ⁻¹·(dx̂ - mean(dx̂) - x̂·mean(dx̂·x̂))``, i.e.
    ``dx = (σ⁻¹γ_c)·g - σ⁻¹·A/K - σ⁻³·B/K·(x - μ)`` with ``A = Σγ_c·g`` and
    ``B = Σγ_c·g·(x - μ)``. ``dw_part``/``db_part`` (C doubles each) get
    ``Σ g·x̂`` and ``Σ g`` of every channel these rows touch.
    In element mode (S = 1) ``w`` must not be NULL.
    """
    cdef bint elementwise = S == 1
    cdef Py_ssize_t K = Cg * S
    cdef Py_ssize_t r, n, grp, j, c, i0, ni, s0, off
    cdef double m, inv, A, B, sg, sgd, wc
    cdef floating mhi, mlo, ka, kb, kc
    cdef const floating* gr
    cdef const floating* xr
    cdef const floating* gnext
    cdef const floating* xnext
    cdef floating* dr
    # Short rows (LayerNorm's few KiB) are prefetched whole while the previous row is written: the
    # hardware prefetchers restart at every row and page. Long rows (GroupNorm's 25 KB) measured
    # faster with only the within-row prefetch of pass 1: two input streams plus the output keep
    # the hardware prefetchers busy enough, and more requests only competed with them.
    cdef bint warm_next = K * <Py_ssize_t>sizeof(floating) <= ROW_PREFETCH_MAX_BACKWARD
    cdef bint ahead
    for r in range(r0, r1):
        n = r // G
        grp = r - n * G
        off = grp * Cg
        gr = g + n * gs0 + off * gs1
        xr = x + n * xs0 + off * xs1
        dr = dx + n * ds0 + off * ds1
        gnext = NULL
        xnext = NULL
        if warm_next and r + 1 < r1:
            gnext = g + ((r + 1) // G) * gs0 + ((r + 1) % G) * Cg * gs1
            xnext = x + ((r + 1) // G) * xs0 + ((r + 1) % G) * Cg * xs1
        m = mean[r]
        inv = invstd[r]
        A = 0
        B = 0
        ahead = r == r0 or not warm_next
        if elementwise:
            i0 = 0
            while i0 < K:
                ni = min(<Py_ssize_t>PIPE_BLOCK, K - i0)
                if ahead:
                    _prefetch_run(gr, i0, K)
                    _prefetch_run(xr, i0, K)
                if floating is float:
                    mg_sum2_vec_f32(gr + i0, xr + i0, w + off + i0, ni, m, inv, &A, &B, dw_part + off + i0,
                                    db_part + off + i0)
                else:
                    mg_sum2_vec_f64(gr + i0, xr + i0, w + off + i0, ni, m, inv, &A, &B, dw_part + off + i0,
                                    db_part + off + i0)
                i0 += ni
        else:
            for j in range(Cg):
                c = off + j
                sg = 0
                sgd = 0
                s0 = 0
                while s0 < S:
                    ni = min(<Py_ssize_t>PIPE_BLOCK, S - s0)
                    if ahead:
                        _prefetch_run(gr + j * gs1, s0, S)
                        _prefetch_run(xr + j * xs1, s0, S)
                    _sum2(gr + j * gs1 + s0, xr + j * xs1 + s0, ni, m, &sg, &sgd)
                    s0 += ni
                wc = w[c] if w != NULL else 1.0
                A += wc * sg
                B += wc * sgd
                dw_part[c] += sgd * inv
                db_part[c] += sg
        kb = <floating>(-inv * A / <double>K)
        kc = <floating>(inv * inv * inv * B / <double>K)
        _split(m, &mhi, &mlo)
        if elementwise:
            i0 = 0
            while i0 < K:
                ni = min(<Py_ssize_t>PIPE_BLOCK, K - i0)
                if floating is float:
                    mg_dx_vec_f32(gr + i0, xr + i0, w + off + i0, dr + i0, ni, <float>inv, kb, kc, mhi, mlo, stream)
                else:
                    mg_dx_vec_f64(gr + i0, xr + i0, w + off + i0, dr + i0, ni, inv, kb, kc, mhi, mlo, stream)
                if xnext != NULL:
                    mg_prefetch(gnext + i0, ni * <Py_ssize_t>sizeof(floating))
                    mg_prefetch(xnext + i0, ni * <Py_ssize_t>sizeof(floating))
                i0 += ni
        else:
            for j in range(Cg):
                c = off + j
                ka = <floating>(inv * w[c]) if w != NULL else <floating>inv
                s0 = 0
                while s0 < S:
                    ni = min(<Py_ssize_t>PIPE_BLOCK, S - s0)
                    _dx(gr + j * gs1 + s0, xr + j * xs1 + s0, dr + j * ds1 + s0, ni, ka, kb, kc, mhi, mlo, stream)
                    if xnext != NULL:
                        mg_prefetch(gnext + j * gs1 + s0, ni * <Py_ssize_t>sizeof(floating))
                        mg_prefetch(xnext + j * xs1 + s0, ni * <Py_ssize_t>sizeof(floating))
                    s0 += ni
    if stream:
        mg_store_fence()


cdef int _check_groups(Py_ssize_t C, Py_ssize_t groups) except -1:
    if groups < 1 or C % groups:
        raise ValueError(f"groups must be a positive divisor of the {C} channels, got {groups}")
    return 0


def group_norm_forward(const floating[:, :, :] x, const floating[::1] weight, const floating[::1] bias,
                       Py_ssize_t groups, double eps, floating[:, :, :] y, floating[:, ::1] mean,
                       floating[:, ::1] invstd):
    """Group norm of an (N, C, S) view into ``y``, ``mean`` and ``invstd`` (both (N, groups)).

    Row (n, g) holds channels [g·C/G, (g+1)·C/G) of sample n; its mean and
    biased variance give ``y = (x - μ)·σ⁻¹·weight[c] + bias[c]``
    (``weight``/``bias`` may be None). For S = 1 the channel axis must have
    unit stride.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t G = groups, R, t, nparts
    _check_groups(C, G)
    R = N * G
    if R == 0:
        return
    if C * S == 0:
        mean[:, :] = NAN
        invstd[:, :] = NAN
        return
    _check_strides(x.shape, x.strides, x.ndim, sizeof(floating), "x")
    _check_strides(y.shape, y.strides, y.ndim, sizeof(floating), "y")
    cdef Py_ssize_t xs0 = x.strides[0] // sizeof(floating), xs1 = x.strides[1] // sizeof(floating)
    cdef Py_ssize_t ys0 = y.strides[0] // sizeof(floating), ys1 = y.strides[1] // sizeof(floating)
    if S == 1 and ((C > 1 and (xs1 != 1 or ys1 != 1))):
        raise ValueError("group_norm_forward: with S = 1 the channel axis must have unit stride")
    cdef const floating* wp = &weight[0] if weight is not None else NULL
    cdef const floating* bp = &bias[0] if bias is not None else NULL
    cdef floating* fill = NULL
    if S == 1 and (wp == NULL) != (bp == NULL):  # element mode takes both vectors or neither
        fill = <floating*>calloc(C, sizeof(floating))
        if fill == NULL:
            raise MemoryError()
        if wp == NULL:
            for t in range(C):
                fill[t] = 1
            wp = fill
        else:
            bp = fill
    cdef bint par = N * C * S >= PARALLEL_MIN_SIZE
    cdef bint stream = N * C * S * <Py_ssize_t>sizeof(floating) >= STREAM_MIN_BYTES
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* yp = &y[0, 0, 0]
    nparts = min(R, omp_get_max_threads()) if par else 1
    if nparts == 1:
        with nogil:
            _gn_forward_rows(xp, yp, 0, R, G, C // G, S, xs0, xs1, ys0, ys1, wp, bp, eps, &mean[0, 0],
                             &invstd[0, 0], stream)
    else:
        with nogil:
            for t in prange(nparts, schedule="static"):
                _gn_forward_rows(xp, yp, t * R // nparts, (t + 1) * R // nparts, G, C // G, S, xs0, xs1, ys0, ys1,
                                 wp, bp, eps, &mean[0, 0], &invstd[0, 0], stream)
    free(fill)


def group_norm_backward(const floating[:, :, :] grad, const floating[:, :, :] x, const floating[:, ::1] mean,
                        const floating[:, ::1] invstd, const floating[::1] weight, Py_ssize_t groups,
                        floating[:, :, :] dx, floating[::1] dweight, floating[::1] dbias):
    """Gradients of ``group_norm_forward`` into ``dx``, ``dweight`` = Σ grad·x̂ and ``dbias`` = Σ grad.

    ``weight`` may be None. Each thread sums its rows' per-channel terms
    into its own buffer; the buffers are added in a fixed order at the end.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t G = groups, R, t, c, nparts
    cdef double sw, sb
    _check_groups(C, G)
    R = N * G
    if C == 0:
        return
    if N * S == 0:
        dweight[:] = 0
        dbias[:] = 0
        return
    _check_strides(grad.shape, grad.strides, grad.ndim, sizeof(floating), "grad")
    _check_strides(x.shape, x.strides, x.ndim, sizeof(floating), "x")
    _check_strides(dx.shape, dx.strides, dx.ndim, sizeof(floating), "dx")
    cdef Py_ssize_t gs0 = grad.strides[0] // sizeof(floating), gs1 = grad.strides[1] // sizeof(floating)
    cdef Py_ssize_t xs0 = x.strides[0] // sizeof(floating), xs1 = x.strides[1] // sizeof(floating)
    cdef Py_ssize_t ds0 = dx.strides[0] // sizeof(floating), ds1 = dx.strides[1] // sizeof(floating)
    if S == 1 and C > 1 and (gs1 != 1 or xs1 != 1 or ds1 != 1):
        raise ValueError("group_norm_backward: with S = 1 the channel axis must have unit stride")
    cdef bint par = N * C * S >= PARALLEL_MIN_SIZE
    cdef bint stream = N * C * S * <Py_ssize_t>sizeof(floating) >= STREAM_MIN_BYTES
    nparts = min(R, omp_get_max_threads()) if par else 1
    cdef const floating* wp = &weight[0] if weight is not None else NULL
    cdef floating* ones = NULL
    cdef double* part = <double*>calloc(2 * C * nparts, sizeof(double))
    if part == NULL:
        raise MemoryError()
    if S == 1 and wp == NULL:  # element mode reads a weight vector
        ones = <floating*>calloc(C, sizeof(floating))
        if ones == NULL:
            free(part)
            raise MemoryError()
        for c in range(C):
            ones[c] = 1
        wp = ones
    cdef const floating* gp = &grad[0, 0, 0]
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* dp = &dx[0, 0, 0]
    with nogil:
        if nparts == 1:
            _gn_backward_rows(gp, xp, dp, 0, R, G, C // G, S, gs0, gs1, xs0, xs1, ds0, ds1, &mean[0, 0],
                              &invstd[0, 0], wp, part, part + C, stream)
        else:
            for t in prange(nparts, schedule="static"):
                _gn_backward_rows(gp, xp, dp, t * R // nparts, (t + 1) * R // nparts, G, C // G, S, gs0, gs1, xs0,
                                  xs1, ds0, ds1, &mean[0, 0], &invstd[0, 0], wp, part + 2 * C * t,
                                  part + 2 * C * t + C, stream)
        for c in range(C):
            sw = 0
            sb = 0
            for t in range(nparts):
                sw += part[2 * C * t + c]
                sb += part[2 * C * t + C + c]
            dweight[c] = <floating>sw
            dbias[c] = <floating>sb
    free(ones)
    free(part)


# ---------------------------------------------------------- per-row kernels
cdef void _row_forward(const floating* x, floating* xhat, Py_ssize_t K, double eps, floating* mean_out,
                       floating* invstd_out) noexcept nogil:
    cdef mg_stats st
    cdef floating mhi, mlo
    st.n = 0
    st.mean = 0
    st.m2 = 0
    _stats(x, K, &st)
    cdef double inv = 1.0 / sqrt(st.m2 / st.n + eps)
    _split(st.mean, &mhi, &mlo)
    _affine(x, xhat, K, mhi, mlo, <floating>inv, <floating>0, False)
    mean_out[0] = <floating>st.mean
    invstd_out[0] = <floating>inv


cdef void _row_backward(const floating* g, const floating* xhat, floating* dx, Py_ssize_t K,
                        double invstd) noexcept nogil:
    cdef double sg = 0, sgx = 0
    cdef double inv_k = 1.0 / <double>K
    _sum2(g, xhat, K, 0.0, &sg, &sgx)
    # dx = invstd·(g - mean(g) - x̂·mean(g·x̂))
    _dx(g, xhat, dx, K, <floating>invstd, <floating>(-invstd * sg * inv_k), <floating>(invstd * sgx * inv_k),
        <floating>0, <floating>0, False)


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
    if not (par and R > 1):
        with nogil:
            for r in range(R):
                _row_forward(xp + r * xs0, hp + r * hs0, K, eps, &mean[r], &invstd[r])
        return
    with nogil:
        for r in prange(R, schedule="static"):
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
    if not (par and R > 1):
        with nogil:
            for r in range(R):
                _row_backward(gp + r * gs0, hp + r * hs0, dp + r * ds0, K, invstd[r])
        return
    with nogil:
        for r in prange(R, schedule="static"):
            _row_backward(gp + r * gs0, hp + r * hs0, dp + r * ds0, K, invstd[r])
