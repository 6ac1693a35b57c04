"""The CUDA kernels against the NumPy reference of ``Backend``.

Every test runs twice: on the emulated GPU (the real kernel sources compiled
with g++ and ``emu/cuda_emu.h``, driven by the real ``CUDABackend`` host code;
needs only g++) and on a real GPU (skipped without one). Shapes include
channel counts below the number of blocks, S = 1 (BatchNorm1d), odd sizes
that leave vector tails, the layout switch at S = 32 and misaligned views
that take the scalar paths. The normalization kernels also run on float16
and bfloat16 data (``NORM_DTYPES``; bfloat16 needs ml_dtypes), with
float32 vectors (mixed precision) in the batch norm tests and half ones
(widened by the backend) in the group norm tests; half outputs must be
within an ulp or so of the float64 reference, float32 ones as for float32.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigrad._dtypes import accumulation_dtype, bfloat16, is_half

F32, F64, F16 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)
DTYPES = [pytest.param(F32, id="f32"), pytest.param(F64, id="f64")]
HALF = [pytest.param(F16, id="f16"),
        pytest.param(bfloat16, id="bf16",
                     marks=pytest.mark.skipif(bfloat16 is None, reason="bfloat16 needs the ml_dtypes package"))]
NORM_DTYPES = DTYPES + HALF


@pytest.fixture(params=["emulated", pytest.param("gpu", marks=pytest.mark.cuda)])
def be(request):
    """A CUDA backend: the emulated one or the real GPU."""
    return request.getfixturevalue("emu" if request.param == "emulated" else "gpu")


def dev(be, a):
    return be.from_numpy(np.ascontiguousarray(a))


def host(be, a):
    return None if a is None else be.to_numpy(a)


def tol(dtype):
    # float64: a different summation order only; float32: a few ulps of
    # float32 results computed from double statistics; a half type: one
    # rounding of a float32 result (an ulp: 2^-10 for float16, 2^-7 for bfloat16).
    if is_half(dtype):
        eps = 2.0 ** -10 if dtype == F16 else 2.0 ** -7
        return dict(rtol=eps, atol=eps)
    return dict(rtol=1e-11, atol=1e-11) if dtype == F64 else dict(rtol=2e-5, atol=2e-5)


def close(actual, expected, dtype, **kw):
    """``actual`` equals ``expected`` (same dtype and shape) to the tolerance of ``dtype``, or of the
    result's own dtype when that is a half type (a half input's float32 statistics keep float32's)."""
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape
    limits = {**tol(expected.dtype if is_half(expected.dtype) else dtype), **kw}
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64), **limits)


def vec_dtype(dtype):
    """The per-channel vectors of the batch norm tests: float32 for a half input (mixed precision)."""
    return accumulation_dtype(dtype) if is_half(dtype) else dtype


def launched(be):
    """Names of the kernels launched since the fixture was set up (emulation only)."""
    return [name for name, _, _ in getattr(be.xp, "launches", [])]


# ----------------------------------------------------------- batch norm
BN_SHAPES = [
    (4, 3, 50),     # spatial layout, odd plane (vector tail in every plane)
    (8, 3, 100),    # spatial, C=3 < number of blocks: channels split into parts
    (3, 2, 64),     # spatial, S % 4 == 0: 16-byte loads
    (2, 5, 32),     # exactly at the layout switch
    (1, 1, 33),     # a single plane
    (7, 6, 31),     # column layout just below the switch
    (16, 5, 1),     # BatchNorm1d (S = 1), odd C
    (64, 40, 1),    # BatchNorm1d with more columns than one tile, row splits
    (5, 4, 3),      # small odd everything
    (2, 1, 1),      # two values in total
]


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("dtype", NORM_DTYPES)
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_forward_train(be, ref, shape, dtype, affine):
    rng = np.random.default_rng(hash(shape) % 2**32)
    # A large common offset: a float32 E[x²]-E[x]² or a float32 centring would fail the tolerance.
    x = (rng.standard_normal(shape) * 2.0 + 30.0).astype(dtype)
    c = shape[1]
    w = rng.standard_normal(c).astype(vec_dtype(dtype)) if affine else None
    b = rng.standard_normal(c).astype(vec_dtype(dtype)) if affine else None
    y, mean, var = be.batch_norm_forward_train(dev(be, x), None if w is None else dev(be, w),
                                               None if b is None else dev(be, b), 1e-5)
    yr, mr, vr = ref.batch_norm_forward_train(x, w, b, 1e-5)
    close(host(be, y), yr, dtype)
    close(host(be, mean), mr, dtype)
    close(host(be, var), vr, dtype)


def test_batch_norm_layouts_and_channel_split(emu, ref):
    """The plane layout splits few channels over several blocks; small S uses the column layout."""
    emu.launcher.threads = 32
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 100))
    emu.batch_norm_forward_train(dev(emu, x), None, None, 1e-5)
    (name, grid, _), = [l for l in emu.xp.launches if l[0].startswith("bn_stats_spatial")]
    assert grid[0] > 3, "the 3 channels should be split over more than 3 blocks"
    emu.xp.launches.clear()
    x1 = rng.standard_normal((64, 40, 1))
    y, _, _ = emu.batch_norm_forward_train(dev(emu, x1), None, None, 1e-5)
    (name, grid, block), = [l for l in emu.xp.launches if l[0].startswith("bn_stats_columns")]
    assert grid[1] > 1 and block[0] == 32, (grid, block)
    close(host(emu, y), ref.batch_norm_forward_train(x1, None, None, 1e-5)[0], F64)


def test_batch_norm_variance_is_not_sum_of_squares(be):
    """Mean 1e4, std 1e-2 in float64: E[x²]-E[x]² would lose about 8 digits."""
    rng = np.random.default_rng(1)
    x = 1e4 + 1e-2 * rng.standard_normal((16, 2, 40))
    _, _, var = be.batch_norm_forward_train(dev(be, x), None, None, 0.0)
    expected = x.transpose(1, 0, 2).reshape(2, -1).var(axis=1)
    np.testing.assert_allclose(host(be, var), expected, rtol=1e-9)


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("dtype", NORM_DTYPES)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_backward(be, ref, shape, dtype, training):
    rng = np.random.default_rng(hash(shape) % 2**32 + 7)
    x = (rng.standard_normal(shape) + 3.0).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    c = shape[1]
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 2)).astype(vec_dtype(dtype))
    invstd = (1.0 / np.sqrt(x64.var(axis=(0, 2)) + 1e-5)).astype(vec_dtype(dtype))
    w = rng.standard_normal(c).astype(vec_dtype(dtype))
    dx, dw, db = be.batch_norm_backward(dev(be, g), dev(be, x), dev(be, mean), dev(be, invstd), dev(be, w), training)
    dxr, dwr, dbr = ref.batch_norm_backward(g, x, mean, invstd, w, training)
    scale = max(1.0, float(np.abs(dxr).max()))
    close(host(be, dx), dxr, dtype, atol=tol(dtype)["atol"] * scale)
    close(host(be, dw), dwr, dtype, atol=tol(dtype)["atol"] * np.sqrt(x.size))
    close(host(be, db), dbr, dtype, atol=tol(dtype)["atol"] * np.sqrt(x.size))


def test_batch_norm_backward_without_weight(be, ref):
    rng = np.random.default_rng(3)
    x, g = rng.standard_normal((6, 4, 40)), rng.standard_normal((6, 4, 40))
    mean, invstd = x.mean(axis=(0, 2)), 1.0 / np.sqrt(x.var(axis=(0, 2)) + 1e-5)
    out = be.batch_norm_backward(dev(be, g), dev(be, x), dev(be, mean), dev(be, invstd), None, True)
    for a, r in zip(out, ref.batch_norm_backward(g, x, mean, invstd, None, True)):
        close(host(be, a), r, F64)


@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 3, 64), (10, 4, 1), (1, 1, 1)])
@pytest.mark.parametrize("dtype", NORM_DTYPES)
def test_channel_affine(be, ref, shape, dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype(dtype)
    scale = rng.standard_normal(shape[1]).astype(vec_dtype(dtype))
    shift = rng.standard_normal(shape[1]).astype(vec_dtype(dtype))
    y = be.channel_affine(dev(be, x), dev(be, scale), dev(be, shift))
    expected = ref.channel_affine(x.astype(scale.dtype), scale, shift).astype(dtype)  # one rounding of float32
    close(host(be, y), expected, dtype, **({} if is_half(dtype) else dict(rtol=1e-6 if dtype == F32 else 1e-15)))


@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 3, 64), (10, 4, 1)])
@pytest.mark.parametrize("dtype", NORM_DTYPES)
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_forward_eval(be, ref, shape, dtype, affine):
    rng = np.random.default_rng(17)
    c = shape[1]
    x = rng.standard_normal(shape).astype(dtype)
    vd = vec_dtype(dtype)
    mean, var = rng.standard_normal(c).astype(vd), rng.uniform(0.2, 3.0, c).astype(vd)
    w = rng.standard_normal(c).astype(vd) if affine else None
    b = rng.standard_normal(c).astype(vd) if affine else None
    y = be.batch_norm_forward_eval(*(None if a is None else dev(be, a) for a in (x, mean, var, w, b)), 1e-3)
    assert all(name.startswith("channel_affine") for name in launched(be)), launched(be)  # one multiply-add pass
    close(host(be, y), ref.batch_norm_forward_eval(x, mean, var, w, b, 1e-3), dtype)


@given(n=st.integers(1, 9), c=st.integers(1, 9), s=st.sampled_from([1, 2, 3, 5, 31, 32, 33, 67]),
       dtype=st.sampled_from([F32, F64]))
def test_batch_norm_property(_emu_session, ref, n, c, s, dtype):
    """Random (N, C, S): forward and backward agree with the reference (emulated GPU)."""
    be = _emu_session
    rng = np.random.default_rng(n * 1000 + c * 100 + s)
    x = rng.standard_normal((n, c, s)).astype(dtype)
    g = rng.standard_normal((n, c, s)).astype(dtype)
    y, mean, var = be.batch_norm_forward_train(dev(be, x), None, None, 1e-3)
    yr, mr, vr = ref.batch_norm_forward_train(x, None, None, 1e-3)
    close(host(be, y), yr, dtype, atol=1e-4 if dtype == F32 else 1e-10)
    invstd = (1.0 / np.sqrt(vr.astype(np.float64) + 1e-3)).astype(dtype)
    dx, dw, db = be.batch_norm_backward(dev(be, g), dev(be, x), mean, dev(be, invstd), None, True)
    dxr, dwr, dbr = ref.batch_norm_backward(g, x, mr, invstd, None, True)
    close(host(be, dx), dxr, dtype, atol=1e-4 if dtype == F32 else 1e-9)
    close(host(be, db), dbr, dtype, atol=1e-4 if dtype == F32 else 1e-9)


# ---------------------------------------------------------- group norm
# (N, C, S, groups): LayerNorm's (R, K, 1) view, GroupNorm on (N, C), odd planes and vector tails,
# instance norm (groups = C), the params layout switch at S = 32, rows longer than a block's sweep.
GN_CASES = [(3, 7, 1, 1), (4, 6, 1, 3), (2, 6, 5, 2), (3, 4, 31, 4), (2, 4, 32, 2), (2, 3, 50, 1),
            (5, 2, 33, 2), (1, 1, 1, 1), (2, 3, 300, 3)]


@pytest.mark.parametrize("case", GN_CASES)
@pytest.mark.parametrize("dtype", NORM_DTYPES)
@pytest.mark.parametrize("affine", ["both", "none", "weight"])
def test_group_norm_forward(be, ref, case, dtype, affine):
    n, c, s, groups = case
    rng = np.random.default_rng(hash(case) % 2**32)
    # A large common offset: a float32 E[x²]-E[x]² or a float32 centring would fail the tolerance.
    x = (rng.standard_normal((n, c, s)) * 2.0 + 30.0).astype(dtype)
    w = rng.standard_normal(c).astype(dtype) if affine != "none" else None
    b = rng.standard_normal(c).astype(dtype) if affine == "both" else None
    out = be.group_norm_forward(dev(be, x), None if w is None else dev(be, w), None if b is None else dev(be, b),
                                groups, 1e-5)
    for a, r in zip(out, ref.group_norm_forward(x, w, b, groups, 1e-5)):
        close(host(be, a), r, dtype)


@pytest.mark.parametrize("case", GN_CASES)
@pytest.mark.parametrize("dtype", NORM_DTYPES)
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_backward(be, ref, case, dtype, affine):
    n, c, s, groups = case
    rng = np.random.default_rng(hash(case) % 2**32 + 3)
    x = (rng.standard_normal((n, c, s)) + 3.0).astype(dtype)
    g = rng.standard_normal((n, c, s)).astype(dtype)
    rows = x.astype(np.float64).reshape(n, groups, -1)
    mean = rows.mean(axis=2).astype(accumulation_dtype(dtype))  # statistics: float32 for half data
    invstd = (1.0 / np.sqrt(rows.var(axis=2) + 1e-5)).astype(accumulation_dtype(dtype))
    w = rng.standard_normal(c).astype(dtype) if affine else None
    got = be.group_norm_backward(dev(be, g), dev(be, x), dev(be, mean), dev(be, invstd),
                                 None if w is None else dev(be, w), groups)
    expected = ref.group_norm_backward(g, x, mean, invstd, w, groups)
    for label, a, r in zip(("dx", "dweight", "dbias"), got, expected):
        scale = max(1.0, float(np.abs(r).max()))
        close(host(be, a), r, dtype, atol=tol(dtype)["atol"] * scale * (1 if label == "dx" else np.sqrt(x.size)))


def test_group_norm_params_use_the_split_channel_reductions(emu, ref):
    """dweight/dbias are BatchNorm's two-stage channel sums: a few channels are split over several
    blocks from S = 32 on (not one block per channel), 32 channels per block below it."""
    rng = np.random.default_rng(15)
    for shape, stage1 in [((8, 2, 64), "bn_backward_reduce_spatial"), ((3, 40, 2), "bn_backward_reduce_columns")]:
        emu.xp.launches.clear()
        x, g = rng.standard_normal(shape), rng.standard_normal(shape)
        _, mean, invstd = ref.group_norm_forward(x, None, None, 2, 1e-5)
        _, dw, db = emu.group_norm_backward(dev(emu, g), dev(emu, x), dev(emu, mean), dev(emu, invstd), None, 2)
        names = [n.split("<")[0] for n in launched(emu)]
        assert names == ["group_norm_backward", stage1, "bn_backward_finalize"], names
        (grid, block), = [(gr, bl) for n, gr, bl in emu.xp.launches if n.startswith(stage1)]
        if stage1.endswith("spatial"):
            assert grid[0] > shape[1], f"{shape[1]} channels on {grid[0]} blocks: not split"
        else:
            assert grid[0] == 3 and block[0] == 32, (grid, block)  # 40·2 = 80 columns: 3 tiles of 32
        _, dwr, dbr = ref.group_norm_backward(g, x, mean, invstd, None, 2)
        close(host(emu, dw), dwr, F64)
        close(host(emu, db), dbr, F64)


def test_group_norm_variance_is_not_sum_of_squares(be):
    """Mean 1e4, std 1e-2 in float64: E[x²]-E[x]² would lose about 8 digits."""
    rng = np.random.default_rng(16)
    x = 1e4 + 1e-2 * rng.standard_normal((3, 4, 40))
    _, _, invstd = be.group_norm_forward(dev(be, x), None, None, 2, 0.0)
    expected = x.reshape(3, 2, -1).var(axis=2)
    np.testing.assert_allclose(1.0 / host(be, invstd) ** 2, expected, rtol=1e-9)


def test_group_norm_checks_before_launch(be):
    x = dev(be, np.ones((2, 6, 4)))
    with pytest.raises(ValueError, match="divisor"):
        be.group_norm_forward(x, None, None, 4, 1e-5)
    with pytest.raises(ValueError, match="weight must have shape"):
        be.group_norm_forward(x, dev(be, np.ones(4)), None, 2, 1e-5)
    with pytest.raises(ValueError, match="mean must have shape"):
        be.group_norm_backward(x, x, dev(be, np.ones(2)), dev(be, np.ones((2, 2))), None, 2)


@given(n=st.integers(1, 5), cg=st.integers(1, 4), groups=st.integers(1, 3), s=st.sampled_from([1, 2, 7, 31, 32, 45]),
       dtype=st.sampled_from([F32, F64]))
def test_group_norm_property(_emu_session, ref, n, cg, groups, s, dtype):
    """Random (N, C, S, groups): forward and backward agree with the reference (emulated GPU)."""
    be = _emu_session
    c = cg * groups
    rng = np.random.default_rng(n * 1000 + c * 100 + s)
    x = rng.standard_normal((n, c, s)).astype(dtype)
    g = rng.standard_normal((n, c, s)).astype(dtype)
    w, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    y, mean, invstd = be.group_norm_forward(dev(be, x), dev(be, w), dev(be, b), groups, 1e-3)
    yr, mr, ir = ref.group_norm_forward(x, w, b, groups, 1e-3)
    close(host(be, y), yr, dtype, atol=1e-4 if dtype == F32 else 1e-10)
    got = be.group_norm_backward(dev(be, g), dev(be, x), dev(be, mr), dev(be, ir), dev(be, w), groups)
    for a, r in zip(got, ref.group_norm_backward(g, x, mr, ir, w, groups)):
        close(host(be, a), r, dtype, atol=1e-4 if dtype == F32 else 1e-9)


# ------------------------------------------------------- im2col / col2im
GEOMETRIES = [
    # (x shape, kh, kw, sh, sw, ph, pw)
    ((2, 3, 5, 6), 3, 3, 1, 1, 1, 1),
    ((1, 2, 7, 7), 2, 2, 2, 2, 0, 0),
    ((2, 1, 9, 8), 3, 2, 2, 3, 1, 0),
    ((3, 4, 4, 4), 1, 1, 1, 1, 0, 0),
    ((1, 1, 5, 5), 5, 5, 1, 1, 2, 2),
]


@pytest.mark.parametrize("geom", GEOMETRIES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_col2im(be, ref, geom, dtype):
    shape, *k = geom
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(dtype)
    cols = be.im2col(dev(be, x), *k)
    np.testing.assert_array_equal(host(be, cols), ref.im2col(x, *k))
    dcols = rng.standard_normal(cols.shape).astype(dtype)
    back = be.col2im(dev(be, dcols), shape, *k)
    # Same additions in the same order as the reference: equal up to FMA-free rounding.
    close(host(be, back), np.ascontiguousarray(ref.col2im(dcols, shape, *k)), dtype, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------- pooling
POOLS = [
    ((2, 3, 6, 6), 2, 2, 2, 2, 0, 0),
    ((1, 2, 7, 5), 3, 3, 2, 2, 1, 1),  # overlapping windows, padding
    ((2, 1, 5, 5), 3, 2, 1, 1, 1, 0),
    ((1, 1, 4, 4), 4, 4, 1, 1, 0, 0),
]


@pytest.mark.parametrize("geom", POOLS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d(be, ref, geom, dtype):
    shape, *k = geom
    rng = np.random.default_rng(8)
    x = rng.integers(-3, 4, size=shape).astype(dtype)  # many ties: the first maximum must win
    y, arg = be.max_pool2d_forward(dev(be, x), *k)
    yr, argr = ref.max_pool2d_forward(x, *k)
    np.testing.assert_array_equal(host(be, y), yr)
    np.testing.assert_array_equal(host(be, arg), argr)
    assert host(be, arg).dtype == np.int64
    g = rng.standard_normal(yr.shape).astype(dtype)
    dx = be.max_pool2d_backward(dev(be, g), arg, shape)
    close(host(be, dx), ref.max_pool2d_backward(g, argr, shape), dtype, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("geom", POOLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("include_pad", [True, False])
def test_avg_pool2d(be, ref, geom, dtype, include_pad):
    shape, *k = geom
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape).astype(dtype)
    y = be.avg_pool2d_forward(dev(be, x), *k, include_pad)
    close(host(be, y), ref.avg_pool2d_forward(x, *k, include_pad), dtype, rtol=1e-6, atol=1e-6)
    g = rng.standard_normal(y.shape).astype(dtype)
    dx = be.avg_pool2d_backward(dev(be, g), shape, *k, include_pad)
    close(host(be, dx), ref.avg_pool2d_backward(g, shape, *k, include_pad), dtype, rtol=1e-6, atol=1e-6)


def _nan_inf_planes(dtype):
    """(2, 2, 6, 6) planes with NaN in some windows (two in one), windows and a whole plane of -inf, and +inf."""
    x = (np.arange(2 * 2 * 6 * 6).reshape(2, 2, 6, 6) % 7 - 3).astype(dtype)
    x[0, 0, 0, 1] = np.nan
    x[0, 0, 2:4, 2:4] = -np.inf  # one whole window of the 2x2/2 pooling
    x[0, 1, 1, 1] = np.inf
    x[0, 1, 4, 4] = x[0, 1, 5, 5] = np.nan  # two NaNs in one window: the last one wins
    x[1, 0] = -np.inf  # every window of the plane
    x[1, 1, 3, 0], x[1, 1, 3, 2] = np.nan, np.inf
    return x


NAN_POOLS = [(2, 2, 2, 2, 0, 0), (3, 3, 1, 1, 1, 1), (3, 3, 2, 2, 1, 1), (2, 3, 2, 1, 1, 1)]


@pytest.mark.parametrize("k", NAN_POOLS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_nan_and_inf_windows(be, ref, k, dtype):
    """NaN wins (as on the CPU and in PyTorch) and an all -inf window picks a pixel inside itself."""
    from minigrad.backends import get_backend

    x = _nan_inf_planes(dtype)
    y, arg = be.max_pool2d_forward(dev(be, x), *k)
    y, arg = host(be, y), host(be, arg)
    for other in (ref, get_backend("cpu")):  # the NumPy reference and the Cython kernels agree
        yo, argo = other.max_pool2d_forward(x, *k)
        np.testing.assert_array_equal(y, yo)
        np.testing.assert_array_equal(arg, argo)
    kh, kw, sh, sw, ph, pw = k
    oh, ow = np.meshgrid(np.arange(y.shape[2]), np.arange(y.shape[3]), indexing="ij")
    rows, cols = arg // 6, arg % 6
    assert np.all((rows >= oh * sh - ph) & (rows < oh * sh - ph + kh) & (cols >= ow * sw - pw) & (cols < ow * sw - pw + kw))
    g = np.ones(y.shape, dtype)
    dx = host(be, be.max_pool2d_backward(dev(be, g), dev(be, arg), x.shape))
    np.testing.assert_array_equal(dx, ref.max_pool2d_backward(g, arg, x.shape))


@pytest.mark.parametrize("k", NAN_POOLS, ids=str)
def test_reference_max_pool2d_picks_as_pytorch(ref, k):
    torch = pytest.importorskip("torch")
    x = _nan_inf_planes(np.float64)
    y, arg = ref.max_pool2d_forward(x, *k)
    ty, ti = torch.nn.functional.max_pool2d(torch.from_numpy(x), k[:2], k[2:4], k[4:], return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(arg, ti.numpy())


# ------------------------------------------------------- elementwise ops
SIZES = [1, 3, 4, 5, 17, 1001]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid(be, ref, n, dtype):
    x = np.linspace(-60, 60, n).astype(dtype)
    close(host(be, be.sigmoid(dev(be, x))), ref.sigmoid(x.copy()), dtype, rtol=1e-6, atol=1e-7)


SGD_CASES = [
    dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False),
    dict(momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False),
    dict(momentum=0.9, dampening=0.1, weight_decay=1e-2, nesterov=False),
    dict(momentum=0.8, dampening=0.0, weight_decay=1e-3, nesterov=True),
]


@pytest.mark.parametrize("case", SGD_CASES)
@pytest.mark.parametrize("n", [5, 64])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_update(be, ref, case, n, dtype):
    rng = np.random.default_rng(10)
    p = rng.standard_normal(n).astype(dtype)
    p_ref, p_dev = p.copy(), dev(be, p)
    buf_ref = buf_dev = None
    for _ in range(3):  # first step (buffer created) and later steps
        g = rng.standard_normal(n).astype(dtype)
        buf_ref = ref.sgd_update(p_ref, g, buf_ref, 0.1, **case)
        buf_dev = be.sgd_update(p_dev, dev(be, g), buf_dev, 0.1, **case)
        close(host(be, p_dev), p_ref, dtype, rtol=1e-6, atol=1e-6)
        assert (buf_dev is None) == (buf_ref is None)
        if buf_ref is not None:
            close(host(be, buf_dev), buf_ref, dtype, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("n", [7, 64])
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_update(be, ref, weight_decay, n, dtype):
    rng = np.random.default_rng(11)
    p = rng.standard_normal(n).astype(dtype)
    state_ref = [p.copy(), np.zeros(n, dtype), np.zeros(n, dtype)]
    state_dev = [dev(be, a) for a in state_ref]
    for step in range(1, 4):
        g = rng.standard_normal(n).astype(dtype)
        ref.adam_update(state_ref[0], g, state_ref[1], state_ref[2], step, 1e-2, 0.9, 0.999, 1e-8, weight_decay)
        be.adam_update(state_dev[0], dev(be, g), state_dev[1], state_dev[2], step, 1e-2, 0.9, 0.999, 1e-8,
                       weight_decay)
        for a, r in zip(state_dev, state_ref):
            close(host(be, a), r, dtype, rtol=1e-5, atol=1e-6)


# --------------------------------------------- layouts, fallbacks, errors
def _misaligned(be, a):
    """A C-contiguous device view whose data pointer is one element off a 16-byte boundary."""
    flat = np.concatenate([np.zeros(1, a.dtype), a.reshape(-1)])
    return dev(be, flat)[1:].reshape(a.shape)


@pytest.mark.parametrize("dtype", NORM_DTYPES)
def test_misaligned_views_take_the_scalar_paths(be, ref, dtype):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 2, 40)).astype(dtype)
    y, mean, var = be.batch_norm_forward_train(_misaligned(be, x), None, None, 1e-5)
    close(host(be, y), ref.batch_norm_forward_train(x, None, None, 1e-5)[0], dtype)
    r = rng.standard_normal((3, 12, 1)).astype(dtype)  # LayerNorm's (R, K, 1) view: the per-row kernels
    close(host(be, be.group_norm_forward(_misaligned(be, r), None, None, 1, 1e-5)[0]),
          ref.group_norm_forward(r, None, None, 1, 1e-5)[0], dtype)
    s = rng.standard_normal(9).astype(dtype)
    close(host(be, be.sigmoid(_misaligned(be, s))), ref.sigmoid(s.copy()), dtype, rtol=1e-6, atol=1e-7)


def test_non_contiguous_inputs_are_made_contiguous(be, ref):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((5, 3, 4))
    xt = dev(be, x.transpose(2, 1, 0).copy()).transpose(2, 1, 0)  # same values, not C-contiguous
    assert not xt.flags.c_contiguous
    close(host(be, be.batch_norm_forward_train(xt, None, None, 1e-5)[0]),
          ref.batch_norm_forward_train(x, None, None, 1e-5)[0], F64)


def test_other_dtypes_fall_back_to_the_reference(be, ref):
    x16 = np.linspace(-3, 3, 10).astype(np.float16)
    np.testing.assert_allclose(host(be, be.sigmoid(dev(be, x16))), ref.sigmoid(x16.copy()), rtol=1e-3)
    xh = np.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4).astype(np.float16)
    y, arg = be.max_pool2d_forward(dev(be, xh), 2, 2, 2, 2, 0, 0)
    np.testing.assert_array_equal(host(be, y), ref.max_pool2d_forward(xh, 2, 2, 2, 2, 0, 0)[0])


def test_a_dtype_mismatch_raises_as_on_the_cpu(be):
    """A float64 per-channel vector for a float32 input: the CPU backend's TypeError, no silent fallback."""
    from minigrad.backends import get_backend

    a32, a64 = np.ones((2, 3, 4), np.float32), np.ones(3, np.float64)
    message = "vector of dtype float64 for an input of dtype float32"
    with pytest.raises(TypeError, match=message):
        get_backend("cpu").channel_affine(a32, a64, a64)
    with pytest.raises(TypeError, match=message):
        be.channel_affine(dev(be, a32), dev(be, a64), dev(be, a64))
    with pytest.raises(TypeError, match=message):
        be.batch_norm_forward_train(dev(be, a32), dev(be, a64), None, 1e-5)
    assert launched(be) == []


def test_half_inputs_take_float32_or_their_own_vectors(be, ref):
    """A float16 input's vectors may be float32 (mixed precision) or float16 (widened for the kernel),
    never another dtype; the results are the same for both."""
    x = np.random.default_rng(22).standard_normal((4, 3, 5)).astype(F16)
    w32 = np.linspace(0.5, 2.0, 3).astype(F32)
    got = [host(be, a) for a in be.batch_norm_forward_train(dev(be, x), dev(be, w32), None, 1e-5)]
    same = [host(be, a) for a in be.batch_norm_forward_train(dev(be, x), dev(be, w32.astype(F16)), None, 1e-5)]
    for a, b, r in zip(got, same, ref.batch_norm_forward_train(x, w32, None, 1e-5)):
        np.testing.assert_array_equal(a, b)  # 0.5, 1.25, 2.0 are exact in float16
        close(a, r, F16)
    assert [a.dtype for a in got] == [F16, F32, F32]
    with pytest.raises(TypeError, match="vector of dtype float64 for an input of dtype float16"):
        be.batch_norm_forward_train(dev(be, x), dev(be, w32.astype(F64)), None, 1e-5)


def test_shapes_are_checked_before_launch(be):
    x = dev(be, np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="weight must have shape"):
        be.batch_norm_forward_train(x, dev(be, np.ones(4)), None, 1e-5)
    with pytest.raises(ValueError, match=r"\(N, C, S\)"):
        be.batch_norm_forward_train(dev(be, np.ones((2, 3))), None, None, 1e-5)
    with pytest.raises(ValueError, match="at least one value per channel"):
        be.batch_norm_forward_train(dev(be, np.ones((0, 3, 4))), None, None, 1e-5)
    with pytest.raises(ValueError, match="grad must have shape"):
        be.batch_norm_backward(dev(be, np.ones((2, 3, 5))), x, dev(be, np.ones(3)), dev(be, np.ones(3)), None, True)
    with pytest.raises(ValueError, match="cols must have shape"):
        be.col2im(dev(be, np.ones((1, 4, 5))), (1, 1, 4, 4), 2, 2, 1, 1, 0, 0)
    with pytest.raises(ValueError, match="does not fit"):
        be.im2col(dev(be, np.ones((1, 1, 2, 2))), 3, 3, 1, 1, 0, 0)


def test_host_arrays_are_refused(emu):
    class NotAnArray:
        dtype = np.dtype(np.float32)

    with pytest.raises(TypeError, match="expected arrays on cuda:0"):
        emu.sigmoid(NotAnArray())


def test_empty_inputs_launch_nothing(emu):
    y, m, v = emu.batch_norm_forward_train(dev(emu, np.ones((2, 0, 3))), None, None, 1e-5)
    assert y.shape == (2, 0, 3) and m.shape == (0,)
    assert emu.sigmoid(dev(emu, np.ones(0))).shape == (0,)
    dx, dw, db = emu.batch_norm_backward(*(dev(emu, np.ones((0, 2, 3))) for _ in range(2)),
                                         dev(emu, np.ones(2)), dev(emu, np.ones(2)), None, True)
    np.testing.assert_array_equal(host(emu, dw), [0, 0])
    assert launched(emu) == []


@pytest.mark.parametrize("order", [0, 1], ids=["forward", "reverse"])
def test_kernels_under_other_thread_schedules(emu_factory, ref, order):
    """A missing __syncthreads would show as a wrong result under one of the schedules."""
    be = emu_factory(threads=64, order=order)
    rng = np.random.default_rng(14)
    for shape in [(4, 3, 70), (40, 9, 1)]:
        x, g = rng.standard_normal(shape), rng.standard_normal(shape)
        y, mean, var = be.batch_norm_forward_train(dev(be, x), None, None, 1e-5)
        yr, mr, vr = ref.batch_norm_forward_train(x, None, None, 1e-5)
        close(host(be, y), yr, F64)
        invstd = 1.0 / np.sqrt(vr + 1e-5)
        dx = be.batch_norm_backward(dev(be, g), dev(be, x), mean, dev(be, invstd), None, True)[0]
        close(host(be, dx), ref.batch_norm_backward(g, x, mr, invstd, None, True)[0], F64)
    r = rng.standard_normal((6, 300, 1))  # LayerNorm's (R, K, 1) view: one row per block slice
    close(host(be, be.group_norm_forward(dev(be, r), None, None, 1, 1e-5)[0]),
          ref.group_norm_forward(r, None, None, 1, 1e-5)[0], F64)
    for shape in [(3, 4, 70), (5, 40, 1)]:
        x, g = rng.standard_normal(shape), rng.standard_normal(shape)
        w = rng.standard_normal(shape[1])
        y, mean, invstd = be.group_norm_forward(dev(be, x), dev(be, w), None, 2, 1e-5)
        yr, mr, ir = ref.group_norm_forward(x, w, None, 2, 1e-5)
        close(host(be, y), yr, F64)
        for a, r in zip(be.group_norm_backward(dev(be, g), dev(be, x), mean, invstd, dev(be, w), 2),
                        ref.group_norm_backward(g, x, mr, ir, w, 2)):
            close(host(be, a), r, F64)


def test_kernels_with_the_default_launch_settings(emu_factory, ref):
    """The launch settings a GPU gets (256-thread blocks and the block shapes derived from them), on
    sizes that give every thread of those blocks work: the emulation runs them as it runs small ones."""
    from minigrad.backends.cuda_launch import Launcher

    be = emu_factory(threads=None)
    assert be.launcher.threads == Launcher.threads == 256
    rng = np.random.default_rng(21)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    x_sp, x_col, x_gn, x_ln, x_img, v = f32(4, 3, 1000), f32(600, 40, 1), f32(2, 4, 600), f32(64, 300, 1), \
        f32(2, 3, 20, 20), f32(5000)
    w_gn = f32(4)
    for x in (x_sp, x_col):
        for a, r in zip(be.batch_norm_forward_train(dev(be, x), None, None, 1e-5),
                        ref.batch_norm_forward_train(x, None, None, 1e-5)):
            close(host(be, a), r, F32)
        _, mean, var = ref.batch_norm_forward_train(x, None, None, 1e-5)
        invstd, g = (1 / np.sqrt(var + 1e-5)).astype(np.float32), f32(*x.shape)
        for a, r in zip(be.batch_norm_backward(dev(be, g), dev(be, x), dev(be, mean), dev(be, invstd), None, True),
                        ref.batch_norm_backward(g, x, mean, invstd, None, True)):
            close(host(be, a), r, F32, atol=1e-3)
    for x, groups, w in ((x_gn, 2, w_gn), (x_ln, 1, None)):
        out, expected = be.group_norm_forward(dev(be, x), w if w is None else dev(be, w), None, groups, 1e-5), \
            ref.group_norm_forward(x, w, None, groups, 1e-5)
        for a, r in zip(out, expected):
            close(host(be, a), r, F32)
        g = f32(*x.shape)
        for a, r in zip(be.group_norm_backward(dev(be, g), dev(be, x), out[1], out[2], w if w is None else dev(be, w),
                                               groups),
                        ref.group_norm_backward(g, x, expected[1], expected[2], w, groups)):
            close(host(be, a), r, F32, atol=1e-3)
    y, arg = be.max_pool2d_forward(dev(be, x_img), 3, 3, 1, 1, 1, 1)
    np.testing.assert_array_equal(host(be, arg), ref.max_pool2d_forward(x_img, 3, 3, 1, 1, 1, 1)[1])
    np.testing.assert_array_equal(host(be, be.im2col(dev(be, x_img), 3, 3, 1, 1, 1, 1)),
                                  ref.im2col(x_img, 3, 3, 1, 1, 1, 1))
    close(host(be, be.sigmoid(dev(be, v))), ref.sigmoid(v.copy()), F32, rtol=1e-6, atol=1e-7)
    blocks = {name.split("<")[0]: b[0] * b[1] * b[2] for name, _, b in be.xp.launches}
    for name in ("bn_stats_spatial", "bn_stats_columns", "channel_affine", "group_norm_forward", "max_pool2d_forward",
                 "sigmoid"):
        assert blocks[name] == 256, blocks


def test_every_kernel_instantiation_is_exercised(emu_factory):
    """One call of every wrapper per dtype launches every name expression of every module."""
    from minigrad.backends.cuda_launch import KERNEL_FILES, name_expressions

    be = emu_factory(threads=32)
    for dtype in [p.values[0] for p in NORM_DTYPES if p.values[0] is not None]:
        r = np.random.default_rng(0)
        x3s, x31 = dev(be, r.standard_normal((2, 2, 40)).astype(dtype)), dev(be, r.standard_normal((4, 3, 1)).astype(dtype))
        for x3 in (x3s, x31):
            c = x3.shape[1]
            one = dev(be, np.ones(c, dtype))
            _, mean, _ = be.batch_norm_forward_train(x3, one, one, 1e-5)
            be.batch_norm_backward(x3, x3, mean, one, one, True)
            be.channel_affine(x3, one, one)
        for x3 in (x3s, x31):  # params kernel: one channel per block (S = 40), 32 per block (S = 1)
            w = dev(be, np.ones(x3.shape[1], dtype))
            _, mean, invstd = be.group_norm_forward(x3, w, w, 1, 1e-5)
            be.group_norm_backward(x3, x3, mean, invstd, w, 1)
        if is_half(dtype):  # the other kernel files are float/double only
            continue
        x4 = dev(be, r.standard_normal((1, 2, 4, 4)).astype(dtype))
        cols = be.im2col(x4, 2, 2, 1, 1, 0, 0)
        be.col2im(cols, x4.shape, 2, 2, 1, 1, 0, 0)
        y, arg = be.max_pool2d_forward(x4, 2, 2, 2, 2, 0, 0)
        be.max_pool2d_backward(y, arg, x4.shape)
        y = be.avg_pool2d_forward(x4, 2, 2, 2, 2, 0, 0)
        be.avg_pool2d_backward(y, x4.shape, 2, 2, 2, 2, 0, 0)
        v = dev(be, np.ones(5, dtype))
        be.sigmoid(v)
        be.sgd_update(v, v.copy(), None, 0.1, 0.9, 0.0, 0.0, False)
        be.adam_update(v, v.copy(), v.copy(), v.copy(), 1, 0.1, 0.9, 0.99, 1e-8, 0.0)
    every = {n for f in KERNEL_FILES for n in name_expressions(f)}
    assert set(launched(be)) == every, every ^ set(launched(be))
