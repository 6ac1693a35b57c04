# 2-D pooling on (P, H, W) planes (P = N·C of a C-contiguous (N, C, H, W) array): max and average
# pooling (ceil_mode included: the output size is whatever the caller allocated, checked against
# PyTorch's two rules) and adaptive average pooling, forward and backward; the loops are the
# primitives of _conv_simd.h, one plane at a time, planes spread over the threads. Included by every
# build of the kernels (see _kernels.pyx).

from libc.stdint cimport int64_t

cdef extern from "_simd.h" nogil:
    void mg_max_pool_plane_f32(const float* x, float* y, int64_t* arg, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH,
                               Py_ssize_t OW, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                               Py_ssize_t ph, Py_ssize_t pw)
    void mg_max_pool_plane_f64(const double* x, double* y, int64_t* arg, Py_ssize_t H, Py_ssize_t W,
                               Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                               Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw)
    Py_ssize_t mg_max_pool_back_plane_f32(const float* g, const int64_t* arg, float* dx, Py_ssize_t n,
                                          Py_ssize_t hw)
    Py_ssize_t mg_max_pool_back_plane_f64(const double* g, const int64_t* arg, double* dx, Py_ssize_t n,
                                          Py_ssize_t hw)
    void mg_avg_pool_plane_f32(const float* x, float* y, const float* g, float* dx, Py_ssize_t H, Py_ssize_t W,
                               Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                               Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, int count_include_pad)
    void mg_avg_pool_plane_f64(const double* x, double* y, const double* g, double* dx, Py_ssize_t H,
                               Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t kh, Py_ssize_t kw,
                               Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, int count_include_pad)
    void mg_adaptive_avg_plane_f32(const float* x, float* y, const float* g, float* dx, Py_ssize_t H,
                                   Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW)
    void mg_adaptive_avg_plane_f64(const double* x, double* y, const double* g, double* dx, Py_ssize_t H,
                                   Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW)


cdef int _check_pool(str kernel, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t kh,
                     Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw) except -1:
    """PyTorch's pooling geometry: padding at most half the kernel (so every window holds an input
    pixel) and an output of the floor or the ceil_mode size."""
    if kh < 1 or kw < 1 or sh < 1 or sw < 1 or ph < 0 or pw < 0 or 2 * ph > kh or 2 * pw > kw:
        raise ValueError(f"{kernel}: kernel and stride must be >= 1 and 0 <= padding <= kernel/2, got kernel "
                         f"({kh}, {kw}), stride ({sh}, {sw}), padding ({ph}, {pw})")
    if OH not in (_window_out(H, kh, sh, ph, 1, False), _window_out(H, kh, sh, ph, 1, True)) or OH < 1 \
            or OW not in (_window_out(W, kw, sw, pw, 1, False), _window_out(W, kw, sw, pw, 1, True)) or OW < 1:
        raise ValueError(f"{kernel}: an output of ({OH}, {OW}) does not fit an input of ({H}, {W}) with kernel "
                         f"({kh}, {kw}), stride ({sh}, {sw}), padding ({ph}, {pw})")
    return 0


cdef int _check_planes(str kernel, Py_ssize_t* a, Py_ssize_t* b, str an, str bn) except -1:
    if a[0] != b[0] or a[1] != b[1] or a[2] != b[2]:
        raise ValueError(f"{kernel}: {an} has shape ({a[0]}, {a[1]}, {a[2]}) but {bn} ({b[0]}, {b[1]}, {b[2]})")
    return 0


def max_pool2d_forward(const floating[:, :, ::1] x not None, floating[:, :, ::1] y not None,
                       long long[:, :, ::1] argmax not None, int kh, int kw, int sh, int sw, int ph, int pw):
    """Max over windows of each plane of ``x`` (P, H, W) into ``y`` (P, OH, OW).

    ``argmax`` gets the flat index ``ih·W + iw`` of the first maximum in
    window order; NaN wins (and so propagates), as in PyTorch.
    """
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2], OH = y.shape[1], OW = y.shape[2], p
    cdef str k = "max_pool2d_forward"
    _check_pool(k, H, W, OH, OW, kh, kw, sh, sw, ph, pw)
    if y.shape[0] != P:
        raise ValueError(f"{k}: y has {y.shape[0]} planes, x {P}")
    _check_planes(k, argmax.shape, y.shape, "argmax", "y")
    if P == 0:
        return
    cdef int threads = min(P, threads_for(P * H * W))
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* yp = &y[0, 0, 0]
    cdef int64_t* ap = <int64_t*>&argmax[0, 0, 0]
    with nogil:
        for p in prange(P, schedule="static", num_threads=threads, use_threads_if=threads > 1):
            if floating is float:
                mg_max_pool_plane_f32(xp + p * H * W, yp + p * OH * OW, ap + p * OH * OW, H, W, OH, OW, kh, kw, sh,
                                      sw, ph, pw)
            else:
                mg_max_pool_plane_f64(xp + p * H * W, yp + p * OH * OW, ap + p * OH * OW, H, W, OH, OW, kh, kw, sh,
                                      sw, ph, pw)


def max_pool2d_backward(const floating[:, :, ::1] grad not None, const long long[:, :, ::1] argmax not None,
                        floating[:, ::1] dx not None):
    """``dx`` (P, H·W) = ``grad`` (P, OH, OW) added onto the pixels ``argmax`` chose (overwrites ``dx``).

    An index outside [0, H·W) is a ValueError (nothing is written there)."""
    cdef Py_ssize_t P = grad.shape[0], n = grad.shape[1] * grad.shape[2], hw = dx.shape[1], p, bad = 0
    cdef str k = "max_pool2d_backward"
    _check_planes(k, argmax.shape, grad.shape, "argmax", "grad")
    if dx.shape[0] != P:
        raise ValueError(f"{k}: dx has {dx.shape[0]} planes, grad {P}")
    if P * hw:
        dx[:, :] = 0
    if P * n == 0:
        return
    cdef int threads = min(P, threads_for(P * hw))
    cdef const floating* gp = &grad[0, 0, 0]
    cdef const int64_t* ap = <const int64_t*>&argmax[0, 0, 0]
    cdef floating* dp = &dx[0, 0] if hw else NULL
    with nogil:
        for p in prange(P, schedule="static", num_threads=threads, use_threads_if=threads > 1):
            if floating is float:
                bad += mg_max_pool_back_plane_f32(gp + p * n, ap + p * n, dp + p * hw, n, hw)
            else:
                bad += mg_max_pool_back_plane_f64(gp + p * n, ap + p * n, dp + p * hw, n, hw)
    if bad:
        raise ValueError(f"{k}: {bad} argmax indices lie outside the planes of {hw} pixels")


cdef void _avg_planes(const floating* x, floating* y, const floating* g, floating* dx, Py_ssize_t P, Py_ssize_t H,
                      Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW, int kh, int kw, int sh, int sw, int ph, int pw,
                      bint count_include_pad, bint adaptive, int threads) noexcept nogil:
    """Forward (g NULL: x -> y) or backward (g -> dx) of average pooling over P planes."""
    cdef Py_ssize_t p, i = H * W, o = OH * OW
    for p in prange(P, schedule="static", num_threads=threads, use_threads_if=threads > 1):
        if adaptive:
            if floating is float:
                mg_adaptive_avg_plane_f32(x + p * i if x != NULL else NULL, y + p * o if y != NULL else NULL,
                                          g + p * o if g != NULL else NULL, dx + p * i if dx != NULL else NULL,
                                          H, W, OH, OW)
            else:
                mg_adaptive_avg_plane_f64(x + p * i if x != NULL else NULL, y + p * o if y != NULL else NULL,
                                          g + p * o if g != NULL else NULL, dx + p * i if dx != NULL else NULL,
                                          H, W, OH, OW)
        elif floating is float:
            mg_avg_pool_plane_f32(x + p * i if x != NULL else NULL, y + p * o if y != NULL else NULL,
                                  g + p * o if g != NULL else NULL, dx + p * i if dx != NULL else NULL, H, W, OH,
                                  OW, kh, kw, sh, sw, ph, pw, count_include_pad)
        else:
            mg_avg_pool_plane_f64(x + p * i if x != NULL else NULL, y + p * o if y != NULL else NULL,
                                  g + p * o if g != NULL else NULL, dx + p * i if dx != NULL else NULL, H, W, OH,
                                  OW, kh, kw, sh, sw, ph, pw, count_include_pad)


def avg_pool2d_forward(const floating[:, :, ::1] x not None, floating[:, :, ::1] y not None, int kh, int kw, int sh,
                       int sw, int ph, int pw, bint count_include_pad):
    """Mean over windows of each plane (P, H, W) into ``y`` (P, OH, OW), zero padding (PyTorch's divisor)."""
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2], OH = y.shape[1], OW = y.shape[2]
    cdef str k = "avg_pool2d_forward"
    _check_pool(k, H, W, OH, OW, kh, kw, sh, sw, ph, pw)
    if y.shape[0] != P:
        raise ValueError(f"{k}: y has {y.shape[0]} planes, x {P}")
    if P == 0:
        return
    cdef int threads = min(P, threads_for(P * H * W))
    with nogil:
        _avg_planes(&x[0, 0, 0], &y[0, 0, 0], NULL, NULL, P, H, W, OH, OW, kh, kw, sh, sw, ph, pw,
                    count_include_pad, False, threads)


def avg_pool2d_backward(const floating[:, :, ::1] grad not None, floating[:, :, ::1] dx not None, int kh, int kw,
                        int sh, int sw, int ph, int pw, bint count_include_pad):
    """``dx`` (P, H, W) = ``grad`` (P, OH, OW) spread evenly over each window (overwrites ``dx``)."""
    cdef Py_ssize_t P = grad.shape[0], OH = grad.shape[1], OW = grad.shape[2], H = dx.shape[1], W = dx.shape[2]
    cdef str k = "avg_pool2d_backward"
    _check_pool(k, H, W, OH, OW, kh, kw, sh, sw, ph, pw)
    if dx.shape[0] != P:
        raise ValueError(f"{k}: dx has {dx.shape[0]} planes, grad {P}")
    if P == 0:
        return
    dx[:, :, :] = 0
    cdef int threads = min(P, threads_for(P * H * W))
    with nogil:
        _avg_planes(NULL, NULL, &grad[0, 0, 0], &dx[0, 0, 0], P, H, W, OH, OW, kh, kw, sh, sw, ph, pw,
                    count_include_pad, False, threads)


def adaptive_avg_pool2d_forward(const floating[:, :, ::1] x not None, floating[:, :, ::1] y not None):
    """Adaptive average pooling of each plane (P, H, W) to ``y``'s (OH, OW) (PyTorch's windows)."""
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2], OH = y.shape[1], OW = y.shape[2]
    cdef str k = "adaptive_avg_pool2d_forward"
    if y.shape[0] != P:
        raise ValueError(f"{k}: y has {y.shape[0]} planes, x {P}")
    if P * OH * OW == 0:
        return
    if H < 1 or W < 1:
        raise ValueError(f"{k}: cannot pool an empty ({H}, {W}) plane to ({OH}, {OW})")
    cdef int threads = min(P, threads_for(P * H * W))
    with nogil:
        _avg_planes(&x[0, 0, 0], &y[0, 0, 0], NULL, NULL, P, H, W, OH, OW, 0, 0, 0, 0, 0, 0, False, True, threads)


def adaptive_avg_pool2d_backward(const floating[:, :, ::1] grad not None, floating[:, :, ::1] dx not None):
    """``dx`` (P, H, W) = ``grad`` (P, OH, OW) spread evenly over each adaptive window (overwrites ``dx``)."""
    cdef Py_ssize_t P = grad.shape[0], OH = grad.shape[1], OW = grad.shape[2], H = dx.shape[1], W = dx.shape[2]
    cdef str k = "adaptive_avg_pool2d_backward"
    if dx.shape[0] != P:
        raise ValueError(f"{k}: dx has {dx.shape[0]} planes, grad {P}")
    if P * H * W == 0:
        return
    dx[:, :, :] = 0
    if OH * OW == 0:
        return
    cdef int threads = min(P, threads_for(P * H * W))
    with nogil:
        _avg_planes(NULL, NULL, &grad[0, 0, 0], &dx[0, 0, 0], P, H, W, OH, OW, 0, 0, 0, 0, 0, 0, False, True, threads)
