# Fused optimizer updates in a single pass (SGD, Adam). An optimizer step written with NumPy makes
# several temporaries per parameter (``g + wd·p``, ``lr·g``, ...); these loops read each array once and
# write in place. Arithmetic is done in the array's own precision, as PyTorch does, so the loops
# vectorize; each case (momentum or not, Nesterov or not) gets its own branch-free loop, again so
# that the compiler can vectorize it. Included by every build of the kernels (see _kernels.pyx).

cdef void _sgd_plain(floating* p, const floating* g, Py_ssize_t n, floating lr, floating wd) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        p[i] = p[i] - lr * (g[i] + wd * p[i])


cdef void _sgd_momentum(floating* p, const floating* g, floating* buf, Py_ssize_t n, floating lr, floating mom, floating damp,
                        floating wd, bint nesterov, bint first) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, b
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


def sgd_update(floating[::1] p, const floating[::1] g, floating[::1] buf, double lr, double momentum,
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
            _sgd_plain(&p[0], &g[0], n, <floating>lr, <floating>weight_decay)
        else:
            _sgd_momentum(&p[0], &g[0], &buf[0], n, <floating>lr, <floating>momentum, <floating>(1.0 - dampening),
                          <floating>weight_decay, nesterov, first)


def adam_update(floating[::1] p, const floating[::1] g, floating[::1] m, floating[::1] v, double lr, double beta1,
                double beta2, double eps, double weight_decay, double bias_correction1,
                double bias_correction2):
    """In place Adam step on flat contiguous arrays (with bias correction and L2 weight decay)."""
    cdef Py_ssize_t i, n = p.shape[0]
    cdef floating gi, mi, vi
    cdef floating step = <floating>(lr / bias_correction1)
    cdef floating inv_sqrt_bc2 = <floating>(1.0 / sqrt(bias_correction2))
    cdef floating b1 = <floating>beta1, b2 = <floating>beta2, c1 = <floating>(1.0 - beta1), c2 = <floating>(1.0 - beta2)
    cdef floating e = <floating>eps, wd = <floating>weight_decay
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
