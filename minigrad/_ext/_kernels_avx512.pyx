# cython: language_level=3
"""The normalization kernels of ``_norm``, compiled for AVX-512 (F, BW, VL, DQ).

Same source (``_norm.pyx`` is included below); only the target differs:
the vector loops of ``_norm_simd.h`` become 512 bits wide (a float32 block
of 16 values converts to eight doubles per instruction, and the streaming
stores write a whole 64-byte line at once). The CPU backend imports this
module when ``_norm.cpu_has_avx512()`` says the processor and OS support
it, else ``_norm_avx2``, else the baseline ``_norm``. On compilers without
GCC's target pragma (or off x86) this is simply another baseline build.

Never import it on a processor without AVX-512: every function in it, its
module initialisation included, may contain AVX-512 instructions.
"""

cdef extern from *:
    """
    #if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
    #pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
    #define MINIGRAD_NORM_SIMD "avx512"
    #endif
    """

include "_norm.pyx"
