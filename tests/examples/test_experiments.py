"""The experiment scripts of issue 14: tiny smoke runs (outputs checked), their help, progress and parts."""

import csv
import json
import os
import re

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the examples need matplotlib (pip install 'minigrad-bn[examples]')")

import minigrad  # noqa: E402
from examples import _common, landscape, noisy_bn  # noqa: E402
from minigrad import nn  # noqa: E402

SCRIPTS = ("bn_mnist", "cnn", "precise_bn", "lr_claims", "noisy_bn", "landscape", "sweeps")


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_precise_bn_smoke(tmp_path, fake_mnist, run, png):
    out = tmp_path / "precise"
    stdout = run(["-m", "examples.precise_bn", "--steps", "20", "--points", "4", "--batches", "5",
                  "--data", str(fake_mnist), "--out", str(out), "--threads", "1", "--no-progress"])
    png(out / "precise_bn.png")
    s = _summary(out)
    assert s["same_weights_for_every_momentum"] is True
    assert s["folding_after_recompute"]["prediction_agreement"] == 1.0
    assert s["folding_after_recompute"]["max_abs_logit_diff"] < 1e-3 * max(1.0, s["folding_after_recompute"]
                                                                           ["max_abs_logit"])
    assert [r["batches"] for r in s["k_sweep"]][:3] == [1, 2, 5]
    rows = _csv(out / "history.csv")
    assert int(rows[-1]["step"]) == 20 and {"acc_precise", "acc_running_0.9", "stat_error_0.01"} <= set(rows[0])
    assert "the three networks kept identical weights: True" in stdout


def test_lr_claims_smoke(tmp_path, fake_mnist, run, png):
    out = tmp_path / "lr"
    stdout = run(["-m", "examples.lr_claims", "--steps", "12", "--eval-every", "4", "--val-images", "50",
                  "--variants", "Baseline,BN-x5,Baseline-x30", "--lr", "0.05", "--data", str(fake_mnist),
                  "--out", str(out), "--threads", "1", "--no-progress"])
    png(out / "lr_claims.png")
    s = _summary(out)
    assert set(s["results"]) == {"Baseline", "BN-x5", "Baseline-x30"}
    assert s["variants"]["BN-x5"] == {"batch_norm": True, "lr": 0.25, "activation": "relu", "dropout": 0.0}
    assert s["results"]["Baseline"]["steps_to_baseline_best"] is not None
    assert s["evaluated_on"] == "50 fixed test images"  # the IDX folder has no validation split
    assert abs(s["paper_ratio_bn_x5"] - 31 / 2.1) < 1e-9
    assert "Baseline's best accuracy" in stdout and "14.8x fewer steps" in stdout


def test_noisy_bn_smoke(tmp_path, fake_mnist, run, png):
    out = tmp_path / "noisy"
    run(["-m", "examples.noisy_bn", "--steps", "12", "--eval-every", "6", "--probe-images", "40",
         "--data", str(fake_mnist), "--out", str(out), "--threads", "1", "--no-progress"])
    png(out / "noisy_bn.png")
    s = _summary(out)
    assert set(s["final_accuracy"]) == {"standard", "bn", "noisy"}
    assert np.asarray(s["percentiles_unit"]["noisy"]).shape == (3, 3, 3)  # evaluations, layers, percentiles
    assert [int(r["step"]) for r in _csv(out / "history.csv")] == [0, 6, 12]


def test_landscape_smoke(tmp_path, fake_mnist, run, png):
    out = tmp_path / "landscape"
    stdout = run(["-m", "examples.landscape", "--steps", "12", "--every", "4", "--hessian-every", "2",
                  "--hessian-iters", "3", "--step-sizes", "0.5,2", "--data", str(fake_mnist), "--out", str(out),
                  "--threads", "1", "--no-progress"])
    png(out / "landscape.png")
    s = _summary(out)
    rows = s["history"]
    assert [r["step"] for r in rows] == [1, 4, 8, 12]
    assert all("hessian_top_bn" in r for r in rows[::2]) and "hessian_top_bn" not in rows[1]
    for r in rows:
        for k in ("plain", "bn"):
            assert r[f"loss_min_{k}"] <= r[f"loss_{k}"] <= r[f"loss_max_{k}"]
            assert 0 <= r[f"grad_change_min_{k}"] <= r[f"grad_change_max_{k}"] and r[f"beta_{k}"] >= 0
    assert s["hessian_method"]["plain"].startswith("exact") and s["hessian_method"]["bn"].startswith("exact")
    assert "Hessian-vector products, BN:" in stdout


def test_sweeps_smoke(tmp_path, fake_mnist, run, png):
    out = tmp_path / "sweeps"
    stdout = run(["-m", "examples.sweeps", "--steps", "8", "--dropout-steps", "8", "--dropout-train", "100",
                  "--init-scales", "1", "--lrs", "0.5,1e6", "--data", str(fake_mnist), "--out", str(out),
                  "--threads", "1", "--no-progress"])
    for name in ("sweep_init.png", "sweep_lr.png", "sweep_dropout.png"):
        png(out / name)
    res = _summary(out)["results"]
    assert len(res["init"]) == 2 and len(res["lr"]) == 4 and len(res["dropout"]) == 4
    huge = [r for r in res["lr"] if r["lr"] == 1e6]
    assert all(r["diverged_at"] for r in huge)  # a rate of a million diverges, with BN or without
    assert "diverged at step" in stdout
    assert len(_csv(out / "sweeps.csv")) == 10


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_prints_each_default_once(script, run):
    text = run(["-m", f"examples.{script}", "--help"])
    assert "--device" in text and "--steps" in text and "--out" in text
    # One block per option: from its flag at the start of a line to the next one.
    blocks = re.split(r"\n  (?=-)", text.split("options:", 1)[1])
    for block in blocks:
        assert block.count("(default") <= 1, f"{script} --help repeats a default:\n{block}"
    assert "(default: cpu)" in text and "(default: None)" not in text
    if script == "bn_mnist":  # the paper's length and data, and a choice named "default" do not hide a default
        assert "(default: 50000)" in text and "(default: mnist)" in text and "(default: gaussian)" in text


def test_progress_lines_in_a_log(capsys, monkeypatch):
    """Without a terminal, progress is plain lines (no carriage returns) that name what is trained."""
    monkeypatch.setattr(_common.sys.stderr, "isatty", lambda: False, raising=False)
    bar = _common.progress(range(4), 4, "training the nets without and with BN", disable=False, every_s=0.0)
    for i in bar:
        bar.set_postfix(test_acc_with_BN=f"0.{i}")
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and len(lines) == 4
    assert lines[-1].startswith("training the nets without and with BN: 4/4 (100%)")
    assert lines[-1].endswith("test_acc_with_BN=0.3")
    quiet = _common.progress(range(3), 3, "x", disable=True)
    assert list(quiet) == [0, 1, 2] and capsys.readouterr().err == ""


def test_power_iteration_finds_the_top_eigenvalue():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    a = q @ np.diag([7.0, -3.0, 2.0, 1.0, 0.5, 0.1]) @ q.T
    value, iters = landscape.power_iteration(lambda v: [a @ v[0]], [(6,)], iters=500, tol=1e-10)
    assert value == pytest.approx(7.0, rel=1e-6) and iters < 500


@pytest.mark.parametrize("batch_norm", [False, True])
def test_hvp_operator_matches_torch(batch_norm):
    """Exact products through autograd.functional.hvp, BatchNorm included, equal PyTorch's."""
    torch = pytest.importorskip("torch")
    minigrad.manual_seed(0)
    rng = np.random.default_rng(0)
    layers = [nn.Linear(5, 4)] + ([nn.BatchNorm1d(4)] if batch_norm else []) + [nn.Sigmoid(), nn.Linear(4, 3)]
    model = nn.Sequential(*layers)
    x = rng.standard_normal((8, 5)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    hvp, method = landscape.hvp_operator(model, minigrad.tensor(x), minigrad.tensor(y))
    assert method.startswith("exact")
    v = [rng.standard_normal(tuple(p.shape)) for p in model.parameters()]
    ours = hvp(v)

    tl = [torch.nn.Linear(5, 4)] + ([torch.nn.BatchNorm1d(4)] if batch_norm else []) + [torch.nn.Sigmoid(),
                                                                                          torch.nn.Linear(4, 3)]
    tm = torch.nn.Sequential(*tl).double()
    params = [torch.tensor(p.detach().numpy(), dtype=torch.float64) for p in model.parameters()]
    names = [n for n, _ in tm.named_parameters()]

    def loss(*ps):
        out = torch.func.functional_call(tm, dict(zip(names, ps)), (torch.tensor(x, dtype=torch.float64),))
        return torch.nn.functional.cross_entropy(out, torch.tensor(y))

    _, theirs = torch.autograd.functional.hvp(loss, tuple(params), tuple(torch.tensor(a) for a in v))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-6)


def test_noisy_shift():
    noise = noisy_bn.NoisyShift(3, shift=0.5, scale=2.0, sigma=0.1)
    x = minigrad.zeros(4000, 3)
    a, b = noise(x).numpy(), noise(x).numpy()
    # Non-zero, time-varying means within ±shift; per-example spread sigma.
    assert np.all(np.abs(a.mean(0)) <= 0.5 + 0.01) and not np.allclose(a.mean(0), b.mean(0), atol=1e-3)
    np.testing.assert_allclose(a.std(0), 0.1, rtol=0.1)
    ones = noise(minigrad.ones(4000, 3)).numpy()  # scale in [1/2, 2] (plus the shift)
    assert np.all((ones.mean(0) > 0.5 - 0.5 - 0.01) & (ones.mean(0) < 2 + 0.5 + 0.01))
    noise.eval()
    np.testing.assert_array_equal(noise(minigrad.ones(5, 3)).numpy(), np.ones((5, 3)))
    with pytest.raises(ValueError, match="need scale >= 1"):
        noisy_bn.NoisyShift(3, scale=0.5)


def test_build_mlp_options():
    m = _common.build_mlp(True, "gaussian", 0, hidden=(7, 5), activation="relu", dropout=0.2, init_scale=3.0,
                          momentum=0.9, after_norm=lambda: nn.Identity())
    kinds = [type(x).__name__ for x in m]
    assert kinds == ["Linear", "BatchNorm1d", "Identity", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert m[1].momentum == 0.9
    np.testing.assert_allclose(m[0].weight.detach().numpy().std(), 3.0 / np.sqrt(784), rtol=0.1)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        _common.build_mlp(False, activation="swish")
    with pytest.raises(ValueError, match="unknown init 'xavier'"):
        _common.build_mlp(False, init="xavier")


def _history(n):
    steps = np.arange(n) * 100
    plain = np.minimum(0.98, 0.1 + 0.9 * (1 - np.exp(-steps / 200)))
    return steps, plain, np.minimum(0.985, plain + 0.05)


def test_plot_accuracy_clips_nothing_and_magnifies_the_end():
    """Issue 13: panel (a) must show the start of both curves (it was cut at 0.78)."""
    plt = _common.pyplot()
    steps, plain, bn = _history(60)
    fig, ax = plt.subplots()
    _common.plot_accuracy(ax, steps, [(plain, "--", "gray", "Without BN"), (bn, "-", "blue", "With BN")])
    assert ax.get_ylim()[0] <= plain.min() and ax.get_ylim()[1] >= bn.max()
    (inset,) = ax.child_axes
    assert inset.get_ylim()[0] > 0.9 and inset.get_xlim()[0] >= 0.1 * steps[-1]
    plt.close(fig)


def test_figure1_panel_b_label_clears_panel_a():
    """Issue 13: the y label of panel (b) touched panel (a)."""
    from examples import bn_mnist

    plt = _common.pyplot()
    steps, plain, bn = _history(401)
    rng = np.random.default_rng(0)
    pct = {k: np.sort(rng.normal(0, 2, (len(steps), 3, 100)), axis=1) for k in ("plain", "bn")}
    hist = {"step": steps.tolist(), "acc_plain": plain.tolist(), "acc_bn": bn.tolist()}
    figs = bn_mnist.figures(hist, pct, 0, "title")
    assert set(figs) == {"figure1.png", "accuracy.png", "percentiles.png"}
    fig = figs["figure1.png"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    a, b, _ = fig.axes[:3]
    label = b.yaxis.label.get_window_extent(renderer)
    panel_a = a.get_tightbbox(renderer)  # the axes with its tick labels and inset
    assert label.x0 > panel_a.x1 + 5, (label, panel_a)
    for f in figs.values():
        plt.close(f)
