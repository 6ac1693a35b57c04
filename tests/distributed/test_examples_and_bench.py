"""The ddp example and the distributed benchmark keep working (smoke runs; speed is never asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def test_ddp_example_trains_and_checkpoints(mpi_launch, tmp_path):
    out = tmp_path / "run"
    rc, output, seconds, timed_out = mpi_launch(
        [REPO / "examples" / "ddp_mnist.py", "--steps", "12", "--eval-every", "6", "--subset", "400",
         "--batch-size", "3", "--model", "cnn", "--out", out, "--no-progress"], 2, timeout=300)
    assert rc == 0 and not timed_out, output[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch"] == 6
    assert set(summary["final_accuracy"]) == {"bn", "syncbn"}
    assert all(0.0 <= a <= 1.0 for a in summary["final_accuracy"].values())
    assert summary["history"]["step"] == [6, 12]
    assert (out / "checkpoint.mg").exists()


def test_distributed_bench_quick(mpi_launch, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "distributed_bench.py"), "--quick", "--ranks",
                           "2", "--json", str(out)], capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    runs = json.loads(out.read_text())
    (job,) = runs["jobs"]
    assert job["ranks"] == 2 and set(job["steps"]) == {"mlp", "cnn"}
    for name, modes in job["steps"].items():
        for mode, (seconds, share) in modes.items():
            assert seconds > 0 and 0 <= share <= 1, (name, mode)
        assert modes["compute"][1] == 0  # no communication without DDP
        assert set(modes) == {"compute", "ddp+syncbn", "ddp+bn", "per-param", "bucketed", "bucket 0"}
    assert np.isfinite(job["latency_s"]["16 float64"]) and len(runs["latency_untuned"]) == 1
    assert "| cnn | 2 |" in runs["table"]
