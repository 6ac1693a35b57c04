/* Convolution and pooling primitives (_conv.pxi, _pool.pxi); included by _simd.h inside the
   build's target. Each works on one image (im2col, col2im) or one (image, channel) plane
   (pooling) of a C-contiguous array; the Cython callers validate the geometry and spread images
   or planes over threads.

   Geometry (PyTorch's): output position o of a window of k taps, stride s, zero padding p and
   dilation d reads input index o·s + t·d - p for tap t. Pooling windows are clipped to the input
   (max: padding never wins; average: see mg_avg_pool_plane). */
#ifndef MINIGRAD_CONV_SIMD_H
#define MINIGRAD_CONV_SIMD_H

/* The outputs o in [lo, hi) whose tap at offset off = t·d - p reads inside [0, n): o·s + off in
   [0, n). */
static inline void mg_tap_range(Py_ssize_t n, Py_ssize_t nout, Py_ssize_t s, Py_ssize_t off,
                                Py_ssize_t* lo, Py_ssize_t* hi) {
    Py_ssize_t a = off >= 0 ? 0 : (-off + s - 1) / s;
    Py_ssize_t b = n - 1 - off < 0 ? 0 : (n - 1 - off) / s + 1;
    *lo = a < nout ? a : nout;
    *hi = b < *lo ? *lo : (b < nout ? b : nout);
}

/* The unsigned integer of a float's width, for branch-free selects (GCC turns a ternary on an
   unpredictable float compare into a branch; and/or on the bits cannot be). */
typedef uint32_t mg_bits_f32;
typedef uint64_t mg_bits_f64;

/* One step of a max pooling window: value (at position pos) replaces the running maximum (its bits
   bb, its position bp, an unsigned integer of type IT) if it is larger or NaN; branch-free. */
#define MG_MAX_SELECT(T, SUF, IT, bb, bp, value, pos)                                            \
    {                                                                                            \
        T v_ = (value), b_;                                                                      \
        mg_bits_##SUF vb_;                                                                       \
        memcpy(&vb_, &v_, sizeof vb_);                                                           \
        memcpy(&b_, &(bb), sizeof b_);                                                           \
        int t_ = (v_ > b_) | (v_ != v_);                                                         \
        mg_bits_##SUF m_ = (mg_bits_##SUF)0 - (mg_bits_##SUF)t_;                                 \
        (bb) = (vb_ & m_) | ((bb) & ~m_);                                                        \
        IT mp_ = (IT)0 - (IT)t_;                                                                 \
        (bp) = (__typeof__(bp))(((IT)(pos) & mp_) | ((IT)(bp) & ~mp_));                          \
    }

#if MG_VEC
/* Integer vectors with the lanes of mg_vf / mg_vd (a compare of two float vectors gives one). */
typedef int32_t mg_vi_f32 __attribute__((vector_size(MG_VBYTES)));
typedef int64_t mg_vi_f64 __attribute__((vector_size(MG_VBYTES)));
/* Max pooling of the commonest window, two columns wide with stride 2 (kw = sw = 2, no column
   padding): outputs [ow0, ow0 + W) of one output row in the lanes of a vector. A row of the window
   is 2W consecutive input values, split into the even and the odd columns by two shuffles; the
   selects are the scalar ones lane by lane (a NaN wins, the first maximum in window order), and a
   lane remembers the number k of its winning window element. */
#  define MG_MAX_POOL_2COLS(T, SUF, VT, W)                                                       \
static inline void mg_max_pool_2cols_##SUF(const T* x, T* y, int64_t* arg, Py_ssize_t Wd,        \
                                           Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t ow0) {        \
    mg_vi_##SUF even, odd, bk = {0}, kv;                                                        \
    for (int i = 0; i < W; i++) {                                                                \
        even[i] = 2 * i;                                                                         \
        odd[i] = 2 * i + 1;                                                                      \
    }                                                                                            \
    const T* row = x + r0 * Wd + 2 * ow0;                                                        \
    VT a = mg_ld_##SUF(row), b = mg_ld_##SUF(row + W);                                           \
    VT best = __builtin_shuffle(a, b, even);                                                     \
    for (Py_ssize_t r = r0, k = 0; r < r1; r++, row += Wd) {                                     \
        a = mg_ld_##SUF(row);                                                                    \
        b = mg_ld_##SUF(row + W);                                                                \
        for (int j = 0; j < 2; j++, k++) {                                                       \
            VT v = __builtin_shuffle(a, b, j ? odd : even);                                      \
            mg_vi_##SUF t = (v > best) | (v != v);                                               \
            best = (VT)(((mg_vi_##SUF)v & t) | ((mg_vi_##SUF)best & ~t));                        \
            for (int i = 0; i < W; i++) kv[i] = k;                                               \
            bk = (kv & t) | (bk & ~t);                                                           \
        }                                                                                        \
    }                                                                                            \
    mg_st_##SUF(y + ow0, best);                                                                  \
    for (int i = 0; i < W; i++) arg[ow0 + i] = (r0 + bk[i] / 2) * Wd + 2 * (ow0 + i) + bk[i] % 2; \
}
MG_MAX_POOL_2COLS(float, f32, mg_vf, MG_WF)
MG_MAX_POOL_2COLS(double, f64, mg_vd, MG_WD)
#  define MG_POOL_LANES_f32 MG_WF
#  define MG_POOL_LANES_f64 MG_WD
#  define MG_POOL_2COLS_CALL(SUF, ...) mg_max_pool_2cols_##SUF(__VA_ARGS__);
#else
#  define MG_POOL_LANES_f32 0
#  define MG_POOL_LANES_f64 0
#  define MG_POOL_2COLS_CALL(SUF, ...)
#endif

#define MG_CONV_PRIMITIVES(T, SUF)                                                               \
/* The unfolding of one image: cols[(c·kh + i)·kw + j, oh·OW + ow] = x[c, oh·sh + i·dh - ph,        \
   ow·sw + j·dw - pw] (0 outside the image) when fold is 0 (im2col); its adjoint when fold is 1     \
   (col2im: x[c, ih, iw] += every column entry im2col read from it; x zeroed by the caller). */    \
static void mg_unfold_##SUF(T* x, T* cols, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh, \
                            Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,           \
                            Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t OH,           \
                            Py_ssize_t OW, int fold) {                                           \
    for (Py_ssize_t c = 0; c < C; c++)                                                           \
        for (Py_ssize_t i = 0; i < kh; i++)                                                      \
            for (Py_ssize_t j = 0; j < kw; j++) {                                                \
                T* col = cols + ((c * kh + i) * kw + j) * OH * OW;                               \
                Py_ssize_t lo, hi, olo, ohi, off = j * dw - pw;                                  \
                mg_tap_range(W, OW, sw, off, &lo, &hi);                                          \
                mg_tap_range(H, OH, sh, i * dh - ph, &olo, &ohi);                                \
                for (Py_ssize_t oh = 0; oh < OH; oh++, col += OW) {                              \
                    T* row = x + (c * H + oh * sh + i * dh - ph) * W + off;                      \
                    if (fold) {                                                                  \
                        if (oh >= olo && oh < ohi)                                               \
                            for (Py_ssize_t ow = lo; ow < hi; ow++) row[ow * sw] += col[ow];     \
                    } else if (oh < olo || oh >= ohi) {                                          \
                        memset(col, 0, sizeof(T) * OW);                                          \
                    } else {                                                                     \
                        memset(col, 0, sizeof(T) * lo);                                          \
                        if (sw == 1)                                                             \
                            memcpy(col + lo, row + lo, sizeof(T) * (hi - lo));                   \
                        else                                                                     \
                            for (Py_ssize_t ow = lo; ow < hi; ow++) col[ow] = row[ow * sw];      \
                        memset(col + hi, 0, sizeof(T) * (OW - hi));                              \
                    }                                                                            \
                }                                                                                \
            }                                                                                    \
}                                                                                                \
/* Max over each window of one (H, W) plane into y (OH, OW); arg gets the flat index ih·W + iw     \
   of the first maximum in window order (a NaN wins, so it propagates; the first in-image pixel    \
   when nothing beats it, so an all -inf window points inside itself). The selects are            \
   branch-free (which element wins is unpredictable on real data), and the outputs whose window    \
   lies inside the input along W go four at a time: one output's chain of selects is bound by      \
   their latency (each waits for the previous compare), four independent chains are not. */      \
static inline __attribute__((always_inline)) void                                               \
mg_max_pool_core_##SUF(const T* x, T* y, int64_t* arg, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH,  \
                       Py_ssize_t OW, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,  \
                       Py_ssize_t ph, Py_ssize_t pw) {                                           \
    Py_ssize_t olo = (pw + sw - 1) / sw, ohi = W + pw - kw < 0 ? 0 : (W + pw - kw) / sw + 1;      \
    if (ohi > OW) ohi = OW;                                                                      \
    for (Py_ssize_t oh = 0; oh < OH; oh++) {                                                     \
        Py_ssize_t h0 = oh * sh - ph, ilo = h0 < 0 ? -h0 : 0;                                    \
        Py_ssize_t ihi = H - h0 < kh ? H - h0 : kh;                                              \
        Py_ssize_t ow = 0;                                                                       \
        while (ow < OW) {                                                                        \
            Py_ssize_t w0 = ow * sw - pw;                                                        \
            if (MG_POOL_LANES_##SUF && kw == 2 && sw == 2 && pw == 0 && ow < ohi                 \
                && ohi >= MG_POOL_LANES_##SUF) {                                                 \
                /* a last group that would run past ohi is moved back to end there: the outputs  \
                   it repeats are computed again, to the same values */                          \
                Py_ssize_t start = ow + MG_POOL_LANES_##SUF <= ohi ? ow : ohi - MG_POOL_LANES_##SUF; \
                MG_POOL_2COLS_CALL(SUF, x, y + oh * OW, arg + oh * OW, W, h0 + ilo, h0 + ihi, start) \
                ow = start + MG_POOL_LANES_##SUF;                                                \
                continue;                                                                        \
            }                                                                                    \
            if (ow >= olo && ow + 4 <= ohi) {                                                    \
                /* four windows side by side; k (uint32) numbers a window's elements */          \
                const T* x0 = x + (h0 + ilo) * W + w0;                                           \
                mg_bits_##SUF bb[4];                                                             \
                uint32_t bk[4] = {0, 0, 0, 0}, k = 0;                                            \
                for (int q = 0; q < 4; q++) memcpy(&bb[q], x0 + q * sw, sizeof bb[q]);           \
                for (Py_ssize_t i = ilo; i < ihi; i++)                                           \
                    for (Py_ssize_t j = 0; j < kw; j++, k++) {                                   \
                        const T* xij = x0 + (i - ilo) * W + j;                                   \
                        for (int q = 0; q < 4; q++)                                              \
                            MG_MAX_SELECT(T, SUF, uint32_t, bb[q], bk[q], xij[q * sw], k)        \
                    }                                                                            \
                for (int q = 0; q < 4; q++) {                                                    \
                    memcpy(&y[oh * OW + ow + q], &bb[q], sizeof bb[q]);                          \
                    arg[oh * OW + ow + q] = (h0 + ilo + bk[q] / kw) * W + w0 + q * sw + bk[q] % kw; \
                }                                                                                \
                ow += 4;                                                                         \
                continue;                                                                        \
            }                                                                                    \
            Py_ssize_t jlo = w0 < 0 ? -w0 : 0, jhi = W - w0 < kw ? W - w0 : kw;                  \
            int64_t bi = (h0 + ilo) * W + w0 + jlo;                                              \
            mg_bits_##SUF bb;                                                                    \
            memcpy(&bb, &x[bi], sizeof bb);                                                      \
            for (Py_ssize_t i = ilo; i < ihi; i++)                                               \
                for (Py_ssize_t j = jlo; j < jhi; j++) {                                         \
                    int64_t at = (h0 + i) * W + w0 + j;                                          \
                    MG_MAX_SELECT(T, SUF, uint64_t, bb, bi, x[at], at)                           \
                }                                                                                \
            memcpy(&y[oh * OW + ow], &bb, sizeof bb);                                            \
            arg[oh * OW + ow] = bi;                                                              \
            ow++;                                                                                \
        }                                                                                        \
    }                                                                                            \
}                                                                                                \
/* The window shapes of most networks get their own copy of the loops, with the sizes as             \
   constants (unrolled: about twice as fast as the general loops). */                             \
static void mg_max_pool_plane_##SUF(const T* x, T* y, int64_t* arg, Py_ssize_t H, Py_ssize_t W,  \
                                    Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t kh, Py_ssize_t kw,  \
                                    Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw) { \
    if (kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0)                          \
        mg_max_pool_core_##SUF(x, y, arg, H, W, OH, OW, 2, 2, 2, 2, 0, 0);                       \
    else if (kh == 3 && kw == 3 && sh == 2 && sw == 2 && ph == 1 && pw == 1)                     \
        mg_max_pool_core_##SUF(x, y, arg, H, W, OH, OW, 3, 3, 2, 2, 1, 1);                       \
    else                                                                                         \
        mg_max_pool_core_##SUF(x, y, arg, H, W, OH, OW, kh, kw, sh, sw, ph, pw);                 \
}                                                                                                \
/* dx[arg[o]] += g[o] over one plane of n outputs; returns the number of indices outside        \
   [0, HW) (skipped: the caller reports them). */                                                \
static Py_ssize_t mg_max_pool_back_plane_##SUF(const T* g, const int64_t* arg, T* dx,           \
                                               Py_ssize_t n, Py_ssize_t hw) {                    \
    Py_ssize_t bad = 0;                                                                          \
    for (Py_ssize_t o = 0; o < n; o++) {                                                         \
        int64_t a = arg[o];                                                                      \
        if (a < 0 || a >= hw) {                                                                  \
            bad++;                                                                               \
            continue;                                                                            \
        }                                                                                        \
        dx[a] += g[o];                                                                           \
    }                                                                                            \
    return bad;                                                                                  \
}                                                                                                \
/* One window [hs, he) x [ws, we) of a plane W wide, divided by div: its mean into y[o] (forward,     \
   g NULL), or g[o]/div added onto each of its pixels of dx (backward). */                        \
static inline void mg_window_mean_##SUF(const T* x, T* y, const T* g, T* dx, Py_ssize_t W,       \
                                        Py_ssize_t o, Py_ssize_t hs, Py_ssize_t he, Py_ssize_t ws, \
                                        Py_ssize_t we, double div) {                             \
    if (g == NULL) {                                                                             \
        double acc = 0;                                                                          \
        for (Py_ssize_t ih = hs; ih < he; ih++)                                                  \
            for (Py_ssize_t iw = ws; iw < we; iw++) acc += x[ih * W + iw];                       \
        y[o] = (T)(acc / div);                                                                   \
    } else {                                                                                     \
        T v = (T)(g[o] / div);                                                                   \
        for (Py_ssize_t ih = hs; ih < he; ih++)                                                  \
            for (Py_ssize_t iw = ws; iw < we; iw++) dx[ih * W + iw] += v;                        \
    }                                                                                            \
}                                                                                                \
/* Mean over each window of one plane (PyTorch's divisor: with count_include_pad the window      \
   clipped to the padded input, hend = min(h0 + kh, H + ph); else the in-image pixels only). */   \
static void mg_avg_pool_plane_##SUF(const T* x, T* y, const T* g, T* dx, Py_ssize_t H,          \
                                    Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t kh,   \
                                    Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,  \
                                    Py_ssize_t pw, int count_include_pad) {                      \
    /* forward (x -> y) when g is NULL, else backward (g -> dx, zeroed by the caller) */         \
    for (Py_ssize_t oh = 0; oh < OH; oh++) {                                                     \
        Py_ssize_t h0 = oh * sh - ph, h1 = h0 + kh < H + ph ? h0 + kh : H + ph;                  \
        Py_ssize_t hs = h0 < 0 ? 0 : h0, he = h1 < H ? h1 : H;                                   \
        for (Py_ssize_t ow = 0; ow < OW; ow++) {                                                 \
            Py_ssize_t w0 = ow * sw - pw, w1 = w0 + kw < W + pw ? w0 + kw : W + pw;              \
            Py_ssize_t ws = w0 < 0 ? 0 : w0, we = w1 < W ? w1 : W;                               \
            double div = count_include_pad ? (double)((h1 - h0) * (w1 - w0))                    \
                                           : (double)((he - hs) * (we - ws));                    \
            mg_window_mean_##SUF(x, y, g, dx, W, oh * OW + ow, hs, he, ws, we, div);             \
        }                                                                                        \
    }                                                                                            \
}                                                                                                \
/* Adaptive average pooling of one plane to (OH, OW): output (oh, ow) is the mean of rows         \
   [floor(oh·H/OH), ceil((oh+1)·H/OH)) and the columns likewise (PyTorch's windows). Forward      \
   when g is NULL, else backward into dx (zeroed by the caller). */                              \
static void mg_adaptive_avg_plane_##SUF(const T* x, T* y, const T* g, T* dx, Py_ssize_t H,      \
                                        Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW) {            \
    for (Py_ssize_t oh = 0; oh < OH; oh++) {                                                     \
        Py_ssize_t hs = oh * H / OH, he = ((oh + 1) * H + OH - 1) / OH;                          \
        for (Py_ssize_t ow = 0; ow < OW; ow++) {                                                 \
            Py_ssize_t ws = ow * W / OW, we = ((ow + 1) * W + OW - 1) / OW;                      \
            double div = (double)((he - hs) * (we - ws));                                        \
            mg_window_mean_##SUF(x, y, g, dx, W, oh * OW + ow, hs, he, ws, we, div);             \
        }                                                                                        \
    }                                                                                            \
}

MG_CONV_PRIMITIVES(float, f32)
MG_CONV_PRIMITIVES(double, f64)

#endif /* MINIGRAD_CONV_SIMD_H */
