"""The GPU benchmark script imports and runs everywhere; without a GPU it says so."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minigrad as mg

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_bench.py"


@pytest.mark.skipif(mg.cuda.is_available(), reason="a GPU is present: run the benchmark itself")
def test_prints_no_gpu_and_writes_json(tmp_path):
    out = tmp_path / "r.json"
    res = subprocess.run([sys.executable, str(SCRIPT), "--json", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("no GPU:")
    assert json.loads(out.read_text())["skipped"] is True


def _load_bench():
    spec = importlib.util.spec_from_file_location("minigrad_gpu_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pytorch_runs_do_not_accumulate_gradients():
    """Each timed forward+backward of PyTorch writes fresh .grad (as minigrad's kernels return fresh
    gradients): a second run gives the gradients of one run, not twice them (run on the CPU here)."""
    torch = pytest.importorskip("torch")
    bench = _load_bench()
    rng = np.random.default_rng(0)
    shape = (4, 3, 5, 5)
    x, g = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
    ops, leaves = bench.torch_cases(torch, x, g, shape, device="cpu")
    assert set(ops) == {"train_forward", "train_forward_backward", "eval"}
    ops["train_forward_backward"]()
    once = [t.grad.clone() for t in leaves]
    ops["train_forward_backward"]()
    for t, first in zip(leaves, once):
        torch.testing.assert_close(t.grad, first)
        assert float(first.abs().max()) > 0
