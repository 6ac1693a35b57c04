// Stand-in for CUDA's cuda_fp16.h in the g++ emulation: __half is the
// compiler's IEEE binary16 type (_Float16, GCC >= 12 on x86-64), converted
// exactly to float and rounded to nearest even from it, as the GPU's
// cvt.f32.f16 / cvt.rn.f16.f32 do. Only the conversions the kernels use.
#ifndef MINIGRAD_EMU_CUDA_FP16_H
#define MINIGRAD_EMU_CUDA_FP16_H

using __half = _Float16;

inline float __half2float(__half h) { return static_cast<float>(h); }
inline __half __float2half_rn(float f) { return static_cast<__half>(f); }

#endif  // MINIGRAD_EMU_CUDA_FP16_H
