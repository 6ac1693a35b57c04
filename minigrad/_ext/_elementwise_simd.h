/* Elementwise primitives (_elementwise.pxi); included by _simd.h inside the build's target. */
#ifndef MINIGRAD_ELEMENTWISE_SIMD_H
#define MINIGRAD_ELEMENTWISE_SIMD_H

/* ReLU, forward (y = x, or 0 where x < 0: a NaN propagates, as in PyTorch) and backward
   (dx = g where y > 0, else 0), over [lo, hi) of flat arrays: one pass, no temporaries. */
#define MG_RELU_PRIMITIVES(T, SUF)                                                               \
static void mg_relu_##SUF(const T* x, T* y, Py_ssize_t lo, Py_ssize_t hi) {                     \
    for (Py_ssize_t i = lo; i < hi; i++) y[i] = x[i] < 0 ? (T)0 : x[i];                          \
}                                                                                                \
static void mg_relu_back_##SUF(const T* g, const T* y, T* dx, Py_ssize_t lo, Py_ssize_t hi) {   \
    for (Py_ssize_t i = lo; i < hi; i++) dx[i] = y[i] > 0 ? g[i] : (T)0;                         \
}
MG_RELU_PRIMITIVES(float, f32)
MG_RELU_PRIMITIVES(double, f64)

/* The logistic function y = 1/(1 + e^-x), stable for any x: with e = e^-|x| (never overflows),
   y = 1/(1 + e) for x >= 0 and e/(1 + e) below. float32: Cephes' expf polynomial (about 1 ulp,
   2.6 ulp for y) with branch-free range reduction, written on vectors (GCC would not vectorize the
   scalar loop: NumPy's tanh-based sigmoid took 25 us on 6,000 floats here). Every element, the last
   partial vector's too, goes through the same vector code, so the result does not depend on how the
   threads split the array. Arguments below -87.3 (a result below float32's smallest normal) are redone
   with the C library's expf, which keeps the subnormal tail right; a NaN stays NaN. float64: the C
   library's exp. */
#if MG_VEC
typedef int32_t mg_vi32 __attribute__((vector_size(MG_VBYTES)));
typedef uint32_t mg_vu32 __attribute__((vector_size(MG_VBYTES)));
static inline mg_vf mg_select_f32(mg_vi32 mask, mg_vf a, mg_vf b) {      /* mask ? a : b, lanewise */
    return (mg_vf)((mask & (mg_vi32)a) | (~mask & (mg_vi32)b));
}
static inline mg_vf mg_sigmoid_vf(mg_vf v) {
    const mg_vf zero = {0}, one = zero + 1.0f;                              /* not v·0 + 1: inf·0 is NaN */
    mg_vf a = (mg_vf)((mg_vu32)v | 0x80000000u);                            /* -|v| */
    a = mg_select_f32(a < -87.3f, one * -87.3f, a);
    const mg_vf t = a * 1.44269504088896341f;
    const mg_vf kf = (t + 12582912.0f) - 12582912.0f;                      /* round to nearest */
    const mg_vf r = (a - kf * 0.693359375f) - kf * -2.12194440e-4f;
    mg_vf p = one * 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const mg_vf poly = p * (r * r) + r + 1.0f;
    const mg_vu32 k = (mg_vu32)(__builtin_convertvector(kf, mg_vi32) + 127);  /* 2^k, k in [-126, 0] */
    const mg_vf e = poly * (mg_vf)(k << 23);
    return mg_select_f32(v >= 0.0f, one, e) / (one + e);
}
#endif
static void mg_sigmoid_f32(const float* x, float* y, Py_ssize_t lo, Py_ssize_t hi) {
    Py_ssize_t i = lo;
    int subnormal = 0; /* whether any result needs the C library (checked on the way: no second pass) */
#if MG_VEC
    mg_vi32 low = {0};
    for (; i + MG_WF <= hi; i += MG_WF) {
        const mg_vf v = mg_ld_f32(x + i);
        low |= v < -87.3f;
        mg_st_f32(y + i, mg_sigmoid_vf(v));
    }
    if (i < hi) {                                                        /* the tail, padded */
        float buf[MG_WF] MG_ALIGNED(MG_VBYTES);
        memset(buf, 0, sizeof buf);
        memcpy(buf, x + i, (size_t)(hi - i) * sizeof(float));
        const mg_vf v = mg_ld_f32(buf);
        low |= v < -87.3f;
        mg_st_f32(buf, mg_sigmoid_vf(v));
        memcpy(y + i, buf, (size_t)(hi - i) * sizeof(float));
    }
    for (int l = 0; l < MG_WF; l++) subnormal |= low[l];
#else
    for (; i < hi; i++) {
        const float e = expf(-fabsf(x[i]));
        y[i] = (x[i] >= 0 ? 1.0f : e) / (1.0f + e);
        subnormal |= x[i] < -87.3f;
    }
#endif
    if (subnormal)
        for (i = lo; i < hi; i++)
            if (x[i] < -87.3f) {
                const float e = expf(x[i]);
                y[i] = e / (1.0f + e);
            }
}
static void mg_sigmoid_f64(const double* x, double* y, Py_ssize_t lo, Py_ssize_t hi) {
    for (Py_ssize_t i = lo; i < hi; i++) {
        const double v = x[i];
        const double e = exp(v < 0 ? v : -v);
        y[i] = v >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
    }
}
/* Its backward from the output: dx = g·y·(1 - y), one pass. */
#define MG_SIGMOID_BACK(T, SUF)                                                                  \
static void mg_sigmoid_back_##SUF(const T* g, const T* y, T* dx, Py_ssize_t lo, Py_ssize_t hi) { \
    for (Py_ssize_t i = lo; i < hi; i++) dx[i] = g[i] * (y[i] * ((T)1 - y[i]));                  \
}
MG_SIGMOID_BACK(float, f32)
MG_SIGMOID_BACK(double, f64)

#endif /* MINIGRAD_ELEMENTWISE_SIMD_H */
