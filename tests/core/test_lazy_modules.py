"""Lazily imported submodules resolve on attribute access in a fresh interpreter."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_lazy_attributes_in_a_fresh_process():
    code = ("import minigrad as mg; assert callable(mg.testing.strategies.shapes); "
            "assert mg.nn.BatchNorm2d is mg.norm.BatchNorm2d; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
