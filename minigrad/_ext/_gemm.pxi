# Matrix products in minigrad's own thread team: the primitives of _gemm_simd.h (one thread, any
# strides) and the splits that give each thread of the team a block of C. Every matrix product of
# minigrad's work (Linear, matmul, convolution) runs here, so the thread budget covers it and the
# BLAS library's own pool, which spins for a while after every call and then competes with the next
# kernel for the cores, stays asleep. Included by every build of the kernels (see _kernels.pyx).

cdef extern from "_simd.h" nogil:
    int MG_GEMM_MR
    int MG_GEMM_NR_F32_VALUE
    int MG_GEMM_NR_F64_VALUE
    int mg_gemm_f32(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* a, Py_ssize_t ars, Py_ssize_t acs,
                    const float* b, Py_ssize_t brs, Py_ssize_t bcs, float* c, Py_ssize_t ldc, int accumulate)
    int mg_gemm_f64(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double* a, Py_ssize_t ars, Py_ssize_t acs,
                    const double* b, Py_ssize_t brs, Py_ssize_t bcs, double* c, Py_ssize_t ldc, int accumulate)

# A product runs threaded from this many multiply-adds (a fork/join costs a few microseconds, about
# what one thread needs for 2^16·16 of them); threads_for compares work against parallel_min_size.
cdef enum:
    GEMM_WORK_SHIFT = 3


cdef inline int _gemm1(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* a, Py_ssize_t ars, Py_ssize_t acs,
                       const floating* b, Py_ssize_t brs, Py_ssize_t bcs, floating* c, Py_ssize_t ldc,
                       bint accumulate) noexcept nogil:
    """C (+)= A·B on the calling thread; -1 when out of memory."""
    if floating is float:
        return mg_gemm_f32(M, N, K, a, ars, acs, b, brs, bcs, c, ldc, accumulate)
    else:
        return mg_gemm_f64(M, N, K, a, ars, acs, b, brs, bcs, c, ldc, accumulate)


cdef int _gemm_team(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* a, Py_ssize_t ars, Py_ssize_t acs,
                    const floating* b, Py_ssize_t brs, Py_ssize_t bcs, floating* c, Py_ssize_t ldc,
                    bint accumulate, int threads) noexcept nogil:
    """C (+)= A·B with C cut into ``threads`` blocks of whole micro-tiles, along the dimension with more
    tiles. Each element is computed by one thread the same way whatever the cut, so the result is
    identical for every thread count. -1 when out of memory."""
    cdef Py_ssize_t nr = MG_GEMM_NR_F32_VALUE if floating is float else MG_GEMM_NR_F64_VALUE
    cdef Py_ssize_t tn = (N + nr - 1) // nr, tm = (M + MG_GEMM_MR - 1) // MG_GEMM_MR
    cdef Py_ssize_t parts, t, lo, hi, p
    cdef bint by_cols
    cdef int bad = 0
    # Each thread packs the panels of B its block of C needs: all of them for a block of rows, its share
    # for a block of columns. Packing a panel costs about what one micro-tile of products costs, so the
    # cut is the one with less work for the busiest thread, counted in tiles (ties: by columns).
    p = threads
    by_cols = tn + (tm + p - 1) // p * tn >= (tn + p - 1) // p * (1 + tm)
    parts = min(<Py_ssize_t>threads, tn if by_cols else tm)
    if parts <= 1:
        return _gemm1(M, N, K, a, ars, acs, b, brs, bcs, c, ldc, accumulate)
    for t in prange(parts, schedule="static", num_threads=parts):
        if by_cols:
            lo = t * tn // parts * nr
            hi = min(N, (t + 1) * tn // parts * nr)
            bad += _gemm1(M, hi - lo, K, a, ars, acs, b + lo * bcs, brs, bcs, c + lo, ldc, accumulate) != 0
        else:
            lo = t * tm // parts * MG_GEMM_MR
            hi = min(M, (t + 1) * tm // parts * MG_GEMM_MR)
            bad += _gemm1(hi - lo, N, K, a + lo * ars, ars, acs, b, brs, bcs, c + lo * ldc, ldc, accumulate) != 0
    return -1 if bad else 0


cdef inline Py_ssize_t _items(Py_ssize_t stride, Py_ssize_t itemsize, str name) except? -1:
    """A byte stride in items (signed: a reversed view has negative strides)."""
    if stride % itemsize:
        raise ValueError(f"{name}: strides must be multiples of the item size, got {stride}")
    return stride // itemsize


def matmul(const floating[:, :, :] a not None, const floating[:, :, :] b not None, floating[:, :, ::1] out not None,
           bint accumulate=False):
    """``out[i] = a[i] @ b[i]`` (``+=`` when ``accumulate``) for the B matrices of a batch.

    ``a`` (B, M, K) and ``b`` (B, K, N) may have any strides (a transposed
    operand, a batch broadcast with stride 0); ``out`` (B, M, N) is
    C-contiguous and must not overlap them. Float32 or float64 (one type
    for all three). Deterministic: the same bits for every thread count.
    """
    cdef Py_ssize_t B = a.shape[0], M = a.shape[1], K = a.shape[2], N = b.shape[2], i
    cdef Py_ssize_t isz = sizeof(floating)
    if b.shape[0] != B or out.shape[0] != B:
        raise ValueError(f"matmul: batch sizes differ: a {B}, b {b.shape[0]}, out {out.shape[0]}")
    if b.shape[1] != K:
        raise ValueError(f"matmul: a is ({M}, {K}) per matrix but b is ({b.shape[1]}, {N})")
    if out.shape[1] != M or out.shape[2] != N:
        raise ValueError(f"matmul: out must be ({B}, {M}, {N}), got ({out.shape[0]}, {out.shape[1]}, {out.shape[2]})")
    if B == 0 or M == 0 or N == 0:
        return
    cdef Py_ssize_t as0 = _items(a.strides[0], isz, "a"), as1 = _items(a.strides[1], isz, "a")
    cdef Py_ssize_t as2 = _items(a.strides[2], isz, "a"), bs0 = _items(b.strides[0], isz, "b")
    cdef Py_ssize_t bs1 = _items(b.strides[1], isz, "b"), bs2 = _items(b.strides[2], isz, "b")
    cdef const floating* ap = &a[0, 0, 0] if K else NULL
    cdef const floating* bp = &b[0, 0, 0] if K else NULL
    cdef floating* cp = &out[0, 0, 0]
    cdef int threads = threads_for((B * M * N * K) >> GEMM_WORK_SHIFT)
    cdef int bad = 0
    with nogil:
        if threads > 1 and B >= threads:  # whole matrices per thread
            for i in prange(B, schedule="static", num_threads=threads):
                bad += _gemm1(M, N, K, ap + i * as0, as1, as2, bp + i * bs0, bs1, bs2, cp + i * M * N, N,
                              accumulate) != 0
        else:
            for i in range(B):
                bad += _gemm_team(M, N, K, ap + i * as0, as1, as2, bp + i * bs0, bs1, bs2, cp + i * M * N, N,
                                  accumulate, threads) != 0
    if bad:
        raise MemoryError("matmul: no memory for the packed panels")
