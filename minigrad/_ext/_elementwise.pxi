# Elementwise kernels in one pass over flat arrays: ReLU and sigmoid, forward and backward (NumPy's
# ``maximum(x, 0)`` and ``grad * (y > 0)`` make a temporary and two passes each. Large arrays are cut
# into one contiguous range per thread. Included by every build of the kernels (see _kernels.pyx).

cdef extern from "_simd.h" nogil:
    void mg_relu_f32(const float* x, float* y, Py_ssize_t lo, Py_ssize_t hi)
    void mg_relu_f64(const double* x, double* y, Py_ssize_t lo, Py_ssize_t hi)
    void mg_relu_back_f32(const float* g, const float* y, float* dx, Py_ssize_t lo, Py_ssize_t hi)
    void mg_relu_back_f64(const double* g, const double* y, double* dx, Py_ssize_t lo, Py_ssize_t hi)


def relu_forward(const floating[::1] x not None, floating[::1] y not None):
    """``y = max(x, 0)`` elementwise (NaN propagates) on flat C-contiguous arrays of one length."""
    cdef Py_ssize_t n = x.shape[0], t
    if y.shape[0] != n:
        raise ValueError(f"relu_forward: x has {n} values, y {y.shape[0]}")
    if n == 0:
        return
    cdef int parts = threads_for(n)
    cdef const floating* xp = &x[0]
    cdef floating* yp = &y[0]
    with nogil:
        for t in prange(parts, schedule="static", num_threads=parts, use_threads_if=parts > 1):
            if floating is float:
                mg_relu_f32(xp, yp, t * n // parts, (t + 1) * n // parts)
            else:
                mg_relu_f64(xp, yp, t * n // parts, (t + 1) * n // parts)


def relu_backward(const floating[::1] grad not None, const floating[::1] y not None, floating[::1] dx not None):
    """``dx = grad`` where the forward's output ``y > 0``, else 0, on flat C-contiguous arrays of one length."""
    cdef Py_ssize_t n = grad.shape[0], t
    if y.shape[0] != n or dx.shape[0] != n:
        raise ValueError(f"relu_backward: grad has {n} values, y {y.shape[0]}, dx {dx.shape[0]}")
    if n == 0:
        return
    cdef int parts = threads_for(n)
    cdef const floating* gp = &grad[0]
    cdef const floating* yp = &y[0]
    cdef floating* dp = &dx[0]
    with nogil:
        for t in prange(parts, schedule="static", num_threads=parts, use_threads_if=parts > 1):
            if floating is float:
                mg_relu_back_f32(gp, yp, dp, t * n // parts, (t + 1) * n // parts)
            else:
                mg_relu_back_f64(gp, yp, dp, t * n // parts, (t + 1) * n // parts)


def erf(const floating[::1] x not None, floating[::1] out not None):
    """``out[i] = erf(x[i])`` with the C library's ``erf`` (``erff`` for float32), without the GIL."""
    if x.shape[0] != out.shape[0]:
        raise ValueError(f"erf: x has {x.shape[0]} elements but out has {out.shape[0]}")
    cdef Py_ssize_t i, n = x.shape[0]
    with nogil:
        if floating is float:
            for i in range(n):
                out[i] = erff(x[i])
        else:
            for i in range(n):
                out[i] = c_erf(x[i])


cdef extern from "_simd.h" nogil:
    void mg_sigmoid_f32(const float* x, float* y, Py_ssize_t lo, Py_ssize_t hi)
    void mg_sigmoid_f64(const double* x, double* y, Py_ssize_t lo, Py_ssize_t hi)
    void mg_sigmoid_back_f32(const float* g, const float* y, float* dx, Py_ssize_t lo, Py_ssize_t hi)
    void mg_sigmoid_back_f64(const double* g, const double* y, double* dx, Py_ssize_t lo, Py_ssize_t hi)


def sigmoid_forward(const floating[::1] x not None, floating[::1] y not None):
    """``y = 1/(1 + exp(-x))`` elementwise, stable for any x (NaN propagates), on flat C-contiguous
    arrays of one length."""
    cdef Py_ssize_t n = x.shape[0], t
    if y.shape[0] != n:
        raise ValueError(f"sigmoid_forward: x has {n} values, y {y.shape[0]}")
    if n == 0:
        return
    cdef int parts = threads_for(n)
    cdef const floating* xp = &x[0]
    cdef floating* yp = &y[0]
    with nogil:
        for t in prange(parts, schedule="static", num_threads=parts, use_threads_if=parts > 1):
            if floating is float:
                mg_sigmoid_f32(xp, yp, t * n // parts, (t + 1) * n // parts)
            else:
                mg_sigmoid_f64(xp, yp, t * n // parts, (t + 1) * n // parts)


def sigmoid_backward(const floating[::1] grad not None, const floating[::1] y not None, floating[::1] dx not None):
    """``dx = grad·y·(1 - y)`` from the forward's output ``y``, on flat C-contiguous arrays of one length."""
    cdef Py_ssize_t n = grad.shape[0], t
    if y.shape[0] != n or dx.shape[0] != n:
        raise ValueError(f"sigmoid_backward: grad has {n} values, y {y.shape[0]}, dx {dx.shape[0]}")
    if n == 0:
        return
    cdef int parts = threads_for(n)
    cdef const floating* gp = &grad[0]
    cdef const floating* yp = &y[0]
    cdef floating* dp = &dx[0]
    with nogil:
        for t in prange(parts, schedule="static", num_threads=parts, use_threads_if=parts > 1):
            if floating is float:
                mg_sigmoid_back_f32(gp, yp, dp, t * n // parts, (t + 1) * n // parts)
            else:
                mg_sigmoid_back_f64(gp, yp, dp, t * n // parts, (t + 1) * n // parts)
