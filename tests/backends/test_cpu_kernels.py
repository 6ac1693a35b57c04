"""The CPU backend's Cython kernels against the NumPy reference in base.py.

Random shapes, strides, paddings, dilations, groups, ceil_mode, both float dtypes, and non-contiguous
inputs (the wrappers must give the same result as for a contiguous copy).
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigrad.backends import get_backend
from minigrad.backends.base import Backend
from minigrad.device import Device

CPU = get_backend("cpu")
REF = Backend(Device("cpu"))
DTYPES = [np.float32, np.float64]


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


@st.composite
def conv_case(draw, pool=False):
    n = draw(st.integers(1, 3))
    c = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph = draw(st.integers(0, kh // 2 if pool else kh))
    pw = draw(st.integers(0, kw // 2 if pool else kw))
    dh, dw = (1, 1) if pool else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 7))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 7))
    dtype = draw(st.sampled_from(DTYPES))
    noncontig = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    if noncontig:
        # a transposed view: same values, different strides
        x = rng.standard_normal((n, c, w, h)).astype(dtype).transpose(0, 1, 3, 2)
    else:
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
    if pool:
        return x, (kh, kw, sh, sw, ph, pw), rng
    return x, (kh, kw, sh, sw, ph, pw, dh, dw), rng


@given(conv_case())
def test_im2col_col2im_match_reference(case):
    x, geom, rng = case
    cols = CPU.im2col(x, *geom)
    np.testing.assert_array_equal(cols, REF.im2col(x, *geom))
    g = rng.standard_normal(cols.shape).astype(x.dtype)
    np.testing.assert_allclose(CPU.col2im(g, x.shape, *geom), REF.col2im(g, x.shape, *geom), **_tol(x.dtype))


@given(conv_case())
def test_col2im_is_the_adjoint_of_im2col(case):
    # <im2col(x), g> == <x, col2im(g)> for every x and g
    x, geom, rng = case
    x = x.astype(np.float64)
    cols = CPU.im2col(x, *geom)
    g = rng.standard_normal(cols.shape)
    lhs = float((cols * g).sum())
    rhs = float((x * CPU.col2im(g, x.shape, *geom)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


@given(conv_case(), st.integers(1, 3), st.integers(1, 2), st.booleans())
def test_conv2d_matches_reference(case, groups, og, with_bias):
    # the fused CPU convolution (unfold and product per image, in the thread team) against im2col + matmul
    x, (kh, kw, sh, sw, ph, pw, dh, dw), rng = case
    x = np.concatenate([x] * groups, axis=1)  # C divisible by groups
    n, c = x.shape[:2]
    w = rng.standard_normal((og * groups, c // groups, kh, kw)).astype(x.dtype)
    b = rng.standard_normal(og * groups).astype(x.dtype) if with_bias else None
    geom = ((sh, sw), (ph, pw), (dh, dw), groups)
    y, saved = CPU.conv2d_forward(x, w, b, *geom)
    y_ref, saved_ref = REF.conv2d_forward(x, w, b, *geom)
    np.testing.assert_allclose(y, y_ref, **_tol(x.dtype))
    g = rng.standard_normal(y.shape).astype(x.dtype)
    for got, want in zip(CPU.conv2d_backward(g, x.shape, w, saved, *geom, (True, True, with_bias)),
                         REF.conv2d_backward(g, x.shape, w, saved_ref, *geom, (True, True, with_bias))):
        if want is None:
            assert got is None
        else:
            scale = max(1.0, float(np.abs(want).max()))
            np.testing.assert_allclose(got, want, rtol=_tol(x.dtype)["rtol"], atol=_tol(x.dtype)["atol"] * scale)


@given(st.integers(0, 3), st.integers(0, 40), st.integers(0, 40), st.integers(0, 300), st.booleans(), st.booleans(),
       st.sampled_from(DTYPES))
def test_matmul_matches_numpy(batch, m, n, k, ta, tb, dtype):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    a = rng.standard_normal((batch, k, m) if ta else (batch, m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)  # broadcast over the batch
    a = a.swapaxes(-1, -2) if ta else a
    b = b.T if tb else b
    got = CPU.matmul(a, b)
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    assert got.shape == want.shape and got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=1e-4 if dtype == np.float32 else 1e-12,
                               atol=(1e-4 if dtype == np.float32 else 1e-12) * max(1, k))


@pytest.mark.parametrize("shape_a,shape_b", [((5,), (5,)), ((5,), (5, 3)), ((2, 5), (5,)), ((4, 2, 5), (5,)),
                                             ((3, 1, 2, 5), (4, 5, 6))])
def test_matmul_follows_numpy_rules(shape_a, shape_b):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    np.testing.assert_allclose(CPU.matmul(a, b), np.matmul(a, b), rtol=1e-12, atol=1e-12)


def test_products_are_identical_for_every_thread_count():
    # honest claims: each element of a product is summed in one order, however the work is split
    from minigrad._ext import _parallel

    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((64, 700)).astype(np.float32), rng.standard_normal((700, 90)).astype(np.float32)
    x, w = rng.standard_normal((8, 4, 12, 12)).astype(np.float32), rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    old = (_parallel.get_num_threads(), _parallel.parallel_min_size(), _parallel.adaptive())
    results = []
    try:
        _parallel.set_parallel_min_size(0)
        _parallel.set_adaptive(False)
        for threads in (1, 2, 3):
            _parallel.set_num_threads(threads)
            y, cols = CPU.conv2d_forward(x, w, None, (1, 1), (1, 1), (1, 1), 1)
            grads = CPU.conv2d_backward(np.ones_like(y), x.shape, w, cols, (1, 1), (1, 1), (1, 1), 1,
                                        (True, True, True))
            results.append([CPU.matmul(a, b), y, *grads])
    finally:
        _parallel.set_num_threads(old[0])
        _parallel.set_parallel_min_size(old[1])
        _parallel.set_adaptive(old[2])
    for other in results[1:]:
        for first, again in zip(results[0], other):
            np.testing.assert_array_equal(first, again)


@given(conv_case(pool=True), st.booleans())
def test_max_pool_matches_reference(case, ceil_mode):
    x, (kh, kw, sh, sw, ph, pw), rng = case
    y, arg = CPU.max_pool2d_forward(x, kh, kw, sh, sw, ph, pw, ceil_mode)
    y_ref, arg_ref = REF.max_pool2d_forward(x, kh, kw, sh, sw, ph, pw, ceil_mode)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(arg, arg_ref)
    g = rng.standard_normal(y.shape).astype(x.dtype)
    np.testing.assert_allclose(CPU.max_pool2d_backward(g, arg, x.shape),
                               REF.max_pool2d_backward(g, arg_ref, x.shape), **_tol(x.dtype))


@given(conv_case(pool=True), st.booleans(), st.booleans())
def test_avg_pool_matches_reference(case, include_pad, ceil_mode):
    # (the backward takes its output size, ceil_mode's or not, from the gradient)
    x, (kh, kw, sh, sw, ph, pw), rng = case
    y = CPU.avg_pool2d_forward(x, kh, kw, sh, sw, ph, pw, include_pad, ceil_mode)
    np.testing.assert_allclose(y, REF.avg_pool2d_forward(x, kh, kw, sh, sw, ph, pw, include_pad, ceil_mode),
                               **_tol(x.dtype))
    g = rng.standard_normal(y.shape).astype(x.dtype)
    np.testing.assert_allclose(CPU.avg_pool2d_backward(g, x.shape, kh, kw, sh, sw, ph, pw, include_pad),
                               REF.avg_pool2d_backward(g, x.shape, kh, kw, sh, sw, ph, pw, include_pad),
                               **_tol(x.dtype))


def test_max_pool_windows_hanging_over_a_narrow_image():
    # kernel wider than image + padding on one side: some window columns are never inside
    x = np.array([[[[0.125], [-0.25]]]], dtype=np.float32)  # H=2, W=1
    for _ in range(20):  # an out-of-bounds read would show up as garbage in some call
        y, arg = CPU.max_pool2d_forward(x, 1, 3, 1, 2, 0, 1)
        np.testing.assert_array_equal(y, [[[[0.125], [-0.25]]]])
        np.testing.assert_array_equal(arg, [[[[0], [1]]]])


def test_max_pool_propagates_nan():
    x = np.zeros((1, 1, 2, 2), dtype=np.float32)
    x[0, 0, 1, 0] = np.nan
    y, arg = CPU.max_pool2d_forward(x, 2, 2, 2, 2, 0, 0)
    assert np.isnan(y[0, 0, 0, 0]) and arg[0, 0, 0, 0] == 2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum,dampening,nesterov,wd", [
    (0.0, 0.0, False, 0.0), (0.0, 0.0, False, 0.1), (0.9, 0.0, False, 0.0),
    (0.9, 0.1, False, 0.01), (0.9, 0.0, True, 0.01),
])
def test_sgd_update_matches_reference(dtype, momentum, dampening, nesterov, wd):
    rng = np.random.default_rng(0)
    p = rng.standard_normal((5, 7)).astype(dtype)
    p_ref = p.copy()
    buf = buf_ref = None
    for _ in range(3):
        g = rng.standard_normal((5, 7)).astype(dtype)
        buf = CPU.sgd_update(p, g, buf, 0.1, momentum, dampening, wd, nesterov)
        buf_ref = REF.sgd_update(p_ref, g, buf_ref, 0.1, momentum, dampening, wd, nesterov)
        np.testing.assert_allclose(p, p_ref, **_tol(dtype))
    if momentum:
        np.testing.assert_allclose(buf, buf_ref, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_update_matches_reference(dtype):
    rng = np.random.default_rng(1)
    p = rng.standard_normal(11).astype(dtype)
    p_ref = p.copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    m_ref, v_ref = np.zeros_like(p), np.zeros_like(p)
    for step in range(1, 4):
        g = rng.standard_normal(11).astype(dtype)
        CPU.adam_update(p, g, m, v, step, 1e-2, 0.9, 0.999, 1e-8, 0.01)
        REF.adam_update(p_ref, g, m_ref, v_ref, step, 1e-2, 0.9, 0.999, 1e-8, 0.01)
    np.testing.assert_allclose(p, p_ref, **_tol(dtype))
    np.testing.assert_allclose(v, v_ref, **_tol(dtype))


def test_non_float_inputs_fall_back_to_the_reference():
    x = np.arange(16, dtype=np.int64).reshape(1, 1, 4, 4)
    y, _ = CPU.max_pool2d_forward(x, 2, 2, 2, 2, 0, 0)
    np.testing.assert_array_equal(y, [[[[5, 7], [13, 15]]]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_wide_rows_keep_nan_and_first_maximum(dtype):
    # the vector path (kernel 2 wide, stride 2: lanes of outputs side by side) against the reference,
    # with NaNs, ties (ReLU zeros) and a width that leaves a partial last group of lanes
    rng = np.random.default_rng(3)
    x = np.maximum(rng.standard_normal((3, 2, 9, 37)), 0).astype(dtype)
    x[0, 0, 2, 5] = x[1, 1, 7, 30] = x[2, 0, 0, 0] = np.nan
    for kh, sh, ph, ceil_mode in ((2, 2, 0, False), (3, 2, 1, True), (1, 1, 0, False), (2, 1, 1, True)):
        y, arg = CPU.max_pool2d_forward(x, kh, 2, sh, 2, ph, 0, ceil_mode)
        y_ref, arg_ref = REF.max_pool2d_forward(x, kh, 2, sh, 2, ph, 0, ceil_mode)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(arg, arg_ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_matches_reference(dtype):
    x = np.random.default_rng(4).standard_normal((5, 300)).astype(dtype)
    x[0, :3] = [np.nan, -0.0, 0.0]
    y = CPU.relu(x)
    np.testing.assert_array_equal(y, REF.relu(x))
    g = np.random.default_rng(5).standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(CPU.relu_backward(g, y), REF.relu_backward(g, y))
    np.testing.assert_array_equal(CPU.relu(x.T), REF.relu(x.T))  # any layout


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_is_accurate_everywhere(dtype):
    # the vectorized float32 exp: within 3 ulp of the exact value over the whole range, the subnormal
    # tail below -87.3 too; inf, -inf, ±0 and NaN handled; float64 through the C library
    x = np.concatenate([np.linspace(-120, 120, 200_001), [np.nan, np.inf, -np.inf, -0.0, 0.0, -87.3, -87.31]])
    x = x.astype(dtype)
    y = CPU.sigmoid(x)
    # the reference in extended precision where the platform has it: NumPy's own float64 exp is ~1 ulp off,
    # and by a different amount on each SIMD build (AVX-512 machines use another implementation)
    xl = x.astype(np.longdouble)
    with np.errstate(all="ignore"):
        e = np.exp(-np.abs(xl))
        exact = np.where(xl >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float64)
    finite = np.isfinite(exact)
    tiny = np.finfo(dtype).smallest_normal
    ulp = np.spacing(np.maximum(exact[finite], tiny).astype(dtype)).astype(np.float64)
    # float64: the C library's exp (under 1 ulp), then 1 + e and the quotient each round: 2 ulp at most
    assert np.max(np.abs(y[finite] - exact[finite]) / ulp) <= (3 if dtype == np.float32 else 2)
    np.testing.assert_array_equal(y[-6:-2], np.array([1, 0, 0.5, 0.5], dtype=dtype))
    assert np.isnan(y[-7])
    np.testing.assert_allclose(CPU.sigmoid(x[:-7]), REF.sigmoid(x[:-7]), rtol=1e-6 if dtype == np.float32 else 1e-14,
                               atol=1e-7 if dtype == np.float32 else 1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_does_not_depend_on_the_split(dtype):
    # every element goes through the same vector code (the last partial vector padded), so any slice,
    # any layout and any thread count give the same bits
    from minigrad._ext import _parallel

    x = np.random.default_rng(6).standard_normal(1_000_003).astype(dtype) * 30
    whole = CPU.sigmoid(x)
    for lo, hi in ((0, 1), (3, 10), (5, 22), (1, 1_000_003)):
        np.testing.assert_array_equal(CPU.sigmoid(x[lo:hi].copy()), whole[lo:hi])
    np.testing.assert_array_equal(CPU.sigmoid(x[::2]), whole[::2])
    before = _parallel.get_num_threads()
    try:
        _parallel.set_num_threads(1)
        np.testing.assert_array_equal(CPU.sigmoid(x), whole)
    finally:
        _parallel.set_num_threads(before)
    g = np.random.default_rng(7).standard_normal(x.shape).astype(dtype)
    np.testing.assert_allclose(CPU.sigmoid_backward(g, whole), REF.sigmoid_backward(g, whole),
                               rtol=1e-6 if dtype == np.float32 else 1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_update_stats_rounds_as_the_reference(dtype):
    rng = np.random.default_rng(7)
    stats = [rng.standard_normal(37).astype(dtype) for _ in range(2)]
    stats[1] = np.abs(stats[1])
    run_cpu = [np.ones(37, dtype), np.full(37, 2.0, dtype)]
    run_ref = [a.copy() for a in run_cpu]
    for _ in range(5):
        CPU.batch_norm_update_stats(*run_cpu, *stats, 0.1, 60 / 59)
        REF.batch_norm_update_stats(*run_ref, *stats, 0.1, 60 / 59)
    for got, want in zip(run_cpu, run_ref):
        np.testing.assert_array_equal(got, want)  # the same bits: no fused multiply-add in the kernel
    with pytest.raises(ValueError, match="var"):
        CPU.batch_norm_update_stats(run_cpu[0], run_cpu[1], stats[0], stats[1][:5], 0.1, 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_cross_entropy_kernels_match_the_reference(dtype, ignore_index):
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((9, 5)) * 4).astype(dtype)
    x[3, 1] = 80  # a large logit: the shift by the row's maximum keeps exp finite
    t = rng.integers(0, 5, 9).astype(np.int64)
    t[0] = 2
    total, count, probs = CPU.cross_entropy_forward(x, t, ignore_index)
    total_ref, count_ref, probs_ref = REF.cross_entropy_forward(x, t, ignore_index)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    assert count == int(count_ref) == int((t != ignore_index).sum())
    np.testing.assert_allclose(total, float(total_ref), **tol)
    np.testing.assert_allclose(probs, probs_ref, **tol)
    np.testing.assert_allclose(CPU.cross_entropy_backward(probs, t, ignore_index, 0.25),
                               REF.cross_entropy_backward(probs_ref, t, ignore_index, 0.25), **tol)


def test_cross_entropy_kernels_refuse_bad_targets():
    from minigrad.backends import cpu

    k = cpu._kernels()
    x = np.zeros((3, 4), np.float32)
    probs = np.empty_like(x)
    with pytest.raises(IndexError, match="target 4 is out of range for 4 classes"):
        k.cross_entropy_forward(x, np.array([0, 4, 1], np.int64), -100, probs)
    with pytest.raises(IndexError, match="target -1"):
        k.cross_entropy_backward(probs, np.array([0, -1, 1], np.int64), -100, 1.0, np.empty_like(x))
    with pytest.raises(ValueError, match="target \\(2,\\)"):
        k.cross_entropy_forward(x, np.array([0, 1], np.int64), -100, probs)
