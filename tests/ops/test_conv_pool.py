"""conv2d, max_pool2d and avg_pool2d against direct NumPy loops."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigrad as mg
import minigrad.nn.functional as F
from minigrad.testing import gradcheck
from minigrad.testing.strategies import arrays


def _conv_reference(x, w, b, stride, pad):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh = (h + 2 * pad[0] - kh) // stride[0] + 1
    ow = (wd + 2 * pad[1] - kw) // stride[1] + 1
    out = np.zeros((n, o, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride[0] : i * stride[0] + kh, j * stride[1] : j * stride[1] + kw]
            out[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3]))
    return out + (b[None, :, None, None] if b is not None else 0)


@st.composite
def conv_case(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pad = (draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)))
    h = draw(st.integers(max(1, kh - 2 * pad[0]), 5))
    w = draw(st.integers(max(1, kw - 2 * pad[1]), 5))
    n, c, o = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 3))
    x = draw(arrays((n, c, h, w)))
    weight = draw(arrays((o, c, kh, kw)))
    bias = draw(arrays((o,))) if draw(st.booleans()) else None
    return x, weight, bias, stride, pad


@given(case=conv_case())
def test_conv2d(case, device):
    a, wa, ba, stride, pad = case
    x = mg.tensor(a, device=device, requires_grad=True)
    w = mg.tensor(wa, device=device, requires_grad=True)
    b = mg.tensor(ba, device=device, requires_grad=True) if ba is not None else None
    out = F.conv2d(x, w, b, stride, pad)
    np.testing.assert_allclose(out.detach().cpu().numpy(), _conv_reference(a, wa, ba, stride, pad),
                               rtol=1e-10, atol=1e-10)
    inputs = [x, w] + ([b] if b is not None else [])
    assert gradcheck(lambda *t: F.conv2d(*t, stride=stride, padding=pad), inputs)


def _pool_reference(x, k, s, p, op, count_include_pad=True):
    n, c, h, w = x.shape
    fill = -np.inf if op == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])), constant_values=fill)
    ones = np.pad(np.ones((h, w)), ((p[0], p[0]), (p[1], p[1])))
    oh, ow = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = xp[:, :, i * s[0] : i * s[0] + k[0], j * s[1] : j * s[1] + k[1]]
            if op == "max":
                out[:, :, i, j] = win.max(axis=(2, 3))
            else:
                cnt = k[0] * k[1] if count_include_pad else ones[i * s[0] : i * s[0] + k[0], j * s[1] : j * s[1] + k[1]].sum()
                out[:, :, i, j] = win.sum(axis=(2, 3)) / cnt
    return out


@st.composite
def pool_case(draw):
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    h, w = draw(st.integers(k[0], 6)), draw(st.integers(k[1], 6))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    # distinct values: a max pool is only differentiable without ties
    a = draw(st.permutations(range(n * c * h * w)))
    x = np.asarray(a, dtype=np.float64).reshape(n, c, h, w) * 0.37 - 3.0
    return x, k, s, p


@given(case=pool_case())
def test_max_pool2d(case, device):
    a, k, s, p = case
    x = mg.tensor(a, device=device, requires_grad=True)
    np.testing.assert_allclose(F.max_pool2d(x, k, s, p).detach().cpu().numpy(), _pool_reference(a, k, s, p, "max"))
    assert gradcheck(lambda t: F.max_pool2d(t, k, s, p), [x])


@given(case=pool_case(), include=st.booleans())
def test_avg_pool2d(case, include, device):
    a, k, s, p = case
    x = mg.tensor(a, device=device, requires_grad=True)
    np.testing.assert_allclose(F.avg_pool2d(x, k, s, p, count_include_pad=include).detach().cpu().numpy(),
                               _pool_reference(a, k, s, p, "avg", include), rtol=1e-12)
    assert gradcheck(lambda t: F.avg_pool2d(t, k, s, p, count_include_pad=include), [x])


def test_conv_and_pool_errors(device):
    x = mg.ones(1, 2, 4, 4, device=device)
    with pytest.raises(ValueError, match="channels"):
        F.conv2d(x, mg.ones(3, 1, 3, 3, device=device))
    with pytest.raises(ValueError, match="\\(N, C, H, W\\)"):
        F.conv2d(mg.ones(2, 4, 4, device=device), mg.ones(3, 2, 3, 3, device=device))
    with pytest.raises(ValueError, match="larger than the padded input"):
        F.conv2d(x, mg.ones(3, 2, 5, 5, device=device))
    with pytest.raises(ValueError, match="padding"):
        F.max_pool2d(x, 2, padding=2)
    with pytest.raises(TypeError, match="kernel_size"):
        F.max_pool2d(x, 2.5)


def test_conv2d_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    a, w, b = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)
    out = F.conv2d(mg.tensor(a), mg.tensor(w), mg.tensor(b), stride=(2, 1), padding=(1, 0))
    ref = torch.nn.functional.conv2d(torch.tensor(a), torch.tensor(w), torch.tensor(b), stride=(2, 1), padding=(1, 0))
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-10, atol=1e-12)
