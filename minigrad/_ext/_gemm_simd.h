/* Matrix product primitives (_gemm.pxi, _conv.pxi); included by _simd.h inside the build's target.

   mg_gemm_f32 / mg_gemm_f64: C (+)= A·B on one thread, for any strides of A and B (a transposed
   operand is only other strides: no copy), C row-major. The threads of a product are started by
   the Cython callers (each thread one block of C's rows or columns), so every thread of
   minigrad's work runs in its one OpenMP team and BLAS's own thread pool is never woken.

   The structure is the one of BLIS / GotoBLAS, small: B is packed in panels of NR columns
   (KC rows deep), A in panels of MR rows, and a register-blocked micro-kernel multiplies one A
   panel by one B panel, MR×NR accumulators of two vectors a row (MR = 6: 12 vector registers,
   two for B and one for the broadcast of A: it fits the 16 registers of SSE2 and AVX2). Edges
   are zero-padded in the packed panels, so every tile takes the same path.

   Determinism: each element of C is accumulated over k in one order (KC blocks in turn, each
   from its first k to its last), whatever the shapes of the blocks around it, so the result does
   not depend on how C is split among threads: it is bit-identical for every thread count. It does
   depend on the build: the AVX2 and AVX-512 builds contract a·b + c into one rounding (FMA), the
   baseline build rounds twice. */
#ifndef MINIGRAD_GEMM_SIMD_H
#define MINIGRAD_GEMM_SIMD_H

#include <stdlib.h>

#define MG_GEMM_MR 6
/* Depth of a packed panel (K per block): KC·NR·4 bytes of B (32 KiB for AVX2 float) stay in L1
   while a panel of A streams past; C is read and written once per KC block. */
#define MG_GEMM_KC 256
/* Columns of B packed at once (KC·NC values: 1 MiB of float, in L2/L3). */
#define MG_GEMM_NC 1024
/* Rows of A packed at once (MC·KC values: 96 KiB of float, in L2). */
#define MG_GEMM_MC 96

static inline void* mg_aligned_alloc(size_t bytes) {
    void* p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64)) return NULL;
    return p;
}

#if MG_VEC
/* Row i of the tile's accumulators is (c<i>0, c<i>1), two vectors of W lanes. Row i of A is read
   at a + o<i> (o<i> is clamped to the tile's last valid row: the extra rows of an edge tile are
   computed from valid memory and never stored). */
#  define MG_UKR_DECL(i, VT) VT c##i##0 = {0}, c##i##1 = {0};
#  define MG_UKR_FMA(i, at)                                                                      \
    {                                                                                            \
        __typeof__(*a) ai = at;                                                                  \
        c##i##0 += ai * b0;                                                                      \
        c##i##1 += ai * b1;                                                                      \
    }
#  define MG_UKR_FULL(i, SUF, W)                                                                 \
    {                                                                                            \
        __typeof__(c) ci = c + i * ldc;                                                          \
        if (acc) {                                                                               \
            c##i##0 += mg_ld_##SUF(ci);                                                          \
            c##i##1 += mg_ld_##SUF(ci + W);                                                      \
        }                                                                                        \
        mg_st_##SUF(ci, c##i##0);                                                                \
        mg_st_##SUF(ci + W, c##i##1);                                                            \
    }
#  define MG_UKR_TMP(i, SUF, W)                                                                  \
    mg_st_##SUF(tmp + i * 2 * W, c##i##0);                                                       \
    mg_st_##SUF(tmp + i * 2 * W + W, c##i##1);
/* The tile's accumulators into C: whole vectors for a full tile, through a buffer for an edge. */
#  define MG_UKR_STORE(T, SUF, W)                                                                \
    if (mr == MG_GEMM_MR && nr == 2 * W) {                                                       \
        MG_UKR_FULL(0, SUF, W) MG_UKR_FULL(1, SUF, W) MG_UKR_FULL(2, SUF, W)                     \
        MG_UKR_FULL(3, SUF, W) MG_UKR_FULL(4, SUF, W) MG_UKR_FULL(5, SUF, W)                     \
        return;                                                                                  \
    }                                                                                            \
    T tmp[MG_GEMM_MR * 2 * W] MG_ALIGNED(64);                                                    \
    MG_UKR_TMP(0, SUF, W) MG_UKR_TMP(1, SUF, W) MG_UKR_TMP(2, SUF, W)                            \
    MG_UKR_TMP(3, SUF, W) MG_UKR_TMP(4, SUF, W) MG_UKR_TMP(5, SUF, W)                            \
    mg_gemm_store_##SUF(c, ldc, mr, nr, tmp, acc);
/* The MR×NR tile of C at c (row stride ldc) (+)= A's rows · the packed B panel bp (kc×NR); only
   its first mr rows and nr columns are written. Two ways to read A, with no copy: "rows", row i
   at a + i·lda (unit stride along k: row-major A), or "cols", element (i, k) at a[k·lda + i]
   (unit stride along i: a transposed A, or a packed one). */
#  define MG_GEMM_UKERNEL(T, SUF, VT, W)                                                         \
static inline void mg_gemm_store_##SUF(T* c, Py_ssize_t ldc, Py_ssize_t mr, Py_ssize_t nr,      \
                                       const T* tmp, int acc) {                                  \
    for (Py_ssize_t i = 0; i < mr; i++)                                                          \
        for (Py_ssize_t j = 0; j < nr; j++)                                                      \
            c[i * ldc + j] = (acc ? c[i * ldc + j] : (T)0) + tmp[i * 2 * W + j];                 \
}                                                                                                \
static void mg_gemm_tile_rows_##SUF(Py_ssize_t kc, const T* a, Py_ssize_t lda, const T* bp,     \
                                    T* c, Py_ssize_t ldc, Py_ssize_t mr, Py_ssize_t nr, int acc) {\
    MG_UKR_DECL(0, VT) MG_UKR_DECL(1, VT) MG_UKR_DECL(2, VT)                                     \
    MG_UKR_DECL(3, VT) MG_UKR_DECL(4, VT) MG_UKR_DECL(5, VT)                                     \
    const T *r0 = a, *r1 = a + (mr > 1 ? 1 : 0) * lda, *r2 = a + (mr > 2 ? 2 : mr - 1) * lda,    \
            *r3 = a + (mr > 3 ? 3 : mr - 1) * lda, *r4 = a + (mr > 4 ? 4 : mr - 1) * lda,        \
            *r5 = a + (mr > 5 ? 5 : mr - 1) * lda;                                               \
    for (Py_ssize_t k = 0; k < kc; k++, bp += 2 * W) {                                           \
        VT b0 = mg_ld_##SUF(bp), b1 = mg_ld_##SUF(bp + W);                                       \
        MG_UKR_FMA(0, r0[k]) MG_UKR_FMA(1, r1[k]) MG_UKR_FMA(2, r2[k])                           \
        MG_UKR_FMA(3, r3[k]) MG_UKR_FMA(4, r4[k]) MG_UKR_FMA(5, r5[k])                           \
    }                                                                                            \
    MG_UKR_STORE(T, SUF, W)                                                                      \
}                                                                                                \
static void mg_gemm_tile_cols_##SUF(Py_ssize_t kc, const T* a, Py_ssize_t lda, const T* bp,     \
                                    T* c, Py_ssize_t ldc, Py_ssize_t mr, Py_ssize_t nr, int acc) {\
    MG_UKR_DECL(0, VT) MG_UKR_DECL(1, VT) MG_UKR_DECL(2, VT)                                     \
    MG_UKR_DECL(3, VT) MG_UKR_DECL(4, VT) MG_UKR_DECL(5, VT)                                     \
    const Py_ssize_t o1 = mr > 1 ? 1 : 0, o2 = mr > 2 ? 2 : mr - 1, o3 = mr > 3 ? 3 : mr - 1,    \
                     o4 = mr > 4 ? 4 : mr - 1, o5 = mr > 5 ? 5 : mr - 1;                         \
    for (Py_ssize_t k = 0; k < kc; k++, bp += 2 * W, a += lda) {                                 \
        VT b0 = mg_ld_##SUF(bp), b1 = mg_ld_##SUF(bp + W);                                       \
        MG_UKR_FMA(0, a[0]) MG_UKR_FMA(1, a[o1]) MG_UKR_FMA(2, a[o2])                            \
        MG_UKR_FMA(3, a[o3]) MG_UKR_FMA(4, a[o4]) MG_UKR_FMA(5, a[o5])                           \
    }                                                                                            \
    MG_UKR_STORE(T, SUF, W)                                                                      \
}
#  define MG_GEMM_NR_F32 (2 * MG_WF)
#  define MG_GEMM_NR_F64 (2 * MG_WD)
#else
/* Scalar builds (compilers without vector extensions): the same packed B layout, two lanes. */
#  define MG_GEMM_UKERNEL(T, SUF, VT, W)                                                         \
static void mg_gemm_tile_any_##SUF(Py_ssize_t kc, const T* a, Py_ssize_t ars, Py_ssize_t acs,   \
                                   const T* bp, T* c, Py_ssize_t ldc, Py_ssize_t mr,             \
                                   Py_ssize_t nr, int acc) {                                     \
    for (Py_ssize_t i = 0; i < mr; i++)                                                          \
        for (Py_ssize_t j = 0; j < nr; j++) {                                                    \
            T s = 0;                                                                             \
            for (Py_ssize_t k = 0; k < kc; k++) s += a[i * ars + k * acs] * bp[k * 2 + j];       \
            c[i * ldc + j] = (acc ? c[i * ldc + j] : (T)0) + s;                                  \
        }                                                                                        \
}                                                                                                \
static void mg_gemm_tile_rows_##SUF(Py_ssize_t kc, const T* a, Py_ssize_t lda, const T* bp,     \
                                    T* c, Py_ssize_t ldc, Py_ssize_t mr, Py_ssize_t nr, int acc) {\
    mg_gemm_tile_any_##SUF(kc, a, lda, 1, bp, c, ldc, mr, nr, acc);                              \
}                                                                                                \
static void mg_gemm_tile_cols_##SUF(Py_ssize_t kc, const T* a, Py_ssize_t lda, const T* bp,     \
                                    T* c, Py_ssize_t ldc, Py_ssize_t mr, Py_ssize_t nr, int acc) {\
    mg_gemm_tile_any_##SUF(kc, a, 1, lda, bp, c, ldc, mr, nr, acc);                              \
}
#  define MG_GEMM_NR_F32 2
#  define MG_GEMM_NR_F64 2
#endif

/* Packing a transposed B (element (k, j) at b[k + j*cs]: the weight of a Linear layer read as W.T):
   out[k*NR + j] = b[j*cs + k] for j < w, zero-padded to NR columns. Read along k, as the rows of W lie
   in memory, and transposed in registers four by four (two by two for double), so the packed panel is
   written a whole vector at a time instead of one strided element at a time. */
#if MG_VEC
typedef float mg_v4f __attribute__((vector_size(16)));
typedef double mg_v2d __attribute__((vector_size(16)));
#  if defined(__clang__)
#    define MG_SHUF4(a, b, i, j, k, l) __builtin_shufflevector(a, b, i, j, k, l)
#    define MG_SHUF2(a, b, i, j) __builtin_shufflevector(a, b, i, j)
#  else
typedef int mg_v4i __attribute__((vector_size(16)));
typedef long long mg_v2l __attribute__((vector_size(16)));
#    define MG_SHUF4(a, b, i, j, k, l) __builtin_shuffle(a, b, (mg_v4i){i, j, k, l})
#    define MG_SHUF2(a, b, i, j) __builtin_shuffle(a, b, (mg_v2l){i, j})
#  endif
static inline mg_v4f mg_ld4(const float* p) { mg_v4f v; memcpy(&v, p, sizeof v); return v; }
static inline mg_v2d mg_ld2(const double* p) { mg_v2d v; memcpy(&v, p, sizeof v); return v; }
#endif

static void mg_gemm_pack_bt_f32(Py_ssize_t kc, Py_ssize_t w, const float* b, Py_ssize_t cs, float* out,
                                Py_ssize_t NR) {
    Py_ssize_t j = 0;
#if MG_VEC
    for (; j + 4 <= w; j += 4) {
        const float *r0 = b + j * cs, *r1 = r0 + cs, *r2 = r1 + cs, *r3 = r2 + cs;
        Py_ssize_t k = 0;
        for (; k + 4 <= kc; k += 4) {
            mg_v4f a0 = mg_ld4(r0 + k), a1 = mg_ld4(r1 + k), a2 = mg_ld4(r2 + k), a3 = mg_ld4(r3 + k);
            mg_v4f t0 = MG_SHUF4(a0, a1, 0, 4, 1, 5), t1 = MG_SHUF4(a0, a1, 2, 6, 3, 7);
            mg_v4f t2 = MG_SHUF4(a2, a3, 0, 4, 1, 5), t3 = MG_SHUF4(a2, a3, 2, 6, 3, 7);
            mg_v4f o0 = MG_SHUF4(t0, t2, 0, 1, 4, 5), o1 = MG_SHUF4(t0, t2, 2, 3, 6, 7);
            mg_v4f o2 = MG_SHUF4(t1, t3, 0, 1, 4, 5), o3 = MG_SHUF4(t1, t3, 2, 3, 6, 7);
            memcpy(out + k * NR + j, &o0, sizeof o0);
            memcpy(out + (k + 1) * NR + j, &o1, sizeof o1);
            memcpy(out + (k + 2) * NR + j, &o2, sizeof o2);
            memcpy(out + (k + 3) * NR + j, &o3, sizeof o3);
        }
        for (; k < kc; k++) {
            out[k * NR + j] = r0[k];
            out[k * NR + j + 1] = r1[k];
            out[k * NR + j + 2] = r2[k];
            out[k * NR + j + 3] = r3[k];
        }
    }
#endif
    for (; j < NR; j++)
        for (Py_ssize_t k = 0; k < kc; k++) out[k * NR + j] = j < w ? b[j * cs + k] : 0.0f;
}

static void mg_gemm_pack_bt_f64(Py_ssize_t kc, Py_ssize_t w, const double* b, Py_ssize_t cs, double* out,
                                Py_ssize_t NR) {
    Py_ssize_t j = 0;
#if MG_VEC
    for (; j + 2 <= w; j += 2) {
        const double *r0 = b + j * cs, *r1 = r0 + cs;
        Py_ssize_t k = 0;
        for (; k + 2 <= kc; k += 2) {
            mg_v2d a0 = mg_ld2(r0 + k), a1 = mg_ld2(r1 + k);
            mg_v2d o0 = MG_SHUF2(a0, a1, 0, 2), o1 = MG_SHUF2(a0, a1, 1, 3);
            memcpy(out + k * NR + j, &o0, sizeof o0);
            memcpy(out + (k + 1) * NR + j, &o1, sizeof o1);
        }
        for (; k < kc; k++) {
            out[k * NR + j] = r0[k];
            out[k * NR + j + 1] = r1[k];
        }
    }
#endif
    for (; j < NR; j++)
        for (Py_ssize_t k = 0; k < kc; k++) out[k * NR + j] = j < w ? b[j * cs + k] : 0.0;
}

#define MG_GEMM(T, SUF, VT, W, NR)                                                               \
MG_GEMM_UKERNEL(T, SUF, VT, W)                                                                   \
/* Panels of NR columns of B[0:kc, 0:nc] (element (k, j) at b[k*rs + j*cs]), zero-padded. */     \
static void mg_gemm_pack_b_##SUF(Py_ssize_t kc, Py_ssize_t nc, const T* b, Py_ssize_t rs,       \
                                 Py_ssize_t cs, T* out) {                                        \
    for (Py_ssize_t j0 = 0; j0 < nc; j0 += NR, out += kc * NR) {                                 \
        Py_ssize_t w = nc - j0 < NR ? nc - j0 : NR;                                              \
        const T* bj = b + j0 * cs;                                                               \
        if (cs == 1 && w == NR) {                                                                \
            for (Py_ssize_t k = 0; k < kc; k++) memcpy(out + k * NR, bj + k * rs, sizeof(T) * NR); \
        } else if (cs == 1) {                                                                    \
            for (Py_ssize_t k = 0; k < kc; k++) {                                                \
                Py_ssize_t j = 0;                                                                \
                for (; j < w; j++) out[k * NR + j] = bj[k * rs + j];                             \
                for (; j < NR; j++) out[k * NR + j] = 0;                                         \
            }                                                                                    \
        } else if (rs == 1) {                                                                    \
            mg_gemm_pack_bt_##SUF(kc, w, bj, cs, out, NR);                                       \
        } else {                                                                                 \
            for (Py_ssize_t j = 0; j < NR; j++)                                                  \
                for (Py_ssize_t k = 0; k < kc; k++)                                              \
                    out[k * NR + j] = j < w ? bj[k * rs + j * cs] : (T)0;                        \
        }                                                                                        \
    }                                                                                            \
}                                                                                                \
/* Panels of MR rows of A[0:mc, 0:kc] (element (i, k) at a[i*rs + k*cs]) in the "cols" layout:   \
   only for an A with neither unit stride (never, from minigrad's callers, but possible). */     \
static void mg_gemm_pack_a_##SUF(Py_ssize_t mc, Py_ssize_t kc, const T* a, Py_ssize_t rs,       \
                                 Py_ssize_t cs, T* out) {                                        \
    for (Py_ssize_t i0 = 0; i0 < mc; i0 += MG_GEMM_MR, out += kc * MG_GEMM_MR) {                \
        Py_ssize_t h = mc - i0 < MG_GEMM_MR ? mc - i0 : MG_GEMM_MR;                              \
        const T* ai = a + i0 * rs;                                                               \
        for (Py_ssize_t i = 0; i < MG_GEMM_MR; i++)                                              \
            for (Py_ssize_t k = 0; k < kc; k++)                                                  \
                out[k * MG_GEMM_MR + i] = i < h ? ai[i * rs + k * cs] : (T)0;                    \
    }                                                                                            \
}                                                                                                \
/* C[M, N] (row stride ldc) = A[M, K]·B[K, N] (+ C when accumulate); A's element (i, k) at         \
   a[i*ars + k*acs], B's (k, j) at b[k*brs + j*bcs]. Returns -1 if out of memory, else 0. */     \
static int mg_gemm_##SUF(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const T* a, Py_ssize_t ars,   \
                         Py_ssize_t acs, const T* b, Py_ssize_t brs, Py_ssize_t bcs, T* c,       \
                         Py_ssize_t ldc, int accumulate) {                                       \
    if (M <= 0 || N <= 0) return 0;                                                              \
    if (K <= 0) {                                                                                \
        if (!accumulate)                                                                         \
            for (Py_ssize_t i = 0; i < M; i++)                                                   \
                for (Py_ssize_t j = 0; j < N; j++) c[i * ldc + j] = 0;                           \
        return 0;                                                                                \
    }                                                                                            \
    Py_ssize_t kcap = K < MG_GEMM_KC ? K : MG_GEMM_KC;                                           \
    Py_ssize_t ncap = N < MG_GEMM_NC ? N : MG_GEMM_NC;                                           \
    Py_ssize_t mcap = M < MG_GEMM_MC ? M : MG_GEMM_MC;                                           \
    int by_rows = acs == 1 || (ars != 1 && K == 1), packed = !by_rows && ars != 1;               \
    T* bpack = (T*)mg_aligned_alloc(sizeof(T) * kcap * ((ncap + NR - 1) / NR) * NR);             \
    T* apack = packed ? (T*)mg_aligned_alloc(sizeof(T) * kcap * ((mcap + MG_GEMM_MR - 1)         \
                                                                  / MG_GEMM_MR) * MG_GEMM_MR)    \
                      : NULL;                                                                    \
    if (!bpack || (packed && !apack)) {                                                          \
        free(bpack);                                                                             \
        free(apack);                                                                             \
        return -1;                                                                               \
    }                                                                                            \
    for (Py_ssize_t jc = 0; jc < N; jc += MG_GEMM_NC) {                                          \
        Py_ssize_t nc = N - jc < MG_GEMM_NC ? N - jc : MG_GEMM_NC;                               \
        for (Py_ssize_t pc = 0; pc < K; pc += MG_GEMM_KC) {                                      \
            Py_ssize_t kc = K - pc < MG_GEMM_KC ? K - pc : MG_GEMM_KC;                           \
            int acc = accumulate || pc > 0;                                                      \
            mg_gemm_pack_b_##SUF(kc, nc, b + pc * brs + jc * bcs, brs, bcs, bpack);              \
            for (Py_ssize_t ic = 0; ic < M; ic += MG_GEMM_MC) {                                  \
                Py_ssize_t mc = M - ic < MG_GEMM_MC ? M - ic : MG_GEMM_MC;                       \
                const T* ablk = a + ic * ars + pc * acs;                                         \
                if (packed) mg_gemm_pack_a_##SUF(mc, kc, ablk, ars, acs, apack);                 \
                for (Py_ssize_t jr = 0; jr < nc; jr += NR)                                       \
                    for (Py_ssize_t ir = 0; ir < mc; ir += MG_GEMM_MR) {                         \
                        Py_ssize_t mr = mc - ir < MG_GEMM_MR ? mc - ir : MG_GEMM_MR;             \
                        Py_ssize_t nr = nc - jr < NR ? nc - jr : NR;                             \
                        T* ct = c + (ic + ir) * ldc + jc + jr;                                   \
                        if (by_rows)                                                             \
                            mg_gemm_tile_rows_##SUF(kc, ablk + ir * ars, ars, bpack + jr * kc,   \
                                                    ct, ldc, mr, nr, acc);                       \
                        else if (packed)                                                         \
                            mg_gemm_tile_cols_##SUF(kc, apack + ir * kc, MG_GEMM_MR,             \
                                                    bpack + jr * kc, ct, ldc, mr, nr, acc);      \
                        else                                                                     \
                            mg_gemm_tile_cols_##SUF(kc, ablk + ir, acs, bpack + jr * kc, ct,     \
                                                    ldc, mr, nr, acc);                           \
                    }                                                                            \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    free(bpack);                                                                                 \
    free(apack);                                                                                 \
    return 0;                                                                                    \
}

#if MG_VEC
MG_GEMM(float, f32, mg_vf, MG_WF, MG_GEMM_NR_F32)
MG_GEMM(double, f64, mg_vd, MG_WD, MG_GEMM_NR_F64)
#else
MG_GEMM(float, f32, void, 1, MG_GEMM_NR_F32)
MG_GEMM(double, f64, void, 1, MG_GEMM_NR_F64)
#endif

/* The column count of a micro-tile: callers split C among threads in multiples of it. */
enum { MG_GEMM_NR_F32_VALUE = MG_GEMM_NR_F32, MG_GEMM_NR_F64_VALUE = MG_GEMM_NR_F64 };

#endif /* MINIGRAD_GEMM_SIMD_H */
