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


cdef void _adam_range(floating* p, const floating* g, floating* m, floating* v, Py_ssize_t n, double lr,
                     double beta1, double beta2, double eps, double weight_decay, double bias_correction1,
                     double bias_correction2) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, mi, vi
    cdef floating step = <floating>(lr / bias_correction1)
    cdef floating inv_sqrt_bc2 = <floating>(1.0 / sqrt(bias_correction2))
    cdef floating b1 = <floating>beta1, b2 = <floating>beta2, c1 = <floating>(1.0 - beta1), c2 = <floating>(1.0 - beta2)
    cdef floating e = <floating>eps, wd = <floating>weight_decay
    for i in range(n):
        gi = g[i] + wd * p[i]
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = p[i] - step * mi / (sqrt(vi) * inv_sqrt_bc2 + e)


def adam_update(floating[::1] p, const floating[::1] g, floating[::1] m, floating[::1] v, double lr, double beta1,
                double beta2, double eps, double weight_decay, double bias_correction1,
                double bias_correction2):
    """In place Adam step on flat contiguous arrays (with bias correction and L2 weight decay)."""
    cdef Py_ssize_t n = p.shape[0]
    if g.shape[0] != n or m.shape[0] != n or v.shape[0] != n:
        raise ValueError("adam_update: parameter, gradient and state sizes differ")
    if n == 0:
        return
    with nogil:
        _adam_range(&p[0], &g[0], &m[0], &v[0], n, lr, beta1, beta2, eps, weight_decay, bias_correction1,
                    bias_correction2)

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


cdef class _ArrayRows:
    """The buffers of k arrays for each of n parameters (row i: parameter i's parameter, gradient and
    state arrays), acquired and checked together, before any kernel writes; released with the object.

    Every used array of a row must be a C-contiguous float32 or float64 buffer of the parameter's item
    type and size, and writable where ``writable`` says so; TypeError or ValueError names the first
    that is not.
    """
    cdef Py_buffer* views
    cdef Py_ssize_t n, k
    cdef list held

    def __cinit__(self, str kernel, tuple columns, tuple names, tuple writable, tuple used):
        cdef Py_ssize_t i, j, size
        cdef char code
        cdef Py_buffer* row
        self.k = len(columns)
        self.n = len(columns[0])
        self.held = []
        for j in range(1, self.k):
            if len(columns[j]) != self.n:
                raise ValueError(f"{kernel}: {self.n} parameters but {len(columns[j])} {names[j]} entries")
        self.views = <Py_buffer*>calloc(self.n * self.k + 1, sizeof(Py_buffer))
        if self.views == NULL:
            raise MemoryError()
        for i in range(self.n):
            row = &self.views[i * self.k]
            for j in range(self.k):
                if used[j]:
                    self._acquire(kernel, columns[j][i], i * self.k + j, writable[j], names[j], i)
            code = _float_code(&row[0])
            size = row[0].len
            for j in range(self.k):
                if used[j] and (code == 0 or _float_code(&row[j]) != code):
                    raise TypeError(f"{kernel}: parameter {i} and its {names[j]} must both be float32 or both "
                                    f"float64")
                if used[j] and row[j].len != size:
                    raise ValueError(f"{kernel}: parameter {i} and its {names[j]} differ in size")

    cdef int _acquire(self, str kernel, object obj, Py_ssize_t slot, bint writable, str name,
                      Py_ssize_t i) except -1:
        try:
            PyObject_GetBuffer(obj, &self.views[slot],
                               PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (PyBUF_WRITABLE if writable else 0))
        except (BufferError, TypeError, ValueError) as e:  # not contiguous, not an array, read-only
            raise TypeError(f"{kernel}: the {name} of parameter {i} must be a {'writable ' if writable else ''}"
                            f"C-contiguous float32/float64 array ({e})") from None
        self.held.append(slot)
        return 0

    def __dealloc__(self):
        if self.views != NULL:
            for slot in self.held:
                PyBuffer_Release(&self.views[<Py_ssize_t>slot])
            free(self.views)


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
    cdef Py_ssize_t n = len(params), i
    cdef bint mom = momentum != 0.0
    cdef char* first
    if len(firsts) != n:
        raise ValueError(f"sgd_update_multi: {n} parameters but {len(firsts)} first-step flags")
    cdef _ArrayRows rows = _ArrayRows("sgd_update_multi", (params, grads, bufs),
                                      ("parameter", "gradient", "momentum buffer"), (True, False, True),
                                      (True, True, mom))
    first = <char*>calloc(n + 1, 1)
    if first == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            first[i] = 1 if firsts[i] else 0
        with nogil:
            for i in range(n):
                _sgd_one(&rows.views[3 * i], mom, lr, momentum, dampening, weight_decay, nesterov, first[i])
    finally:
        free(first)


def adam_update_multi(list params not None, list grads not None, list exp_avgs not None, list exp_avg_sqs not None,
                      list steps not None, double lr, double beta1, double beta2, double eps, double weight_decay,
                      double decay=1.0):
    """``adam_update`` on every parameter of a list in one call (``torch._foreach`` style).

    ``steps[i]`` is parameter i's step count (>= 1, after this step), from which its bias
    corrections come. ``decay`` (AdamW's ``1 - lr·λ``) first scales each parameter, in a pass of
    its own (rounded as the separate NumPy multiplication is). Checks every array before writing.
    """
    cdef Py_ssize_t n = len(params), i, size, t
    cdef double* bc
    if len(steps) != n:
        raise ValueError(f"adam_update_multi: {n} parameters but {len(steps)} step counts")
    cdef _ArrayRows rows = _ArrayRows("adam_update_multi", (params, grads, exp_avgs, exp_avg_sqs),
                                      ("parameter", "gradient", "exp_avg", "exp_avg_sq"), (True, False, True, True),
                                      (True, True, True, True))
    bc = <double*>calloc(2 * n + 1, sizeof(double))
    if bc == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            t = steps[i]
            if t < 1:
                raise ValueError(f"adam_update_multi: step {t} of parameter {i}; steps count from 1")
            bc[2 * i] = 1.0 - beta1 ** t
            bc[2 * i + 1] = 1.0 - beta2 ** t
        with nogil:
            for i in range(n):
                _adam_one(&rows.views[4 * i], lr, beta1, beta2, eps, weight_decay, decay, bc[2 * i], bc[2 * i + 1])
    finally:
        free(bc)


cdef void _adam_part(Py_buffer* v, Py_ssize_t lo, Py_ssize_t hi, double lr, double beta1, double beta2, double eps,
                     double weight_decay, double decay, double bc1, double bc2) noexcept nogil:
    """Elements [lo, hi) of one parameter (``v``: its parameter, gradient, exp_avg and exp_avg_sq views)."""
    cdef Py_ssize_t i
    if v[0].itemsize == 4:
        if decay != 1.0:
            for i in range(lo, hi):
                (<float*>v[0].buf)[i] *= <float>decay
        _adam_range(<float*>v[0].buf + lo, <const float*>v[1].buf + lo, <float*>v[2].buf + lo, <float*>v[3].buf + lo,
                    hi - lo, lr, beta1, beta2, eps, weight_decay, bc1, bc2)
    else:
        if decay != 1.0:
            for i in range(lo, hi):
                (<double*>v[0].buf)[i] *= decay
        _adam_range(<double*>v[0].buf + lo, <const double*>v[1].buf + lo, <double*>v[2].buf + lo,
                    <double*>v[3].buf + lo, hi - lo, lr, beta1, beta2, eps, weight_decay, bc1, bc2)


cdef void _adam_one(Py_buffer* v, double lr, double beta1, double beta2, double eps, double weight_decay,
                    double decay, double bc1, double bc2) noexcept nogil:
    """One parameter; a large one is cut among the team, as in SGD."""
    cdef Py_ssize_t n = v[0].len // v[0].itemsize, t
    cdef int nt = threads_for(n)
    if n == 0:
        return
    if nt <= 1:
        _adam_part(v, 0, n, lr, beta1, beta2, eps, weight_decay, decay, bc1, bc2)
        return
    for t in prange(nt, schedule="static", num_threads=nt):
        _adam_part(v, t * n // nt, (t + 1) * n // nt, lr, beta1, beta2, eps, weight_decay, decay, bc1, bc2)
