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

#endif /* MINIGRAD_ELEMENTWISE_SIMD_H */
