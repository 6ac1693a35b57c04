"""Every compiled kernel entry trusts nothing a Python caller passes (10.1's last line of defence).

The kernel modules are called directly, as a careless or hostile caller
would, with wrong lengths, shapes, geometries, dtypes, strides and indices:
each must raise ValueError or TypeError (a segfault here kills the test
process, which fails the run). Every build this processor runs is tried.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from minigrad.backends.base import Backend

BUILDS = []
for _name in ("_kernels", "_kernels_avx2", "_kernels_avx512"):
    try:
        BUILDS.append(pytest.param(importlib.import_module(f"minigrad._ext.{_name}"), id=_name))
    except ImportError:  # a build this processor cannot run
        pass

f32 = np.float32


def z(*shape, dtype=f32):
    return np.zeros(shape, dtype=dtype)


def o(*shape, dtype=f32):
    return np.ones(shape, dtype=dtype)


X = o(2, 3, 4)          # an (N, C, S) input with C = 3
X4 = o(2, 4, 6, 6)      # an (N, C, H, W) input with C = 4
I64 = np.int64

# (label, kernel name, args): each call must raise ValueError or TypeError
BAD = [
    # per-channel normalization: every vector's length against x's channels, outputs against x's shape
    ("bn train: 1-element weight", "batch_norm_forward_train", lambda: (X, o(1), None, 1e-5, z(2, 3, 4), z(3), z(3))),
    ("bn train: short bias", "batch_norm_forward_train", lambda: (X, o(3), o(2), 1e-5, z(2, 3, 4), z(3), z(3))),
    ("bn train: y too small", "batch_norm_forward_train", lambda: (X, None, None, 1e-5, z(1, 3, 4), z(3), z(3))),
    ("bn train: mean too short", "batch_norm_forward_train", lambda: (X, None, None, 1e-5, z(2, 3, 4), z(1), z(3))),
    ("bn train: var None", "batch_norm_forward_train", lambda: (X, None, None, 1e-5, z(2, 3, 4), z(3), None)),
    ("bn train: empty batch", "batch_norm_forward_train", lambda: (z(0, 3, 4), None, None, 1e-5, z(0, 3, 4), z(3),
                                                                    z(3))),
    ("bn train: mixed dtypes", "batch_norm_forward_train", lambda: (X, o(3, dtype=np.float64), None, 1e-5,
                                                                     z(2, 3, 4), z(3), z(3))),
    ("bn train: strided last axis", "batch_norm_forward_train", lambda: (o(2, 3, 8)[:, :, ::2], None, None, 1e-5,
                                                                          z(2, 3, 4), z(3), z(3))),
    ("bn backward: short invstd", "batch_norm_backward", lambda: (X, X, z(3), o(1), None, True, z(2, 3, 4), z(3),
                                                                   z(3))),
    ("bn backward: grad shape", "batch_norm_backward", lambda: (o(2, 3, 5), X, z(3), o(3), None, True, z(2, 3, 4),
                                                                 z(3), z(3))),
    ("bn backward: short dweight", "batch_norm_backward", lambda: (X, X, z(3), o(3), None, True, z(2, 3, 4), z(1),
                                                                    z(3))),
    ("bn backward: long weight", "batch_norm_backward", lambda: (X, X, z(3), o(3), o(9), True, z(2, 3, 4), z(3),
                                                                  z(3))),
    ("bn eval: short var", "batch_norm_forward_eval", lambda: (X, z(3), o(1), None, None, 1e-5, z(2, 3, 4))),
    ("bn eval: short weight", "batch_norm_forward_eval", lambda: (X, z(3), o(3), o(2), None, 1e-5, z(2, 3, 4))),
    ("channel_affine: short scale", "channel_affine", lambda: (X, o(2), o(3), z(2, 3, 4))),
    ("channel_affine: y shape", "channel_affine", lambda: (X, o(3), o(3), z(2, 3, 3))),
    # per-group normalization
    ("gn: groups not dividing C", "group_norm_forward", lambda: (X, None, None, 2, 1e-5, z(2, 3, 4), z(2, 2),
                                                                 z(2, 2))),
    ("gn: zero groups", "group_norm_forward", lambda: (X, None, None, 0, 1e-5, z(2, 3, 4), z(2, 0), z(2, 0))),
    ("gn: short weight", "group_norm_forward", lambda: (X, o(1), o(3), 3, 1e-5, z(2, 3, 4), z(2, 3), z(2, 3))),
    ("gn: mean shape", "group_norm_forward", lambda: (X, None, None, 3, 1e-5, z(2, 3, 4), z(1, 3), z(2, 3))),
    ("gn backward: invstd shape", "group_norm_backward", lambda: (X, X, z(2, 3), o(2, 1), None, 3, z(2, 3, 4), z(3),
                                                                   z(3))),
    ("gn backward: short dbias", "group_norm_backward", lambda: (X, X, z(2, 3), o(2, 3), None, 3, z(2, 3, 4), z(3),
                                                                  z(2))),
    # matrix products
    ("matmul: inner sizes", "matmul", lambda: (o(1, 2, 3), o(1, 4, 5), z(1, 2, 5))),
    ("matmul: out shape", "matmul", lambda: (o(1, 2, 3), o(1, 3, 5), z(1, 2, 4))),
    ("matmul: batch sizes", "matmul", lambda: (o(2, 2, 3), o(1, 3, 5), z(2, 2, 5))),
    ("matmul: strided out", "matmul", lambda: (o(1, 2, 3), o(1, 3, 5), z(1, 2, 10)[:, :, ::2])),
    # convolution
    ("im2col: cols shape", "im2col", lambda: (X4, z(2, 36, 15), 3, 3, 1, 1, 0, 0)),
    ("im2col: zero stride", "im2col", lambda: (X4, z(2, 36, 16), 3, 3, 0, 1, 0, 0)),
    ("im2col: negative padding", "im2col", lambda: (X4, z(2, 36, 16), 3, 3, 1, 1, -1, 0)),
    ("im2col: kernel larger than input", "im2col", lambda: (X4, z(2, 4 * 49, 1), 7, 7, 1, 1, 0, 0)),
    ("im2col: zero dilation", "im2col", lambda: (X4, z(2, 36, 16), 3, 3, 1, 1, 0, 0, 0, 1)),
    ("col2im: cols shape", "col2im", lambda: (o(2, 36, 17), z(2, 4, 6, 6), 3, 3, 1, 1, 0, 0)),
    ("conv: groups not dividing", "conv2d_forward", lambda: (X4, o(6, 2, 3, 3), None, z(2, 6, 4, 4), None, 1, 1, 0,
                                                             0, 1, 1, 3)),
    ("conv: weight channels", "conv2d_forward", lambda: (X4, o(6, 3, 3, 3), None, z(2, 6, 4, 4), None, 1, 1, 0, 0, 1,
                                                         1, 1)),
    ("conv: out shape", "conv2d_forward", lambda: (X4, o(6, 4, 3, 3), None, z(2, 6, 4, 5), None, 1, 1, 0, 0, 1, 1,
                                                   1)),
    ("conv: short bias", "conv2d_forward", lambda: (X4, o(6, 4, 3, 3), o(5), z(2, 6, 4, 4), None, 1, 1, 0, 0, 1, 1,
                                                    1)),
    ("conv: cols shape", "conv2d_forward", lambda: (X4, o(6, 4, 3, 3), None, z(2, 6, 4, 4), z(2, 36, 15), 1, 1, 0, 0,
                                                    1, 1, 1)),
    ("conv: zero groups", "conv2d_forward", lambda: (X4, o(6, 4, 3, 3), None, z(2, 6, 4, 4), None, 1, 1, 0, 0, 1, 1,
                                                     0)),
    ("conv backward input: grad shape", "conv2d_backward_input", lambda: (o(2, 6, 15), o(6, 4, 3, 3), z(2, 4, 6, 6),
                                                                          1, 1, 0, 0, 1, 1, 1)),
    ("conv backward weight: gw shape", "conv2d_backward_weight", lambda: (o(2, 6, 16), o(2, 36, 16), z(6, 35), None,
                                                                          1)),
    ("conv backward weight: cols images", "conv2d_backward_weight", lambda: (o(2, 6, 16), o(1, 36, 16), z(6, 36),
                                                                             None, 1)),
    ("conv backward weight: short gb", "conv2d_backward_weight", lambda: (o(2, 6, 16), o(2, 36, 16), z(6, 36), z(5),
                                                                          1)),
    # pooling
    ("max pool: padding over half the kernel", "max_pool2d_forward", lambda: (o(2, 6, 6), z(2, 4, 4),
                                                                              z(2, 4, 4, dtype=I64), 2, 2, 2, 2, 2, 2)),
    ("max pool: impossible output", "max_pool2d_forward", lambda: (o(2, 6, 6), z(2, 9, 9), z(2, 9, 9, dtype=I64), 2,
                                                                   2, 2, 2, 0, 0)),
    ("max pool: argmax shape", "max_pool2d_forward", lambda: (o(2, 6, 6), z(2, 3, 3), z(2, 3, 2, dtype=I64), 2, 2,
                                                              2, 2, 0, 0)),
    ("max pool backward: argmax out of range", "max_pool2d_backward",
     lambda: (o(2, 3, 3), np.full((2, 3, 3), 10**9, dtype=I64), z(2, 36))),
    ("max pool backward: negative argmax", "max_pool2d_backward", lambda: (o(2, 3, 3), np.full((2, 3, 3), -5, I64),
                                                                            z(2, 36))),
    ("max pool backward: dx planes", "max_pool2d_backward", lambda: (o(2, 3, 3), z(2, 3, 3, dtype=I64), z(1, 36))),
    ("avg pool: zero kernel", "avg_pool2d_forward", lambda: (o(2, 6, 6), z(2, 3, 3), 0, 2, 2, 2, 0, 0, True)),
    ("avg pool backward: impossible grad", "avg_pool2d_backward", lambda: (o(2, 7, 7), z(2, 6, 6), 2, 2, 2, 2, 0, 0,
                                                                            True)),
    ("adaptive: planes", "adaptive_avg_pool2d_forward", lambda: (o(2, 6, 6), z(3, 2, 2))),
    ("adaptive: empty input", "adaptive_avg_pool2d_forward", lambda: (o(2, 0, 6), z(2, 2, 2))),
    # optimizer updates
    ("sgd: short grad", "sgd_update", lambda: (o(4), o(3), o(4), 0.1, 0.9, 0.0, 0.0, False, False)),
    ("adam: short state", "adam_update", lambda: (o(4), o(4), o(4), o(2), 0.1, 0.9, 0.99, 1e-8, 0.0, 0.1, 0.01)),
]


@pytest.mark.parametrize("kernels", BUILDS)
@pytest.mark.parametrize("label,name,args", BAD, ids=[b[0] for b in BAD])
def test_bad_arguments_raise(kernels, label, name, args):
    with pytest.raises((ValueError, TypeError)):
        getattr(kernels, name)(*args())


@pytest.mark.parametrize("kernels", BUILDS)
def test_negative_strides_are_read_correctly(kernels):
    # a reversed view has negative strides: the kernels used to turn them into huge unsigned steps
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 5)).astype(f32)[::-1]
    y, mean, var = np.empty((6, 3, 5), f32), np.empty(3, f32), np.empty(3, f32)
    kernels.batch_norm_forward_train(x, None, None, 1e-5, y, mean, var)
    ey, em, ev = Backend("cpu").batch_norm_forward_train(np.ascontiguousarray(x), None, None, 1e-5)
    np.testing.assert_allclose(y, ey, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean, em, rtol=1e-5, atol=1e-6)
    a = rng.standard_normal((2, 4, 3)).astype(f32)[::-1, ::-1]
    b = rng.standard_normal((2, 3, 5)).astype(f32)[:, ::-1]
    out = np.empty((2, 4, 5), f32)
    kernels.matmul(a, b, out)
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)
