# cython: language_level=3
"""Fused elementwise CPU kernels: optimizer updates in a single pass.

An optimizer step written with NumPy makes several temporaries per
parameter (``g + wd·p``, ``lr·g``, ...); these loops read each array once
and write in place. One source for float32 and float64 (fused ``real``);
arithmetic is done in the array's own precision, as PyTorch does, so the
loops vectorize. Each case (momentum or not, Nesterov or not) gets its own
branch-free loop, again so that the compiler can vectorize it.
"""

from libc.math cimport erf as c_erf, erff as c_erff, sqrt

ctypedef fused real:
    float
    double


cdef void _sgd_plain(real* p, const real* g, Py_ssize_t n, real lr, real wd) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        p[i] = p[i] - lr * (g[i] + wd * p[i])


cdef void _sgd_momentum(real* p, const real* g, real* buf, Py_ssize_t n, real lr, real mom, real damp,
                        real wd, bint nesterov, bint first) noexcept nogil:
    cdef Py_ssize_t i
    cdef real gi, b
    if first:
        for i in range(n):
            buf[i] = g[i] + wd * p[i]
    else:
        for i in range(n):
            buf[i] = mom * buf[i] + damp * (g[i] + wd * p[i])
    if nesterov:
        for i in range(n):
            p[i] = p[i] - lr * (g[i] + wd * p[i] + mom * buf[i])
    else:
        for i in range(n):
            p[i] = p[i] - lr * buf[i]


def sgd_update(real[::1] p, const real[::1] g, real[::1] buf, double lr, double momentum,
               double dampening, double weight_decay, bint nesterov, bint first):
    """In place SGD step on flat contiguous arrays (PyTorch's rule).

    ``buf`` is the momentum buffer (ignored when ``momentum == 0``); on the
    ``first`` step it is set to the gradient instead of being decayed.
    """
    cdef Py_ssize_t n = p.shape[0]
    if g.shape[0] != n or buf.shape[0] != n:
        raise ValueError("sgd_update: parameter, gradient and buffer sizes differ")
    if n == 0:
        return
    with nogil:
        if momentum == 0.0:
            _sgd_plain(&p[0], &g[0], n, <real>lr, <real>weight_decay)
        else:
            _sgd_momentum(&p[0], &g[0], &buf[0], n, <real>lr, <real>momentum, <real>(1.0 - dampening),
                          <real>weight_decay, nesterov, first)


def adam_update(real[::1] p, const real[::1] g, real[::1] m, real[::1] v, double lr, double beta1,
                double beta2, double eps, double weight_decay, double bias_correction1,
                double bias_correction2):
    """In place Adam step on flat contiguous arrays (with bias correction and L2 weight decay)."""
    cdef Py_ssize_t i, n = p.shape[0]
    cdef real gi, mi, vi
    cdef real step = <real>(lr / bias_correction1)
    cdef real inv_sqrt_bc2 = <real>(1.0 / sqrt(bias_correction2))
    cdef real b1 = <real>beta1, b2 = <real>beta2, c1 = <real>(1.0 - beta1), c2 = <real>(1.0 - beta2)
    cdef real e = <real>eps, wd = <real>weight_decay
    if g.shape[0] != n or m.shape[0] != n or v.shape[0] != n:
        raise ValueError("adam_update: parameter, gradient and state sizes differ")
    with nogil:
        for i in range(n):
            gi = g[i] + wd * p[i]
            mi = b1 * m[i] + c1 * gi
            vi = b2 * v[i] + c2 * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] = p[i] - step * mi / (sqrt(vi) * inv_sqrt_bc2 + e)


def erf(const real[::1] x, real[::1] out):
    """``out[i] = erf(x[i])`` with the C library's ``erf`` (``erff`` for float32), without the GIL."""
    if x.shape[0] != out.shape[0]:
        raise ValueError(f"erf: x has {x.shape[0]} elements but out has {out.shape[0]}")
    cdef Py_ssize_t i, n = x.shape[0]
    with nogil:
        if real is float:
            for i in range(n):
                out[i] = c_erff(x[i])
        else:
            for i in range(n):
                out[i] = c_erf(x[i])
