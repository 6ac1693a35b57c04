# cython: language_level=3
"""The CPU kernels of ``_kernels``, their C primitives compiled for AVX-512.

AVX-512 (F, BW, VL, DQ): a float32 block of 16 values converts to eight doubles
per instruction, and the streaming stores write a whole 64-byte line at once.

Same sources as ``_kernels`` (the include lines below); only the target of the
primitives in ``_simd.h`` differs, and only with GCC on x86 (elsewhere
this is another baseline build). The module's initialisation and its Cython
code are baseline, and importing it on a processor without the instruction
set raises ImportError.
"""

cdef extern from *:
    """
    #define MG_SIMD_AVX512 1
    """

include "_common.pxi"
include "_batchnorm.pxi"
include "_groupnorm.pxi"
include "_gemm.pxi"
include "_conv.pxi"
include "_pool.pxi"
include "_optim.pxi"
include "_elementwise.pxi"
