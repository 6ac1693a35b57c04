// Group normalization with its per-channel affine on a C-contiguous (N, C, S)
// array: row r = (sample n, group g) is the contiguous run of K = (C/G)·S
// values starting at r·K, and element k of it belongs to channel
// g·(C/G) + k/S. GroupNorm is this layout; LayerNorm is (R, K, 1) with
// G = 1 (so the affine is per element), InstanceNorm G = C.
//
// Forward = group_norm_forward (statistics and affine output per row).
// Backward = group_norm_backward (dx per row); dweight = Σ g·x̂ and dbias = Σ g
// per channel are BatchNorm's per-channel reductions (batchnorm.cu) with the
// statistics of row (n, g).
//
// Rows: block (TX, TY), TX threads (whole warps) share one row, TY rows per
// block, grid-stride over groups of TY rows; each row is read in units of V elements (16-byte loads when aligned).
// The channel of element k of a row, c0 + k/S, is tracked by a cursor (no
// division per element), and weight/bias are reloaded only when it changes.
// Per-channel vectors and statistics are acc_t<T> (float32 for half data).
#include "common.cuh"

using mg::acc_t;
using mg::narrow;
using mg::Pack;
using mg::widen;
using mg::Sum2;
using mg::Welford;

// y = (x - mean)·invstd·weight[c] + bias[c] with mean and the biased
// variance over each row (Welford per thread, Chan merges across the row's
// warps, in double); mean_out/invstd_out have N·G entries (row order).
// weight/bias may be null.
template <typename T>
__global__ void group_norm_forward(const T* __restrict__ x, const acc_t<T>* __restrict__ weight,
                                   const acc_t<T>* __restrict__ bias, T* __restrict__ y,
                                   acc_t<T>* __restrict__ mean_out, acc_t<T>* __restrict__ invstd_out, long long N,
                                   long long C, long long S, long long G, double eps) {
    using A = acc_t<T>;
    constexpr int V = Pack<T>::N;
    __shared__ Welford wsm[32];
    __shared__ double stat[32][2];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int TX = blockDim.x, TY = blockDim.y;
    const long long R = N * G;
    const long long Cg = C / G;
    const long long K = Cg * S;
    const long long upr = (K + V - 1) / V;
    for (long long r0 = static_cast<long long>(blockIdx.x) * TY; r0 < R;
         r0 += static_cast<long long>(gridDim.x) * TY) {
        const long long r = r0 + ty;
        const bool active = r < R;
        mg::block_row_stats(active ? x + r * K : x, K, r, active, eps, mean_out, invstd_out, wsm, stat);
        if (active) {
            const double mean = stat[ty][0];
            const A hi = static_cast<A>(mean);
            const A lo = static_cast<A>(mean - static_cast<double>(hi));
            const A is = static_cast<A>(stat[ty][1]);
            const long long c0 = (r % G) * Cg;  // first channel of the row
            const T* xr = x + r * K;
            T* yr = y + r * K;
            mg::Cursor sc(tx * V, static_cast<long long>(TX) * V, S, 0);  // inner: s, outer: channel - c0
            for (long long u = tx; u < upr; u += TX, sc.next()) {
                T v[V];
                const int cnt = mg::load_batch(xr + u * V, K - u * V, v);
                long long ls = sc.inner, lc = sc.outer, pc = -1;
                A a = is, b = A(0);
#pragma unroll
                for (int i = 0; i < V; ++i) {
                    if (i < cnt) {
                        if (lc != pc) {  // reload the channel's affine only when it changes
                            pc = lc;
                            if (weight != nullptr) a = is * weight[c0 + lc];
                            if (bias != nullptr) b = bias[c0 + lc];
                        }
                        v[i] = narrow<T>(((widen(v[i]) - hi) - lo) * a + b);
                    }
                    sc.step(ls, lc);
                }
                mg::store_batch(yr + u * V, cnt, v);
            }
        }
        __syncthreads();  // stat/wsm are rewritten by the next group of rows
    }
}

// dx per row, with dx̂ = weight[c]·g and x̂ = (x - mean)·invstd:
// dx = invstd·(dx̂ - mean(dx̂) - x̂·mean(dx̂·x̂))
//    = (invstd·weight[c])·g - invstd·A/K - invstd³·B/K·(x - mean),
// A = Σ weight[c]·g, B = Σ weight[c]·g·(x - mean) over the row (in double).
// mean/invstd: N·G entries; weight may be null.
template <typename T>
__global__ void group_norm_backward(const T* __restrict__ g, const T* __restrict__ x,
                                    const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ invstd,
                                    const acc_t<T>* __restrict__ weight, T* __restrict__ dx, long long N, long long C,
                                    long long S, long long G) {
    using A = acc_t<T>;
    constexpr int V = Pack<T>::N;
    __shared__ Sum2 ssm[32];
    __shared__ double stat[32][2];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int TX = blockDim.x, TY = blockDim.y;
    const int wpr = TX >> 5;
    const long long R = N * G;
    const long long Cg = C / G;
    const long long K = Cg * S;
    const long long upr = (K + V - 1) / V;
    for (long long r0 = static_cast<long long>(blockIdx.x) * TY; r0 < R;
         r0 += static_cast<long long>(gridDim.x) * TY) {
        const long long r = r0 + ty;
        const bool active = r < R;
        const long long c0 = active ? (r % G) * Cg : 0;
        Sum2 acc = mg::sum2_empty();
        if (active) {
            const double m = static_cast<double>(mean[r]);
            const T* gr = g + r * K;
            const T* xr = x + r * K;
            mg::Cursor sc(tx * V, static_cast<long long>(TX) * V, S, 0);  // inner: s, outer: channel - c0
            for (long long u = tx; u < upr; u += TX, sc.next()) {
                T gv[V], xv[V];
                const int cnt = mg::load_batch(gr + u * V, K - u * V, gv);
                mg::load_batch(xr + u * V, K - u * V, xv);
                long long ls = sc.inner, lc = sc.outer, pc = -1;
                double wc = 1.0;
#pragma unroll
                for (int i = 0; i < V; ++i) {
                    if (i < cnt) {
                        if (weight != nullptr && lc != pc) {
                            pc = lc;
                            wc = static_cast<double>(weight[c0 + lc]);
                        }
                        const double wg = wc * static_cast<double>(widen(gv[i]));
                        acc.a += wg;
                        acc.b += wg * (static_cast<double>(widen(xv[i])) - m);
                    }
                    sc.step(ls, lc);
                }
            }
        }
        acc = mg::warp_reduce(acc);
        if ((tx & 31) == 0) ssm[ty * wpr + (tx >> 5)] = acc;
        __syncthreads();
        if (tx == 0) {
            Sum2 t = ssm[ty * wpr];
            for (int i = 1; i < wpr; ++i) t = mg::merge(t, ssm[ty * wpr + i]);
            stat[ty][0] = t.a;
            stat[ty][1] = t.b;
        }
        __syncthreads();
        if (active) {
            const double is = static_cast<double>(invstd[r]);
            const double m = static_cast<double>(mean[r]);
            const A hi = static_cast<A>(m);
            const A lo = static_cast<A>(m - static_cast<double>(hi));
            const A kb = static_cast<A>(-is * stat[ty][0] / static_cast<double>(K));
            const A kc = static_cast<A>(is * is * is * stat[ty][1] / static_cast<double>(K));
            const A ist = static_cast<A>(is);
            const T* gr = g + r * K;
            const T* xr = x + r * K;
            T* dr = dx + r * K;
            mg::Cursor sc(tx * V, static_cast<long long>(TX) * V, S, 0);  // inner: s, outer: channel - c0
            for (long long u = tx; u < upr; u += TX, sc.next()) {
                T gv[V], xv[V];
                const int cnt = mg::load_batch(gr + u * V, K - u * V, gv);
                mg::load_batch(xr + u * V, K - u * V, xv);
                long long ls = sc.inner, lc = sc.outer, pc = -1;
                A ka = ist;
#pragma unroll
                for (int i = 0; i < V; ++i) {
                    if (i < cnt) {
                        if (weight != nullptr && lc != pc) {
                            pc = lc;
                            ka = ist * weight[c0 + lc];
                        }
                        gv[i] = narrow<T>(ka * widen(gv[i]) + kb - kc * ((widen(xv[i]) - hi) - lo));
                    }
                    sc.step(ls, lc);
                }
                mg::store_batch(dr + u * V, cnt, gv);
            }
        }
        __syncthreads();
    }
}
