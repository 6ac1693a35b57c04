"""The CPU backend's Cython kernels against the NumPy reference in base.py.

Random shapes, strides, paddings, both float dtypes, and non-contiguous
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
    h = draw(st.integers(max(1, kh - 2 * ph), 7))
    w = draw(st.integers(max(1, kw - 2 * pw), 7))
    dtype = draw(st.sampled_from(DTYPES))
    noncontig = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    if noncontig:
        # a transposed view: same values, different strides
        x = rng.standard_normal((n, c, w, h)).astype(dtype).transpose(0, 1, 3, 2)
    else:
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
    return x, (kh, kw, sh, sw, ph, pw), rng


@given(conv_case())
def test_im2col_col2im_match_reference(case):
    x, (kh, kw, sh, sw, ph, pw), rng = case
    cols = CPU.im2col(x, kh, kw, sh, sw, ph, pw)
    np.testing.assert_array_equal(cols, REF.im2col(x, kh, kw, sh, sw, ph, pw))
    g = rng.standard_normal(cols.shape).astype(x.dtype)
    np.testing.assert_allclose(CPU.col2im(g, x.shape, kh, kw, sh, sw, ph, pw),
                               REF.col2im(g, x.shape, kh, kw, sh, sw, ph, pw), **_tol(x.dtype))


@given(conv_case())
def test_col2im_is_the_adjoint_of_im2col(case):
    # <im2col(x), g> == <x, col2im(g)> for every x and g
    x, (kh, kw, sh, sw, ph, pw), rng = case
    x = x.astype(np.float64)
    cols = CPU.im2col(x, kh, kw, sh, sw, ph, pw)
    g = rng.standard_normal(cols.shape)
    lhs = float((cols * g).sum())
    rhs = float((x * CPU.col2im(g, x.shape, kh, kw, sh, sw, ph, pw)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


@given(conv_case(pool=True))
def test_max_pool_matches_reference(case):
    x, (kh, kw, sh, sw, ph, pw), rng = case
    y, arg = CPU.max_pool2d_forward(x, kh, kw, sh, sw, ph, pw)
    y_ref, arg_ref = REF.max_pool2d_forward(x, kh, kw, sh, sw, ph, pw)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(arg, arg_ref)
    g = rng.standard_normal(y.shape).astype(x.dtype)
    np.testing.assert_allclose(CPU.max_pool2d_backward(g, arg, x.shape),
                               REF.max_pool2d_backward(g, arg_ref, x.shape), **_tol(x.dtype))


@given(conv_case(pool=True), st.booleans())
def test_avg_pool_matches_reference(case, include_pad):
    x, (kh, kw, sh, sw, ph, pw), rng = case
    y = CPU.avg_pool2d_forward(x, kh, kw, sh, sw, ph, pw, include_pad)
    np.testing.assert_allclose(y, REF.avg_pool2d_forward(x, kh, kw, sh, sw, ph, pw, include_pad), **_tol(x.dtype))
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
