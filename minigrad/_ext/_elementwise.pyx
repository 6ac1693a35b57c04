# cython: language_level=3
"""Fused elementwise CPU kernels: optimizer updates in a single pass.

An optimizer step written with NumPy makes several temporaries per
parameter (``g + wd·p``, ``lr·g``, ...); these loops read each array once
and write in place. One source for float32 and float64 (fused ``real``);
the hyper-parameters arrive as double and are applied in the array's type.
"""

from cython.parallel cimport prange
from libc.math cimport sqrt

ctypedef fused real:
    float
    double

cdef Py_ssize_t PARALLEL_MIN = 1 << 17


def sgd_update(real[::1] p, const real[::1] g, real[::1] buf, double lr, double momentum,
               double dampening, double weight_decay, bint nesterov, bint first):
    """In place SGD step on flat contiguous arrays (PyTorch's rule).

    ``buf`` is the momentum buffer (ignored when ``momentum == 0``); on the
    ``first`` step it is set to the gradient instead of being decayed.
    """
    cdef Py_ssize_t i, n = p.shape[0]
    cdef double gi, b
    cdef bint parallel = n >= PARALLEL_MIN
    if momentum == 0.0:
        for i in prange(n, nogil=True, schedule="static", use_threads_if=parallel):
            p[i] = <real>(p[i] - lr * (g[i] + weight_decay * p[i]))
        return
    for i in prange(n, nogil=True, schedule="static", use_threads_if=parallel):
        gi = g[i] + weight_decay * p[i]
        if first:
            b = gi
        else:
            b = momentum * buf[i] + (1.0 - dampening) * gi
        buf[i] = <real>b
        if nesterov:
            gi = gi + momentum * b
        else:
            gi = b
        p[i] = <real>(p[i] - lr * gi)


def adam_update(real[::1] p, const real[::1] g, real[::1] m, real[::1] v, double lr, double beta1,
                double beta2, double eps, double weight_decay, double bias_correction1,
                double bias_correction2):
    """In place Adam step on flat contiguous arrays (with bias correction and L2 weight decay)."""
    cdef Py_ssize_t i, n = p.shape[0]
    cdef double gi, mi, vi
    cdef double step = lr / bias_correction1
    cdef double inv_bc2 = 1.0 / bias_correction2
    cdef bint parallel = n >= PARALLEL_MIN
    for i in prange(n, nogil=True, schedule="static", use_threads_if=parallel):
        gi = g[i] + weight_decay * p[i]
        mi = beta1 * m[i] + (1.0 - beta1) * gi
        vi = beta2 * v[i] + (1.0 - beta2) * gi * gi
        m[i] = <real>mi
        v[i] = <real>vi
        p[i] = <real>(p[i] - step * mi / (sqrt(vi * inv_bc2) + eps))
