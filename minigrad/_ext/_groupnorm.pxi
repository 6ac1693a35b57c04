# Per-group normalization kernels on an (N, C, S) view with G groups: statistics of each sample's C/G
# consecutive channels, the affine per channel. GroupNorm is this view; LayerNorm is (R, K, 1) with one
# group and a per-element affine; InstanceNorm is G = C. Included by every build of the kernels (see
# _kernels.pyx); the primitives are those of _norm_simd.h, the checks those of _common.pxi.

# ------------------------------------------------------- per-group kernels
# A row is one (sample, group): C/G consecutive channels of S values each.
# With S = 1 (LayerNorm's (R, K, 1) view) the row is one contiguous run of
# C/G values and the affine is per element; otherwise the affine is per
# channel, one scalar pair per run of S values.
cdef inline void _prefetch_run(const floating* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """Prefetch the block of the run p[0:n] that starts PREFETCH_BYTES after element i."""
    cdef Py_ssize_t j = i + <Py_ssize_t>PREFETCH_BYTES // <Py_ssize_t>sizeof(floating)
    if j < n:
        mg_prefetch(p + j, min(<Py_ssize_t>PIPE_BLOCK, n - j) * <Py_ssize_t>sizeof(floating))


cdef void _gn_forward_rows(const floating* x, floating* y, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t G,
                           Py_ssize_t Cg, Py_ssize_t S, Py_ssize_t xs0, Py_ssize_t xs1, Py_ssize_t ys0,
                           Py_ssize_t ys1, const floating* w, const floating* b, double eps, floating* mean_out,
                           floating* invstd_out, bint stream) noexcept nogil:
    """Rows [r0, r1) (row r = sample r // G, group r % G): statistics, then the affine output.

    The statistics pass reads the row once; the output pass finds it in
    cache and prefetches the same place of the next row, so the next
    statistics pass starts warm (only the first row, or rows too long to
    hold, are prefetched ahead within the row by the statistics pass: a
    second request for every line measured slower with warm data).
    """
    cdef bint elementwise = S == 1
    cdef Py_ssize_t K = Cg * S
    cdef bint one_run = elementwise or xs1 == S or Cg == 1  # the row is one contiguous run of K values
    cdef Py_ssize_t r, n, grp, j, c, i0, ni, s0
    cdef double mean, inv
    cdef floating mhi, mlo, a, beta
    cdef const floating* xr
    cdef const floating* xs
    cdef const floating* xnext
    cdef floating* yr
    cdef mg_stats st
    cdef bint warm_next = K * <Py_ssize_t>sizeof(floating) <= ROW_PREFETCH_MAX
    cdef bint ahead
    for r in range(r0, r1):
        n = r // G
        grp = r - n * G
        xr = x + n * xs0 + grp * Cg * xs1
        yr = y + n * ys0 + grp * Cg * ys1
        xnext = NULL
        if warm_next and r + 1 < r1:
            xnext = x + ((r + 1) // G) * xs0 + ((r + 1) % G) * Cg * xs1
        st.n = 0
        st.mean = 0
        st.m2 = 0
        ahead = r == r0 or not warm_next  # else the previous row's output pass prefetched this row
        if one_run:
            i0 = 0
            while i0 < K:
                ni = min(<Py_ssize_t>PIPE_BLOCK, K - i0)
                if ahead:
                    _prefetch_run(xr, i0, K)
                _stats(xr + i0, ni, &st)
                i0 += ni
        else:
            for j in range(Cg):
                xs = xr + j * xs1
                s0 = 0
                while s0 < S:
                    ni = min(<Py_ssize_t>PIPE_BLOCK, S - s0)
                    if ahead:
                        _prefetch_run(xs, s0, S)
                    _stats(xs + s0, ni, &st)
                    s0 += ni
        mean = st.mean
        inv = 1.0 / sqrt(st.m2 / st.n + eps)
        mean_out[r] = <floating>mean
        invstd_out[r] = <floating>inv
        _split(mean, &mhi, &mlo)
        if elementwise:
            i0 = 0
            while i0 < K:
                ni = min(<Py_ssize_t>PIPE_BLOCK, K - i0)
                if w != NULL:
                    if floating is float:
                        mg_affine_vec_f32(xr + i0, yr + i0, ni, mhi, mlo, <float>inv, w + grp * Cg + i0,
                                          b + grp * Cg + i0, stream)
                    else:
                        mg_affine_vec_f64(xr + i0, yr + i0, ni, mhi, mlo, inv, w + grp * Cg + i0,
                                          b + grp * Cg + i0, stream)
                else:
                    _affine(xr + i0, yr + i0, ni, mhi, mlo, <floating>inv, <floating>0, stream)
                if xnext != NULL:
                    mg_prefetch(xnext + i0, ni * <Py_ssize_t>sizeof(floating))
                i0 += ni
        else:
            for j in range(Cg):
                c = grp * Cg + j
                a = <floating>(inv * w[c]) if w != NULL else <floating>inv
                beta = b[c] if b != NULL else <floating>0
                s0 = 0
                while s0 < S:
                    ni = min(<Py_ssize_t>PIPE_BLOCK, S - s0)
                    _affine(xr + j * xs1 + s0, yr + j * ys1 + s0, ni, mhi, mlo, a, beta, stream)
                    if xnext != NULL:
                        mg_prefetch(xnext + j * xs1 + s0, ni * <Py_ssize_t>sizeof(floating))
                    s0 += ni
    if stream:
        mg_store_fence()


cdef void _gn_backward_rows(const floating* g, const floating* x, floating* dx, Py_ssize_t r0, Py_ssize_t r1,
                            Py_ssize_t G, Py_ssize_t Cg, Py_ssize_t S, Py_ssize_t gs0, Py_ssize_t gs1,
                            Py_ssize_t xs0, Py_ssize_t xs1, Py_ssize_t ds0, Py_ssize_t ds1, const floating* mean,
                            const floating* invstd, const floating* w, double* dw_part, double* db_part,
                            bint stream) noexcept nogil:
    """Rows [r0, r1): the row sums and this part's Σg·x̂, Σg per channel (pass 1), then dx (pass 2).

    With x̂ = (x - μ)·σ⁻¹ and dx̂ = γ_c·g, per row of K values:
    ``dx = σ⁻¹·(dx̂ - mean(dx̂) - x̂·mean(dx̂·x̂))``, i.e.
    ``dx = (σ⁻¹γ_c)·g - σ⁻¹·A/K - σ⁻³·B/K·(x - μ)`` with ``A = Σγ_c·g`` and
    ``B = Σγ_c·g·(x - μ)``. ``dw_part``/``db_part`` (C doubles each) get
    ``Σ g·x̂`` and ``Σ g`` of every channel these rows touch.
    In element mode (S = 1) ``w`` must not be NULL.
    """
    cdef bint elementwise = S == 1
    cdef Py_ssize_t K = Cg * S
    cdef Py_ssize_t r, n, grp, j, c, i0, ni, s0, off
    cdef double m, inv, A, B, sg, sgd, wc
    cdef floating mhi, mlo, ka, kb, kc
    cdef const floating* gr
    cdef const floating* xr
    cdef const floating* gnext
    cdef const floating* xnext
    cdef floating* dr
    # Short rows (LayerNorm's few KiB) are prefetched whole while the previous row is written: the
    # hardware prefetchers restart at every row and page. Long rows (GroupNorm's 25 KB) measured
    # faster with only the within-row prefetch of pass 1: two input streams plus the output keep
    # the hardware prefetchers busy enough, and more requests only competed with them.
    cdef bint warm_next = K * <Py_ssize_t>sizeof(floating) <= ROW_PREFETCH_MAX_BACKWARD
    cdef bint ahead
    for r in range(r0, r1):
        n = r // G
        grp = r - n * G
        off = grp * Cg
        gr = g + n * gs0 + off * gs1
        xr = x + n * xs0 + off * xs1
        dr = dx + n * ds0 + off * ds1
        gnext = NULL
        xnext = NULL
        if warm_next and r + 1 < r1:
            gnext = g + ((r + 1) // G) * gs0 + ((r + 1) % G) * Cg * gs1
            xnext = x + ((r + 1) // G) * xs0 + ((r + 1) % G) * Cg * xs1
        m = mean[r]
        inv = invstd[r]
        A = 0
        B = 0
        ahead = r == r0 or not warm_next
        if elementwise:
            i0 = 0
            while i0 < K:
                ni = min(<Py_ssize_t>PIPE_BLOCK, K - i0)
                if ahead:
                    _prefetch_run(gr, i0, K)
                    _prefetch_run(xr, i0, K)
                if floating is float:
                    mg_sum2_vec_f32(gr + i0, xr + i0, w + off + i0, ni, m, inv, &A, &B, dw_part + off + i0,
                                    db_part + off + i0)
                else:
                    mg_sum2_vec_f64(gr + i0, xr + i0, w + off + i0, ni, m, inv, &A, &B, dw_part + off + i0,
                                    db_part + off + i0)
                i0 += ni
        else:
            for j in range(Cg):
                c = off + j
                sg = 0
                sgd = 0
                s0 = 0
                while s0 < S:
                    ni = min(<Py_ssize_t>PIPE_BLOCK, S - s0)
                    if ahead:
                        _prefetch_run(gr + j * gs1, s0, S)
                        _prefetch_run(xr + j * xs1, s0, S)
                    _sum2(gr + j * gs1 + s0, xr + j * xs1 + s0, ni, m, &sg, &sgd)
                    s0 += ni
                wc = w[c] if w != NULL else 1.0
                A += wc * sg
                B += wc * sgd
                dw_part[c] += sgd * inv
                db_part[c] += sg
        kb = <floating>(-inv * A / <double>K)
        kc = <floating>(inv * inv * inv * B / <double>K)
        _split(m, &mhi, &mlo)
        if elementwise:
            i0 = 0
            while i0 < K:
                ni = min(<Py_ssize_t>PIPE_BLOCK, K - i0)
                if floating is float:
                    mg_dx_vec_f32(gr + i0, xr + i0, w + off + i0, dr + i0, ni, <float>inv, kb, kc, mhi, mlo, stream)
                else:
                    mg_dx_vec_f64(gr + i0, xr + i0, w + off + i0, dr + i0, ni, inv, kb, kc, mhi, mlo, stream)
                if xnext != NULL:
                    mg_prefetch(gnext + i0, ni * <Py_ssize_t>sizeof(floating))
                    mg_prefetch(xnext + i0, ni * <Py_ssize_t>sizeof(floating))
                i0 += ni
        else:
            for j in range(Cg):
                c = off + j
                ka = <floating>(inv * w[c]) if w != NULL else <floating>inv
                s0 = 0
                while s0 < S:
                    ni = min(<Py_ssize_t>PIPE_BLOCK, S - s0)
                    _dx(gr + j * gs1 + s0, xr + j * xs1 + s0, dr + j * ds1 + s0, ni, ka, kb, kc, mhi, mlo, stream)
                    if xnext != NULL:
                        mg_prefetch(gnext + j * gs1 + s0, ni * <Py_ssize_t>sizeof(floating))
                        mg_prefetch(xnext + j * xs1 + s0, ni * <Py_ssize_t>sizeof(floating))
                    s0 += ni
    if stream:
        mg_store_fence()


cdef enum:
    # Chunks of rows whose dweight/dbias sums the group backward adds in order (at most this many
    # threads share one call: enough for the machines minigrad is measured on).
    GN_CHUNKS = 16


cdef int _check_groups(Py_ssize_t C, Py_ssize_t groups) except -1:
    if groups < 1 or C % groups:
        raise ValueError(f"groups must be a positive divisor of the {C} channels, got {groups}")
    return 0


cdef int _check_stats(Py_ssize_t* shape, Py_ssize_t N, Py_ssize_t G, str name, str kernel) except -1:
    if shape[0] != N or shape[1] != G:
        raise ValueError(f"{kernel}: {name} has shape ({shape[0]}, {shape[1]}), expected ({N}, {G}) "
                         f"(one value per sample and group)")
    return 0


def group_norm_forward(const floating[:, :, :] x not None, const floating[::1] weight, const floating[::1] bias,
                       Py_ssize_t groups, double eps, floating[:, :, :] y not None, floating[:, ::1] mean not None,
                       floating[:, ::1] invstd not None):
    """Group norm of an (N, C, S) view into ``y``, ``mean`` and ``invstd`` (both (N, groups)).

    Row (n, g) holds channels [g·C/G, (g+1)·C/G) of sample n; its mean and
    biased variance give ``y = (x - μ)·σ⁻¹·weight[c] + bias[c]``
    (``weight``/``bias`` may be None). For S = 1 the channel axis must have
    unit stride.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t G = groups, R, t, nparts
    cdef str k = "group_norm_forward"
    _check_groups(C, G)
    _check_shape3(y.shape, x.shape, "y", k)
    _check_stats(mean.shape, N, G, "mean", k)
    _check_stats(invstd.shape, N, G, "invstd", k)
    if weight is not None:
        _check_len(weight.shape[0], C, "weight", k)
    if bias is not None:
        _check_len(bias.shape[0], C, "bias", k)
    R = N * G
    if R == 0:
        return
    if C * S == 0:
        mean[:, :] = NAN
        invstd[:, :] = NAN
        return
    _check_strides(x.shape, x.strides, x.ndim, sizeof(floating), "x")
    _check_strides(y.shape, y.strides, y.ndim, sizeof(floating), "y")
    cdef Py_ssize_t xs0 = x.strides[0] // <Py_ssize_t>sizeof(floating), xs1 = x.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t ys0 = y.strides[0] // <Py_ssize_t>sizeof(floating), ys1 = y.strides[1] // <Py_ssize_t>sizeof(floating)
    if S == 1 and ((C > 1 and (xs1 != 1 or ys1 != 1))):
        raise ValueError("group_norm_forward: with S = 1 the channel axis must have unit stride")
    cdef const floating* wp = &weight[0] if weight is not None else NULL
    cdef const floating* bp = &bias[0] if bias is not None else NULL
    cdef floating* fill = NULL
    if S == 1 and (wp == NULL) != (bp == NULL):  # element mode takes both vectors or neither
        fill = <floating*>calloc(C, sizeof(floating))
        if fill == NULL:
            raise MemoryError()
        if wp == NULL:
            for t in range(C):
                fill[t] = 1
            wp = fill
        else:
            bp = fill
    cdef bint stream = N * C * S * <Py_ssize_t>sizeof(floating) >= stream_min_bytes()
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* yp = &y[0, 0, 0]
    nparts = min(R, threads_for(N * C * S))
    if nparts == 1:
        with nogil:
            _gn_forward_rows(xp, yp, 0, R, G, C // G, S, xs0, xs1, ys0, ys1, wp, bp, eps, &mean[0, 0],
                             &invstd[0, 0], stream)
    else:
        with nogil:
            for t in prange(nparts, schedule="static", num_threads=nparts):
                _gn_forward_rows(xp, yp, t * R // nparts, (t + 1) * R // nparts, G, C // G, S, xs0, xs1, ys0, ys1,
                                 wp, bp, eps, &mean[0, 0], &invstd[0, 0], stream)
    free(fill)


def group_norm_backward(const floating[:, :, :] grad not None, const floating[:, :, :] x not None,
                        const floating[:, ::1] mean not None, const floating[:, ::1] invstd not None,
                        const floating[::1] weight, Py_ssize_t groups, floating[:, :, :] dx not None,
                        floating[::1] dweight not None, floating[::1] dbias not None):
    """Gradients of ``group_norm_forward`` into ``dx``, ``dweight`` = Σ grad·x̂ and ``dbias`` = Σ grad.

    ``weight`` may be None. The per-channel terms are summed per chunk of
    rows (a fixed number of chunks, shared out among the threads) and the
    chunks added in order: the same bits for every thread count.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t G = groups, R, t, c, nparts
    cdef double sw, sb
    cdef str k = "group_norm_backward"
    _check_groups(C, G)
    _check_shape3(grad.shape, x.shape, "grad", k)
    _check_shape3(dx.shape, x.shape, "dx", k)
    _check_stats(mean.shape, N, G, "mean", k)
    _check_stats(invstd.shape, N, G, "invstd", k)
    _check_len(dweight.shape[0], C, "dweight", k)
    _check_len(dbias.shape[0], C, "dbias", k)
    if weight is not None:
        _check_len(weight.shape[0], C, "weight", k)
    R = N * G
    if C == 0:
        return
    if N * S == 0:
        dweight[:] = 0
        dbias[:] = 0
        return
    _check_strides(grad.shape, grad.strides, grad.ndim, sizeof(floating), "grad")
    _check_strides(x.shape, x.strides, x.ndim, sizeof(floating), "x")
    _check_strides(dx.shape, dx.strides, dx.ndim, sizeof(floating), "dx")
    cdef Py_ssize_t gs0 = grad.strides[0] // <Py_ssize_t>sizeof(floating), gs1 = grad.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t xs0 = x.strides[0] // <Py_ssize_t>sizeof(floating), xs1 = x.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t ds0 = dx.strides[0] // <Py_ssize_t>sizeof(floating), ds1 = dx.strides[1] // <Py_ssize_t>sizeof(floating)
    if S == 1 and C > 1 and (gs1 != 1 or xs1 != 1 or ds1 != 1):
        raise ValueError("group_norm_backward: with S = 1 the channel axis must have unit stride")
    cdef bint stream = N * C * S * <Py_ssize_t>sizeof(floating) >= stream_min_bytes()
    # dweight/dbias are summed per chunk of rows (GN_CHUNKS of them whatever the threads: the sums are
    # the same bits for every thread count), the chunks added in order at the end
    nparts = min(R, <Py_ssize_t>GN_CHUNKS)
    cdef int threads = min(nparts, threads_for(N * C * S))
    cdef const floating* wp = &weight[0] if weight is not None else NULL
    cdef floating* ones = NULL
    cdef double* part = <double*>calloc(2 * C * nparts, sizeof(double))
    if part == NULL:
        raise MemoryError()
    if S == 1 and wp == NULL:  # element mode reads a weight vector
        ones = <floating*>calloc(C, sizeof(floating))
        if ones == NULL:
            free(part)
            raise MemoryError()
        for c in range(C):
            ones[c] = 1
        wp = ones
    cdef const floating* gp = &grad[0, 0, 0]
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* dp = &dx[0, 0, 0]
    with nogil:
        for t in prange(nparts, schedule="static", num_threads=threads, use_threads_if=threads > 1):
            _gn_backward_rows(gp, xp, dp, t * R // nparts, (t + 1) * R // nparts, G, C // G, S, gs0, gs1, xs0, xs1,
                              ds0, ds1, &mean[0, 0], &invstd[0, 0], wp, part + 2 * C * t, part + 2 * C * t + C,
                              stream)
        for c in range(C):
            sw = 0
            sb = 0
            for t in range(nparts):
                sw += part[2 * C * t + c]
                sb += part[2 * C * t + C + c]
            dweight[c] = <floating>sw
            dbias[c] = <floating>sb
    free(ones)
    free(part)
