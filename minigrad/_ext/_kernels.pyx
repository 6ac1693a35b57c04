# cython: language_level=3
"""minigrad's CPU kernels, baseline x86-64 build (float32 and float64 from one source).

One file per kernel family (all included through ``_families.pxi``):

* ``_batchnorm.pxi``: per-channel normalization on an ``(N, C, S)`` view
  (``batch_norm_forward_train``, ``batch_norm_backward``,
  ``batch_norm_forward_eval``, ``channel_affine``);
* ``_groupnorm.pxi``: per-group normalization (``group_norm_forward``,
  ``group_norm_backward``: GroupNorm, LayerNorm, InstanceNorm);
* ``_gemm.pxi``: matrix products in minigrad's own thread team (``matmul``);
* ``_conv.pxi``: ``im2col``, ``col2im`` and the fused convolution
  (``conv2d_forward``, ``conv2d_backward_input``, ``conv2d_backward_weight``);
* ``_pool.pxi``: max, average and adaptive average pooling;
* ``_optim.pxi``: the fused SGD and Adam updates;
* ``_elementwise.pxi``: one-pass activations (ReLU forward and backward).

Their inner loops are the C primitives of ``_simd.h``; the shared helpers
and checks are in ``_common.pxi``; the thread budget and the tuning
thresholds in ``minigrad._ext._parallel``, one copy for every build.

The same sources are compiled three times: this baseline module, and
``_kernels_avx2`` / ``_kernels_avx512``, whose primitives (only they) target
AVX2+FMA / AVX-512; the CPU backend uses the widest one the processor runs.
A build the processor cannot run raises ImportError when imported; nothing
runs an instruction the processor lacks. Every entry point checks the
shapes, lengths and strides it relies on (a Python caller can pass anything).
"""

include "_families.pxi"
