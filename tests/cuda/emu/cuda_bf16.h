// Stand-in for CUDA's cuda_bf16.h in the g++ emulation: __nv_bfloat16 is
// the upper half of a float32 (g++ 12 has no __bf16 arithmetic type), so
// widening is a shift and narrowing rounds to nearest even on the bits, as
// the GPU's cvt.rn.bf16.f32 does (NaN stays a quiet NaN). Only the
// conversions the kernels use.
#ifndef MINIGRAD_EMU_CUDA_BF16_H
#define MINIGRAD_EMU_CUDA_BF16_H

#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
    std::uint16_t bits;
};

inline float __bfloat162float(__nv_bfloat16 h) {
    const std::uint32_t u = static_cast<std::uint32_t>(h.bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return {static_cast<std::uint16_t>((u >> 16) | 0x40u)};  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round half to even (carries into the exponent correctly)
    return {static_cast<std::uint16_t>(u >> 16)};
}

#endif  // MINIGRAD_EMU_CUDA_BF16_H
