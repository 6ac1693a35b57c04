"""conv2d, max_pool2d, avg_pool2d and adaptive_avg_pool2d against direct NumPy loops, finite differences
and (where installed) PyTorch: dilation, groups, padding="same"/"valid", ceil_mode, empty batches."""

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
def pool_case(draw, max_k=3, max_side=6):
    k = (draw(st.integers(1, max_k)), draw(st.integers(1, max_k)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    h, w = draw(st.integers(k[0], max_side)), draw(st.integers(k[1], max_side))
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


# ------------------------------------------------ 13.4: PyTorch's convolution and pooling options
def _torch():
    return pytest.importorskip("torch")


@st.composite
def conv_options_case(draw):
    groups = draw(st.sampled_from([1, 2, 3]))
    cg, og = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 3)))
    padding = draw(st.sampled_from(["same", "valid", 0, 1, (1, 2)]))
    stride = (1, 1) if padding == "same" else (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    eh, ew = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    h, w = draw(st.integers(eh, eh + 4)), draw(st.integers(ew, ew + 4))
    n = draw(st.integers(1, 2))
    x = draw(arrays((n, cg * groups, h, w)))
    weight = draw(arrays((og * groups, cg, kh, kw)))
    bias = draw(arrays((og * groups,))) if draw(st.booleans()) else None
    return x, weight, bias, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


@pytest.mark.filterwarnings("ignore:Using padding=.same.")
@given(case=conv_options_case())
def test_conv2d_options_match_torch(case, device):
    torch = _torch()
    a, wa, ba, kw = case
    x = mg.tensor(a, device=device, requires_grad=True)
    w = mg.tensor(wa, device=device, requires_grad=True)
    b = mg.tensor(ba, device=device, requires_grad=True) if ba is not None else None
    out = F.conv2d(x, w, b, **kw)
    tx, tw = torch.tensor(a, requires_grad=True), torch.tensor(wa, requires_grad=True)
    tb = torch.tensor(ba, requires_grad=True) if ba is not None else None
    ref = torch.nn.functional.conv2d(tx, tw, tb, **kw)
    assert out.shape == tuple(ref.shape)
    np.testing.assert_allclose(out.detach().cpu().numpy(), ref.detach().numpy(), rtol=1e-10, atol=1e-10)
    g = np.random.default_rng(0).standard_normal(ref.shape)
    out.backward(mg.tensor(g, device=device))
    ref.backward(torch.tensor(g))
    for mine, theirs in [(x, tx), (w, tw)] + ([(b, tb)] if b is not None else []):
        np.testing.assert_allclose(mine.grad.cpu().numpy(), theirs.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_conv2d_options_finite_differences(device):
    rng = np.random.default_rng(5)
    x = mg.tensor(rng.standard_normal((2, 4, 7, 6)), device=device, requires_grad=True)
    w = mg.tensor(rng.standard_normal((6, 2, 2, 3)), device=device, requires_grad=True)
    b = mg.tensor(rng.standard_normal(6), device=device, requires_grad=True)
    for kw in (dict(padding="same", dilation=(2, 1), groups=2), dict(stride=2, padding=1, dilation=2, groups=2)):
        assert gradcheck(lambda *t: F.conv2d(*t, **kw), [x, w, b])


@pytest.mark.parametrize("n,o", [(0, 3), (2, 0), (0, 0)])
def test_conv2d_empty_batch_or_channels(n, o, device):
    # 10.13: PyTorch returns empty results (it used to fail inside NumPy's reshape)
    x = mg.ones(n, 2, 5, 5, device=device, requires_grad=True)
    w = mg.ones(o, 2, 3, 3, device=device, requires_grad=True)
    b = mg.ones(o, device=device, requires_grad=True)
    y = F.conv2d(x, w, b, padding=1)
    assert y.shape == (n, o, 5, 5)
    y.sum().backward()
    assert x.grad.shape == x.shape and w.grad.shape == w.shape and b.grad.shape == b.shape
    assert float(np.abs(w.grad.cpu().numpy()).sum()) == 0 and float(np.abs(x.grad.cpu().numpy()).sum()) == 0


def test_conv2d_option_errors(device):
    x = mg.ones(1, 4, 6, 6, device=device)
    with pytest.raises(ValueError, match="strided"):
        F.conv2d(x, mg.ones(2, 4, 3, 3, device=device), stride=2, padding="same")
    with pytest.raises(ValueError, match="groups"):
        F.conv2d(x, mg.ones(3, 2, 3, 3, device=device), groups=2)
    with pytest.raises(ValueError, match="groups"):
        F.conv2d(x, mg.ones(2, 4, 3, 3, device=device), groups=0)
    with pytest.raises(ValueError, match="channels"):
        F.conv2d(x, mg.ones(4, 4, 3, 3, device=device), groups=2)
    with pytest.raises(ValueError, match="padding"):
        F.conv2d(x, mg.ones(2, 4, 3, 3, device=device), padding="full")
    with pytest.raises(ValueError, match="dilated"):
        F.conv2d(x, mg.ones(2, 4, 3, 3, device=device), dilation=3)
    with pytest.raises(NotImplementedError, match="padding_mode"):
        mg.nn.Conv2d(4, 2, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="divisible by groups"):
        mg.nn.Conv2d(4, 3, 3, groups=2)


@given(case=pool_case(max_k=4, max_side=9), ceil_mode=st.booleans(), include=st.booleans())
def test_pooling_ceil_mode_matches_torch(case, ceil_mode, include, device):
    torch = _torch()
    a, k, s, p = case
    tx = torch.tensor(a, requires_grad=True)
    for fn, tfn, extra in ((F.max_pool2d, torch.nn.functional.max_pool2d, {}),
                           (F.avg_pool2d, torch.nn.functional.avg_pool2d, dict(count_include_pad=include))):
        x = mg.tensor(a, device=device, requires_grad=True)
        out = fn(x, k, s, p, ceil_mode=ceil_mode, **extra)
        ref = tfn(tx, k, s, p, ceil_mode=ceil_mode, **extra)
        assert out.shape == tuple(ref.shape), (fn.__name__, out.shape, ref.shape)
        np.testing.assert_allclose(out.detach().cpu().numpy(), ref.detach().numpy(), rtol=1e-12, atol=1e-12)
        g = np.random.default_rng(1).standard_normal(ref.shape)
        out.backward(mg.tensor(g, device=device))
        tx.grad = None
        ref.backward(torch.tensor(g))
        np.testing.assert_allclose(x.grad.cpu().numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_pooling_ceil_mode_finite_differences(device):
    a = np.random.default_rng(2).permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6) * 0.1
    x = mg.tensor(a, device=device, requires_grad=True)
    assert gradcheck(lambda t: F.max_pool2d(t, 3, 2, 1, ceil_mode=True), [x])
    assert gradcheck(lambda t: F.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False), [x])
    assert F.max_pool2d(x, 2, ceil_mode=True).shape == (2, 3, 4, 3)


@pytest.mark.parametrize("size", [1, 2, 3, (4, 5), (7, None), (5, 3)])
def test_adaptive_avg_pool2d_matches_torch(size, device):
    torch = _torch()
    a = np.random.default_rng(4).standard_normal((2, 3, 7, 9))
    x = mg.tensor(a, device=device, requires_grad=True)
    tx = torch.tensor(a, requires_grad=True)
    out, ref = F.adaptive_avg_pool2d(x, size), torch.nn.functional.adaptive_avg_pool2d(tx, size)
    assert out.shape == tuple(ref.shape)
    np.testing.assert_allclose(out.detach().cpu().numpy(), ref.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = np.random.default_rng(5).standard_normal(ref.shape)
    out.backward(mg.tensor(g, device=device))
    ref.backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad.cpu().numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert mg.nn.AdaptiveAvgPool2d(size)(x).shape == out.shape


def test_adaptive_avg_pool2d_finite_differences_and_3d(device):
    x = mg.tensor(np.random.default_rng(6).standard_normal((2, 5, 7)), device=device, requires_grad=True)
    assert gradcheck(lambda t: F.adaptive_avg_pool2d(t, (3, 4)), [x])
    assert F.adaptive_avg_pool2d(x, 1).shape == (2, 1, 1)
    with pytest.raises(ValueError, match="output_size"):
        F.adaptive_avg_pool2d(x, -1)


def test_layers_take_torch_arguments_and_weights():
    torch = _torch()
    rng = np.random.default_rng(7)
    a = rng.standard_normal((2, 4, 9, 10)).astype(np.float32)
    mine = mg.nn.Sequential(mg.nn.Conv2d(4, 6, 3, 1, "same", 2, 2), mg.nn.MaxPool2d(2, ceil_mode=True),
                            mg.nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False), mg.nn.AdaptiveAvgPool2d(1))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(4, 6, 3, 1, "same", 2, 2), torch.nn.MaxPool2d(2, ceil_mode=True),
                                 torch.nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False),
                                 torch.nn.AdaptiveAvgPool2d(1))
    assert mine[0].weight.shape == tuple(theirs[0].weight.shape) == (6, 2, 3, 3)
    mine[0].weight.data[...] = theirs[0].weight.detach().numpy()
    mine[0].bias.data[...] = theirs[0].bias.detach().numpy()
    np.testing.assert_allclose(mine(mg.tensor(a)).detach().numpy(), theirs(torch.tensor(a)).detach().numpy(), rtol=1e-5,
                               atol=1e-6)
    assert "groups=2" in repr(mine[0]) and "dilation=(2, 2)" in repr(mine[0]) and "'same'" in repr(mine[0])
