"""SGD and Adam: update rules (against hand computation and PyTorch), state dicts, errors."""

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn, optim


def _quadratic_steps(opt_cls, kwargs, steps=5, dtype="float64", device="cpu"):
    p = mg.tensor([1.0, -2.0, 3.0], dtype=dtype, device=device, requires_grad=True)
    opt = opt_cls([p], **kwargs)
    for _ in range(steps):
        opt.zero_grad()
        ((p * p) * mg.tensor([1.0, 2.0, 3.0], dtype=dtype, device=device)).sum().backward()
        opt.step()
    return p.detach().cpu().numpy()


def _torch_steps(name, kwargs, steps=5):
    torch = pytest.importorskip("torch")
    p = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    opt = getattr(torch.optim, name)([p], **kwargs)
    for _ in range(steps):
        opt.zero_grad()
        ((p * p) * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).sum().backward()
        opt.step()
    return p.detach().numpy()


SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.1, weight_decay=0.05),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
]


@pytest.mark.parametrize("kwargs", SGD_CASES)
def test_sgd_matches_torch(kwargs, device):
    np.testing.assert_allclose(_quadratic_steps(optim.SGD, kwargs, device=device), _torch_steps("SGD", kwargs),
                               rtol=1e-12)


@pytest.mark.parametrize("kwargs", [dict(lr=0.1), dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)])
def test_adam_matches_torch(kwargs, device):
    np.testing.assert_allclose(_quadratic_steps(optim.Adam, kwargs, device=device), _torch_steps("Adam", kwargs),
                               rtol=1e-10)


def test_plain_sgd_by_hand(device):
    got = _quadratic_steps(optim.SGD, dict(lr=0.1), steps=1, device=device)
    np.testing.assert_allclose(got, [1 - 0.1 * 2, -2 + 0.1 * 8, 3 - 0.1 * 18])


def test_float32_parameters_stay_float32(device):
    got = _quadratic_steps(optim.Adam, dict(lr=0.1), dtype="float32", device=device)
    assert got.dtype == np.float32


def test_parameters_without_grad_are_skipped():
    a = mg.ones(2, requires_grad=True)
    b = mg.ones(2, requires_grad=True)
    opt = optim.SGD([a, b], lr=1.0, momentum=0.9)
    (a * 2).sum().backward()
    opt.step()
    assert b.tolist() == [1, 1] and a.tolist() == [-1, -1]


def test_param_groups_have_their_own_lr():
    a = mg.ones(1, requires_grad=True)
    b = mg.ones(1, requires_grad=True)
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    (a + b).sum().backward()
    opt.step()
    assert a.item() == pytest.approx(0.9) and b.item() == pytest.approx(0.5)


def test_state_dict_round_trip_continues_identically(tmp_path):
    def make():
        mg.manual_seed(0)
        net = nn.Linear(3, 2)
        return net, optim.Adam(net.parameters(), lr=0.01)

    x = mg.randn(4, 3)

    def step(net, opt):
        opt.zero_grad()
        net(x).pow(2).sum().backward()
        opt.step()

    net, opt = make()
    for _ in range(3):
        step(net, opt)
    mg.save({"model": net.state_dict(), "opt": opt.state_dict()}, tmp_path / "ck.npz")
    step(net, opt)
    expected = net.weight.detach().numpy().copy()

    net2, opt2 = make()
    ck = mg.load(tmp_path / "ck.npz")
    net2.load_state_dict(ck["model"])
    opt2.load_state_dict(ck["opt"])
    step(net2, opt2)
    np.testing.assert_array_equal(net2.weight.detach().numpy(), expected)


def test_optimizer_errors():
    p = mg.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD([p], lr=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam([p], betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="parameter groups"):
        opt.load_state_dict({"state": {}, "param_groups": []})
