# Every kernel family, in the order they build on each other: included once by each build of the CPU
# kernels (_kernels.pyx, _kernels_avx2.pyx, _kernels_avx512.pyx), which differ only in the target of
# the C primitives.
include "_common.pxi"
include "_batchnorm.pxi"
include "_groupnorm.pxi"
include "_gemm.pxi"
include "_conv.pxi"
include "_pool.pxi"
include "_optim.pxi"
include "_elementwise.pxi"
