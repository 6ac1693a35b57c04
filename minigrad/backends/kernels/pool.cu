// 2-D max and average pooling of C-contiguous (N, C, H, W) arrays, with the
// N·C channel planes flattened to NC. One thread per output element (forward)
// or per input pixel (average-pool backward), grid-stride.
#include "common.cuh"

// y = max over the window's in-image pixels; argmax = h·W + w of the chosen
// one, as the NumPy reference, the CPU kernels and PyTorch choose it: the
// first in-image pixel, then any later one that is greater or NaN (so a NaN
// propagates, the last NaN in window order winning, and an all -inf window
// records a position inside it). A window with no in-image pixel (padding
// wider than the kernel, refused above the backend) gives -inf and -1, which
// the backward skips.
template <typename T>
__global__ void max_pool2d_forward(const T* __restrict__ x, T* __restrict__ y, long long* __restrict__ argmax,
                                   long long NC, long long H, long long W, long long kh, long long kw,
                                   long long sh, long long sw, long long ph, long long pw, long long OH,
                                   long long OW) {
    const long long total = NC * OH * OW;
    for (long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += static_cast<long long>(gridDim.x) * blockDim.x) {
        const long long ow = idx % OW;
        const long long oh = (idx / OW) % OH;
        const long long plane = idx / (OW * OH);
        const T* xp = x + plane * H * W;
        T best = mg::neg_inf<T>();
        long long arg = -1;
        for (long long i = 0; i < kh; ++i) {
            const long long h = oh * sh + i - ph;
            if (h < 0 || h >= H) continue;
            for (long long j = 0; j < kw; ++j) {
                const long long w = ow * sw + j - pw;
                if (w < 0 || w >= W) continue;
                const T v = xp[h * W + w];
                if (arg < 0 || v > best || v != v) {  // v != v: NaN
                    best = v;
                    arg = h * W + w;
                }
            }
        }
        y[idx] = best;
        argmax[idx] = arg;
    }
}

// dx[plane, argmax] += grad (dx zeroed by the caller). The forward's
// geometry is not part of this signature, so it scatters with atomics:
// exact and deterministic when windows do not overlap (stride >= kernel),
// otherwise the order of the few additions to a pixel may vary.
// Out-of-range indices are skipped rather than written.
template <typename T>
__global__ void max_pool2d_backward(const T* __restrict__ grad, const long long* __restrict__ argmax,
                                    T* __restrict__ dx, long long NC, long long HW, long long L) {
    const long long total = NC * L;
    for (long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += static_cast<long long>(gridDim.x) * blockDim.x) {
        const long long a = argmax[idx];
        if (a >= 0 && a < HW) mg::atomic_add(dx + (idx / L) * HW + a, grad[idx]);
    }
}

// Number of in-image pixels of window (oh, ow), or kh·kw when padding counts.
__device__ __forceinline__ double pool_divisor(long long oh, long long ow, long long H, long long W,
                                               long long kh, long long kw, long long sh, long long sw,
                                               long long ph, long long pw, int count_include_pad) {
    if (count_include_pad) return static_cast<double>(kh * kw);
    const long long h0 = oh * sh - ph, w0 = ow * sw - pw;
    const long long h1 = mg::lmin(h0 + kh, H), w1 = mg::lmin(w0 + kw, W);
    return static_cast<double>((h1 - mg::lmax(h0, 0)) * (w1 - mg::lmax(w0, 0)));
}

// y = (Σ window, zero padding) / divisor, summed in double.
template <typename T>
__global__ void avg_pool2d_forward(const T* __restrict__ x, T* __restrict__ y, long long NC, long long H,
                                   long long W, long long kh, long long kw, long long sh, long long sw,
                                   long long ph, long long pw, long long OH, long long OW,
                                   int count_include_pad) {
    const long long total = NC * OH * OW;
    for (long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += static_cast<long long>(gridDim.x) * blockDim.x) {
        const long long ow = idx % OW;
        const long long oh = (idx / OW) % OH;
        const T* xp = x + (idx / (OW * OH)) * H * W;
        double acc = 0.0;
        for (long long i = 0; i < kh; ++i) {
            const long long h = oh * sh + i - ph;
            if (h < 0 || h >= H) continue;
            for (long long j = 0; j < kw; ++j) {
                const long long w = ow * sw + j - pw;
                if (w >= 0 && w < W) acc += static_cast<double>(xp[h * W + w]);
            }
        }
        y[idx] = static_cast<T>(acc / pool_divisor(oh, ow, H, W, kh, kw, sh, sw, ph, pw, count_include_pad));
    }
}

// dx[pixel] = Σ over the windows containing the pixel of grad/divisor
// (a gather: no atomics, deterministic).
template <typename T>
__global__ void avg_pool2d_backward(const T* __restrict__ grad, T* __restrict__ dx, long long NC, long long H,
                                    long long W, long long kh, long long kw, long long sh, long long sw,
                                    long long ph, long long pw, long long OH, long long OW,
                                    int count_include_pad) {
    const long long total = NC * H * W;
    for (long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += static_cast<long long>(gridDim.x) * blockDim.x) {
        const long long w = idx % W;
        const long long h = (idx / W) % H;
        const T* gp = grad + (idx / (W * H)) * OH * OW;
        double acc = 0.0;
        for (long long i = 0; i < kh; ++i) {
            const long long hh = h + ph - i;
            if (hh < 0 || hh % sh != 0 || hh / sh >= OH) continue;
            const long long oh = hh / sh;
            for (long long j = 0; j < kw; ++j) {
                const long long ww = w + pw - j;
                if (ww < 0 || ww % sw != 0 || ww / sw >= OW) continue;
                const long long ow = ww / sw;
                acc += static_cast<double>(gp[oh * OW + ow]) /
                       pool_divisor(oh, ow, H, W, kh, kw, sh, sw, ph, pw, count_include_pad);
            }
        }
        dx[idx] = static_cast<T>(acc);
    }
}
