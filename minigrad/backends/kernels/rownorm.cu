// Per-row normalization of a C-contiguous (R, K) array (LayerNorm: R = N,
// InstanceNorm: R = N·C, GroupNorm: R = N·G); the affine parts are separate.
//
// Block (TX, TY): TX threads (whole warps, TX <= 1024) share one row, TY rows
// per block, TX·TY <= 1024; grid-stride over groups of TY rows. Each row is
// read in units of V elements (16-byte loads when the row start is aligned).
// Statistics are acc_t<T> (float32 for half data), values computed in it.
#include "common.cuh"

using mg::acc_t;
using mg::narrow;
using mg::Pack;
using mg::widen;
using mg::Sum2;
using mg::Welford;

// x̂ = (x - mean)·invstd with mean and the biased variance over each row
// (Welford per thread, Chan merges across the row's warps, all in double);
// invstd = 1/sqrt(var + eps). mean and invstd have R entries.
template <typename T>
__global__ void row_norm_forward(const T* __restrict__ x, T* __restrict__ xhat, acc_t<T>* __restrict__ mean_out,
                                 acc_t<T>* __restrict__ invstd_out, long long R, long long K, double eps) {
    using A = acc_t<T>;
    constexpr int V = Pack<T>::N;
    __shared__ Welford wsm[32];
    __shared__ double stat[32][2];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int TX = blockDim.x, TY = blockDim.y;
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
            const T* xr = x + r * K;
            T* yr = xhat + r * K;
            for (long long u = tx; u < upr; u += TX) {
                T v[V];
                const int cnt = mg::load_batch(xr + u * V, K - u * V, v);
#pragma unroll
                for (int i = 0; i < V; ++i) v[i] = narrow<T>(((widen(v[i]) - hi) - lo) * is);
                mg::store_batch(yr + u * V, cnt, v);
            }
        }
        __syncthreads();  // stat/wsm are rewritten by the next group of rows
    }
}

// dx = invstd·(g - mean(g) - x̂·mean(g·x̂)) per row (sums in double).
template <typename T>
__global__ void row_norm_backward(const T* __restrict__ g, const T* __restrict__ xhat,
                                  const acc_t<T>* __restrict__ invstd, T* __restrict__ dx, long long R, long long K) {
    using A = acc_t<T>;
    constexpr int V = Pack<T>::N;
    __shared__ Sum2 ssm[32];
    __shared__ double stat[32][2];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int TX = blockDim.x, TY = blockDim.y;
    const int wpr = TX >> 5;
    const long long upr = (K + V - 1) / V;
    for (long long r0 = static_cast<long long>(blockIdx.x) * TY; r0 < R;
         r0 += static_cast<long long>(gridDim.x) * TY) {
        const long long r = r0 + ty;
        const bool active = r < R;
        Sum2 acc = mg::sum2_empty();
        if (active) {
            const T* gr = g + r * K;
            const T* hr = xhat + r * K;
            for (long long u = tx; u < upr; u += TX) {
                T gv[V], hv[V];
                const int cnt = mg::load_batch(gr + u * V, K - u * V, gv);
                mg::load_batch(hr + u * V, K - u * V, hv);
#pragma unroll
                for (int i = 0; i < V; ++i) {
                    if (i < cnt) {
                        const double gd = static_cast<double>(widen(gv[i]));
                        acc.a += gd;
                        acc.b += gd * static_cast<double>(widen(hv[i]));
                    }
                }
            }
        }
        acc = mg::warp_reduce(acc);
        if ((tx & 31) == 0) ssm[ty * wpr + (tx >> 5)] = acc;
        __syncthreads();
        if (tx == 0) {
            Sum2 t = ssm[ty * wpr];
            for (int i = 1; i < wpr; ++i) t = mg::merge(t, ssm[ty * wpr + i]);
            stat[ty][0] = t.a / static_cast<double>(K);
            stat[ty][1] = t.b / static_cast<double>(K);
        }
        __syncthreads();
        if (active) {
            const A mg_ = static_cast<A>(stat[ty][0]);
            const A mgx = static_cast<A>(stat[ty][1]);
            const A is = invstd[r];
            const T* gr = g + r * K;
            const T* hr = xhat + r * K;
            T* dr = dx + r * K;
            for (long long u = tx; u < upr; u += TX) {
                T gv[V], hv[V];
                const int cnt = mg::load_batch(gr + u * V, K - u * V, gv);
                mg::load_batch(hr + u * V, K - u * V, hv);
#pragma unroll
                for (int i = 0; i < V; ++i) gv[i] = narrow<T>(is * ((widen(gv[i]) - mg_) - widen(hv[i]) * mgx));
                mg::store_batch(dr + u * V, cnt, gv);
            }
        }
        __syncthreads();
    }
}
