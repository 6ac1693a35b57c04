# 2-D convolution on C-contiguous (N, C, H, W) arrays: im2col/col2im (with dilation) and the fused
# convolution kernels that unfold one image into a thread's buffer and multiply it in the same thread
# (_gemm.pxi), so the columns of an image are still in cache when the product reads them. Groups are
# blocks of the same products. Included by every build of the kernels (see _kernels.pyx).
#
# Geometry (PyTorch's): OH = (H + 2·ph - dh·(kh - 1) - 1) // sh + 1; input row oh·sh + i·dh - ph
# feeds output row oh through tap i (zero outside the image); the same along W.

cdef extern from "_simd.h" nogil:
    double mg_sum_f32(const float* p, Py_ssize_t n)
    double mg_sum_f64(const double* p, Py_ssize_t n)
    void mg_unfold_f32(float* x, float* cols, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh,
                       Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                       Py_ssize_t dw, Py_ssize_t OH, Py_ssize_t OW, int fold)
    void mg_unfold_f64(double* x, double* cols, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh,
                       Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                       Py_ssize_t dw, Py_ssize_t OH, Py_ssize_t OW, int fold)

cdef struct mg_geom:
    Py_ssize_t C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW


cdef Py_ssize_t _window_out(Py_ssize_t n, Py_ssize_t k, Py_ssize_t s, Py_ssize_t p, Py_ssize_t d,
                            bint ceil_mode) noexcept:
    """Output length of a sliding window (PyTorch's rule, ceil_mode included); may be <= 0."""
    cdef Py_ssize_t span = n + 2 * p - d * (k - 1) - 1, out
    if span < 0:
        return 0
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= n + p:  # the last window would start in the right padding
        out -= 1
    return out


cdef int _check_geometry(str kernel, mg_geom* g, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                         Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw) except -1:
    """Fill g's window parameters and output size from x's (C, H, W), or raise."""
    if kh < 1 or kw < 1 or sh < 1 or sw < 1 or dh < 1 or dw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"{kernel}: kernel, stride and dilation must be >= 1 and padding >= 0, got kernel "
                         f"({kh}, {kw}), stride ({sh}, {sw}), padding ({ph}, {pw}), dilation ({dh}, {dw})")
    g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw = kh, kw, sh, sw, ph, pw, dh, dw
    g.OH = _window_out(g.H, kh, sh, ph, dh, False)
    g.OW = _window_out(g.W, kw, sw, pw, dw, False)
    if g.OH < 1 or g.OW < 1:
        raise ValueError(f"{kernel}: the kernel ({dh * (kh - 1) + 1}, {dw * (kw - 1) + 1}) (dilated) is larger than "
                         f"the padded input ({g.H + 2 * ph}, {g.W + 2 * pw})")
    return 0


cdef inline void _unfold(floating* x, floating* cols, const mg_geom* g, bint fold) noexcept nogil:
    if floating is float:
        mg_unfold_f32(x, cols, g.C, g.H, g.W, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.OH, g.OW, fold)
    else:
        mg_unfold_f64(x, cols, g.C, g.H, g.W, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.OH, g.OW, fold)


cdef inline void _im2col1(const floating* x, floating* cols, const mg_geom* g) noexcept nogil:
    _unfold(<floating*>x, cols, g, False)  # reads x only


cdef inline void _col2im1(const floating* cols, floating* x, const mg_geom* g) noexcept nogil:
    """x (one image, C·H·W values) = the adjoint of im2col applied to cols."""
    memset(x, 0, g.C * g.H * g.W * sizeof(floating))
    _unfold(x, <floating*>cols, g, True)  # reads cols only


cdef inline bint _pointwise(const mg_geom* g) noexcept nogil:
    """A 1×1 window with stride 1 and no padding: the columns of an image are the image itself."""
    return g.kh == 1 and g.kw == 1 and g.sh == 1 and g.sw == 1 and g.ph == 0 and g.pw == 0


def im2col(const floating[:, :, :, ::1] x not None, floating[:, :, ::1] cols not None, int kh, int kw, int sh,
           int sw, int ph, int pw, int dh=1, int dw=1):
    """Fill ``cols`` (N, C·kh·kw, OH·OW) with the sliding windows of ``x`` (N, C, H, W), zero padding."""
    cdef mg_geom g
    cdef Py_ssize_t N = x.shape[0], b, K, L
    g.C, g.H, g.W = x.shape[1], x.shape[2], x.shape[3]
    _check_geometry("im2col", &g, kh, kw, sh, sw, ph, pw, dh, dw)
    K, L = g.C * kh * kw, g.OH * g.OW
    if cols.shape[0] != N or cols.shape[1] != K or cols.shape[2] != L:
        raise ValueError(f"im2col: cols must be ({N}, {K}, {L}), got ({cols.shape[0]}, {cols.shape[1]}, "
                         f"{cols.shape[2]})")
    if N * K * L == 0:
        return
    cdef int threads = min(N, threads_for(N * K * L))
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef floating* cp = &cols[0, 0, 0]
    with nogil:
        for b in prange(N, schedule="static", num_threads=threads, use_threads_if=threads > 1):
            _im2col1(xp + b * g.C * g.H * g.W, cp + b * K * L, &g)


def col2im(const floating[:, :, ::1] cols not None, floating[:, :, :, ::1] out not None, int kh, int kw, int sh,
           int sw, int ph, int pw, int dh=1, int dw=1):
    """``out`` (N, C, H, W) = the adjoint of ``im2col`` applied to ``cols`` (every entry added back onto
    the pixel it was read from; ``out`` is overwritten)."""
    cdef mg_geom g
    cdef Py_ssize_t N = out.shape[0], b, K, L
    g.C, g.H, g.W = out.shape[1], out.shape[2], out.shape[3]
    _check_geometry("col2im", &g, kh, kw, sh, sw, ph, pw, dh, dw)
    K, L = g.C * kh * kw, g.OH * g.OW
    if cols.shape[0] != N or cols.shape[1] != K or cols.shape[2] != L:
        raise ValueError(f"col2im: cols must be ({N}, {K}, {L}), got ({cols.shape[0]}, {cols.shape[1]}, "
                         f"{cols.shape[2]})")
    if N * g.C * g.H * g.W == 0:
        return
    cdef int threads = min(N, threads_for(N * K * L))
    cdef const floating* cp = &cols[0, 0, 0]
    cdef floating* op = &out[0, 0, 0, 0]
    with nogil:
        # images are independent: threads over N never write the same pixel
        for b in prange(N, schedule="static", num_threads=threads, use_threads_if=threads > 1):
            _col2im1(cp + b * K * L, op + b * g.C * g.H * g.W, &g)


cdef int _check_conv(str kernel, Py_ssize_t* xshape, Py_ssize_t* wshape, Py_ssize_t groups, mg_geom* g,
                     int sh, int sw, int ph, int pw, int dh, int dw) except -1:
    """x (N, C, H, W) and weight (O, C/groups, kh, kw) agree; fill the geometry."""
    cdef Py_ssize_t C = xshape[1], O = wshape[0]
    if groups < 1 or C % groups or O % groups:
        raise ValueError(f"{kernel}: groups must be a positive divisor of the {C} input and {O} output "
                         f"channels, got {groups}")
    if wshape[1] * groups != C:
        raise ValueError(f"{kernel}: the weight has {wshape[1]} input channels per group, the input "
                         f"{C} in {groups} groups")
    g.C, g.H, g.W = C, xshape[2], xshape[3]
    _check_geometry(kernel, g, wshape[2], wshape[3], sh, sw, ph, pw, dh, dw)
    return 0


def conv2d_forward(const floating[:, :, :, ::1] x not None, const floating[:, :, :, ::1] weight not None,
                   const floating[::1] bias, floating[:, :, :, ::1] out not None, floating[:, :, ::1] cols,
                   int sh, int sw, int ph, int pw, int dh, int dw, Py_ssize_t groups):
    """``out`` (N, O, OH, OW) = the convolution of ``x`` (N, C, H, W) with ``weight`` (O, C/groups, kh, kw)
    plus ``bias`` (O,) (may be None).

    ``cols`` (N, C·kh·kw, OH·OW) receives every image's columns for the
    backward pass, or is None (each thread then unfolds into its own
    buffer). Images are spread over the threads; with fewer images than
    threads each product is split instead.
    """
    cdef mg_geom g
    cdef Py_ssize_t N = x.shape[0], O = weight.shape[0], G = groups, b, gi, o, K, L, Kg, Og
    cdef str k = "conv2d_forward"
    _check_conv(k, x.shape, weight.shape, G, &g, sh, sw, ph, pw, dh, dw)
    K, L, Og = g.C * g.kh * g.kw, g.OH * g.OW, O // G
    Kg = K // G
    if out.shape[0] != N or out.shape[1] != O or out.shape[2] != g.OH or out.shape[3] != g.OW:
        raise ValueError(f"{k}: out must be ({N}, {O}, {g.OH}, {g.OW}), got ({out.shape[0]}, {out.shape[1]}, "
                         f"{out.shape[2]}, {out.shape[3]})")
    if bias is not None:
        _check_len(bias.shape[0], O, "bias", k)
    if cols is not None and (cols.shape[0] != N or cols.shape[1] != K or cols.shape[2] != L):
        raise ValueError(f"{k}: cols must be ({N}, {K}, {L}), got ({cols.shape[0]}, {cols.shape[1]}, "
                         f"{cols.shape[2]})")
    if N * O * L == 0:
        return
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* wp = &weight[0, 0, 0, 0]
    cdef const floating* bp = &bias[0] if bias is not None else NULL
    cdef floating* op = &out[0, 0, 0, 0]
    cdef floating* cp = &cols[0, 0, 0] if cols is not None and K else NULL
    cdef bint direct = _pointwise(&g)  # the image is its own columns
    cdef int threads = threads_for((N * O * L * Kg) >> GEMM_WORK_SHIFT)
    cdef int bad = 0
    cdef floating* buf
    cdef const floating* colb
    if threads > 1 and N >= threads:
        with nogil, parallel(num_threads=threads):
            buf = NULL if (direct or cp != NULL) else <floating*>malloc(K * L * sizeof(floating))
            for b in prange(N, schedule="static"):
                bad += _conv_forward_image(xp, wp, bp, op, cp, buf, b, &g, G, O, direct, 1)
            free(buf)
    else:
        buf = NULL if (direct or cp != NULL) else <floating*>malloc(K * L * sizeof(floating))
        with nogil:
            for b in range(N):
                bad += _conv_forward_image(xp, wp, bp, op, cp, buf, b, &g, G, O, direct, threads)
        free(buf)
    if bad:
        raise MemoryError(f"{k}: out of memory")


cdef int _conv_forward_image(const floating* xp, const floating* wp, const floating* bp, floating* op,
                             floating* cp, floating* buf, Py_ssize_t b, const mg_geom* g, Py_ssize_t G,
                             Py_ssize_t O, bint direct, int threads) noexcept nogil:
    """Image b: unfold (into cols[b], or buf), then out[b, group] = W[group] · columns[group] + bias."""
    cdef Py_ssize_t K = g.C * g.kh * g.kw, L = g.OH * g.OW, Kg = K // G, Og = O // G, gi, o
    cdef const floating* colb
    cdef floating* ob = op + b * O * L
    cdef floating* target
    if direct:
        colb = xp + b * g.C * g.H * g.W
    else:
        target = cp + b * K * L if cp != NULL else buf
        if target == NULL:
            return 1
        _im2col1(xp + b * g.C * g.H * g.W, target, g)
        colb = target
    for gi in range(G):
        if _gemm_team(Og, L, Kg, wp + gi * Og * Kg, Kg, 1, colb + gi * Kg * L, L, 1, ob + gi * Og * L, L, False,
                      threads):
            return 1
    if bp != NULL:
        for o in range(O):
            _madd(ob + o * L, ob + o * L, L, <floating>1, bp[o], False)
    return 0


def conv2d_backward_input(const floating[:, :, ::1] grad not None, const floating[:, :, :, ::1] weight not None,
                          floating[:, :, :, ::1] gx not None, int sh, int sw, int ph, int pw, int dh, int dw,
                          Py_ssize_t groups):
    """``gx`` (N, C, H, W) = the gradient of the convolution with respect to its input, from ``grad``
    (N, O, OH·OW): per image and group ``Wᵀ · grad``, folded back by col2im (overwrites ``gx``)."""
    cdef mg_geom g
    cdef Py_ssize_t N = gx.shape[0], O = weight.shape[0], G = groups, b, K, L
    cdef str k = "conv2d_backward_input"
    _check_conv(k, gx.shape, weight.shape, G, &g, sh, sw, ph, pw, dh, dw)
    K, L = g.C * g.kh * g.kw, g.OH * g.OW
    if grad.shape[0] != N or grad.shape[1] != O or grad.shape[2] != L:
        raise ValueError(f"{k}: grad must be ({N}, {O}, {L}), got ({grad.shape[0]}, {grad.shape[1]}, "
                         f"{grad.shape[2]})")
    if N * g.C * g.H * g.W == 0:
        return
    cdef const floating* gp = &grad[0, 0, 0] if O else NULL
    cdef const floating* wp = &weight[0, 0, 0, 0] if O else NULL
    cdef floating* xp = &gx[0, 0, 0, 0]
    if O == 0:
        gx[:, :, :, :] = 0
        return
    cdef bint direct = _pointwise(&g)
    cdef int threads = threads_for((N * O * L * (K // G)) >> GEMM_WORK_SHIFT)
    cdef int bad = 0
    cdef floating* buf
    if threads > 1 and N >= threads:
        with nogil, parallel(num_threads=threads):
            buf = NULL if direct else <floating*>malloc(K * L * sizeof(floating))
            for b in prange(N, schedule="static"):
                bad += _conv_backward_image(gp, wp, xp, buf, b, &g, G, O, direct, 1)
            free(buf)
    else:
        buf = NULL if direct else <floating*>malloc(K * L * sizeof(floating))
        with nogil:
            for b in range(N):
                bad += _conv_backward_image(gp, wp, xp, buf, b, &g, G, O, direct, threads)
        free(buf)
    if bad:
        raise MemoryError(f"{k}: out of memory")


cdef int _conv_backward_image(const floating* gp, const floating* wp, floating* xp, floating* buf, Py_ssize_t b,
                              const mg_geom* g, Py_ssize_t G, Py_ssize_t O, bint direct,
                              int threads) noexcept nogil:
    """Image b: columns[group] = W[group]ᵀ · grad[b, group], then col2im into gx[b]."""
    cdef Py_ssize_t K = g.C * g.kh * g.kw, L = g.OH * g.OW, Kg = K // G, Og = O // G, gi
    cdef floating* target = xp + b * g.C * g.H * g.W if direct else buf
    if target == NULL:
        return 1
    for gi in range(G):
        # A = W[group]ᵀ: element (k, o) at w[(gi·Og + o)·Kg + k], unit stride along k
        if _gemm_team(Kg, L, Og, wp + gi * Og * Kg, 1, Kg, gp + (b * O + gi * Og) * L, L, 1, target + gi * Kg * L,
                      L, False, threads):
            return 1
    if not direct:
        _col2im1(buf, xp + b * g.C * g.H * g.W, g)
    return 0


def conv2d_backward_weight(const floating[:, :, ::1] grad not None, const floating[:, :, ::1] cols not None,
                           floating[:, ::1] gw not None, floating[::1] gb, Py_ssize_t groups):
    """``gw`` (O, K/groups) = Σ over images of ``grad[b, group] · cols[b, group]ᵀ`` and ``gb`` (O,) (or
    None) = Σ of ``grad`` over images and positions, from ``grad`` (N, O, L) and the forward's
    ``cols`` (N, K, L) (for a 1×1 convolution, the input itself viewed as (N, C, H·W)).

    Each thread owns whole rows of ``gw`` and adds the images in order, so
    the sums do not depend on the number of threads.
    """
    cdef Py_ssize_t N = grad.shape[0], O = grad.shape[1], L = grad.shape[2], K = cols.shape[1], G = groups
    cdef Py_ssize_t gi, t, parts, tiles, lo, hi, Og, Kg
    cdef str k = "conv2d_backward_weight"
    if G < 1 or O % G or K % G:
        raise ValueError(f"{k}: groups must divide the {O} output channels and {K} column rows, got {G}")
    Og, Kg = O // G, K // G
    if cols.shape[0] != N or cols.shape[2] != L:
        raise ValueError(f"{k}: cols must be ({N}, {K}, {L}) like grad's images, got ({cols.shape[0]}, {K}, "
                         f"{cols.shape[2]})")
    if gw.shape[0] != O or gw.shape[1] != Kg:
        raise ValueError(f"{k}: gw must be ({O}, {Kg}), got ({gw.shape[0]}, {gw.shape[1]})")
    if gb is not None:
        _check_len(gb.shape[0], O, "gb", k)
    if O * Kg:
        gw[:, :] = 0
    if gb is not None and O:
        gb[:] = 0
    if N * L == 0 or O == 0:
        return
    cdef const floating* gp = &grad[0, 0, 0]
    cdef const floating* cp = &cols[0, 0, 0] if K else NULL
    cdef floating* wp = &gw[0, 0] if Kg else NULL
    cdef floating* bp = &gb[0] if gb is not None else NULL
    cdef int threads = threads_for((N * O * L * Kg) >> GEMM_WORK_SHIFT)
    cdef int bad = 0
    # Work units: (group, block of rows). Groups are spread over the threads when there are enough,
    # else each group's rows are cut into blocks of whole micro-tiles.
    tiles = (Og + MG_GEMM_MR - 1) // MG_GEMM_MR
    parts = 1 if G >= threads else min(<Py_ssize_t>threads, tiles)
    with nogil:
        for t in prange(G * parts, schedule="static", num_threads=threads, use_threads_if=threads > 1):
            gi = t // parts
            lo = (t % parts) * tiles // parts * MG_GEMM_MR
            hi = min(Og, ((t % parts) + 1) * tiles // parts * MG_GEMM_MR)
            bad += _conv_weight_rows(gp, cp, wp, bp, N, O, L, K, gi * Og + lo, gi * Og + hi, gi * Kg, Kg)
    if bad:
        raise MemoryError(f"{k}: out of memory")


cdef int _conv_weight_rows(const floating* gp, const floating* cp, floating* wp, floating* bp, Py_ssize_t N,
                           Py_ssize_t O, Py_ssize_t L, Py_ssize_t K, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t k0,
                           Py_ssize_t Kg) noexcept nogil:
    """Rows [r0, r1) of gw (their group's columns start at row k0 of cols), over every image in order."""
    cdef Py_ssize_t b, o
    cdef double s
    if r1 <= r0:
        return 0
    for b in range(N):
        # A = grad[b, r0:r1] (rows), B = cols[b, k0:k0+Kg]ᵀ: element (l, j) at cols[b, k0 + j, l]
        if Kg and _gemm1(r1 - r0, Kg, L, gp + (b * O + r0) * L, L, 1, cp + (b * K + k0) * L, 1, L, wp + r0 * Kg, Kg,
                         b > 0):
            return 1
    if bp != NULL:
        for o in range(r0, r1):
            s = 0
            for b in range(N):
                if floating is float:
                    s += mg_sum_f32(gp + (b * O + o) * L, L)
                else:
                    s += mg_sum_f64(gp + (b * O + o) * L, L)
            bp[o] = <floating>s
    return 0
