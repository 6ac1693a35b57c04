// Per-channel batch normalization on a C-contiguous (N, C, S) array.
//
// Training forward = three launches:
//   1. bn_stats_spatial (S large) or bn_stats_columns (S small): each block
//      reduces a slice of one channel (or of 32 columns) to a Welford
//      partial (count, mean, M2) in double. Channels are split over P parts,
//      so even C = 3 fills the GPU.
//   2. bn_stats_finalize: one block per channel merges its P partials
//      (Chan's formula), writes mean/var and the affine parameters.
//   3. channel_affine: y = ((x - mean_hi) - mean_lo)·scale + shift, where
//      mean_hi + mean_lo is the double mean split into two acc_t<T> values,
//      so float32 (and half) inputs keep the accuracy of a double centring.
// Inference forward = channel_affine alone (y = x·scale + shift).
// Backward = bn_backward_reduce_{spatial,columns} (Σg and Σg·(x - mean) per
// partial, in double) + bn_backward_finalize + bn_backward_dx. The reduce and
// finalize kernels also give GroupNorm's dweight/dbias (statistics per
// (sample, group) instead of per channel; see their comments).
//
// Partial layout (shared by both layouts): channel c owns the P consecutive
// records [c·P, (c+1)·P); a Welford record is 3 doubles, a Sum2 record 2.
// Per-channel vectors and statistics are acc_t<T> (float32 for half data).
#include "common.cuh"

using mg::acc_t;
using mg::narrow;
using mg::Pack;
using mg::widen;
using mg::Sum2;
using mg::Welford;

// ----------------------------------------------------------------- stage 1
// Spatial layout: a "unit" is up to V consecutive elements of one (n, c)
// plane; channel c has N·ceil(S/V) units, split into P contiguous ranges,
// one per block. Consecutive threads take consecutive units (coalesced,
// 16-byte loads when S % V == 0). Grid: any; block: 1-D, whole warps.
template <typename T>
__global__ void __launch_bounds__(256, 4) bn_stats_spatial(const T* __restrict__ x, double* __restrict__ partial,
                                 long long N, long long C, long long S, long long P) {
    constexpr int V = Pack<T>::N;
    __shared__ Welford smem[32];
    const long long upp = (S + V - 1) / V;  // units per plane
    const long long units = N * upp;
    const long long per = (units + P - 1) / P;
    const long long step = blockDim.x;
    for (long long cp = blockIdx.x; cp < C * P; cp += gridDim.x) {
        const long long c = cp / P, p = cp % P;
        const long long u0 = p * per;
        const long long u1 = mg::lmin(units, u0 + per);
        Welford w = mg::welford_empty();
        mg::Cursor nk(u0 + threadIdx.x, step, upp, 0);  // inner: unit k of plane n (outer)
        for (long long u = u0 + threadIdx.x; u < u1; u += step, nk.next()) {
            const long long s0 = nk.inner * V;
            T v[V];
            const int cnt = mg::load_batch(x + (nk.outer * C + c) * S + s0, S - s0, v);
            w = mg::merge(w, mg::welford_batch(v, cnt));
        }
        w = mg::block_reduce(w, smem, mg::welford_empty());
        if (threadIdx.x == 0) {
            partial[3 * cp + 0] = w.n;
            partial[3 * cp + 1] = w.mean;
            partial[3 * cp + 2] = w.m2;
        }
    }
}

// Column layout, for small S (S = 1 is BatchNorm1d): x is an (N, K = C·S)
// matrix reduced over its rows. Block (32, TY): threadIdx.x picks one of 32
// consecutive columns (coalesced rows), threadIdx.y strides over the rows of
// the block's row split r = blockIdx.y of R. Column j belongs to channel
// j / S, and its R partials are records j·R .. j·R + R - 1, so channel c's
// records are the P = S·R consecutive ones starting at c·S·R.
// Requires blockDim.x == 32 and blockDim.y <= 8.
template <typename T>
__global__ void bn_stats_columns(const T* __restrict__ x, double* __restrict__ partial,
                                 long long N, long long K, long long R) {
    constexpr int V = Pack<T>::N;
    __shared__ Welford smem[8 * 32];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const long long rstep = blockDim.y;
    const long long per = (N + R - 1) / R;
    for (long long tile = blockIdx.x; tile * 32 < K; tile += gridDim.x) {
        for (long long r = blockIdx.y; r < R; r += gridDim.y) {
            const long long j = tile * 32 + tx;
            const long long n1 = mg::lmin(N, (r + 1) * per);
            Welford w = mg::welford_empty();
            if (j < K) {
                long long n = r * per + ty;
                for (; n + (V - 1) * rstep < n1; n += V * rstep) {
                    T v[V];
#pragma unroll
                    for (int i = 0; i < V; ++i) v[i] = x[(n + i * rstep) * K + j];
                    w = mg::merge(w, mg::welford_batch(v, V));
                }
                T v[V];
                int cnt = 0;
#pragma unroll
                for (int i = 0; i < V; ++i) {
                    v[i] = T();
                    if (n + i * rstep < n1) {
                        v[i] = x[(n + i * rstep) * K + j];
                        cnt = i + 1;
                    }
                }
                if (cnt > 0) w = mg::merge(w, mg::welford_batch(v, cnt));
            }
            smem[ty * 32 + tx] = w;
            __syncthreads();
            if (ty == 0 && j < K) {
                for (int t = 1; t < static_cast<int>(blockDim.y); ++t) w = mg::merge(w, smem[t * 32 + tx]);
                const long long rec = j * R + r;
                partial[3 * rec + 0] = w.n;
                partial[3 * rec + 1] = w.mean;
                partial[3 * rec + 2] = w.m2;
            }
            __syncthreads();
        }
    }
}

// ----------------------------------------------------------------- stage 2
// One block per channel (grid-stride): merge the channel's P records in a
// fixed order, then
//   mean, var (biased) -> mean_out, var_out (T);
//   scale = weight·invstd, shift = bias (weight/bias may be null);
//   mean_hi = T(mean), mean_lo = T(mean - mean_hi) for channel_affine.
template <typename T>
__global__ void bn_stats_finalize(const double* __restrict__ partial, long long C, long long P,
                                  const acc_t<T>* __restrict__ weight, const acc_t<T>* __restrict__ bias,
                                  double eps, acc_t<T>* __restrict__ mean_out, acc_t<T>* __restrict__ var_out,
                                  acc_t<T>* __restrict__ mean_hi, acc_t<T>* __restrict__ mean_lo,
                                  acc_t<T>* __restrict__ scale, acc_t<T>* __restrict__ shift) {
    using A = acc_t<T>;
    __shared__ Welford smem[32];
    for (long long c = blockIdx.x; c < C; c += gridDim.x) {
        Welford w = mg::welford_empty();
        for (long long p = threadIdx.x; p < P; p += blockDim.x) {
            const double* rec = partial + 3 * (c * P + p);
            Welford q;
            q.n = rec[0];
            q.mean = rec[1];
            q.m2 = rec[2];
            w = mg::merge(w, q);
        }
        w = mg::block_reduce(w, smem, mg::welford_empty());
        if (threadIdx.x == 0) {
            const double mean = w.mean;
            const double var = w.m2 / w.n;
            const double invstd = 1.0 / sqrt(var + eps);
            const double sc = weight != nullptr ? invstd * static_cast<double>(weight[c]) : invstd;
            const A hi = static_cast<A>(mean);
            mean_out[c] = hi;
            var_out[c] = static_cast<A>(var);
            mean_hi[c] = hi;
            mean_lo[c] = static_cast<A>(mean - static_cast<double>(hi));
            scale[c] = static_cast<A>(sc);
            shift[c] = bias != nullptr ? bias[c] : A(0);
        }
    }
}

// ----------------------------------------------------------------- stage 3
// y = x·scale[c] + shift[c], or y = ((x - mean_hi[c]) - mean_lo[c])·scale[c]
// + shift[c] when mean_hi/mean_lo are given (both or neither). Flat over the
// `total` elements in units of V (16-byte loads and stores when aligned);
// the channel of each element is tracked by a cursor (s, c), so the loop has
// no integer division. x and y may be the same array. Computed in acc_t<T>.
template <typename T>
__global__ void channel_affine(const T* x, T* y, const acc_t<T>* __restrict__ scale,
                               const acc_t<T>* __restrict__ shift, const acc_t<T>* __restrict__ mean_hi,
                               const acc_t<T>* __restrict__ mean_lo, long long total, long long C, long long S) {
    using A = acc_t<T>;
    constexpr int V = Pack<T>::N;
    const bool centred = mean_hi != nullptr;
    const long long units = (total + V - 1) / V;
    const long long first = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    const long long step = static_cast<long long>(gridDim.x) * blockDim.x;
    mg::Cursor cur(first * V, step * V, S, C);  // inner: s, outer: c
    for (long long u = first; u < units; u += step, cur.next()) {
        const long long i0 = u * V;
        T v[V];
        const int cnt = mg::load_batch(x + i0, total - i0, v);
        long long ls = cur.inner, lc = cur.outer, pc = -1;
        A sc = A(0), sh = A(0), hi = A(0), lo = A(0);
#pragma unroll
        for (int l = 0; l < V; ++l) {
            if (l < cnt) {
                if (lc != pc) {  // reload the channel's parameters only when it changes
                    pc = lc;
                    sc = scale[lc];
                    sh = shift[lc];
                    if (centred) {
                        hi = mean_hi[lc];
                        lo = mean_lo[lc];
                    }
                }
                A a = widen(v[l]);
                if (centred) a = (a - hi) - lo;
                v[l] = narrow<T>(a * sc + sh);
            }
            cur.step(ls, lc);
        }
        mg::store_batch(y + i0, cnt, v);
    }
}

// ---------------------------------------------------------------- backward
// Stage 1 sums, per channel c: Σg and Σg·(x - mean[i])·invstd[i], where the
// statistics of the value at (n, c) are entry i = n·stat_stride + c/group:
// BatchNorm passes stat_stride = 0, group = 1 (per-channel statistics) and
// invstd = null (1: its finalize applies invstd per channel); GroupNorm
// passes its (N, G) statistics with stat_stride = G, group = C/G.

// Stage 1, spatial layout: per block, the sums over its range of the
// channel's units (same partition as bn_stats_spatial). The statistics are
// reloaded only when the walk enters another plane.
template <typename T>
__global__ void __launch_bounds__(256, 4) bn_backward_reduce_spatial(const T* __restrict__ g, const T* __restrict__ x,
                                           const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ invstd,
                                           double* __restrict__ partial, long long N, long long C, long long S,
                                           long long P, long long stat_stride, long long group) {
    constexpr int V = Pack<T>::N;
    __shared__ Sum2 smem[32];
    const long long upp = (S + V - 1) / V;
    const long long units = N * upp;
    const long long per = (units + P - 1) / P;
    const long long step = blockDim.x;
    for (long long cp = blockIdx.x; cp < C * P; cp += gridDim.x) {
        const long long c = cp / P, p = cp % P;
        const long long stat_c = c / group;
        const long long u0 = p * per;
        const long long u1 = mg::lmin(units, u0 + per);
        Sum2 acc = mg::sum2_empty();
        mg::Cursor nk(u0 + threadIdx.x, step, upp, 0);  // inner: unit k of plane n (outer)
        long long plane = -1;
        double m = 0.0, is = 1.0;
        for (long long u = u0 + threadIdx.x; u < u1; u += step, nk.next()) {
            if (nk.outer != plane) {
                plane = nk.outer;
                const long long i = plane * stat_stride + stat_c;
                m = static_cast<double>(mean[i]);
                if (invstd != nullptr) is = static_cast<double>(invstd[i]);
            }
            const long long s0 = nk.inner * V;
            const long long off = (plane * C + c) * S + s0;
            T gv[V], xv[V];
            const int cnt = mg::load_batch(g + off, S - s0, gv);
            mg::load_batch(x + off, S - s0, xv);
            double b = 0.0;
#pragma unroll
            for (int i = 0; i < V; ++i) {
                if (i < cnt) {
                    const double gd = static_cast<double>(widen(gv[i]));
                    acc.a += gd;
                    b += gd * (static_cast<double>(widen(xv[i])) - m);
                }
            }
            acc.b += b * is;
        }
        acc = mg::block_reduce(acc, smem, mg::sum2_empty());
        if (threadIdx.x == 0) {
            partial[2 * cp + 0] = acc.a;
            partial[2 * cp + 1] = acc.b;
        }
    }
}

// Stage 1, column layout (same tiling as bn_stats_columns; S is needed to
// find the channel j / S of column j). Requires blockDim.x == 32, blockDim.y <= 8.
template <typename T>
__global__ void bn_backward_reduce_columns(const T* __restrict__ g, const T* __restrict__ x,
                                           const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ invstd,
                                           double* __restrict__ partial, long long N, long long K, long long S,
                                           long long R, long long stat_stride, long long group) {
    __shared__ Sum2 smem[8 * 32];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const long long rstep = blockDim.y;
    const long long per = (N + R - 1) / R;
    for (long long tile = blockIdx.x; tile * 32 < K; tile += gridDim.x) {
        for (long long r = blockIdx.y; r < R; r += gridDim.y) {
            const long long j = tile * 32 + tx;
            const long long n1 = mg::lmin(N, (r + 1) * per);
            Sum2 acc = mg::sum2_empty();
            if (j < K) {
                const long long stat_c = j / S / group;
                for (long long n = r * per + ty; n < n1; n += rstep) {
                    const long long i = n * stat_stride + stat_c;
                    const double gd = static_cast<double>(widen(g[n * K + j]));
                    const double is = invstd != nullptr ? static_cast<double>(invstd[i]) : 1.0;
                    acc.a += gd;
                    acc.b += gd * (static_cast<double>(widen(x[n * K + j])) - static_cast<double>(mean[i])) * is;
                }
            }
            smem[ty * 32 + tx] = acc;
            __syncthreads();
            if (ty == 0 && j < K) {
                for (int t = 1; t < static_cast<int>(blockDim.y); ++t) acc = mg::merge(acc, smem[t * 32 + tx]);
                const long long rec = j * R + r;
                partial[2 * rec + 0] = acc.a;
                partial[2 * rec + 1] = acc.b;
            }
            __syncthreads();
        }
    }
}

// Stage 2: one block per channel. With x̂ = (x - mean)·invstd and
// sc = weight·invstd:  dbias = Σg,  dweight = invstd·Σg·(x - mean),
// dx = k1·g + k2·(x - mean) + k3 where k1 = sc and, when training (batch
// statistics), k2 = -sc·invstd·dweight/m, k3 = -sc·dbias/m (m = N·S), which
// is sc·(g - dbias/m - x̂·dweight/m); with fixed statistics k2 = k3 = 0.
// invstd null means 1 (GroupNorm: stage 1 applied it), k1 null means only
// dweight and dbias are wanted.
template <typename T>
__global__ void bn_backward_finalize(const double* __restrict__ partial, long long C, long long P,
                                     const acc_t<T>* __restrict__ invstd, const acc_t<T>* __restrict__ weight,
                                     long long m, int training, acc_t<T>* __restrict__ dweight,
                                     acc_t<T>* __restrict__ dbias, acc_t<T>* __restrict__ k1,
                                     acc_t<T>* __restrict__ k2, acc_t<T>* __restrict__ k3) {
    using A = acc_t<T>;
    __shared__ Sum2 smem[32];
    for (long long c = blockIdx.x; c < C; c += gridDim.x) {
        Sum2 acc = mg::sum2_empty();
        for (long long p = threadIdx.x; p < P; p += blockDim.x) {
            Sum2 q;
            q.a = partial[2 * (c * P + p)];
            q.b = partial[2 * (c * P + p) + 1];
            acc = mg::merge(acc, q);
        }
        acc = mg::block_reduce(acc, smem, mg::sum2_empty());
        if (threadIdx.x == 0) {
            const double is = invstd != nullptr ? static_cast<double>(invstd[c]) : 1.0;
            const double db = acc.a;
            const double dw = acc.b * is;
            dbias[c] = static_cast<A>(db);
            dweight[c] = static_cast<A>(dw);
            if (k1 != nullptr) {
                const double sc = weight != nullptr ? is * static_cast<double>(weight[c]) : is;
                k1[c] = static_cast<A>(sc);
                if (training) {
                    const double inv_m = 1.0 / static_cast<double>(m);
                    k2[c] = static_cast<A>(-sc * is * dw * inv_m);
                    k3[c] = static_cast<A>(-sc * db * inv_m);
                } else {
                    k2[c] = A(0);
                    k3[c] = A(0);
                }
            }
        }
    }
}

// Stage 3: dx = k1[c]·g + k2[c]·(x - mean[c]) + k3[c], flat like
// channel_affine (in acc_t<T>). With use_x == 0 (fixed statistics) x is not read at all.
template <typename T>
__global__ void bn_backward_dx(const T* __restrict__ g, const T* __restrict__ x, const acc_t<T>* __restrict__ mean,
                               const acc_t<T>* __restrict__ k1, const acc_t<T>* __restrict__ k2,
                               const acc_t<T>* __restrict__ k3, T* __restrict__ dx, int use_x, long long total,
                               long long C, long long S) {
    using A = acc_t<T>;
    constexpr int V = Pack<T>::N;
    const long long units = (total + V - 1) / V;
    const long long first = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    const long long step = static_cast<long long>(gridDim.x) * blockDim.x;
    mg::Cursor cur(first * V, step * V, S, C);  // inner: s, outer: c
    for (long long u = first; u < units; u += step, cur.next()) {
        const long long i0 = u * V;
        T gv[V], xv[V];
        const int cnt = mg::load_batch(g + i0, total - i0, gv);
        if (use_x) mg::load_batch(x + i0, total - i0, xv);
        long long ls = cur.inner, lc = cur.outer, pc = -1;
        A a = A(0), b = A(0), d = A(0), mu = A(0);
#pragma unroll
        for (int l = 0; l < V; ++l) {
            if (l < cnt) {
                if (lc != pc) {
                    pc = lc;
                    a = k1[lc];
                    d = k3[lc];
                    if (use_x) {
                        b = k2[lc];
                        mu = mean[lc];
                    }
                }
                A r = a * widen(gv[l]) + d;
                if (use_x) r += b * (widen(xv[l]) - mu);
                gv[l] = narrow<T>(r);
            }
            cur.step(ls, lc);
        }
        mg::store_batch(dx + i0, cnt, gv);
    }
}
