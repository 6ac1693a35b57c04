"""Smoke tests of the example scripts bn_mnist and cnn: tiny runs into a tmp dir, outputs checked.

The scripts run in a subprocess, as a user runs them, on a small synthetic
MNIST-format folder (conftest.py), so no data package is needed.
"""

import csv
import json
import os

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the examples need matplotlib (pip install 'minigrad-bn[examples]')")
pytest.importorskip("tqdm", reason="the examples need tqdm (pip install 'minigrad-bn[examples]')")


def test_bn_mnist_smoke(tmp_path, fake_mnist, run, png):
    out = tmp_path / "run"
    stdout = run(["-m", "examples.bn_mnist", "--steps", "30", "--eval-every", "5", "--data", str(fake_mnist),
                   "--out", str(out), "--threads", "1", "--no-progress"])
    for name in ("figure1.png", "accuracy.png", "percentiles.png"):
        png(out / name)
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(0, 31, 5))
    for r in rows:
        assert 0.0 <= float(r["acc_plain"]) <= 1.0 and 0.0 <= float(r["acc_bn"]) <= 1.0
        assert float(r["p15_bn"]) <= float(r["p50_bn"]) <= float(r["p85_bn"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["steps"] == 30 and summary["config"]["batch_size"] == 60
    assert str(fake_mnist) in summary["data"]["description"]
    assert set(summary["final_accuracy"]) == {"plain", "bn"}
    assert summary["timing"]["ms_per_step_plain"] > 0 and summary["timing"]["ms_per_step_bn"] > 0
    for k in ("plain", "bn"):
        assert set(summary["stability"][k]) == {"drift", "jitter", "range"}
    pct = np.load(out / "percentiles.npz")
    assert pct["plain"].shape == pct["bn"].shape == (7, 3, 100)
    # The summary is printed, and says which data and where the outputs went.
    assert "final test accuracy:" in stdout and "first step reaching:" in stdout
    assert "net drift" in stdout and "time per training step:" in stdout
    assert f"data: MNIST-format IDX files from {fake_mnist}" in stdout
    assert f"outputs written to {out}" in stdout


def test_cnn_smoke(tmp_path, fake_mnist, run, png):
    out = tmp_path / "cnn"
    # Run as a file (python examples/cnn.py), the other way users start it.
    stdout = run([os.path.join("examples", "cnn.py"), "--steps", "6", "--batch-size", "32", "--subset", "200",
                   "--repeats", "1", "--data", str(fake_mnist), "--out", str(out), "--threads", "1",
                   "--no-progress"])
    png(out / "training.png")
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and int(rows[-1]["step"]) == 6
    summary = json.loads((out / "summary.json").read_text())
    fold = summary["folding"]
    assert fold["identity_layers"] == 2  # both BN layers folded away
    assert fold["max_abs_logit_diff"] < 1e-3 * max(1.0, fold["max_abs_logit"])
    assert fold["prediction_agreement"] == 1.0
    assert fold["inference_ms_before"] > 0 and fold["inference_ms_after"] > 0
    assert "random subset of 200 train / 100 test" in summary["data"]["description"]
    assert "BN folded into the preceding layers" in stdout and "test accuracy (eval mode):" in stdout
