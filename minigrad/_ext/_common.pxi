# Shared by every kernel family (_batchnorm.pxi, _groupnorm.pxi, _gemm.pxi, _conv.pxi, _pool.pxi,
# _optim.pxi), included by every build of the kernels (_kernels.pyx baseline, _kernels_avx2.pyx,
# _kernels_avx512.pyx): the build's report of itself, the checks every kernel entry makes, and the
# typed entry points to the normalization primitives. The C primitives are declared next to the family
# that calls them; the tuning knobs live in minigrad._ext._parallel, one copy for every build.

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport erf as c_erf, erff, sqrt, NAN
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memset

from minigrad._ext._omp_compat cimport minigrad_omp_barrier, omp_get_num_threads, omp_get_thread_num
from minigrad._ext._parallel cimport stream_min_bytes, team_min_channel_bytes, team_mode, threads_for

cdef extern from "_simd.h" nogil:
    const char* MG_SIMD_NAME
    int MG_BUILD_VBYTES
    int MG_BUILD_NT_BYTES
    int mg_cpu_supports(const char* simd)
    ctypedef struct mg_stats:
        double n
        double mean
        double m2
    void mg_store_fence()
    void mg_prefetch(const void* p, Py_ssize_t nbytes)
    void mg_stats_merge(mg_stats* s, double n, double mean, double m2)
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
    void mg_col_mean_f32(const float* x, Py_ssize_t N, Py_ssize_t nb, Py_ssize_t ld, double* mean)
    void mg_col_mean_f64(const double* x, Py_ssize_t N, Py_ssize_t nb, Py_ssize_t ld, double* mean)
    void mg_col_ssd_f32(const float* x, Py_ssize_t N, Py_ssize_t nb, Py_ssize_t ld, const double* mean,
                        double* ssd)
    void mg_col_ssd_f64(const double* x, Py_ssize_t N, Py_ssize_t nb, Py_ssize_t ld, const double* mean,
                        double* ssd)
    void mg_col_affine_f32(const float* x, float* y, Py_ssize_t N, Py_ssize_t nb, Py_ssize_t ldx, Py_ssize_t ldy,
                           const float* h, const float* l, const float* a, const float* b)
    void mg_col_affine_f64(const double* x, double* y, Py_ssize_t N, Py_ssize_t nb, Py_ssize_t ldx,
                           Py_ssize_t ldy, const double* h, const double* l, const double* a, const double* b)
    void mg_col_madd_f32(const float* x, float* y, Py_ssize_t N, Py_ssize_t nb, Py_ssize_t ldx, Py_ssize_t ldy,
                         const float* a, const float* b)
    void mg_col_madd_f64(const double* x, double* y, Py_ssize_t N, Py_ssize_t nb, Py_ssize_t ldx, Py_ssize_t ldy,
                         const double* a, const double* b)
    void mg_col_sum2_f32(const float* g, const float* x, Py_ssize_t N, Py_ssize_t nb, Py_ssize_t ldg,
                         Py_ssize_t ldx, const double* mu, double* sg, double* sgx)
    void mg_col_sum2_f64(const double* g, const double* x, Py_ssize_t N, Py_ssize_t nb, Py_ssize_t ldg,
                         Py_ssize_t ldx, const double* mu, double* sg, double* sgx)
    void mg_col_dx_f32(const float* g, const float* x, float* d, Py_ssize_t N, Py_ssize_t nb, Py_ssize_t ldg,
                       Py_ssize_t ldx, Py_ssize_t ldd, const float* ka, const float* kb, const float* kc,
                       const float* h, const float* l, int training)
    void mg_col_dx_f64(const double* g, const double* x, double* d, Py_ssize_t N, Py_ssize_t nb, Py_ssize_t ldg,
                       Py_ssize_t ldx, Py_ssize_t ldd, const double* ka, const double* kb, const double* kc,
                       const double* h, const double* l, int training)

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

# Refuse to load on a processor that cannot run this build's primitives. This module's initialisation
# and its Cython code are baseline x86-64 (see _simd.h), so the check itself runs anywhere.
if not mg_cpu_supports(MG_SIMD_NAME):
    raise ImportError(f"{__name__} is the {MG_SIMD_NAME.decode()} build of minigrad's CPU kernels, and this "
                      f"processor cannot run it; the CPU backend picks a build it can run")


def simd():
    """The instruction set this build's primitives target: "baseline", "avx2" or "avx512"."""
    return MG_SIMD_NAME.decode()


def vector_bytes():
    """Width in bytes of this build's vectors (64 AVX-512, 32 AVX2, 16 SSE2/NEON, 0 scalar)."""
    return MG_BUILD_VBYTES


def stream_vector_bytes():
    """Width in bytes of this build's streaming stores (64, 32, 16; 0: none, plain stores)."""
    return MG_BUILD_NT_BYTES


cdef bint _use_team(Py_ssize_t C, Py_ssize_t channel_bytes, int threads) noexcept nogil:
    """Whether a per-channel kernel splits every channel over the whole team (see _batchnorm.pxi)."""
    cdef int mode = team_mode()
    if threads < 2 or mode == 0:
        return False
    return mode == 1 or C < 4 * threads or channel_bytes >= team_min_channel_bytes()


# ------------------------------------------------------------------ checks
# Every kernel entry checks what it relies on (a Python caller can pass anything: the kernels are the
# last line of defence); the callers above the backends validate user input with clearer messages.
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


cdef int _check_shape3(Py_ssize_t* shape, Py_ssize_t* like, str name, str kernel) except -1:
    """An (N, C, S) array must have the shape of the input."""
    if shape[0] != like[0] or shape[1] != like[1] or shape[2] != like[2]:
        raise ValueError(f"{kernel}: {name} has shape ({shape[0]}, {shape[1]}, {shape[2]}), "
                         f"expected the input's ({like[0]}, {like[1]}, {like[2]})")
    return 0


cdef int _check_len(Py_ssize_t got, Py_ssize_t n, str name, str kernel) except -1:
    """A per-channel vector must hold ``n`` values (the caller skips vectors that are None)."""
    if got != n:
        raise ValueError(f"{kernel}: {name} has {got} values, expected {n} (one per channel)")
    return 0


# ---------------------------------------- typed entry points to the C primitives (one per fused type)
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

