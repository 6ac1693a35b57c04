"""The CPU benchmark script keeps working: its --quick mode runs and writes the promised JSON.

Speed itself is never asserted here (that is what the benchmark is for).
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_quick_benchmark_writes_its_json(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench.py"), "--quick", "--repeat", "2",
                           "--threads", "1", "--json", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "mg/torch" in proc.stdout and "threads 1" in proc.stdout
    report = json.loads(out.read_text())
    assert report["machine"]["threads"] == 1
    assert report["byte_model"]["train_forward"] == "3S"
    cases = {r["case"] for r in report["results"]}
    for kind in ("BatchNorm2d", "BatchNorm1d", "LayerNorm", "GroupNorm", "MLP step", "CNN step"):
        assert any(kind in c for c in cases), f"no {kind} case in {sorted(cases)}"
    for r in report["results"]:
        assert r["minigrad_s"] > 0
        assert (r["torch_s"] is None) == (r["ratio_minigrad_torch"] is None)
        if "train_forward" in r["case"]:
            assert 0 < r["bandwidth_fraction"]
