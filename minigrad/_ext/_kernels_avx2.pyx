# cython: language_level=3
"""``_kernels`` with its C primitives compiled for AVX2+FMA (see ``_kernels``).

256-bit vectors: four doubles or eight floats an instruction. Importing it on a processor without
the instruction set raises ImportError.
"""

cdef extern from *:
    """
    #define MG_SIMD_AVX2 1
    """

include "_families.pxi"
