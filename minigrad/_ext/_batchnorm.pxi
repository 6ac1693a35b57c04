# Per-channel normalization kernels (BatchNorm; InstanceNorm with fixed statistics) on an (N, C, S)
# view: statistics of channel c over N·S values. BatchNorm1d on (N, C) is S = 1, on (N, C, L) S = L,
# BatchNorm2d S = H·W. Included by every build of the kernels (see _kernels.pyx).
#
# How they are fast and accurate:
# * Statistics in one read of the data: blocks small enough for L1 get two passes each (mean, then
#   squared deviations), merged with Chan's formula, never E[x²] - E[x]²; every sum accumulates in
#   double.
# * Fused per channel: the statistics pass streams the channel from memory once, the output pass finds
#   it in L2, so a training forward moves about 3·S bytes (read x, write y and its write-allocate)
#   instead of 5·S. Each thread takes a contiguous range of channels and overlaps the output pass of
#   one channel with the statistics pass of the next, block by block, and prefetches the statistics
#   stream a few KiB ahead in software: the hardware prefetchers stop at every 4 KiB page and at every
#   row, and without this a thread waited on memory for most of the pass.
# * Outputs are computed in the input's precision from centred values: ``(x - mean_hi) - mean_lo``
#   with the double mean split into two floats, which keeps float32 outputs accurate to rounding even
#   when the mean is large compared with the spread (a mean of 1e4 and a std of 1).
# * For S = 1 the (N, C) matrix is walked row by row, accumulating a block of per-channel vectors
#   (contiguous, vectorizable), never down columns.
# * Outputs of ``stream_min_bytes`` (16 MiB) and more are written with streaming stores: they bypass
#   the caches and skip the write-allocate read, so a large training forward moves 2·S bytes.
#
# Every entry writes into caller-allocated outputs (the CPU backend allocates them), checks the
# shapes, lengths and strides it relies on, and needs unit stride along the last axis only.

# ------------------------------------------ per-channel kernels, S > 1
# One software-pipelined walk serves both ways of sharing channels among
# threads. With a range of channels per thread, the thread walks all of a
# channel's N rows (in blocks of ``bl`` elements, ``nb`` blocks a row). With
# the whole team on every channel (``team``: called by every thread of a
# parallel region), thread t of T walks its own contiguous range of the
# N·nb blocks; the team split keeps every thread busy when there are few
# channels and halves what each core holds in L2 between the two passes
# over a channel.
#
# The sums are taken per chunk of CHUNK_BLOCKS consecutive blocks, a unit
# that does not depend on the threads, and a channel's chunks are merged in
# their order: a thread owns whole chunks, publishes each chunk's sums to
# ``part`` (two buffers, alternating by channel, so a fast thread writing
# the next channel's sums never overwrites sums a slow one is still
# reading) and after a barrier every thread merges them; alone on a channel,
# a thread merges each chunk as it closes. Either way the statistics are
# the same bits whatever the number of threads or the split.
cdef enum:
    CHUNK_BLOCKS = 8

cdef struct mg_walk:
    Py_ssize_t S, bl, nb, B, K, b0, b1, ahead
    int t, T


cdef inline Py_ssize_t _walk_chunks(Py_ssize_t N, Py_ssize_t S) noexcept nogil:
    """The number of chunks of a channel's walk (the ``part`` buffers hold 2 x this many entries)."""
    cdef Py_ssize_t bl = min(<Py_ssize_t>PIPE_BLOCK, S)
    return (N * ((S + bl - 1) // bl) + CHUNK_BLOCKS - 1) // CHUNK_BLOCKS


cdef inline void _walk_init(mg_walk* wk, Py_ssize_t N, Py_ssize_t S, size_t itemsize, bint team) noexcept nogil:
    wk.t = omp_get_thread_num() if team else 0
    wk.T = omp_get_num_threads() if team else 1
    wk.S = S
    wk.bl = min(<Py_ssize_t>PIPE_BLOCK, S)
    wk.nb = (S + wk.bl - 1) // wk.bl
    wk.B = N * wk.nb
    wk.K = _walk_chunks(N, S)
    wk.b0 = min(wk.B, wk.t * wk.K // wk.T * CHUNK_BLOCKS)
    wk.b1 = min(wk.B, (wk.t + 1) * wk.K // wk.T * CHUNK_BLOCKS)
    wk.ahead = max(1, <Py_ssize_t>PREFETCH_BYTES // (wk.bl * <Py_ssize_t>itemsize))


cdef inline bint _chunk_closes(const mg_walk* wk, Py_ssize_t blk) noexcept nogil:
    """Whether block ``blk`` is the last of its chunk."""
    return (blk + 1) % CHUNK_BLOCKS == 0 or blk + 1 == wk.B


cdef inline void _close_stats(mg_stats* chunk, mg_stats* total, double* part, Py_ssize_t blk,
                              bint team) noexcept nogil:
    """Close the chunk of block ``blk``: publish it to ``part`` (team) or merge it into the channel's
    ``total`` (one thread), and start the next one empty."""
    cdef Py_ssize_t k = blk // CHUNK_BLOCKS
    if team:
        part[3 * k] = chunk.n
        part[3 * k + 1] = chunk.mean
        part[3 * k + 2] = chunk.m2
    else:
        mg_stats_merge(total, chunk.n, chunk.mean, chunk.m2)
    chunk[0] = mg_stats(n=0, mean=0, m2=0)


cdef inline void _close_sums(double* csg, double* csgx, double* sg, double* sgx, double* part, Py_ssize_t blk,
                             bint team) noexcept nogil:
    """The same for the backward's two sums."""
    cdef Py_ssize_t k = blk // CHUNK_BLOCKS
    if team:
        part[2 * k] = csg[0]
        part[2 * k + 1] = csgx[0]
    else:
        sg[0] += csg[0]
        sgx[0] += csgx[0]
    csg[0] = 0
    csgx[0] = 0


cdef inline void _walk_start(const mg_walk* wk, Py_ssize_t* n, Py_ssize_t* s0) noexcept nogil:
    """Row and offset of the thread's first block."""
    n[0] = wk.b0 // wk.nb
    s0[0] = (wk.b0 - n[0] * wk.nb) * wk.bl


cdef inline Py_ssize_t _walk_next(const mg_walk* wk, Py_ssize_t* n, Py_ssize_t* s0) noexcept nogil:
    """Length of the block at (n, s0); moves (n, s0) on to the next block (no division per block)."""
    cdef Py_ssize_t ns = min(wk.bl, wk.S - s0[0])
    s0[0] += wk.bl
    if s0[0] >= wk.S:
        s0[0] = 0
        n[0] += 1
    return ns


cdef inline void _prefetch_block(const floating* base, Py_ssize_t ld, const mg_walk* wk,
                                 Py_ssize_t b) noexcept nogil:
    """Prefetch block ``b`` of the walk over the rows (stride ``ld``) at ``base``, if it is the thread's."""
    cdef Py_ssize_t n, s
    if b < wk.b1:
        n = b // wk.nb
        s = (b - n * wk.nb) * wk.bl
        mg_prefetch(base + n * ld + s, min(wk.bl, wk.S - s) * <Py_ssize_t>sizeof(floating))


cdef inline void _prefetch_first(const floating* base, Py_ssize_t ld, const mg_walk* wk) noexcept nogil:
    """Prefetch the thread's first ``ahead`` blocks of a channel, before its walk starts."""
    cdef Py_ssize_t blk
    for blk in range(wk.b0, min(wk.b1, wk.b0 + wk.ahead)):
        _prefetch_block(base, ld, wk, blk)


cdef inline void _team_stats(mg_stats* st, const double* part, const mg_walk* wk) noexcept nogil:
    """Wait for the team to publish every chunk of a channel (3 doubles each), merge them in order."""
    cdef Py_ssize_t k
    minigrad_omp_barrier()
    st[0] = mg_stats(n=0, mean=0, m2=0)
    for k in range(wk.K):
        mg_stats_merge(st, part[3 * k], part[3 * k + 1], part[3 * k + 2])


cdef inline void _team_sums(double* sg, double* sgx, const double* part, const mg_walk* wk) noexcept nogil:
    """Wait for the team to publish every chunk's two sums, add them in chunk order."""
    cdef Py_ssize_t k
    minigrad_omp_barrier()
    sg[0] = 0
    sgx[0] = 0
    for k in range(wk.K):
        sg[0] += part[2 * k]
        sgx[0] += part[2 * k + 1]


cdef inline void _forward_coeffs(double mean, double var, double eps, const floating* w, const floating* b,
                                 Py_ssize_t c, floating* a, floating* beta, floating* mhi,
                                 floating* mlo) noexcept nogil:
    """y = ((x - mhi) - mlo)·a + beta: the training forward of channel c as one multiply-add."""
    cdef double k = 1.0 / sqrt(var + eps)
    if w != NULL:
        k = k * w[c]
    a[0] = <floating>k
    beta[0] = b[c] if b != NULL else 0
    _split(mean, mhi, mlo)


cdef inline double _backward_coeffs(double sg, double sgx, double mean, double inv, const floating* w,
                                    Py_ssize_t c, double inv_m, floating* ka, floating* kb, floating* kc,
                                    floating* mhi, floating* mlo) noexcept nogil:
    """dx = ka·g + kb - kc·((x - mhi) - mlo) for channel c, from Σg and Σg·(x - mean); returns Σg·x̂."""
    cdef double dweight = sgx * inv
    cdef double k = inv * (w[c] if w != NULL else 1.0)
    # dx = k·(g - Σg/m - x̂·Σg·x̂/m) = k·g - k·Σg/m - (k·invstd·Σg·x̂/m)·(x - mean)
    ka[0] = <floating>k
    kb[0] = <floating>(-k * sg * inv_m)
    kc[0] = <floating>(k * inv * dweight * inv_m)
    _split(mean, mhi, mlo)
    return dweight


cdef inline void _dx_block(const floating* g, const floating* x, floating* d, Py_ssize_t n, bint training,
                           floating ka, floating kb, floating kc, floating mhi, floating mlo,
                           bint stream) noexcept nogil:
    if training:
        _dx(g, x, d, n, ka, kb, kc, mhi, mlo, stream)
    else:  # fixed statistics: dx = ka·g (x does not enter)
        _madd(g, d, n, ka, <floating>0, stream)


cdef void _bn_train_pipe(const floating* x, floating* y, Py_ssize_t c_begin, Py_ssize_t c_end, Py_ssize_t N,
                         Py_ssize_t S, Py_ssize_t xs0, Py_ssize_t xs1, Py_ssize_t ys0, Py_ssize_t ys1,
                         const floating* w, const floating* b, double eps, floating* mean_out,
                         floating* var_out, bint stream, bint team, double* part) noexcept nogil:
    """Channels [c_begin, c_end): x[n·xs0 + c·xs1 + s] (y likewise).

    The output pass of channel c (from L2) runs interleaved, block by
    block, with the statistics pass of channel c + 1 (from memory,
    prefetched ``PREFETCH_BYTES`` ahead), so the thread keeps memory busy
    while it computes. ``team``: see above; ``part`` holds 2·3·K doubles
    (K chunks).
    """
    cdef mg_walk wk
    cdef Py_ssize_t n, c, blk, s0, ns
    cdef double var
    cdef const floating* xc
    cdef const floating* xn
    cdef floating* yc
    cdef floating a, beta, mhi, mlo
    cdef mg_stats st, nx, chunk
    if c_begin >= c_end:
        return
    _walk_init(&wk, N, S, sizeof(floating), team)
    st = mg_stats(n=0, mean=0, m2=0)
    chunk = st
    xc = x + c_begin * xs1
    _prefetch_first(xc, xs0, &wk)
    _walk_start(&wk, &n, &s0)
    for blk in range(wk.b0, wk.b1):
        _prefetch_block(xc, xs0, &wk, blk + wk.ahead)
        _stats(xc + n * xs0 + s0, min(wk.bl, S - s0), &chunk)
        if _chunk_closes(&wk, blk):
            _close_stats(&chunk, &st, part + 3 * (c_begin % 2) * wk.K if team else NULL, blk, team)
        _walk_next(&wk, &n, &s0)
    for c in range(c_begin, c_end):
        if team:
            _team_stats(&st, part + 3 * (c % 2) * wk.K, &wk)
        var = st.m2 / st.n
        _forward_coeffs(st.mean, var, eps, w, b, c, &a, &beta, &mhi, &mlo)
        if wk.t == 0:
            mean_out[c] = <floating>st.mean
            var_out[c] = <floating>var
        xc = x + c * xs1
        yc = y + c * ys1
        xn = xc + xs1
        nx = mg_stats(n=0, mean=0, m2=0)
        if c + 1 < c_end:
            _prefetch_first(xn, xs0, &wk)
        _walk_start(&wk, &n, &s0)
        for blk in range(wk.b0, wk.b1):
            ns = min(wk.bl, S - s0)
            _affine(xc + n * xs0 + s0, yc + n * ys0 + s0, ns, mhi, mlo, a, beta, stream)
            if c + 1 < c_end:
                _prefetch_block(xn, xs0, &wk, blk + wk.ahead)
                _stats(xn + n * xs0 + s0, ns, &chunk)
                if _chunk_closes(&wk, blk):
                    _close_stats(&chunk, &nx, part + 3 * ((c + 1) % 2) * wk.K if team else NULL, blk, team)
            _walk_next(&wk, &n, &s0)
        st = nx
    if stream:
        mg_store_fence()


cdef void _bn_backward_pipe(const floating* g, const floating* x, floating* dx, Py_ssize_t c_begin,
                            Py_ssize_t c_end, Py_ssize_t N, Py_ssize_t S, Py_ssize_t gs0, Py_ssize_t gs1,
                            Py_ssize_t xs0, Py_ssize_t xs1, Py_ssize_t ds0, Py_ssize_t ds1,
                            const floating* mean, const floating* invstd, const floating* w, bint training,
                            floating* dw_out, floating* db_out, bint stream, bint team,
                            double* part) noexcept nogil:
    """Channels [c_begin, c_end): the sums Σg, Σg·(x - mean) (pass 1), then dx (pass 2).

    Pipelined like the forward: pass 2 of channel c runs block by block
    interleaved with pass 1 of channel c + 1, whose two streams (grad and
    x) are prefetched ahead. ``part`` holds 2·2·K doubles (K chunks).
    """
    cdef mg_walk wk
    cdef Py_ssize_t n, c, blk, s0, ns
    cdef double inv_m = 1.0 / <double>(N * S)
    cdef double sg = 0, sgx = 0, nsg, nsgx, dweight, csg = 0, csgx = 0
    cdef floating mhi, mlo, ka, kb, kc
    cdef const floating* gc
    cdef const floating* xc
    cdef floating* dc
    cdef const floating* gn
    cdef const floating* xn
    if c_begin >= c_end:
        return
    _walk_init(&wk, N, S, sizeof(floating), team)
    gc = g + c_begin * gs1
    xc = x + c_begin * xs1
    _prefetch_first(gc, gs0, &wk)
    _prefetch_first(xc, xs0, &wk)
    _walk_start(&wk, &n, &s0)
    for blk in range(wk.b0, wk.b1):
        _prefetch_block(gc, gs0, &wk, blk + wk.ahead)
        _prefetch_block(xc, xs0, &wk, blk + wk.ahead)
        _sum2(gc + n * gs0 + s0, xc + n * xs0 + s0, min(wk.bl, S - s0), <double>mean[c_begin], &csg, &csgx)
        if _chunk_closes(&wk, blk):
            _close_sums(&csg, &csgx, &sg, &sgx, part + 2 * (c_begin % 2) * wk.K if team else NULL, blk, team)
        _walk_next(&wk, &n, &s0)
    for c in range(c_begin, c_end):
        if team:
            _team_sums(&sg, &sgx, part + 2 * (c % 2) * wk.K, &wk)
        gc = g + c * gs1
        xc = x + c * xs1
        dc = dx + c * ds1
        gn = gc + gs1
        xn = xc + xs1
        dweight = _backward_coeffs(sg, sgx, <double>mean[c], <double>invstd[c], w, c, inv_m, &ka, &kb, &kc,
                                   &mhi, &mlo)
        if wk.t == 0:
            dw_out[c] = <floating>dweight
            db_out[c] = <floating>sg
        nsg = 0
        nsgx = 0
        if c + 1 < c_end:
            _prefetch_first(gn, gs0, &wk)
            _prefetch_first(xn, xs0, &wk)
        _walk_start(&wk, &n, &s0)
        for blk in range(wk.b0, wk.b1):
            ns = min(wk.bl, S - s0)
            _dx_block(gc + n * gs0 + s0, xc + n * xs0 + s0, dc + n * ds0 + s0, ns, training, ka, kb, kc, mhi,
                      mlo, stream)
            if c + 1 < c_end:
                _prefetch_block(gn, gs0, &wk, blk + wk.ahead)
                _prefetch_block(xn, xs0, &wk, blk + wk.ahead)
                _sum2(gn + n * gs0 + s0, xn + n * xs0 + s0, ns, <double>mean[c + 1], &csg, &csgx)
                if _chunk_closes(&wk, blk):
                    _close_sums(&csg, &csgx, &nsg, &nsgx, part + 2 * ((c + 1) % 2) * wk.K if team else NULL, blk,
                                team)
            _walk_next(&wk, &n, &s0)
        sg, sgx = nsg, nsgx
    if stream:
        mg_store_fence()


# ------------------------------------------- per-channel kernels, S == 1
cdef void _bn_train_block(const floating* x, floating* y, Py_ssize_t N, Py_ssize_t nb, Py_ssize_t ldx,
                          Py_ssize_t ldy, const floating* w, const floating* b, double eps, floating* mean_out,
                          floating* var_out) noexcept nogil:
    """Channels [0, nb) of an (N, ·) matrix with row strides ldx/ldy (nb <= BLOCK): the column passes
    of _norm_simd.h (mean, squared deviations, output) with the coefficients in between."""
    cdef double mean[BLOCK]
    cdef double ssd[BLOCK]
    cdef floating mhi[BLOCK]
    cdef floating mlo[BLOCK]
    cdef floating a[BLOCK]
    cdef floating sh[BLOCK]
    cdef Py_ssize_t j
    cdef double var, inv_m = 1.0 / <double>N
    if floating is float:
        mg_col_mean_f32(x, N, nb, ldx, mean)
        mg_col_ssd_f32(x, N, nb, ldx, mean, ssd)
    else:
        mg_col_mean_f64(x, N, nb, ldx, mean)
        mg_col_ssd_f64(x, N, nb, ldx, mean, ssd)
    for j in range(nb):
        var = ssd[j] * inv_m
        _forward_coeffs(mean[j], var, eps, w, b, j, &a[j], &sh[j], &mhi[j], &mlo[j])
        mean_out[j] = <floating>mean[j]
        var_out[j] = <floating>var
    if floating is float:
        mg_col_affine_f32(x, y, N, nb, ldx, ldy, mhi, mlo, a, sh)
    else:
        mg_col_affine_f64(x, y, N, nb, ldx, ldy, mhi, mlo, a, sh)


cdef void _bn_backward_block(const floating* g, const floating* x, floating* dx, Py_ssize_t N, Py_ssize_t nb,
                             Py_ssize_t ldg, Py_ssize_t ldx, Py_ssize_t ldd, const floating* mean,
                             const floating* invstd, const floating* w, bint training, floating* dw_out,
                             floating* db_out) noexcept nogil:
    """Backward of ``_bn_train_block``'s channels: the column sums, the coefficients, then dx."""
    cdef double sg[BLOCK]
    cdef double sgx[BLOCK]
    cdef double mu[BLOCK]
    cdef floating ka[BLOCK]
    cdef floating kb[BLOCK]
    cdef floating kc[BLOCK]
    cdef floating mhi[BLOCK]
    cdef floating mlo[BLOCK]
    cdef Py_ssize_t j
    cdef double dweight, inv_m = 1.0 / <double>N
    for j in range(nb):
        mu[j] = mean[j]
    if floating is float:
        mg_col_sum2_f32(g, x, N, nb, ldg, ldx, mu, sg, sgx)
    else:
        mg_col_sum2_f64(g, x, N, nb, ldg, ldx, mu, sg, sgx)
    for j in range(nb):
        dweight = _backward_coeffs(sg[j], sgx[j], mu[j], <double>invstd[j], w, j, inv_m, &ka[j], &kb[j], &kc[j],
                                   &mhi[j], &mlo[j])
        dw_out[j] = <floating>dweight
        db_out[j] = <floating>sg[j]
    if floating is float:
        mg_col_dx_f32(g, x, dx, N, nb, ldg, ldx, ldd, ka, kb, kc, mhi, mlo, training)
    else:
        mg_col_dx_f64(g, x, dx, N, nb, ldg, ldx, ldd, ka, kb, kc, mhi, mlo, training)


cdef inline Py_ssize_t _part_bound(const floating* y, Py_ssize_t t, Py_ssize_t nparts,
                                   Py_ssize_t total) noexcept nogil:
    """Start of part t of [0, total) split into ``nparts``: rounded down to a 64-byte boundary of y,
    so the lines two threads stream out never overlap."""
    if t <= 0:
        return 0
    if t >= nparts:
        return total
    cdef Py_ssize_t per_line = 64 // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t skew = ((64 - (<size_t>y) % 64) % 64) // <Py_ssize_t>sizeof(floating)  # first aligned element
    cdef Py_ssize_t b = t * total // nparts
    if b < skew:
        return b
    return skew + (b - skew) // per_line * per_line


# ------------------------------------------------------------ entry points
def batch_norm_forward_train(const floating[:, :, :] x not None, const floating[::1] weight,
                             const floating[::1] bias, double eps, floating[:, :, :] y not None,
                             floating[::1] mean not None, floating[::1] var not None):
    """Training batch norm of an (N, C, S) view into ``y``, ``mean``, ``var`` (biased).

    ``weight``/``bias`` may be None. ``y`` has x's shape; ``mean``/``var``
    shape (C,). N·S must be positive (C may be 0: nothing to do).
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t nblocks, blk, c0, nb
    cdef str k = "batch_norm_forward_train"
    _check_shape3(y.shape, x.shape, "y", k)
    _check_len(mean.shape[0], C, "mean", k)
    _check_len(var.shape[0], C, "var", k)
    cdef bint has_w = weight is not None, has_b = bias is not None
    if has_w:
        _check_len(weight.shape[0], C, "weight", k)
    if has_b:
        _check_len(bias.shape[0], C, "bias", k)
    if C == 0:
        return
    if N * S == 0:
        raise ValueError(f"{k} needs at least one value per channel, got shape ({N}, {C}, {S})")
    _check_strides(x.shape, x.strides, x.ndim, sizeof(floating), "x")
    _check_strides(y.shape, y.strides, y.ndim, sizeof(floating), "y")
    cdef const floating* wp = &weight[0] if has_w else NULL
    cdef const floating* bp = &bias[0] if has_b else NULL
    cdef int threads = threads_for(N * C * S)
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* yp = &y[0, 0, 0]
    cdef Py_ssize_t xs0 = x.strides[0] // <Py_ssize_t>sizeof(floating), xs1 = x.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t ys0 = y.strides[0] // <Py_ssize_t>sizeof(floating), ys1 = y.strides[1] // <Py_ssize_t>sizeof(floating)
    if S == 1 and xs1 == 1 and ys1 == 1:
        nblocks = (C + BLOCK - 1) // BLOCK
        if threads == 1 or nblocks == 1:  # no parallel region at all: even an inactive one costs ~0.5 µs
            with nogil:
                for blk in range(nblocks):
                    c0 = blk * BLOCK
                    _bn_train_block(xp + c0, yp + c0, N, min(BLOCK, C - c0), xs0, ys0, wp + c0 if has_w else NULL,
                                    bp + c0 if has_b else NULL, eps, &mean[c0], &var[c0])
            return
        with nogil:
            for blk in prange(nblocks, schedule="static", num_threads=threads):
                c0 = blk * BLOCK
                nb = min(BLOCK, C - c0)
                _bn_train_block(xp + c0, yp + c0, N, nb, xs0, ys0, wp + c0 if has_w else NULL,
                                bp + c0 if has_b else NULL, eps, &mean[c0], &var[c0])
        return
    cdef Py_ssize_t nchunks = min(C, threads)
    cdef bint stream = N * C * S * <Py_ssize_t>sizeof(floating) >= stream_min_bytes()
    cdef double* part
    if _use_team(C, N * S * <Py_ssize_t>sizeof(floating), threads):
        part = <double*>calloc(2 * 3 * _walk_chunks(N, S), sizeof(double))
        if part == NULL:
            raise MemoryError()
        with nogil, parallel(num_threads=threads):
            _bn_train_pipe(xp, yp, 0, C, N, S, xs0, xs1, ys0, ys1, wp, bp, eps, &mean[0], &var[0], stream, True,
                           part)
        free(part)
        return
    if nchunks == 1:
        with nogil:
            _bn_train_pipe(xp, yp, 0, C, N, S, xs0, xs1, ys0, ys1, wp, bp, eps, &mean[0], &var[0], stream, False,
                           NULL)
        return
    with nogil:
        for blk in prange(nchunks, schedule="static", num_threads=threads):
            _bn_train_pipe(xp, yp, blk * C // nchunks, (blk + 1) * C // nchunks, N, S, xs0, xs1, ys0, ys1, wp, bp,
                           eps, &mean[0], &var[0], stream, False, NULL)


def batch_norm_update_stats(floating[::1] running_mean not None, floating[::1] running_var not None,
                            const floating[::1] mean not None, const floating[::1] var not None, double factor,
                            double unbias):
    """``running ← (1 - factor)·running + factor·batch`` in place, the variance's batch term ``var·unbias``.

    Four (C,) arrays of one dtype. Each product is rounded before the sum, as the NumPy reference
    rounds them (no fused multiply-add), so both give the same running statistics.
    """
    cdef Py_ssize_t c = running_mean.shape[0], i
    cdef str k = "batch_norm_update_stats"
    _check_len(running_var.shape[0], c, "running_var", k)
    _check_len(mean.shape[0], c, "mean", k)
    _check_len(var.shape[0], c, "var", k)
    cdef floating keep = <floating>(1.0 - factor), f = <floating>factor, fu = <floating>(factor * unbias)
    cdef volatile floating a, b  # volatile: stored, rounded products (no contraction into an FMA)
    with nogil:
        for i in range(c):
            a = running_mean[i] * keep
            b = f * mean[i]
            running_mean[i] = a + b
            a = running_var[i] * keep
            b = fu * var[i]
            running_var[i] = a + b


def batch_norm_backward(const floating[:, :, :] grad not None, const floating[:, :, :] x not None,
                        const floating[::1] mean not None, const floating[::1] invstd not None,
                        const floating[::1] weight, bint training, floating[:, :, :] dx not None,
                        floating[::1] dweight not None, floating[::1] dbias not None):
    """Gradients of batch norm on an (N, C, S) view into ``dx``, ``dweight``, ``dbias``.

    ``dweight = Σ grad·x̂``, ``dbias = Σ grad`` per channel; ``dx`` uses the
    batch statistics' dependence on x when ``training``. ``weight`` may be None.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t nblocks, blk, c0, nb
    cdef str k = "batch_norm_backward"
    _check_shape3(grad.shape, x.shape, "grad", k)
    _check_shape3(dx.shape, x.shape, "dx", k)
    _check_len(mean.shape[0], C, "mean", k)
    _check_len(invstd.shape[0], C, "invstd", k)
    _check_len(dweight.shape[0], C, "dweight", k)
    _check_len(dbias.shape[0], C, "dbias", k)
    cdef bint has_w = weight is not None
    if has_w:
        _check_len(weight.shape[0], C, "weight", k)
    if C == 0:
        return
    if N * S == 0:
        dweight[:] = 0
        dbias[:] = 0
        return
    _check_strides(grad.shape, grad.strides, grad.ndim, sizeof(floating), "grad")
    _check_strides(x.shape, x.strides, x.ndim, sizeof(floating), "x")
    _check_strides(dx.shape, dx.strides, dx.ndim, sizeof(floating), "dx")
    cdef const floating* wp = &weight[0] if has_w else NULL
    cdef int threads = threads_for(N * C * S)
    cdef const floating* gp = &grad[0, 0, 0]
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* dp = &dx[0, 0, 0]
    cdef Py_ssize_t gs0 = grad.strides[0] // <Py_ssize_t>sizeof(floating), gs1 = grad.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t xs0 = x.strides[0] // <Py_ssize_t>sizeof(floating), xs1 = x.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t ds0 = dx.strides[0] // <Py_ssize_t>sizeof(floating), ds1 = dx.strides[1] // <Py_ssize_t>sizeof(floating)
    if S == 1 and gs1 == 1 and xs1 == 1 and ds1 == 1:
        nblocks = (C + BLOCK - 1) // BLOCK
        if threads == 1 or nblocks == 1:
            with nogil:
                for blk in range(nblocks):
                    c0 = blk * BLOCK
                    _bn_backward_block(gp + c0, xp + c0, dp + c0, N, min(BLOCK, C - c0), gs0, xs0, ds0, &mean[c0],
                                       &invstd[c0], wp + c0 if has_w else NULL, training, &dweight[c0], &dbias[c0])
            return
        with nogil:
            for blk in prange(nblocks, schedule="static", num_threads=threads):
                c0 = blk * BLOCK
                nb = min(BLOCK, C - c0)
                _bn_backward_block(gp + c0, xp + c0, dp + c0, N, nb, gs0, xs0, ds0, &mean[c0], &invstd[c0],
                                   wp + c0 if has_w else NULL, training, &dweight[c0], &dbias[c0])
        return
    cdef Py_ssize_t nchunks = min(C, threads)
    cdef bint stream = N * C * S * <Py_ssize_t>sizeof(floating) >= stream_min_bytes()
    cdef double* part
    if _use_team(C, 2 * N * S * <Py_ssize_t>sizeof(floating), threads):
        part = <double*>calloc(2 * 2 * _walk_chunks(N, S), sizeof(double))
        if part == NULL:
            raise MemoryError()
        with nogil, parallel(num_threads=threads):
            _bn_backward_pipe(gp, xp, dp, 0, C, N, S, gs0, gs1, xs0, xs1, ds0, ds1, &mean[0], &invstd[0], wp,
                              training, &dweight[0], &dbias[0], stream, True, part)
        free(part)
        return
    if nchunks == 1:
        with nogil:
            _bn_backward_pipe(gp, xp, dp, 0, C, N, S, gs0, gs1, xs0, xs1, ds0, ds1, &mean[0], &invstd[0], wp,
                              training, &dweight[0], &dbias[0], stream, False, NULL)
        return
    with nogil:
        for blk in prange(nchunks, schedule="static", num_threads=threads):
            _bn_backward_pipe(gp, xp, dp, blk * C // nchunks, (blk + 1) * C // nchunks, N, S, gs0, gs1, xs0, xs1,
                              ds0, ds1, &mean[0], &invstd[0], wp, training, &dweight[0], &dbias[0], stream, False,
                              NULL)


def channel_affine(const floating[:, :, :] x not None, const floating[::1] scale not None,
                   const floating[::1] shift not None, floating[:, :, :] y not None):
    """``y[n, c, s] = x[n, c, s]·scale[c] + shift[c]`` (inference batch norm)."""
    cdef str k = "channel_affine"
    _check_shape3(y.shape, x.shape, "y", k)
    _check_len(scale.shape[0], x.shape[1], "scale", k)
    _check_len(shift.shape[0], x.shape[1], "shift", k)
    if x.shape[0] * x.shape[1] * x.shape[2] == 0:
        return
    _check_strides(x.shape, x.strides, x.ndim, sizeof(floating), "x")
    _check_strides(y.shape, y.strides, y.ndim, sizeof(floating), "y")
    _channel_affine(&x[0, 0, 0], &y[0, 0, 0], x.shape[0], x.shape[1], x.shape[2], x.strides[0] // <Py_ssize_t>sizeof(floating),
                    x.strides[1] // <Py_ssize_t>sizeof(floating), y.strides[0] // <Py_ssize_t>sizeof(floating),
                    y.strides[1] // <Py_ssize_t>sizeof(floating), &scale[0], &shift[0])


def batch_norm_forward_eval(const floating[:, :, :] x not None, const floating[::1] mean not None,
                            const floating[::1] var not None, const floating[::1] weight, const floating[::1] bias,
                            double eps, floating[:, :, :] y not None):
    """Inference batch norm of an (N, C, S) view into ``y``, with fixed statistics.

    ``y = x·scale[c] + shift[c]`` with ``scale = weight/sqrt(var + eps)`` and
    ``shift = bias - mean·scale`` computed here per channel in double
    (``weight``/``bias`` may be None): one multiply-add per value, and no
    temporaries for the caller to build.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c
    cdef floating small[2 * 256]
    cdef floating* sc = small
    cdef double a
    cdef str k = "batch_norm_forward_eval"
    _check_shape3(y.shape, x.shape, "y", k)
    _check_len(mean.shape[0], C, "mean", k)
    _check_len(var.shape[0], C, "var", k)
    if weight is not None:
        _check_len(weight.shape[0], C, "weight", k)
    if bias is not None:
        _check_len(bias.shape[0], C, "bias", k)
    if N * C * S == 0:
        return
    _check_strides(x.shape, x.strides, x.ndim, sizeof(floating), "x")
    _check_strides(y.shape, y.strides, y.ndim, sizeof(floating), "y")
    if C > 256:
        sc = <floating*>malloc(2 * C * sizeof(floating))
        if sc == NULL:
            raise MemoryError()
    for c in range(C):
        a = 1.0 / sqrt(<double>var[c] + eps)
        if weight is not None:
            a *= weight[c]
        sc[c] = <floating>a
        sc[C + c] = <floating>((bias[c] if bias is not None else 0.0) - mean[c] * a)
    try:
        _channel_affine(&x[0, 0, 0], &y[0, 0, 0], N, C, S, x.strides[0] // <Py_ssize_t>sizeof(floating),
                        x.strides[1] // <Py_ssize_t>sizeof(floating), y.strides[0] // <Py_ssize_t>sizeof(floating),
                        y.strides[1] // <Py_ssize_t>sizeof(floating), sc, sc + C)
    finally:
        if sc != small:
            free(sc)


cdef int _channel_affine(const floating* xp, floating* yp, Py_ssize_t N, Py_ssize_t C, Py_ssize_t S,
                         Py_ssize_t xs0, Py_ssize_t xs1, Py_ssize_t ys0, Py_ssize_t ys1, const floating* sc,
                         const floating* sh) except -1:
    """y[n, c, s] = x[n, c, s]·sc[c] + sh[c] (strides in items; the last axis contiguous)."""
    cdef Py_ssize_t t, total = N * C * S
    cdef int nparts = threads_for(total)
    cdef bint stream = total * <Py_ssize_t>sizeof(floating) >= stream_min_bytes()
    if nparts == 1:
        with nogil:
            _channel_affine_part(xp, yp, N, C, S, xs0, xs1, ys0, ys1, sc, sh, 0, 1, stream)
        return 0
    with nogil:
        for t in prange(nparts, schedule="static", num_threads=nparts):
            _channel_affine_part(xp, yp, N, C, S, xs0, xs1, ys0, ys1, sc, sh, t, nparts, stream)
    return 0


cdef void _channel_affine_part(const floating* xp, floating* yp, Py_ssize_t N, Py_ssize_t C, Py_ssize_t S,
                               Py_ssize_t xs0, Py_ssize_t xs1, Py_ssize_t ys0, Py_ssize_t ys1, const floating* sc,
                               const floating* sh, Py_ssize_t t, Py_ssize_t nparts, bint stream) noexcept nogil:
    """Part t of ``nparts`` of ``_channel_affine``.

    Contiguous x and y (the usual case) are walked as one flat array split
    into equal parts, whatever S is: a short S (196) then costs no per-row
    fence or unaligned streaming store. With S = 1 the parts are ranges of
    rows of C channels (vectors along C); otherwise ranges of (n, c) runs.
    """
    cdef Py_ssize_t r, n, c, lo, hi, total = N * C * S
    if S == 1 and xs1 == 1 and ys1 == 1:
        n = t * N // nparts
        if floating is float:
            mg_col_madd_f32(xp + n * xs0, yp + n * ys0, (t + 1) * N // nparts - n, C, xs0, ys0, sc, sh)
        else:
            mg_col_madd_f64(xp + n * xs0, yp + n * ys0, (t + 1) * N // nparts - n, C, xs0, ys0, sc, sh)
        return
    if (xs1 == S or C == 1) and (ys1 == S or C == 1) and xs0 == C * S and ys0 == C * S:
        lo = _part_bound(yp, t, nparts, total)
        hi = _part_bound(yp, t + 1, nparts, total)
        if floating is float:
            mg_channel_affine_flat_f32(xp, yp, lo, hi, S, C, sc, sh, stream)
        else:
            mg_channel_affine_flat_f64(xp, yp, lo, hi, S, C, sc, sh, stream)
    else:
        for r in range(t * (N * C) // nparts, (t + 1) * (N * C) // nparts):
            n = r // C
            c = r - n * C
            _madd(xp + n * xs0 + c * xs1, yp + n * ys0 + c * ys1, S, sc[c], sh[c], stream)
    if stream:
        mg_store_fence()


