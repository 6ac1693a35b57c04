/* The C primitives of minigrad's CPU kernels: the inner loops the Cython kernel families
   (minigrad/_ext/_*.pxi) call, for float (suffix _f32) and double (_f64).

   One header per family of primitives (_norm_simd.h, _gemm_simd.h, _conv_simd.h,
   _elementwise_simd.h), all included here, between the two markers of the build's target:

   Builds: the module that includes this header may define MG_SIMD_AVX2 or MG_SIMD_AVX512 first
   (_kernels_avx2.pyx, _kernels_avx512.pyx). Then, with GCC on x86, the primitives (and only
   they) are compiled for that instruction set, between ``#pragma GCC push_options`` / ``target``
   and ``pop_options``; the rest of the module, its Python initialisation and the Cython
   orchestration, stays baseline x86-64. A target-specific function is never inlined into a
   baseline caller, so no instruction the processor may lack runs before a kernel calls a
   primitive, and the module refuses to import (ImportError, after asking mg_cpu_supports) on a
   processor that lacks its instruction set: importing a build can never end the process with
   an illegal instruction. Other compilers get one baseline build three times.

   Width: GCC/clang vector extensions of MG_VBYTES bytes: 64 where the target has AVX-512F, 32
   with AVX, 16 otherwise (baseline SSE2, NEON). Other compilers get the scalar loops only
   (MG_VEC 0). */
#ifndef MINIGRAD_SIMD_H
#define MINIGRAD_SIMD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <math.h>

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#  include <immintrin.h>
#endif

/* ---------------------------------------------------------------- baseline helpers */
static inline void mg_store_fence(void) {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__)) && defined(__SSE2__)
    _mm_sfence(); /* streaming stores are weakly ordered: publish them */
#endif
}

/* Prefetch [p, p + bytes) into the caches, one request per 64-byte line.
   GCC counts a prefetch as no side effect: a function it outlines around one
   (partial inlining) is then "const", and every call to it is deleted as
   dead code. The empty volatile asm (no instruction) is a side effect that
   keeps the calls, and so the prefetches. */
static inline void mg_prefetch(const void* p, Py_ssize_t bytes) {
#if defined(__GNUC__) || defined(__clang__)
    const char* c = (const char*)p;
    for (Py_ssize_t i = 0; i < bytes; i += 64) __builtin_prefetch(c + i, 0, 3);
    __asm__ __volatile__("");
#else
    (void)p;
    (void)bytes;
#endif
}

/* Running statistics of a set of values: count, mean, M2 = sum of squared deviations. */
typedef struct {
    double n, mean, m2;
} mg_stats;

/* Chan et al.'s merge of a block (n, mean, m2) into s: exact for any split. */
static inline void mg_stats_merge(mg_stats* s, double n, double mean, double m2) {
    if (n == 0) return;
    if (s->n == 0) {
        s->n = n;
        s->mean = mean;
        s->m2 = m2;
        return;
    }
    double tot = s->n + n, d = mean - s->mean, wb = n / tot;
    s->mean += d * wb;
    s->m2 += m2 + d * d * s->n * wb;
    s->n = tot;
}

/* Whether this processor (and its OS) can run a build of the given name: "baseline", "avx2" (AVX2
   and FMA) or "avx512" (F, BW, VL, DQ besides). Baseline code: the module init asks it first. */
static int mg_cpu_supports(const char* simd) {
    if (strcmp(simd, "baseline") == 0) return 1;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (strcmp(simd, "avx2") == 0) return avx2;
    if (strcmp(simd, "avx512") == 0)
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
               && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#endif
    return 0;
}

/* ------------------------------------------------- the build's target starts here */
#if (defined(MG_SIMD_AVX2) || defined(MG_SIMD_AVX512)) && defined(__GNUC__) && !defined(__clang__) \
    && (defined(__x86_64__) || defined(__i386__))
#  define MG_TARGETED 1
#  pragma GCC push_options
#  if defined(MG_SIMD_AVX512)
#    pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
#    define MG_SIMD_NAME "avx512"
#  else
#    pragma GCC target("avx2,fma")
#    define MG_SIMD_NAME "avx2"
#  endif
#else
#  define MG_TARGETED 0
#  define MG_SIMD_NAME "baseline"
#endif

#if defined(__GNUC__) || defined(__clang__)
#  define MG_VEC 1
#  if defined(__AVX512F__)
#    define MG_VBYTES 64
#  elif defined(__AVX__)
#    define MG_VBYTES 32
#  else
#    define MG_VBYTES 16
#  endif
#else
#  define MG_VEC 0
#  define MG_VBYTES 0
#endif

#if MG_VEC
#  define MG_ALIGNED(n) __attribute__((aligned(n)))
#else
#  define MG_ALIGNED(n)
#endif

#if MG_VEC && (defined(__x86_64__) || defined(__i386__)) && defined(__SSE2__)
#  define MG_X86 1
#  define MG_NT_BYTES MG_VBYTES /* streaming stores of one vector */
#else
#  define MG_X86 0
#  define MG_NT_BYTES 0
#endif

#if MG_VEC
typedef float mg_vf __attribute__((vector_size(MG_VBYTES)));
typedef double mg_vd __attribute__((vector_size(MG_VBYTES)));
#  define MG_WF (MG_VBYTES / 4) /* floats per vector */
#  define MG_WD (MG_VBYTES / 8) /* doubles per vector */

static inline mg_vf mg_ld_f32(const float* p) { mg_vf v; memcpy(&v, p, sizeof v); return v; }
static inline mg_vd mg_ld_f64(const double* p) { mg_vd v; memcpy(&v, p, sizeof v); return v; }
static inline void mg_st_f32(float* p, mg_vf v) { memcpy(p, &v, sizeof v); }
static inline void mg_st_f64(double* p, mg_vd v) { memcpy(p, &v, sizeof v); }

/* MG_WD consecutive elements as a vector of doubles (float32 converted). */
static inline mg_vd mg_ldd_f64(const double* p) { return mg_ld_f64(p); }
#  if MG_X86 && MG_VBYTES == 64
static inline mg_vd mg_ldd_f32(const float* p) { return (mg_vd)_mm512_cvtps_pd(_mm256_loadu_ps(p)); }
#  elif MG_X86 && MG_VBYTES == 32
static inline mg_vd mg_ldd_f32(const float* p) { return (mg_vd)_mm256_cvtps_pd(_mm_loadu_ps(p)); }
#  elif MG_X86
static inline mg_vd mg_ldd_f32(const float* p) {
    return (mg_vd)_mm_cvtps_pd(_mm_castpd_ps(_mm_load_sd((const double*)p)));
}
#  else
typedef float mg_vfh __attribute__((vector_size(MG_VBYTES / 2)));
static inline mg_vd mg_ldd_f32(const float* p) {
    mg_vfh h;
    memcpy(&h, p, sizeof h);
    return __builtin_convertvector(h, mg_vd);
}
#  endif

#  if MG_X86 && MG_VBYTES == 64
#    define mg_nt_f32(p, v) _mm512_stream_ps((p), (__m512)(v))
#    define mg_nt_f64(p, v) _mm512_stream_pd((p), (__m512d)(v))
#  elif MG_X86 && MG_VBYTES == 32
#    define mg_nt_f32(p, v) _mm256_stream_ps((p), (__m256)(v))
#    define mg_nt_f64(p, v) _mm256_stream_pd((p), (__m256d)(v))
#  elif MG_X86
#    define mg_nt_f32(p, v) _mm_stream_ps((p), (__m128)(v))
#    define mg_nt_f64(p, v) _mm_stream_pd((p), (__m128d)(v))
#  else
#    define mg_nt_f32(p, v) mg_st_f32((p), (v))
#    define mg_nt_f64(p, v) mg_st_f64((p), (v))
#  endif

static inline double mg_hsum(mg_vd v) {
    double s = 0;
    for (int i = 0; i < MG_WD; i++) s += v[i];
    return s;
}
#endif /* MG_VEC */

#include "_norm_simd.h"
#include "_gemm_simd.h"
#include "_conv_simd.h"
#include "_elementwise_simd.h"

/* The build's vector widths, fixed here, inside the target (the macros above mean other widths
   outside it). */
enum { MG_BUILD_VBYTES = MG_VBYTES, MG_BUILD_NT_BYTES = MG_NT_BYTES };

#if MG_TARGETED
#  pragma GCC pop_options
#endif
/* ---------------------------------------------------- the build's target ends here */

#endif /* MINIGRAD_SIMD_H */
