# cython: language_level=3
"""The normalization kernels of ``_norm``, compiled for AVX2 and FMA.

Same source (``_norm.pyx`` is included below); only the target differs.
The portable build stays baseline x86-64 (no ``-march=native``), and the
CPU backend imports this module instead of ``_norm`` when
``_norm.cpu_has_avx2_fma()`` says the processor has AVX2 and FMA: 256-bit
vectors convert and accumulate four doubles per instruction, which is what
the float32-into-double reductions are bound by. On compilers without GCC's
target pragma (or off x86) this is simply a second baseline build.

Never import it on a processor without AVX2: every function in it, its
module initialisation included, may contain AVX2 instructions.
"""

cdef extern from *:
    """
    #if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
    #pragma GCC target("avx2,fma")
    #define MINIGRAD_NORM_SIMD "avx2"
    #endif
    """

include "_norm.pyx"
