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


# ------------------------------------------------------- multi-tensor (foreach) SGD
# One call updates every parameter of a group: a training step of a small model otherwise spends more
# time in Python per parameter (checks, reshapes, three memoryviews) than in the arithmetic. Each array is
# reached through the buffer protocol, and everything is checked before anything is written.
from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer


cdef char _float_code(Py_buffer* v) noexcept:
    """'f' (float32), 'd' (float64) or 0 for the item type of a native-order buffer."""
    cdef const char* f = v.format
    if f == NULL:
        return 0
    if f[0] == b'@' or f[0] == b'=':  # native order, spelled out
        f += 1
    if f[0] == b'f' and f[1] == 0 and v.itemsize == 4:
        return b'f'
    if f[0] == b'd' and f[1] == 0 and v.itemsize == 8:
        return b'd'
    return 0


cdef int _acquire(object obj, Py_buffer* views, Py_ssize_t k, bint writable, list held, Py_ssize_t i,
                  str what) except -1:
    """The buffer of ``obj`` into ``views[k]``, recorded in ``held`` (the caller releases it)."""
    try:
        PyObject_GetBuffer(obj, &views[k], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (PyBUF_WRITABLE if writable else 0))
    except (BufferError, TypeError, ValueError) as e:  # not contiguous, not an array, read-only
        raise TypeError(f"sgd_update_multi: {what} {i} must be a {'writable ' if writable else ''}C-contiguous "
                        f"float32/float64 array ({e})") from None
    held.append(k)
    return 0


cdef void _sgd_range(Py_buffer* v, Py_ssize_t lo, Py_ssize_t hi, bint mom, double lr, double momentum,
                     double dampening, double weight_decay, bint nesterov, bint first) noexcept nogil:
    """Elements [lo, hi) of one parameter (``v``: its parameter, gradient and buffer views)."""
    if v[0].itemsize == 4:
        if mom:
            _sgd_momentum(<float*>v[0].buf + lo, <const float*>v[1].buf + lo, <float*>v[2].buf + lo, hi - lo,
                          <float>lr, <float>momentum, <float>(1.0 - dampening), <float>weight_decay, nesterov, first)
        else:
            _sgd_plain(<float*>v[0].buf + lo, <const float*>v[1].buf + lo, hi - lo, <float>lr, <float>weight_decay)
    else:
        if mom:
            _sgd_momentum(<double*>v[0].buf + lo, <const double*>v[1].buf + lo, <double*>v[2].buf + lo, hi - lo,
                          lr, momentum, 1.0 - dampening, weight_decay, nesterov, first)
        else:
            _sgd_plain(<double*>v[0].buf + lo, <const double*>v[1].buf + lo, hi - lo, lr, weight_decay)


cdef void _sgd_one(Py_buffer* v, bint mom, double lr, double momentum, double dampening, double weight_decay,
                   bint nesterov, bint first) noexcept nogil:
    """One parameter; a large one is cut among the team (the gradient was just written by several threads)."""
    cdef Py_ssize_t n = v[0].len // v[0].itemsize, t
    cdef int nt = threads_for(n)
    if nt <= 1:
        _sgd_range(v, 0, n, mom, lr, momentum, dampening, weight_decay, nesterov, first)
        return
    for t in prange(nt, schedule="static", num_threads=nt):
        _sgd_range(v, t * n // nt, (t + 1) * n // nt, mom, lr, momentum, dampening, weight_decay, nesterov, first)

def sgd_update_multi(list params not None, list grads not None, list bufs not None, list firsts not None,
                     double lr, double momentum, double dampening, double weight_decay, bint nesterov):
    """``sgd_update`` on every parameter of a list in one call (``torch._foreach`` style).

    ``params[i]``, ``grads[i]`` and (with momentum) ``bufs[i]`` are C-contiguous float32 or float64
    arrays of one dtype and size per i; ``firsts[i]`` says the buffer is set to the gradient (its
    first step) instead of being decayed. Raises TypeError/ValueError, before writing anything, for
    any array that does not qualify.
    """
    cdef Py_ssize_t n = len(params), i, size
    cdef bint mom = momentum != 0.0
    cdef Py_buffer* views
    cdef char* first
    cdef list held = []
    cdef char code
    if len(grads) != n or len(bufs) != n or len(firsts) != n:
        raise ValueError(f"sgd_update_multi: {n} parameters but {len(grads)} gradients, {len(bufs)} buffers "
                         f"and {len(firsts)} first-step flags")
    views = <Py_buffer*>calloc(3 * n + 1, sizeof(Py_buffer))
    first = <char*>calloc(n + 1, 1)
    if views == NULL or first == NULL:
        free(views)
        free(first)
        raise MemoryError()
    try:
        for i in range(n):
            first[i] = 1 if firsts[i] else 0
            _acquire(params[i], views, 3 * i, True, held, i, "parameter")
            _acquire(grads[i], views, 3 * i + 1, False, held, i, "gradient")
            if mom:
                _acquire(bufs[i], views, 3 * i + 2, True, held, i, "momentum buffer")
            code = _float_code(&views[3 * i])
            if code == 0 or _float_code(&views[3 * i + 1]) != code or (mom and _float_code(&views[3 * i + 2]) != code):
                raise TypeError(f"sgd_update_multi: parameter {i}, its gradient and buffer must all be float32 or "
                                f"all float64")
            size = views[3 * i].len
            if views[3 * i + 1].len != size or (mom and views[3 * i + 2].len != size):
                raise ValueError(f"sgd_update_multi: parameter {i}, its gradient and buffer differ in size")
        with nogil:
            for i in range(n):
                _sgd_one(&views[3 * i], mom, lr, momentum, dampening, weight_decay, nesterov, first[i])
    finally:
        for i in held:
            PyBuffer_Release(&views[i])
        free(views)
        free(first)

