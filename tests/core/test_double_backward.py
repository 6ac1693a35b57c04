"""Gradients of gradients: every differentiable op passes gradgradcheck, and second derivatives
match PyTorch's (torch.autograd.grad with create_graph=True) where torch is installed."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigrad as mg
from minigrad import nn
from minigrad.autograd import grad
from minigrad.autograd.functional import hessian, hvp, jacobian, jvp, vjp
from minigrad.testing import gradgradcheck
from minigrad.testing.strategies import arrays


def _pos(t):
    return t * t + 0.5


def _distinct(t):
    """``t`` plus distinct offsets: Hypothesis likes equal values, which sit on the kinks of max/min."""
    return t + mg.tensor(np.arange(t.numel()).reshape(t.shape) * 0.173, device=t.device)


# name, function of the inputs, input shapes
OPS = [
    ("add_broadcast", lambda a, b: a + b, [(3, 4), (4,)]),
    ("sub_broadcast", lambda a, b: a - b, [(3, 1), (1, 4)]),
    ("mul_broadcast", lambda a, b: a * b * a, [(2, 3), (3,)]),
    ("div", lambda a, b: a / _pos(b), [(2, 3), (2, 3)]),
    ("pow_scalar", lambda a: _pos(a) ** 1.7, [(3, 2)]),
    ("pow_tensor", lambda a, b: _pos(a) ** b, [(2, 2), (2, 2)]),
    ("rpow", lambda a: 2.0 ** a, [(3,)]),
    ("neg_exp_log", lambda a: (-a).exp() + _pos(a).log(), [(2, 3)]),
    ("sqrt", lambda a: _pos(a).sqrt(), [(4,)]),
    ("tanh_sigmoid", lambda a: a.tanh() * a.sigmoid(), [(2, 3)]),
    # The kinks sit at a = bound/1.7, no literal: Hypothesis also draws the constants of loaded modules.
    ("relu_abs_clamp", lambda a: a.relu() * a + a.abs() * a + (a * 1.7).clamp(-0.3071, 0.4137) * a, [(3, 3)]),
    # (shifted so that Hypothesis' favourite draws, equal values, do not sit on the kink)
    ("maximum_minimum", lambda a, b: mg.maximum(a, b * 0.37 + 0.011) * a + mg.minimum(a, 0.013) * b,
     [(2, 3), (3,)]),
    ("where", lambda a, b: mg.where(a > 0, a * a, b * a), [(2, 3), (2, 3)]),
    ("sum_mean", lambda a: a.sum(0) * a.mean(1, keepdims=True), [(2, 3)]),
    ("erf_gelu", lambda a: mg.erf(a) * a + nn.functional.gelu(a * 1.3), [(2, 3)]),
    ("softplus", lambda a: nn.functional.softplus(a * 2.0, beta=1.5, threshold=1.0731) * a, [(3, 2)]),
    ("bce", lambda a, b: nn.functional.binary_cross_entropy(a.sigmoid(), b.sigmoid(), reduction="none") * a
     + nn.functional.binary_cross_entropy_with_logits(a, b.sigmoid(), pos_weight=mg.tensor(2.0, dtype=a.dtype)),
     [(2, 3), (2, 3)]),
    ("max_min", lambda a: (_distinct(a).amax(1, keepdims=True) * a.sum() + _distinct(a).max(0).values.sum()
                           + _distinct(a).min() * a), [(2, 3)]),
    ("var_std", lambda a: a.var(1) * _distinct(a).std(0).sum(), [(3, 4)]),
    ("logsumexp", lambda a: a.logsumexp(1) * a.sum(1), [(2, 4)]),
    ("reshape_permute", lambda a: a.reshape(3, 2, 2).permute(1, 2, 0) * a.T.reshape(2, 2, 3)[0], [(3, 4)]),
    ("broadcast_to", lambda a: a.expand(3, 2, 4) * a, [(2, 4)]),
    ("getitem", lambda a: a[1:, ::2] * a[[0, 0, 1], [1, 1, 0]].sum(), [(3, 3)]),
    ("cat_stack", lambda a, b: mg.cat([a, b * a], 0) * mg.stack([a, b], 0).sum(0).sum(), [(2, 2), (2, 2)]),
    ("matmul", lambda a, b: (a @ b) * (a @ b), [(2, 3), (3, 2)]),
    ("matmul_vector", lambda a, v: (a @ v) * (v @ v), [(2, 3), (3,)]),
    ("linear", lambda x, w, b: nn.functional.linear(x, w, b).tanh(), [(2, 3), (4, 3), (4,)]),
    ("softmax", lambda a: a.softmax(1) * a, [(2, 3)]),
    ("log_softmax", lambda a: a.log_softmax(0) * a, [(3, 2)]),
    ("dropout_mask", lambda a: nn.functional.dropout(a, 0.5) * a, [(2, 4)]),
    ("conv2d", lambda x, w, b: nn.functional.conv2d(x, w, b, stride=2, padding=1).tanh(), [(2, 2, 5, 5), (3, 2, 3, 3),
                                                                                             (3,)]),
    ("conv2d_groups_dilation_same", lambda x, w: nn.functional.conv2d(x, w, padding="same", dilation=2,
                                                                      groups=2).sigmoid(), [(1, 4, 5, 4), (2, 2, 2, 2)]),
    ("max_pool2d", lambda x: nn.functional.max_pool2d(_distinct(x), 2, ceil_mode=True) ** 2, [(1, 2, 5, 5)]),
    ("avg_pool2d", lambda x: nn.functional.avg_pool2d(x * x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
     [(1, 2, 5, 5)]),
    ("adaptive_avg_pool2d", lambda x: nn.functional.adaptive_avg_pool2d(x * x, (2, 3)), [(1, 2, 5, 4)]),
]


# Convolution and pooling take larger inputs, whose values need no distance from zero.
SMOOTH = {"conv2d", "conv2d_groups_dilation_same", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"}


@pytest.mark.parametrize("name,fn,shapes", OPS, ids=[o[0] for o in OPS])
@given(data=st.data())
def test_every_op_passes_gradgradcheck(name, fn, shapes, device, data):
    margin = 0.0 if name in SMOOTH else 0.05
    xs = [mg.tensor(data.draw(arrays(s, low=-1.5, high=1.5, min_magnitude=margin)), device=device,
                    requires_grad=True) for s in shapes]
    mg.manual_seed(data.draw(st.integers(0, 1000)))  # dropout draws its mask from the generator: fix it
    seed = mg.initial_seed()
    assert gradgradcheck(lambda *ts: (mg.manual_seed(seed), fn(*ts))[1], xs)


@pytest.mark.parametrize("reduction,smoothing,weighted", [("mean", 0.0, False), ("sum", 0.1, True),
                                                          ("none", 0.2, False)])
def test_cross_entropy_passes_gradgradcheck(device, reduction, smoothing, weighted):
    x = mg.randn(4, 3, dtype="float64", device=device, requires_grad=True)
    y = mg.tensor([0, 2, 1, -100], device=device)
    w = mg.tensor([0.5, 1.0, 2.0], dtype="float64", device=device) if weighted else None
    assert gradgradcheck(lambda t: nn.functional.cross_entropy(t, y, w, reduction=reduction,
                                                               label_smoothing=smoothing), [x])


def test_functional_helpers(device):
    x = mg.tensor([1.0, 2.0], dtype="float64", device=device)
    v = mg.tensor([1.0, -1.0], dtype="float64", device=device)
    cube = lambda t: (t ** 3).sum()  # noqa: E731
    value, hv = hvp(cube, x, v)
    assert value.item() == 9.0
    np.testing.assert_allclose(hv.cpu().numpy(), [6.0, -12.0])  # H = diag(6x)
    np.testing.assert_allclose(hessian(cube, x).cpu().numpy(), np.diag([6.0, 12.0]))
    square = lambda t: t * t  # noqa: E731
    np.testing.assert_allclose(jvp(square, x, v)[1].cpu().numpy(), [2.0, -4.0])
    np.testing.assert_allclose(vjp(square, x, v)[1].cpu().numpy(), [2.0, -4.0])
    np.testing.assert_allclose(jacobian(square, x).cpu().numpy(), np.diag([2.0, 4.0]))
    (a_h, b_h), (c_h, d_h) = hessian(lambda a, b: (a * a * b).sum(), (x, v))
    np.testing.assert_allclose(a_h.cpu().numpy(), np.diag(2 * v.cpu().numpy()))
    np.testing.assert_allclose(b_h.cpu().numpy(), np.diag(2 * x.cpu().numpy()))
    assert not hv.requires_grad and x.grad is None


def _paper_mlp(lib, weights):
    """The paper's 784-100-100-100-10 sigmoid network, shrunk (input 12, hidden 6) for a float64 oracle."""
    def f(x):
        h = x
        for i in range(3):
            w, b = weights[2 * i], weights[2 * i + 1]
            h = lib.sigmoid(h @ w.T + b)
        return h @ weights[6].T + weights[7]
    return f


def test_second_derivatives_of_the_paper_mlp_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    shapes = [(6, 12), (6,), (6, 6), (6,), (6, 6), (6,), (4, 6), (4,)]
    ws = [rng.standard_normal(s) * 0.5 for s in shapes]
    xb, yb = rng.standard_normal((5, 12)), np.array([0, 1, 2, 3, 1])
    v = [rng.standard_normal(s) for s in shapes]

    mw = [mg.tensor(w, requires_grad=True) for w in ws]
    loss = nn.functional.cross_entropy(_paper_mlp(mg, mw)(mg.tensor(xb)), mg.tensor(yb))
    gs = grad(loss, mw, create_graph=True)
    dot = sum((g * mg.tensor(vi)).sum() for g, vi in zip(gs, v))
    mg_hv = grad(dot, mw)

    tw = [torch.tensor(w, requires_grad=True) for w in ws]
    tloss = torch.nn.functional.cross_entropy(_paper_mlp(torch, tw)(torch.tensor(xb)), torch.tensor(yb))
    tgs = torch.autograd.grad(tloss, tw, create_graph=True)
    tdot = sum((g * torch.tensor(vi)).sum() for g, vi in zip(tgs, v))
    t_hv = torch.autograd.grad(tdot, tw)
    for a, b in zip(mg_hv, t_hv):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)


def test_gradient_penalty_matches_torch():
    """WGAN-GP style: the penalty (‖∂D/∂x‖ - 1)² is differentiated with respect to the weights."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    w1, w2, x = rng.standard_normal((5, 3)), rng.standard_normal((1, 5)), rng.standard_normal((4, 3))

    def penalty(lib, w1_, w2_, x_):
        d = lib.tanh(x_ @ w1_.T) @ w2_.T
        if lib is mg:
            (gx,) = grad(d.sum(), x_, create_graph=True)
        else:
            (gx,) = torch.autograd.grad(d.sum(), x_, create_graph=True)
        norm = ((gx * gx).sum(1) + 1e-12).sqrt()
        return ((norm - 1) ** 2).mean()

    mw1, mw2 = mg.tensor(w1, requires_grad=True), mg.tensor(w2, requires_grad=True)
    mx = mg.tensor(x, requires_grad=True)
    mgrads = grad(penalty(mg, mw1, mw2, mx), [mw1, mw2])
    tw1, tw2 = torch.tensor(w1, requires_grad=True), torch.tensor(w2, requires_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    tgrads = torch.autograd.grad(penalty(torch, tw1, tw2, tx), [tw1, tw2])
    for a, b in zip(mgrads, tgrads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)


def test_gradient_penalty_on_a_small_conv_net_matches_torch():
    """WGAN-GP on a conv critic: conv → BN-free tanh → max pool → conv → mean; penalty on ‖∂D/∂x‖."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    w1, b1 = rng.standard_normal((4, 2, 3, 3)) * 0.5, rng.standard_normal(4) * 0.1
    w2 = rng.standard_normal((3, 4, 2, 2)) * 0.5
    x = rng.standard_normal((3, 2, 8, 8))

    def critic(lib, x_, a, b, c):
        F = lib.nn.functional
        h = lib.tanh(F.conv2d(x_, a, b, padding=1))
        h = F.max_pool2d(h, 2)
        return F.conv2d(h, c, stride=2).mean(dim=(1, 2, 3))

    def penalty(lib, *ts):
        x_, a, b, c = ts
        d = critic(lib, x_, a, b, c)
        autograd = mg.autograd if lib is mg else torch.autograd
        (gx,) = autograd.grad(d.sum(), x_, create_graph=True)
        norm = (gx * gx).sum(dim=(1, 2, 3)) + 1e-12
        return ((norm.sqrt() - 1) ** 2).mean()

    mine = [mg.tensor(a, requires_grad=True) for a in (x, w1, b1, w2)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w1, b1, w2)]
    got = mg.autograd.grad(penalty(mg, *mine), mine[1:])
    expected = torch.autograd.grad(penalty(torch, *theirs), theirs[1:])
    for a, e in zip(got, expected):
        np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=1e-9, atol=1e-11)
