"""Optional oracle: the same weights and inputs through PyTorch and minigrad (skipped without torch).

Outputs, input and parameter gradients and running statistics are compared
over several training steps and then in eval mode.
"""

from __future__ import annotations

import numpy as np
import pytest

import minigrad
from minigrad import nn

torch = pytest.importorskip("torch")

TOL = dict(rtol=1e-9, atol=1e-10)  # float64 on both sides


def copy_into(mine, theirs):
    """Make both modules start from the same (random) parameters and statistics."""
    state = {k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()}
    mine.load_state_dict(state)


def randomize_torch(module, gen):
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.rand(p.shape, generator=gen, dtype=p.dtype) + (0.5 if name == "weight" else -0.5))


def compare_steps(mine, theirs, shapes, rng, steps=3):
    for step in range(steps + 1):
        training = step < steps
        mine.train(training)
        theirs.train(training)
        shape = shapes[step % len(shapes)]
        xa = rng.standard_normal(shape) * 2 + 0.7
        dy = rng.standard_normal(shape)
        x = minigrad.tensor(xa, requires_grad=True)
        tx = torch.tensor(xa, requires_grad=True)
        y, ty = mine(x), theirs(tx)
        np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), **TOL, err_msg=f"output, step {step}")
        y.backward(minigrad.tensor(dy))
        ty.backward(torch.tensor(dy))
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), **TOL, err_msg=f"input grad, step {step}")
        for name, p in theirs.named_parameters():
            np.testing.assert_allclose(getattr(mine, name).grad.numpy(), p.grad.numpy(), **TOL,
                                       err_msg=f"{name} grad, step {step}")
            p.grad = None
            getattr(mine, name).grad = None
        for name, b in theirs.named_buffers():
            np.testing.assert_allclose(getattr(mine, name).numpy(), b.numpy(), **TOL, err_msg=f"{name}, step {step}")


CONFIGS = [
    ("BatchNorm1d", (4,), {}, [(8, 4), (5, 4)]),
    ("BatchNorm1d", (3,), dict(momentum=None), [(6, 3, 5), (2, 3, 7)]),
    ("BatchNorm1d", (3,), dict(affine=False, momentum=0.3), [(4, 3)]),
    ("BatchNorm1d", (3,), dict(track_running_stats=False), [(4, 3, 2)]),
    ("BatchNorm2d", (3,), {}, [(4, 3, 5, 5), (2, 3, 3, 4)]),
    ("BatchNorm2d", (2,), dict(momentum=None, eps=1e-3), [(3, 2, 4, 4), (1, 2, 3, 3)]),
    ("BatchNorm2d", (2,), dict(track_running_stats=False, affine=False), [(3, 2, 2, 2)]),
    ("LayerNorm", (6,), {}, [(4, 6), (2, 3, 6)]),
    ("LayerNorm", ((3, 4),), dict(eps=1e-3), [(2, 3, 4), (5, 2, 3, 4)]),
    ("LayerNorm", (5,), dict(elementwise_affine=False), [(3, 5)]),
    ("GroupNorm", (2, 6), {}, [(3, 6, 4, 4), (2, 6, 5)]),
    ("GroupNorm", (3, 3), dict(affine=False), [(2, 3, 4)]),
    ("GroupNorm", (1, 4), dict(eps=1e-3), [(2, 4)]),
    ("InstanceNorm1d", (3,), {}, [(2, 3, 6)]),
    ("InstanceNorm1d", (3,), dict(affine=True, track_running_stats=True), [(4, 3, 5), (2, 3, 7)]),
    ("InstanceNorm2d", (2,), dict(affine=True), [(3, 2, 4, 4)]),
    ("InstanceNorm2d", (2,), dict(affine=True, track_running_stats=True, momentum=None), [(2, 2, 3, 3)]),
    ("InstanceNorm2d", (3,), dict(track_running_stats=True, momentum=0.2), [(2, 3, 5, 4), (1, 3, 2, 2)]),
]


@pytest.mark.parametrize("name, args, kwargs, shapes", CONFIGS,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CONFIGS)])
def test_matches_torch(name, args, kwargs, shapes):
    gen = torch.Generator().manual_seed(0)
    theirs = getattr(torch.nn, name)(*args, dtype=torch.float64, **kwargs)
    randomize_torch(theirs, gen)
    mine = getattr(nn, name)(*args, dtype="float64", **kwargs)
    copy_into(mine, theirs)
    compare_steps(mine, theirs, shapes, np.random.default_rng(0))


def test_functional_matches_torch():
    rng = np.random.default_rng(1)
    xa = rng.standard_normal((5, 3, 4))
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    mine = minigrad.nn.functional
    tf = torch.nn.functional
    x, tx = minigrad.tensor(xa), torch.tensor(xa)
    pairs = [
        (mine.group_norm(x, 3, minigrad.tensor(w), minigrad.tensor(b)), tf.group_norm(tx, 3, torch.tensor(w),
                                                                                      torch.tensor(b))),
        (mine.layer_norm(x, (3, 4)), tf.layer_norm(tx, (3, 4))),
        (mine.instance_norm(x), tf.instance_norm(tx)),
    ]
    rm, rv = minigrad.zeros(3, dtype="float64"), minigrad.ones(3, dtype="float64")
    trm, trv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    pairs.append((mine.batch_norm(x, rm, rv, training=True, momentum=0.2),
                  tf.batch_norm(tx, trm, trv, training=True, momentum=0.2)))
    pairs.append((mine.instance_norm(x, rm, rv, use_input_stats=True, momentum=0.5),
                  tf.instance_norm(tx, trm, trv, use_input_stats=True, momentum=0.5)))
    pairs.append((rm, trm))
    pairs.append((rv, trv))
    for a, e in pairs:
        np.testing.assert_allclose(a.detach().numpy(), e.numpy(), **TOL)


def test_float32_matches_torch_to_rounding():
    rng = np.random.default_rng(2)
    theirs = torch.nn.BatchNorm2d(8)
    mine = nn.BatchNorm2d(8)
    xa = (rng.standard_normal((16, 8, 7, 7)) * 3 + 2).astype(np.float32)
    for training in (True, True, False):
        theirs.train(training)
        mine.train(training)
        y, ty = mine(minigrad.tensor(xa)), theirs(torch.tensor(xa))
        np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(mine.running_var.numpy(), theirs.running_var.numpy(), rtol=1e-5)


SECOND_ORDER = [c for c in CONFIGS if c[2].get("affine", c[2].get("elementwise_affine", True)) is not False
                or c[0].startswith("InstanceNorm")]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name, args, kwargs, shapes", SECOND_ORDER,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(SECOND_ORDER)])
def test_second_derivatives_match_torch(name, args, kwargs, shapes, mode):
    """create_graph=True through the layer: a gradient penalty on x and a curvature term, differentiated
    again with respect to x, γ and β, agree with torch.autograd.grad."""
    gen = torch.Generator().manual_seed(3)
    theirs = getattr(torch.nn, name)(*args, dtype=torch.float64, **kwargs)
    randomize_torch(theirs, gen)
    mine = getattr(nn, name)(*args, dtype="float64", **kwargs)
    copy_into(mine, theirs)
    mine.train(mode == "train")
    theirs.train(mode == "train")
    rng = np.random.default_rng(4)
    xa, wa = rng.standard_normal(shapes[0]) * 1.5 + 0.3, rng.standard_normal(shapes[0])

    def second(lib, module, x, w, params):
        autograd = minigrad.autograd if lib is minigrad else torch.autograd
        y = module(x)
        (gx,) = autograd.grad((y * y * w).sum(), [x], create_graph=True)
        penalty = (gx * gx).sum() + (gx * x).sum()
        return autograd.grad(penalty, [x] + params, allow_unused=True)

    x, tx = minigrad.tensor(xa, requires_grad=True), torch.tensor(xa, requires_grad=True)
    params = [p for p in (mine.weight, mine.bias) if p is not None]
    tparams = [p for p in (theirs.weight, theirs.bias) if p is not None]
    ours = second(minigrad, mine, x, minigrad.tensor(wa), params)
    ref = second(torch, theirs, tx, torch.tensor(wa), tparams)
    for i, (a, e) in enumerate(zip(ours, ref)):
        expected = np.zeros(a.shape) if e is None else e.numpy()
        got = np.zeros(expected.shape) if a is None else a.numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-10, err_msg=f"gradient {i}")


def test_hessian_vector_product_of_the_paper_mlp_with_batchnorm_matches_torch():
    """Hv of the loss of a (shrunk) 784-100-100-100-10 sigmoid network with BN (training mode) before each
    sigmoid, with respect to all its parameters: minigrad's hvp against torch.autograd.functional.hvp."""
    from minigrad.autograd.functional import hvp

    rng = np.random.default_rng(5)
    sizes = [12, 6, 6, 6, 4]
    shapes = []
    for i in range(3):
        shapes += [(sizes[i + 1], sizes[i]), (sizes[i + 1],), (sizes[i + 1],), (sizes[i + 1],)]  # W, b, γ, β
    shapes += [(sizes[4], sizes[3]), (sizes[4],)]
    params = [rng.standard_normal(s) * 0.5 + (1.0 if k % 4 == 2 and k < 12 else 0.0) for k, s in enumerate(shapes)]
    vs = [rng.standard_normal(s) for s in shapes]
    xb, yb = rng.standard_normal((10, 12)), rng.integers(0, 4, 10)

    def loss(lib, x, y):
        F = lib.nn.functional

        def f(*p):
            h = x
            for i in range(3):
                w, b, gamma, beta = p[4 * i: 4 * i + 4]
                h = F.linear(h, w, b)
                h = F.batch_norm(h, None, None, gamma, beta, training=True)
                h = lib.sigmoid(h)
            return F.cross_entropy(F.linear(h, p[12], p[13]), y)
        return f

    _, ours = hvp(loss(minigrad, minigrad.tensor(xb), minigrad.tensor(yb)),
                  tuple(minigrad.tensor(a) for a in params), tuple(minigrad.tensor(v) for v in vs))
    _, ref = torch.autograd.functional.hvp(loss(torch, torch.tensor(xb), torch.tensor(yb)),
                                           tuple(torch.tensor(a) for a in params), tuple(torch.tensor(v) for v in vs))
    for k, (a, e) in enumerate(zip(ours, ref)):
        np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=1e-8, atol=1e-10, err_msg=f"parameter {k}")
