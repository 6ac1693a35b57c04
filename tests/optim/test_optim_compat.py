"""The optimizers and schedulers PyTorch scripts use, against PyTorch; state that survives copies and files."""

import copy
import math
import pickle
import warnings

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn, optim
from minigrad.optim import lr_scheduler as S


def _run(make_opt, torch_mod=None, steps=6, closure=False):
    """Minimise Σ c·p² (+ a frozen tensor) with minigrad, and with PyTorch when given its module."""
    c = np.array([1.0, 2.0, 3.0])
    p = mg.tensor([1.0, -2.0, 3.0], dtype="float64", requires_grad=True)
    frozen = mg.tensor([5.0], dtype="float64")  # requires_grad=False: accepted and skipped, as in PyTorch
    opt = make_opt(optim, [p, frozen])
    for _ in range(steps):
        def f():
            opt.zero_grad()
            loss = (p * p * mg.tensor(c)).sum()
            loss.backward()
            return loss
        if closure:
            assert opt.step(f) is not None
        else:
            f()
            opt.step()
    assert frozen.tolist() == [5.0]
    if torch_mod is None:
        return p.detach().numpy()
    t = torch_mod.tensor([1.0, -2.0, 3.0], dtype=torch_mod.float64, requires_grad=True)
    topt = make_opt(torch_mod.optim, [t, torch_mod.tensor([5.0], dtype=torch_mod.float64)])
    for _ in range(steps):
        topt.zero_grad()
        (t * t * torch_mod.tensor(c)).sum().backward()
        topt.step()
    return p.detach().numpy(), t.detach().numpy()


OPTIMIZERS = {
    "AdamW": lambda o, ps: o.AdamW(ps, lr=0.1, weight_decay=0.1),
    "Adagrad": lambda o, ps: o.Adagrad(ps, lr=0.1, lr_decay=0.01, weight_decay=0.05, initial_accumulator_value=0.1),
    "Adadelta": lambda o, ps: o.Adadelta(ps, lr=1.0, rho=0.8, weight_decay=0.01),
    "RMSprop": lambda o, ps: o.RMSprop(ps, lr=0.01, alpha=0.9),
    "RMSprop-centered-momentum": lambda o, ps: o.RMSprop(ps, lr=0.01, momentum=0.9, centered=True),
    "SGD-nesterov": lambda o, ps: o.SGD(ps, lr=0.01, momentum=0.9, nesterov=True),
    "Adam-maximize": lambda o, ps: o.Adam(ps, lr=0.01, maximize=True),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizers_match_pytorch(name):
    torch = pytest.importorskip("torch")
    ours, theirs = _run(OPTIMIZERS[name], torch)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizers_reduce_the_loss(name):
    got = _run(OPTIMIZERS[name])
    if name != "Adam-maximize":
        assert np.abs(got).sum() < 6.0


def test_step_with_closure_returns_the_loss_and_matches_plain_steps():
    np.testing.assert_array_equal(_run(OPTIMIZERS["Adadelta"], closure=True), _run(OPTIMIZERS["Adadelta"]))


def test_duplicate_parameters_warn_and_update_once():
    x = mg.tensor([1.0], requires_grad=True)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        opt = optim.SGD([x, x], lr=0.5)
    (x * 1.0).sum().backward()
    opt.step()
    assert x.item() == pytest.approx(0.5)  # once, not twice


def _trained(opt_cls, **kw):
    mg.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = opt_cls(model.parameters(), **kw)
    x = mg.randn(4, 3)
    for _ in range(2):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
    return model, opt, x


def _continue(model, opt, x):
    opt.zero_grad()
    model(x).pow(2).sum().backward()
    opt.step()
    return model.weight.detach().numpy().copy()


@pytest.mark.parametrize("copier", [copy.deepcopy, lambda obj: pickle.loads(pickle.dumps(obj))],
                         ids=["deepcopy", "pickle"])
def test_state_survives_copies_of_model_and_optimizer(copier):
    """10.4: the state stays bound to the copied parameters (momentum and Adam moments do not restart)."""
    for opt_cls, kw in [(optim.SGD, dict(lr=0.1, momentum=0.9)), (optim.Adam, dict(lr=0.1))]:
        model, opt, x = _trained(opt_cls, **kw)
        model2, opt2 = copier((model, opt))
        params2 = list(model2.parameters())
        assert all(p in opt2.state for p in params2) and all(p2 is q for p2, q in zip(params2, opt2.param_groups[0]["params"]))
        np.testing.assert_array_equal(_continue(model2, opt2, x), _continue(model, opt, x))


def test_loading_another_optimizers_state_is_refused():
    _, adam, _ = _trained(optim.Adam, lr=0.1)
    model, sgd, _ = _trained(optim.SGD, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="not a SGD state dict.*exp_avg|not a SGD state dict.*momentum"):
        sgd.load_state_dict(adam.state_dict())
    with pytest.raises(ValueError, match="not a Adam state dict"):
        optim.Adam(model.parameters()).load_state_dict(sgd.state_dict())


def _scalar_param():
    p = mg.tensor(2.0, dtype="float64", requires_grad=True)
    return p, optim.SGD([p], lr=0.1, momentum=0.9)


def _scalar_step(p, opt):
    opt.zero_grad()
    (p * p).backward()
    opt.step()


def test_scalar_parameter_state_round_trips_through_state_dict():
    """10.3 (optimizer part): a 0-d parameter's momentum buffer stays 0-d (it came back as (1,))."""
    p, opt = _scalar_param()
    _scalar_step(p, opt)
    sd = opt.state_dict()
    assert sd["state"][0]["momentum_buffer"].shape == ()
    p2, opt2 = _scalar_param()
    opt2.load_state_dict(sd)
    assert opt2.state[p2]["momentum_buffer"].shape == ()
    with mg.no_grad():
        p2.copy_(p)
    _scalar_step(p, opt), _scalar_step(p2, opt2)
    assert p2.item() == p.item()


def test_scalar_parameter_state_round_trips_through_a_file(tmp_path):
    p, opt = _scalar_param()
    _scalar_step(p, opt)
    mg.save(opt.state_dict(), tmp_path / "opt.npz")
    p2, opt2 = _scalar_param()
    opt2.load_state_dict(mg.load(tmp_path / "opt.npz"))
    with mg.no_grad():
        p2.copy_(p)
    _scalar_step(p, opt), _scalar_step(p2, opt2)
    assert p2.item() == p.item()


def _schedule(make, torch_mod=None, steps=12, metrics=None):
    def lrs(mod):
        opt = mod.optim.SGD([mod.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
        sched = make(mod.optim.lr_scheduler, opt)
        out = []
        for i in range(steps):
            opt.step()
            sched.step(metrics[i]) if metrics else sched.step()
            out.append((sched.get_last_lr()[0], opt.param_groups[0]["momentum"]))
        return out

    return lrs(mg), (lrs(torch_mod) if torch_mod else None)


SCHEDULERS = {
    "StepLR": lambda s, o: s.StepLR(o, step_size=3, gamma=0.5),
    "MultiStepLR": lambda s, o: s.MultiStepLR(o, milestones=[2, 5, 5], gamma=0.1),
    "CosineAnnealingLR": lambda s, o: s.CosineAnnealingLR(o, T_max=5, eta_min=0.01),
    "LambdaLR": lambda s, o: s.LambdaLR(o, lambda e: 0.9 ** e),
    "OneCycleLR": lambda s, o: s.OneCycleLR(o, max_lr=1.0, total_steps=12),
    "OneCycleLR-linear-3phase": lambda s, o: s.OneCycleLR(o, max_lr=1.0, total_steps=12, anneal_strategy="linear",
                                                          three_phase=True),
}


@pytest.mark.parametrize("name", SCHEDULERS)
def test_schedulers_match_pytorch(name):
    torch = pytest.importorskip("torch")
    ours, theirs = _schedule(SCHEDULERS[name], torch)
    np.testing.assert_allclose(np.array(ours), np.array(theirs), rtol=1e-12)


def test_reduce_on_plateau_matches_pytorch():
    torch = pytest.importorskip("torch")
    metrics = [1.0, 0.9, 0.9, 0.9, 0.9, 0.95, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    ours, theirs = _schedule(lambda s, o: s.ReduceLROnPlateau(o, factor=0.5, patience=1, cooldown=1), torch,
                             metrics=metrics)
    assert [lr for lr, _ in ours] == [lr for lr, _ in theirs]
    assert ours[-1][0] < 0.1


def test_step_lr_by_hand_and_state_dict():
    ours, _ = _schedule(SCHEDULERS["StepLR"], steps=7)
    assert [lr for lr, _ in ours] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025])
    opt = optim.SGD([mg.zeros(1, requires_grad=True)], lr=1.0)
    sched = S.CosineAnnealingLR(opt, T_max=10)
    for _ in range(3):
        sched.step()
    state = sched.state_dict()
    assert "optimizer" not in state and state["last_epoch"] == 3
    opt2 = optim.SGD([mg.zeros(1, requires_grad=True)], lr=1.0)
    sched2 = S.CosineAnnealingLR(opt2, T_max=10)
    sched2.load_state_dict(state)
    opt2.load_state_dict(opt.state_dict())  # the rates live in the optimizer's groups, as in PyTorch
    sched.step(), sched2.step()
    assert sched.get_last_lr() == pytest.approx(sched2.get_last_lr())
    assert sched.get_last_lr()[0] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 10)))


def test_one_cycle_needs_momentum_or_betas():
    with pytest.raises(ValueError, match="momentum or beta1"):
        S.OneCycleLR(optim.Adagrad([mg.zeros(1, requires_grad=True)]), max_lr=1.0, total_steps=3)
    adam = optim.Adam([mg.zeros(1, requires_grad=True)])
    S.OneCycleLR(adam, max_lr=1.0, total_steps=100)
    assert adam.param_groups[0]["betas"][0] == pytest.approx(0.95)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
def test_clip_grad_norm_matches_pytorch(norm_type):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    ps = [mg.zeros(*g.shape, dtype="float64", requires_grad=True) for g in grads]
    ts = [torch.zeros(*g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, t, g in zip(ps, ts, grads):
        p.grad, t.grad = mg.tensor(g), torch.tensor(g)
    total = nn.utils.clip_grad_norm_(ps, max_norm=1.0, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(ts, max_norm=1.0, norm_type=norm_type)
    assert total.item() == pytest.approx(ttotal.item(), rel=1e-12)
    for p, t in zip(ps, ts):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-12)
    nn.utils.clip_grad_value_(ps, 0.1)
    assert max(float(np.abs(p.grad.numpy()).max()) for p in ps) <= 0.1


def test_clip_grad_norm_refuses_a_non_finite_norm_when_asked():
    p = mg.zeros(2, requires_grad=True)
    p.grad = mg.tensor([np.inf, 1.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nn.utils.clip_grad_norm_([p], 1.0)
