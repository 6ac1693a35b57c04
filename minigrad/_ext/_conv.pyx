# cython: language_level=3
"""CPU kernels for convolution and pooling on contiguous (N, C, H, W) arrays.

One source per kernel for float32 and float64 (fused type ``real``). The
wrappers in ``minigrad.backends.cpu`` validate shapes and make inputs
contiguous; these loops trust them. Work is split over images (im2col,
col2im) or over (image, channel) planes (pooling) with OpenMP when the
input is large enough for threads to pay off.
"""

from cython.parallel cimport prange

ctypedef fused real:
    float
    double

# Below this many elements a kernel runs on one thread: starting a team
# costs more than the work.
cdef Py_ssize_t PARALLEL_MIN = 1 << 16


def im2col(const real[:, :, :, ::1] x, real[:, :, ::1] cols,
           int kh, int kw, int sh, int sw, int ph, int pw):
    """Fill ``cols`` (N, C·kh·kw, OH·OW) with the sliding windows of ``x`` (zero padding)."""
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    cdef Py_ssize_t ow_n = (w + 2 * pw - kw) // sw + 1
    cdef Py_ssize_t oh_n = (h + 2 * ph - kh) // sh + 1
    cdef Py_ssize_t b, ch, i, j, oh, ow, row, ih, iw, base
    cdef bint parallel = x.shape[0] > 1 and cols.shape[0] * cols.shape[1] * cols.shape[2] >= PARALLEL_MIN
    for b in prange(n, nogil=True, schedule="static", use_threads_if=parallel):
        for ch in range(c):
            for i in range(kh):
                for j in range(kw):
                    row = (ch * kh + i) * kw + j
                    for oh in range(oh_n):
                        ih = oh * sh + i - ph
                        base = oh * ow_n
                        if ih < 0 or ih >= h:
                            for ow in range(ow_n):
                                cols[b, row, base + ow] = 0
                        else:
                            for ow in range(ow_n):
                                iw = ow * sw + j - pw
                                if iw >= 0 and iw < w:
                                    cols[b, row, base + ow] = x[b, ch, ih, iw]
                                else:
                                    cols[b, row, base + ow] = 0


def col2im(const real[:, :, ::1] cols, real[:, :, :, ::1] out,
           int kh, int kw, int sh, int sw, int ph, int pw):
    """Add every column entry back onto its input pixel of ``out`` (zeroed by the caller)."""
    cdef Py_ssize_t n = out.shape[0], c = out.shape[1], h = out.shape[2], w = out.shape[3]
    cdef Py_ssize_t ow_n = (w + 2 * pw - kw) // sw + 1
    cdef Py_ssize_t oh_n = (h + 2 * ph - kh) // sh + 1
    cdef Py_ssize_t b, ch, i, j, oh, ow, row, ih, iw, base
    cdef bint parallel = out.shape[0] > 1 and cols.shape[0] * cols.shape[1] * cols.shape[2] >= PARALLEL_MIN
    # Images are independent, so threads over N never write the same pixel.
    for b in prange(n, nogil=True, schedule="static", use_threads_if=parallel):
        for ch in range(c):
            for i in range(kh):
                for j in range(kw):
                    row = (ch * kh + i) * kw + j
                    for oh in range(oh_n):
                        ih = oh * sh + i - ph
                        if ih < 0 or ih >= h:
                            continue
                        base = oh * ow_n
                        for ow in range(ow_n):
                            iw = ow * sw + j - pw
                            if iw >= 0 and iw < w:
                                out[b, ch, ih, iw] += cols[b, row, base + ow]


def max_pool2d_forward(const real[:, :, ::1] x, real[:, :, ::1] y, long long[:, :, ::1] argmax,
                       int h, int w, int kh, int kw, int sh, int sw, int ph, int pw):
    """Max over windows of each plane of ``x`` (P, H, W) into ``y`` (P, OH, OW).

    ``argmax`` gets the flat index ``ih·W + iw`` of the first maximum in
    window order; NaN wins (and so propagates), as in PyTorch.
    """
    cdef Py_ssize_t planes = x.shape[0], oh_n = y.shape[1], ow_n = y.shape[2]
    cdef Py_ssize_t p, oh, ow, i, j, ih, iw, lo, hi
    cdef real v, old
    cdef long long cur
    cdef bint take
    cdef const real* xrow
    cdef real* yrow
    cdef long long* arow
    cdef bint parallel = planes > 1 and x.shape[0] * x.shape[1] * x.shape[2] >= PARALLEL_MIN
    cdef Py_ssize_t base, best_idx
    cdef real best
    if ph == 0 and pw == 0:
        # Every window lies inside the image: one output at a time, its
        # running maximum in registers (the common case, e.g. 2x2 stride 2).
        for p in prange(planes, nogil=True, schedule="static", use_threads_if=parallel):
            for oh in range(oh_n):
                yrow = &y[p, oh, 0]
                arow = &argmax[p, oh, 0]
                for ow in range(ow_n):
                    base = (oh * sh) * w + ow * sw
                    xrow = &x[p, 0, 0] + base
                    best = xrow[0]
                    best_idx = 0
                    for i in range(kh):
                        for j in range(kw):
                            # branch-free (conditional moves): on real data which
                            # element wins is unpredictable
                            v = xrow[i * w + j]
                            take = (v > best) | (v != v)
                            best = v if take else best
                            best_idx = i * w + j if take else best_idx
                    yrow[ow] = best
                    arow[ow] = base + best_idx
        return
    for p in prange(planes, nogil=True, schedule="static", use_threads_if=parallel):
        for oh in range(oh_n):
            yrow = &y[p, oh, 0]
            arow = &argmax[p, oh, 0]
            for ow in range(ow_n):
                arow[ow] = -1
                yrow[ow] = 0
            # Window element (i, j) for a whole output row at a time, in window
            # order: the inner loop over ow has no bounds checks and no branches,
            # so it vectorizes (a compare and two selects per output).
            for i in range(kh):
                ih = oh * sh + i - ph
                if ih < 0 or ih >= h:
                    continue
                xrow = &x[p, ih, 0]
                for j in range(kw):
                    # the outputs whose column ow·sw + j - pw falls inside the image
                    # (C division truncates: keep both numerators non-negative)
                    if w - 1 + pw - j < 0:
                        continue
                    lo = (pw - j + sw - 1) // sw if pw > j else 0
                    hi = (w - 1 + pw - j) // sw
                    if hi >= ow_n:
                        hi = ow_n - 1
                    for ow in range(lo, hi + 1):
                        iw = ow * sw + j - pw
                        v = xrow[iw]
                        old = yrow[ow]
                        cur = arow[ow]
                        take = (cur < 0) | (v > old) | (v != v)
                        yrow[ow] = v if take else old
                        arow[ow] = ih * w + iw if take else cur


def max_pool2d_backward(const real[:, :, ::1] grad, const long long[:, :, ::1] argmax, real[:, ::1] dx):
    """Add ``grad`` (P, OH, OW) onto the chosen pixels of ``dx`` (P, H·W), zeroed by the caller."""
    cdef Py_ssize_t planes = grad.shape[0], oh_n = grad.shape[1], ow_n = grad.shape[2]
    cdef Py_ssize_t p, oh, ow
    cdef bint parallel = planes > 1 and dx.shape[0] * dx.shape[1] >= PARALLEL_MIN
    for p in prange(planes, nogil=True, schedule="static", use_threads_if=parallel):
        for oh in range(oh_n):
            for ow in range(ow_n):
                dx[p, argmax[p, oh, ow]] += grad[p, oh, ow]


cdef inline double _divisor(Py_ssize_t ih0, Py_ssize_t iw0, int kh, int kw, int h, int w,
                            bint count_include_pad) noexcept nogil:
    cdef Py_ssize_t hs, he, ws, we
    if count_include_pad:
        return kh * kw
    hs = ih0 if ih0 > 0 else 0
    he = ih0 + kh if ih0 + kh < h else h
    ws = iw0 if iw0 > 0 else 0
    we = iw0 + kw if iw0 + kw < w else w
    return (he - hs) * (we - ws)


def avg_pool2d_forward(const real[:, :, ::1] x, real[:, :, ::1] y, int h, int w,
                       int kh, int kw, int sh, int sw, int ph, int pw, bint count_include_pad):
    """Mean over windows of each plane (P, H, W) into ``y`` (P, OH, OW), zero padding."""
    cdef Py_ssize_t planes = x.shape[0], oh_n = y.shape[1], ow_n = y.shape[2]
    cdef Py_ssize_t p, oh, ow, i, j, ih, iw, h0, w0
    cdef double acc
    cdef bint parallel = planes > 1 and x.shape[0] * x.shape[1] * x.shape[2] >= PARALLEL_MIN
    for p in prange(planes, nogil=True, schedule="static", use_threads_if=parallel):
        for oh in range(oh_n):
            h0 = oh * sh - ph
            for ow in range(ow_n):
                w0 = ow * sw - pw
                acc = 0
                for i in range(kh):
                    ih = h0 + i
                    if ih < 0 or ih >= h:
                        continue
                    for j in range(kw):
                        iw = w0 + j
                        if iw >= 0 and iw < w:
                            acc = acc + x[p, ih, iw]
                y[p, oh, ow] = <real>(acc / _divisor(h0, w0, kh, kw, h, w, count_include_pad))


def avg_pool2d_backward(const real[:, :, ::1] grad, real[:, :, ::1] dx, int kh, int kw,
                        int sh, int sw, int ph, int pw, bint count_include_pad):
    """Spread ``grad`` (P, OH, OW) evenly over each window of ``dx`` (P, H, W), zeroed by the caller."""
    cdef Py_ssize_t planes = grad.shape[0], oh_n = grad.shape[1], ow_n = grad.shape[2]
    cdef int h = dx.shape[1], w = dx.shape[2]
    cdef Py_ssize_t p, oh, ow, i, j, ih, iw, h0, w0
    cdef real g
    cdef bint parallel = planes > 1 and dx.shape[0] * dx.shape[1] * dx.shape[2] >= PARALLEL_MIN
    for p in prange(planes, nogil=True, schedule="static", use_threads_if=parallel):
        for oh in range(oh_n):
            h0 = oh * sh - ph
            for ow in range(ow_n):
                w0 = ow * sw - pw
                g = <real>(grad[p, oh, ow] / _divisor(h0, w0, kh, kw, h, w, count_include_pad))
                for i in range(kh):
                    ih = h0 + i
                    if ih < 0 or ih >= h:
                        continue
                    for j in range(kw):
                        iw = w0 + j
                        if iw >= 0 and iw < w:
                            dx[p, ih, iw] += g
