# cython: language_level=3
"""``_kernels`` with its C primitives compiled for AVX-512 (F, BW, VL, DQ) (see ``_kernels``).

512-bit vectors; streaming stores write a whole 64-byte line. Importing it on a processor without
the instruction set raises ImportError.
"""

cdef extern from *:
    """
    #define MG_SIMD_AVX512 1
    """

include "_families.pxi"
