// im2col / col2im for 2-D convolution as a matrix product (no dilation).
//
// Geometry: x is (N, C, H, W), cols is (N, C·kh·kw, OH·OW) with row
// c·kh·kw + i·kw + j holding pixel (c, oh·sh + i - ph, ow·sw + j - pw) for
// column oh·OW + ow (zero outside the image). One thread per output element
// (grid-stride); col2im gathers instead of scattering, so it needs no
// atomics and adds the kh·kw contributions of a pixel in a fixed order
// (i, j ascending), the order of the NumPy reference.
#include "common.cuh"

template <typename T>
__global__ void im2col(const T* __restrict__ x, T* __restrict__ cols, long long N, long long C, long long H,
                       long long W, long long kh, long long kw, long long sh, long long sw, long long ph,
                       long long pw, long long OH, long long OW) {
    const long long total = N * C * kh * kw * OH * OW;
    for (long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += static_cast<long long>(gridDim.x) * blockDim.x) {
        long long t = idx;
        const long long ow = t % OW;
        t /= OW;
        const long long oh = t % OH;
        t /= OH;
        const long long j = t % kw;
        t /= kw;
        const long long i = t % kh;
        const long long nc = t / kh;  // n·C + c
        const long long h = oh * sh + i - ph;
        const long long w = ow * sw + j - pw;
        cols[idx] = (h >= 0 && h < H && w >= 0 && w < W) ? x[(nc * H + h) * W + w] : T(0);
    }
}

template <typename T>
__global__ void col2im(const T* __restrict__ cols, T* __restrict__ x, long long N, long long C, long long H,
                       long long W, long long kh, long long kw, long long sh, long long sw, long long ph,
                       long long pw, long long OH, long long OW) {
    const long long total = N * C * H * W;
    const long long L = OH * OW;
    for (long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += static_cast<long long>(gridDim.x) * blockDim.x) {
        const long long w = idx % W;
        const long long h = (idx / W) % H;
        const long long nc = idx / (W * H);
        T acc = T(0);
        for (long long i = 0; i < kh; ++i) {
            const long long hh = h + ph - i;  // = oh·sh
            if (hh < 0 || hh % sh != 0 || hh / sh >= OH) continue;
            const long long oh = hh / sh;
            for (long long j = 0; j < kw; ++j) {
                const long long ww = w + pw - j;  // = ow·sw
                if (ww < 0 || ww % sw != 0 || ww / sw >= OW) continue;
                acc += cols[((nc * kh + i) * kw + j) * L + oh * OW + ww / sw];
            }
        }
        x[idx] = acc;
    }
}
