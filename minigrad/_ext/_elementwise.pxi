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


# ------------------------------------------------------------- cross-entropy
from libc.math cimport exp as c_exp, log as c_log


def cross_entropy_forward(const floating[:, ::1] x not None, const int64_t[::1] target not None,
                          Py_ssize_t ignore_index, floating[:, ::1] probs not None):
    """Cross-entropy of logits ``x`` (N, C) and class indices ``target`` (N,), without class weights.

    Writes the softmax of each row into ``probs`` (N, C) (what the backward needs) and returns
    ``(Σ loss over the counted rows, number of counted rows)``: a row whose target is
    ``ignore_index`` counts for nothing. Per row, in double precision: ``m = max x``,
    ``s = Σ exp(x - m)``, ``loss = log s + m - x[target]``. A target outside [0, C) that is not
    ``ignore_index`` raises IndexError (before anything is written).
    """
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], i, j, count = 0
    cdef int64_t t
    cdef double m, s, e, total = 0.0
    if target.shape[0] != n or probs.shape[0] != n or probs.shape[1] != c:
        raise ValueError(f"cross_entropy_forward: x is ({n}, {c}), target ({target.shape[0]},), probs "
                         f"({probs.shape[0]}, {probs.shape[1]})")
    for i in range(n):
        t = target[i]
        if t != ignore_index and not 0 <= t < c:
            raise IndexError(f"cross_entropy: target {t} is out of range for {c} classes")
    if c == 0:
        return 0.0, 0
    with nogil:
        for i in range(n):
            m = x[i, 0]
            for j in range(1, c):
                if x[i, j] > m or x[i, j] != x[i, j]:  # a NaN wins, so the row's loss is NaN
                    m = x[i, j]
            s = 0.0
            for j in range(c):  # each exponential once: kept in probs, then scaled by 1/s
                e = c_exp(x[i, j] - m)
                s += e
                probs[i, j] = <floating>e
            for j in range(c):
                probs[i, j] = <floating>(probs[i, j] / s)
            t = target[i]
            if t != ignore_index:
                total += c_log(s) + m - x[i, t]
                count += 1
    return total, count


def cross_entropy_backward(const floating[:, ::1] probs not None, const int64_t[::1] target not None,
                           Py_ssize_t ignore_index, double scale, floating[:, ::1] dx not None):
    """``dx = scale·(probs - onehot(target))`` for the counted rows, 0 for the ignored ones (N, C)."""
    cdef Py_ssize_t n = probs.shape[0], c = probs.shape[1], i, j
    cdef int64_t t
    cdef floating sc = <floating>scale
    if target.shape[0] != n or dx.shape[0] != n or dx.shape[1] != c:
        raise ValueError(f"cross_entropy_backward: probs is ({n}, {c}), target ({target.shape[0]},), dx "
                         f"({dx.shape[0]}, {dx.shape[1]})")
    for i in range(n):
        t = target[i]
        if t != ignore_index and not 0 <= t < c:
            raise IndexError(f"cross_entropy: target {t} is out of range for {c} classes")
    with nogil:
        for i in range(n):
            t = target[i]
            if t == ignore_index:
                for j in range(c):
                    dx[i, j] = 0
            else:
                for j in range(c):
                    dx[i, j] = sc * probs[i, j]
                dx[i, t] = sc * (probs[i, t] - 1)
