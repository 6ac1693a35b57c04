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


# ------------------------------------------------ multi-tensor (foreach) updates
def _sgd_run(kwargs, dtypes=("float32", "float64"), steps=4, strided_grad=False, opt_cls=optim.SGD):
    """Parameters of several shapes and dtypes (one group each), trained a few steps; their values."""
    rng = np.random.default_rng(0)
    params = [mg.tensor(rng.standard_normal(s).astype(dt), requires_grad=True)
              for dt in dtypes for s in ((3, 4), (5,), (2, 3, 2))]
    opt = opt_cls([{"params": [p for p in params if p.dtype == dt]} for dt in dtypes], **kwargs)
    for k in range(steps):
        opt.zero_grad()
        for i, p in enumerate(params):
            g = np.cos(p.detach().numpy().astype(np.float64) * (i + 1) + k).astype(p.dtype)
            if strided_grad and p.ndim == 2:
                g = np.asfortranarray(g)  # not C-contiguous: the kernel refuses it, the loop takes it
            p.grad = mg.tensor(g)
        opt.step()
    return [p.detach().numpy().copy() for p in params], opt


@pytest.mark.parametrize("kwargs", SGD_CASES + [dict(lr=0.1, momentum=0.5, maximize=True)])
def test_sgd_foreach_equals_one_at_a_time(kwargs):
    many, opt = _sgd_run(dict(kwargs, foreach=True))
    one, _ = _sgd_run(dict(kwargs, foreach=False))
    for a, b in zip(many, one):
        np.testing.assert_array_equal(a, b)
    assert all(g["foreach"] is True for g in opt.param_groups)


def test_sgd_foreach_falls_back_for_arrays_the_kernel_refuses():
    kwargs = dict(lr=0.1, momentum=0.9)
    for case in (dict(dtypes=("float16", "float32")), dict(strided_grad=True)):
        many, _ = _sgd_run(dict(kwargs, foreach=None), **case)
        one, _ = _sgd_run(dict(kwargs, foreach=False), **case)
        for a, b in zip(many, one):
            np.testing.assert_array_equal(a, b)


def test_sgd_multi_kernel_checks_everything_before_writing():
    from minigrad.backends import cpu

    k = cpu._kernels()
    p = [np.ones(4, np.float32), np.ones(3, np.float32)]
    before = [a.copy() for a in p]
    g = [np.ones(4, np.float32), np.ones(3, np.float64)]  # the second gradient has the wrong dtype
    with pytest.raises(TypeError, match="parameter 1"):
        k.sgd_update_multi(p, g, [None, None], [False, False], 0.1, 0.0, 0.0, 0.0, False)
    with pytest.raises(ValueError, match="differ in size"):
        k.sgd_update_multi(p, [np.ones(4, np.float32), np.ones(2, np.float32)], [None, None], [False, False],
                           0.1, 0.0, 0.0, 0.0, False)
    with pytest.raises(ValueError, match="2 parameters but 1 gradient entries"):
        k.sgd_update_multi(p, g[:1], [None, None], [False, False], 0.1, 0.0, 0.0, 0.0, False)
    with pytest.raises(TypeError, match="writable"):
        ro = np.ones(4, np.float32)
        ro.flags.writeable = False
        k.sgd_update_multi([ro], [ro], [None], [False], 0.1, 0.0, 0.0, 0.0, False)
    for a, b in zip(p, before):
        np.testing.assert_array_equal(a, b)


def test_state_dict_saved_without_foreach_still_loads():
    p = mg.tensor([1.0, 2.0], requires_grad=True)
    opt = optim.SGD([p], lr=0.1, momentum=0.9, foreach=False)
    sd = opt.state_dict()
    del sd["param_groups"][0]["foreach"]  # a state dict from before the option existed
    opt2 = optim.SGD([p], lr=0.5)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 0.1 and opt2.param_groups[0]["foreach"] is None


@pytest.mark.parametrize("opt_cls,kwargs", [
    (optim.Adam, dict(lr=0.01)),
    (optim.Adam, dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1, maximize=True)),
    (optim.AdamW, dict(lr=0.01)),
    (optim.AdamW, dict(lr=0.05, weight_decay=0.3, eps=1e-6)),
])
def test_adam_foreach_equals_one_at_a_time(opt_cls, kwargs):
    many, opt = _sgd_run(dict(kwargs, foreach=None), opt_cls=opt_cls)
    one, _ = _sgd_run(dict(kwargs, foreach=False), opt_cls=opt_cls)
    for a, b in zip(many, one):
        np.testing.assert_array_equal(a, b)
    assert all(st["step"] == 4 for st in opt.state.values())
    for case in (dict(dtypes=("float16", "float32")), dict(strided_grad=True)):  # arrays the kernel refuses
        many, _ = _sgd_run(dict(kwargs, foreach=True), opt_cls=opt_cls, **case)
        one, _ = _sgd_run(dict(kwargs, foreach=False), opt_cls=opt_cls, **case)
        for a, b in zip(many, one):
            np.testing.assert_array_equal(a, b)


def test_adam_multi_kernel_checks_before_writing():
    from minigrad.backends import cpu

    k = cpu._kernels()
    p = [np.ones(4, np.float32)]
    with pytest.raises(ValueError, match="steps count from 1"):
        k.adam_update_multi(p, [np.ones(4, np.float32)], [np.zeros(4, np.float32)], [np.zeros(4, np.float32)], [0],
                            0.1, 0.9, 0.999, 1e-8, 0.0)
    with pytest.raises(ValueError, match="exp_avg_sq differ in size"):
        k.adam_update_multi(p, [np.ones(4, np.float32)], [np.zeros(4, np.float32)], [np.zeros(3, np.float32)], [1],
                            0.1, 0.9, 0.999, 1e-8, 0.0)
    np.testing.assert_array_equal(p[0], np.ones(4, np.float32))
