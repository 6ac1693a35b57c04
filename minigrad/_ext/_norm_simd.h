/* Primitives of the normalization kernels (_batchnorm.pxi, _groupnorm.pxi); included by
   _simd.h inside the build's target.

   Each primitive works on one contiguous run of n elements (or, the mg_col_* ones, on a block of
   columns of an (N, C) matrix), generated for both types from one macro body.

   Numerics: every reduction accumulates in double, float32 values converted on load (four
   independent vector accumulators, so a sum is bound by throughput, not by the latency of one
   add). Statistics are two passes over blocks small enough for L1 (mean, then squared deviations
   from it) merged with Chan's formula: never E[x^2] - E[x]^2. Outputs are computed in the working
   precision from centred values ((x - h) - l) with the double mean split into h + l.

   Streaming (non-temporal) stores: the output loops take a flag ``nt``; where set (and on x86),
   the output is written with streaming stores after a scalar peel to the vector alignment, which
   skips the write-allocate read of lines that are not read back soon. The caller issues
   mg_store_fence() before the data is published. */
#ifndef MINIGRAD_NORM_SIMD_H
#define MINIGRAD_NORM_SIMD_H

/* Elements per statistics block (4 KiB of float, 8 KiB of double: L1). */
#define MG_STAT_BLOCK 1024

#if MG_VEC
/* Vector bodies; each leaves i at the first element it did not process. */
#  define MG_BODY_SUM(SUF)                                                                    \
    {                                                                                         \
        mg_vd a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                         \
        for (; i + 4 * MG_WD <= n; i += 4 * MG_WD) {                                          \
            a0 += mg_ldd_##SUF(p + i);                                                        \
            a1 += mg_ldd_##SUF(p + i + MG_WD);                                                \
            a2 += mg_ldd_##SUF(p + i + 2 * MG_WD);                                            \
            a3 += mg_ldd_##SUF(p + i + 3 * MG_WD);                                            \
        }                                                                                     \
        s = mg_hsum((a0 + a1) + (a2 + a3));                                                   \
    }
#  define MG_BODY_SSD(SUF)                                                                    \
    {                                                                                         \
        mg_vd a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, d0, d1, d2, d3;                         \
        for (; i + 4 * MG_WD <= n; i += 4 * MG_WD) {                                          \
            d0 = mg_ldd_##SUF(p + i) - m;                                                     \
            d1 = mg_ldd_##SUF(p + i + MG_WD) - m;                                             \
            d2 = mg_ldd_##SUF(p + i + 2 * MG_WD) - m;                                         \
            d3 = mg_ldd_##SUF(p + i + 3 * MG_WD) - m;                                         \
            a0 += d0 * d0;                                                                    \
            a1 += d1 * d1;                                                                    \
            a2 += d2 * d2;                                                                    \
            a3 += d3 * d3;                                                                    \
        }                                                                                     \
        s = mg_hsum((a0 + a1) + (a2 + a3));                                                   \
    }
#  define MG_BODY_SUM2(SUF)                                                                   \
    {                                                                                         \
        mg_vd s0 = {0}, s1 = {0}, p0 = {0}, p1 = {0}, g0, g1;                                 \
        for (; i + 2 * MG_WD <= n; i += 2 * MG_WD) {                                          \
            g0 = mg_ldd_##SUF(g + i);                                                         \
            g1 = mg_ldd_##SUF(g + i + MG_WD);                                                 \
            s0 += g0;                                                                         \
            s1 += g1;                                                                         \
            p0 += g0 * (mg_ldd_##SUF(x + i) - m);                                             \
            p1 += g1 * (mg_ldd_##SUF(x + i + MG_WD) - m);                                     \
        }                                                                                     \
        a = mg_hsum(s0 + s1);                                                                 \
        b = mg_hsum(p0 + p1);                                                                 \
    }
#  define MG_BODY_SUM2_VEC(SUF)                                                               \
    {                                                                                         \
        mg_vd s0 = {0}, s1 = {0}, p0 = {0}, p1 = {0}, g0, g1, c0, c1, w0, w1;                 \
        for (; i + 2 * MG_WD <= n; i += 2 * MG_WD) {                                          \
            g0 = mg_ldd_##SUF(g + i);                                                         \
            g1 = mg_ldd_##SUF(g + i + MG_WD);                                                 \
            c0 = mg_ldd_##SUF(x + i) - m;                                                     \
            c1 = mg_ldd_##SUF(x + i + MG_WD) - m;                                             \
            w0 = mg_ldd_##SUF(w + i) * g0;                                                    \
            w1 = mg_ldd_##SUF(w + i + MG_WD) * g1;                                            \
            s0 += w0;                                                                         \
            s1 += w1;                                                                         \
            p0 += w0 * c0;                                                                    \
            p1 += w1 * c1;                                                                    \
            mg_st_f64(dw + i, mg_ld_f64(dw + i) + g0 * c0 * inv);                             \
            mg_st_f64(dw + i + MG_WD, mg_ld_f64(dw + i + MG_WD) + g1 * c1 * inv);             \
            mg_st_f64(db + i, mg_ld_f64(db + i) + g0);                                        \
            mg_st_f64(db + i + MG_WD, mg_ld_f64(db + i + MG_WD) + g1);                        \
        }                                                                                     \
        a = mg_hsum(s0 + s1);                                                                 \
        b = mg_hsum(p0 + p1);                                                                 \
    }
/* Output loops: E(k, v) is the value of the vector at offset k, STORE the store. */
#  define MG_PEEL(out, scalar)                                                                \
    for (; i < n && ((uintptr_t)((out) + i) % MG_VBYTES); i++) (out)[i] = (scalar);
#  define MG_BODY_OUT(T, SUF, W, out, scalar, vexpr)                                          \
    if (nt && MG_NT_BYTES) {                                                                  \
        MG_PEEL(out, scalar)                                                                  \
        for (; i + W <= n; i += W) mg_nt_##SUF((out) + i, vexpr);                             \
    } else {                                                                                  \
        for (; i + W <= n; i += W) mg_st_##SUF((out) + i, vexpr);                             \
    }
#else
#  define MG_BODY_SUM(SUF)
#  define MG_BODY_SSD(SUF)
#  define MG_BODY_SUM2(SUF)
#  define MG_BODY_SUM2_VEC(SUF)
#  define MG_BODY_OUT(T, SUF, W, out, scalar, vexpr)
#endif

/* One generator for both types. T: element type; VT/W: its vector type and lanes. */
#define MG_NORM_PRIMITIVES(T, SUF, VT, W)                                                       \
/* sum of p[0:n] in double */                                                                   \
static inline double mg_sum_##SUF(const T* p, Py_ssize_t n) {                                   \
    Py_ssize_t i = 0;                                                                           \
    double s = 0;                                                                               \
    MG_BODY_SUM(SUF)                                                                            \
    for (; i < n; i++) s += (double)p[i];                                                       \
    return s;                                                                                   \
}                                                                                               \
/* sum of (p[i] - m)^2 in double (the second pass of a two-pass variance) */                    \
static inline double mg_ssd_##SUF(const T* p, Py_ssize_t n, double m) {                         \
    Py_ssize_t i = 0;                                                                           \
    double s = 0;                                                                               \
    MG_BODY_SSD(SUF)                                                                            \
    for (; i < n; i++) {                                                                        \
        double d = (double)p[i] - m;                                                            \
        s += d * d;                                                                             \
    }                                                                                           \
    return s;                                                                                   \
}                                                                                               \
/* merge the statistics of p[0:n] into st: two passes per L1 block, Chan between blocks */      \
static inline void mg_stats_##SUF(const T* p, Py_ssize_t n, mg_stats* st) {                     \
    for (Py_ssize_t i0 = 0; i0 < n; i0 += MG_STAT_BLOCK) {                                      \
        Py_ssize_t k = n - i0 < MG_STAT_BLOCK ? n - i0 : MG_STAT_BLOCK;                         \
        double mean = mg_sum_##SUF(p + i0, k) / (double)k;                                      \
        mg_stats_merge(st, (double)k, mean, mg_ssd_##SUF(p + i0, k, mean));                     \
    }                                                                                           \
}                                                                                               \
/* *sg += sum g, *sgd += sum g*(x - m), in double */                                            \
static inline void mg_sum2_##SUF(const T* g, const T* x, Py_ssize_t n, double m, double* sg,   \
                                 double* sgd) {                                                 \
    Py_ssize_t i = 0;                                                                           \
    double a = 0, b = 0;                                                                        \
    MG_BODY_SUM2(SUF)                                                                           \
    for (; i < n; i++) {                                                                        \
        a += (double)g[i];                                                                      \
        b += (double)g[i] * ((double)x[i] - m);                                                 \
    }                                                                                           \
    *sg += a;                                                                                   \
    *sgd += b;                                                                                  \
}                                                                                               \
/* per-element affine (LayerNorm backward): *swg += sum w*g, *swgd += sum w*g*(x - m),         \
   dw[i] += g*(x - m)*inv, db[i] += g; all in double */                                         \
static inline void mg_sum2_vec_##SUF(const T* g, const T* x, const T* w, Py_ssize_t n,         \
                                     double m, double inv, double* swg, double* swgd,           \
                                     double* dw, double* db) {                                  \
    Py_ssize_t i = 0;                                                                           \
    double a = 0, b = 0;                                                                        \
    MG_BODY_SUM2_VEC(SUF)                                                                       \
    for (; i < n; i++) {                                                                        \
        double gd = (double)g[i], c = (double)x[i] - m, wg = (double)w[i] * gd;                 \
        a += wg;                                                                                \
        b += wg * c;                                                                            \
        dw[i] += gd * c * inv;                                                                  \
        db[i] += gd;                                                                            \
    }                                                                                           \
    *swg += a;                                                                                  \
    *swgd += b;                                                                                 \
}                                                                                               \
/* y = ((x - h) - l)*a + b */                                                                   \
static inline void mg_affine_##SUF(const T* x, T* y, Py_ssize_t n, T h, T l, T a, T b, int nt) {\
    Py_ssize_t i = 0;                                                                           \
    MG_BODY_OUT(T, SUF, W, y, ((x[i] - h) - l) * a + b, ((mg_ld_##SUF(x + i) - h) - l) * a + b) \
    for (; i < n; i++) y[i] = ((x[i] - h) - l) * a + b;                                         \
}                                                                                               \
/* y = x*a + b */                                                                               \
static inline void mg_madd_##SUF(const T* x, T* y, Py_ssize_t n, T a, T b, int nt) {           \
    Py_ssize_t i = 0;                                                                           \
    MG_BODY_OUT(T, SUF, W, y, x[i] * a + b, mg_ld_##SUF(x + i) * a + b)                         \
    for (; i < n; i++) y[i] = x[i] * a + b;                                                     \
}                                                                                               \
/* d = a*g + b - c*((x - h) - l) */                                                             \
static inline void mg_dx_##SUF(const T* g, const T* x, T* d, Py_ssize_t n, T a, T b, T c, T h, \
                               T l, int nt) {                                                   \
    Py_ssize_t i = 0;                                                                           \
    MG_BODY_OUT(T, SUF, W, d, a * g[i] + b - c * ((x[i] - h) - l),                              \
                a * mg_ld_##SUF(g + i) + b - c * ((mg_ld_##SUF(x + i) - h) - l))                \
    for (; i < n; i++) d[i] = a * g[i] + b - c * ((x[i] - h) - l);                              \
}                                                                                               \
/* per-element affine (LayerNorm): y = ((x - h) - l)*(inv*w[i]) + b[i] */                       \
static inline void mg_affine_vec_##SUF(const T* x, T* y, Py_ssize_t n, T h, T l, T inv,        \
                                       const T* w, const T* b, int nt) {                        \
    Py_ssize_t i = 0;                                                                           \
    MG_BODY_OUT(T, SUF, W, y, ((x[i] - h) - l) * (inv * w[i]) + b[i],                           \
                ((mg_ld_##SUF(x + i) - h) - l) * (inv * mg_ld_##SUF(w + i)) + mg_ld_##SUF(b + i)) \
    for (; i < n; i++) y[i] = ((x[i] - h) - l) * (inv * w[i]) + b[i];                           \
}                                                                                               \
/* per-element affine backward (LayerNorm): d = (inv*w[i])*g + b - c*((x - h) - l) */          \
static inline void mg_dx_vec_##SUF(const T* g, const T* x, const T* w, T* d, Py_ssize_t n,     \
                                   T inv, T b, T c, T h, T l, int nt) {                         \
    Py_ssize_t i = 0;                                                                           \
    MG_BODY_OUT(T, SUF, W, d, (inv * w[i]) * g[i] + b - c * ((x[i] - h) - l),                   \
                (inv * mg_ld_##SUF(w + i)) * mg_ld_##SUF(g + i) + b                             \
                    - c * ((mg_ld_##SUF(x + i) - h) - l))                                       \
    for (; i < n; i++) d[i] = (inv * w[i]) * g[i] + b - c * ((x[i] - h) - l);                   \
}                                                                                               \
/* y[i] = x[i]*scale[ch] + shift[ch] over the flat elements [lo, hi) of a contiguous            \
   (N, C, S) array, ch = (i / S) % C. With nt, each run of MG_STAGE outputs is first            \
   computed row piece by row piece into an aligned L1 buffer, then streamed out whole: short    \
   rows (S = 196: 784 bytes) then cost no per-row peel and no line written by two kinds of      \
   store. Rows of MG_STAGE_ROW_BYTES and more, or whole aligned vectors long, are streamed      \
   directly (their few scalar head and tail elements cost less than the copy through L1). */   \
static inline void mg_channel_affine_flat_##SUF(const T* x, T* y, Py_ssize_t lo, Py_ssize_t hi, \
                                                Py_ssize_t S, Py_ssize_t C, const T* scale,     \
                                                const T* shift, int nt) {                       \
    Py_ssize_t i = lo;                                                                          \
    if (nt && MG_NT_BYTES && S * (Py_ssize_t)sizeof(T) < MG_STAGE_ROW_BYTES                     \
        && ((uintptr_t)y % MG_VBYTES || (S * (Py_ssize_t)sizeof(T)) % MG_VBYTES)) {               \
        T buf[MG_STAGE] MG_ALIGNED(64);                                                         \
        for (; i < hi && ((uintptr_t)(y + i) % MG_VBYTES); i++) {                               \
            Py_ssize_t ch = (i / S) % C;                                                        \
            y[i] = x[i] * scale[ch] + shift[ch];                                                \
        }                                                                                       \
        for (; i + MG_STAGE <= hi; i += MG_STAGE) {                                             \
            Py_ssize_t q = i, r = i / S;                                                        \
            while (q < i + MG_STAGE) {                                                          \
                Py_ssize_t end = (r + 1) * S < i + MG_STAGE ? (r + 1) * S : i + MG_STAGE;       \
                Py_ssize_t ch = r % C;                                                          \
                mg_madd_##SUF(x + q, buf + (q - i), end - q, scale[ch], shift[ch], 0);          \
                q = end;                                                                        \
                r++;                                                                            \
            }                                                                                   \
            mg_stream_copy_##SUF(buf, y + i, MG_STAGE);                                         \
        }                                                                                       \
    }                                                                                           \
    while (i < hi) {                                                                            \
        Py_ssize_t r = i / S, end = (r + 1) * S < hi ? (r + 1) * S : hi, ch = r % C;            \
        mg_madd_##SUF(x + i, y + i, end - i, scale[ch], shift[ch], nt);                         \
        i = end;                                                                                \
    }                                                                                           \
}

/* Elements staged per streamed run of mg_channel_affine_flat (4 KiB of float), and the row
   length from which rows are streamed directly instead. */
#define MG_STAGE 1024
#define MG_STAGE_ROW_BYTES 4096

#if MG_VEC
/* d[0:n] = s[0:n] with streaming stores; d is vector-aligned, n a multiple of the width. */
#  define MG_STREAM_COPY(T, SUF, W)                                                             \
static inline void mg_stream_copy_##SUF(const T* s, T* d, Py_ssize_t n) {                       \
    for (Py_ssize_t i = 0; i < n; i += W) mg_nt_##SUF(d + i, mg_ld_##SUF(s + i));               \
}
MG_STREAM_COPY(float, f32, MG_WF)
MG_STREAM_COPY(double, f64, MG_WD)
MG_NORM_PRIMITIVES(float, f32, mg_vf, MG_WF)
MG_NORM_PRIMITIVES(double, f64, mg_vd, MG_WD)
#else
static inline void mg_stream_copy_f32(const float* s, float* d, Py_ssize_t n) { memcpy(d, s, n * sizeof *d); }
static inline void mg_stream_copy_f64(const double* s, double* d, Py_ssize_t n) { memcpy(d, s, n * sizeof *d); }
MG_NORM_PRIMITIVES(float, f32, void, 1)
MG_NORM_PRIMITIVES(double, f64, void, 1)
#endif

/* Column passes over a block of nb channels of an (N, C) matrix (rows ld elements apart):
   BatchNorm1d's S = 1 layout, walked row by row so the loops over j are contiguous and
   vectorize. The sums take four rows per update of the accumulators, which are then loaded
   and stored once per four rows (the loop is bound by that traffic, not by the adds). */
#define MG_COLUMN_PRIMITIVES(T, SUF)                                                            \
/* mean[j] = mean over the N rows of column j, in double */                                     \
static inline void mg_col_mean_##SUF(const T* x, Py_ssize_t N, Py_ssize_t nb, Py_ssize_t ld,    \
                                     double* mean) {                                            \
    Py_ssize_t n = 0, j;                                                                        \
    for (j = 0; j < nb; j++) mean[j] = 0;                                                       \
    for (; n + 4 <= N; n += 4) {                                                                \
        const T *r0 = x + n * ld, *r1 = r0 + ld, *r2 = r1 + ld, *r3 = r2 + ld;                  \
        for (j = 0; j < nb; j++)                                                                \
            mean[j] += ((double)r0[j] + (double)r1[j]) + ((double)r2[j] + (double)r3[j]);       \
    }                                                                                           \
    for (; n < N; n++)                                                                          \
        for (j = 0; j < nb; j++) mean[j] += x[n * ld + j];                                      \
    for (j = 0; j < nb; j++) mean[j] *= 1.0 / (double)N;                                        \
}                                                                                               \
/* ssd[j] = sum over the rows of (x - mean[j])^2, in double */                                  \
static inline void mg_col_ssd_##SUF(const T* x, Py_ssize_t N, Py_ssize_t nb, Py_ssize_t ld,     \
                                    const double* mean, double* ssd) {                          \
    Py_ssize_t n = 0, j;                                                                        \
    for (j = 0; j < nb; j++) ssd[j] = 0;                                                        \
    for (; n + 4 <= N; n += 4) {                                                                \
        const T *r0 = x + n * ld, *r1 = r0 + ld, *r2 = r1 + ld, *r3 = r2 + ld;                  \
        for (j = 0; j < nb; j++) {                                                              \
            double d0 = r0[j] - mean[j], d1 = r1[j] - mean[j], d2 = r2[j] - mean[j],            \
                   d3 = r3[j] - mean[j];                                                        \
            ssd[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);                                \
        }                                                                                       \
    }                                                                                           \
    for (; n < N; n++)                                                                          \
        for (j = 0; j < nb; j++) {                                                              \
            double d0 = x[n * ld + j] - mean[j];                                                \
            ssd[j] += d0 * d0;                                                                  \
        }                                                                                       \
}                                                                                               \
/* y[n, j] = ((x[n, j] - h[j]) - l[j])*a[j] + b[j] */                                           \
static inline void mg_col_affine_##SUF(const T* x, T* y, Py_ssize_t N, Py_ssize_t nb,           \
                                       Py_ssize_t ldx, Py_ssize_t ldy, const T* h, const T* l,  \
                                       const T* a, const T* b) {                                \
    for (Py_ssize_t n = 0; n < N; n++) {                                                        \
        const T* xr = x + n * ldx;                                                              \
        T* yr = y + n * ldy;                                                                    \
        for (Py_ssize_t j = 0; j < nb; j++) yr[j] = ((xr[j] - h[j]) - l[j]) * a[j] + b[j];      \
    }                                                                                           \
}                                                                                               \
/* y[n, j] = x[n, j]*a[j] + b[j] */                                                             \
static inline void mg_col_madd_##SUF(const T* x, T* y, Py_ssize_t N, Py_ssize_t nb,             \
                                     Py_ssize_t ldx, Py_ssize_t ldy, const T* a, const T* b) {  \
    for (Py_ssize_t n = 0; n < N; n++) {                                                        \
        const T* xr = x + n * ldx;                                                              \
        T* yr = y + n * ldy;                                                                    \
        for (Py_ssize_t j = 0; j < nb; j++) yr[j] = xr[j] * a[j] + b[j];                        \
    }                                                                                           \
}                                                                                               \
/* sg[j] = sum of g, sgx[j] = sum of g*(x - mu[j]) over the rows, in double */                  \
static inline void mg_col_sum2_##SUF(const T* g, const T* x, Py_ssize_t N, Py_ssize_t nb,       \
                                     Py_ssize_t ldg, Py_ssize_t ldx, const double* mu,          \
                                     double* sg, double* sgx) {                                 \
    Py_ssize_t n = 0, j;                                                                        \
    for (j = 0; j < nb; j++) sg[j] = sgx[j] = 0;                                                \
    for (; n + 4 <= N; n += 4) {                                                                \
        const T *g0 = g + n * ldg, *g1 = g0 + ldg, *g2 = g1 + ldg, *g3 = g2 + ldg;              \
        const T *x0 = x + n * ldx, *x1 = x0 + ldx, *x2 = x1 + ldx, *x3 = x2 + ldx;              \
        for (j = 0; j < nb; j++) {                                                              \
            double v0 = g0[j], v1 = g1[j], v2 = g2[j], v3 = g3[j], m = mu[j];                   \
            sg[j] += (v0 + v1) + (v2 + v3);                                                     \
            sgx[j] += (v0 * (x0[j] - m) + v1 * (x1[j] - m)) + (v2 * (x2[j] - m) + v3 * (x3[j] - m)); \
        }                                                                                       \
    }                                                                                           \
    for (; n < N; n++)                                                                          \
        for (j = 0; j < nb; j++) {                                                              \
            double v0 = g[n * ldg + j];                                                         \
            sg[j] += v0;                                                                        \
            sgx[j] += v0 * (x[n * ldx + j] - mu[j]);                                            \
        }                                                                                       \
}                                                                                               \
/* d[n, j] = ka[j]*g + kb[j] - kc[j]*((x - h[j]) - l[j]); with fixed statistics d = ka[j]*g */  \
static inline void mg_col_dx_##SUF(const T* g, const T* x, T* d, Py_ssize_t N, Py_ssize_t nb,   \
                                   Py_ssize_t ldg, Py_ssize_t ldx, Py_ssize_t ldd, const T* ka, \
                                   const T* kb, const T* kc, const T* h, const T* l,            \
                                   int training) {                                              \
    for (Py_ssize_t n = 0; n < N; n++) {                                                        \
        const T *gr = g + n * ldg, *xr = x + n * ldx;                                           \
        T* dr = d + n * ldd;                                                                    \
        if (training)                                                                           \
            for (Py_ssize_t j = 0; j < nb; j++)                                                 \
                dr[j] = ka[j] * gr[j] + kb[j] - kc[j] * ((xr[j] - h[j]) - l[j]);                \
        else                                                                                    \
            for (Py_ssize_t j = 0; j < nb; j++) dr[j] = ka[j] * gr[j];                          \
    }                                                                                           \
}
MG_COLUMN_PRIMITIVES(float, f32)
MG_COLUMN_PRIMITIVES(double, f64)

#endif /* MINIGRAD_NORM_SIMD_H */
