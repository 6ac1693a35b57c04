# cython: language_level=3
"""The CPU kernels of ``_kernels``, their C primitives compiled for AVX2+FMA.

256-bit vectors convert and accumulate four doubles per instruction (what the
float32-into-double reductions are bound by), and the matrix products multiply
and add eight floats per instruction.

Same sources as ``_kernels`` (the include lines below); only the target of the
primitives in ``_simd.h`` differs, and only with GCC on x86 (elsewhere
this is another baseline build). The module's initialisation and its Cython
code are baseline, and importing it on a processor without the instruction
set raises ImportError.
"""

cdef extern from *:
    """
    #define MG_SIMD_AVX2 1
    """

include "_common.pxi"
include "_batchnorm.pxi"
include "_groupnorm.pxi"
include "_gemm.pxi"
include "_conv.pxi"
include "_pool.pxi"
include "_optim.pxi"
include "_elementwise.pxi"
