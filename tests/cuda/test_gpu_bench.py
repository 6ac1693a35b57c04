"""The GPU benchmark script imports and runs everywhere; without a GPU it says so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
