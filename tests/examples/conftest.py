"""What the example-script tests share: a small MNIST-format folder and a way to run a script as users do.

The scripts run in a subprocess (``python -m examples.NAME``), with the
checkout on PYTHONPATH, on a synthetic learnable 10-class problem in
MNIST's IDX layout, so no data package is needed.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from minigrad.data import write_idx

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:  # the examples live in the checkout, not in the installed package
    sys.path.insert(0, ROOT)


@pytest.fixture(scope="session")
def fake_mnist(tmp_path_factory):
    """A learnable 10-class problem in MNIST's IDX layout (each class lights up its own band of rows)."""
    root = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for split, n in (("train", 400), ("t10k", 100)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 * c + 3:2 * c + 6, 4:24] = 255
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


def _run(args, timeout=180):
    """Run ``python ARGS`` in the checkout; returns (stdout, stderr) and fails the test on a non-zero exit."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["MPLBACKEND"] = "Agg"
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout, proc.stderr


@pytest.fixture
def run():
    """``run(args) -> stdout`` of ``python ARGS`` (see ``_run``)."""
    return lambda args, timeout=180: _run(args, timeout)[0]


@pytest.fixture
def run_both():
    """``run_both(args) -> (stdout, stderr)``."""
    return _run


@pytest.fixture
def png():
    """``png(path)``: assert the file is a non-trivial PNG."""

    def check(path):
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
        assert os.path.getsize(path) > 5000

    return check
