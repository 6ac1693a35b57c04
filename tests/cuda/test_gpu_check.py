"""``tools/gpu_check.py`` (``make gpu-check``) as far as a machine without a GPU can check it.

Its steps run and report, a step that hangs is killed at its timeout (its
child processes too), the overall budget holds, and the summary is written
after every step whatever happens; without a GPU the GPU steps say "no GPU".
The parsers of its test reports are checked on made-up reports, and the
``cuda`` marker it selects tests with is checked on the real suite.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import minigrad as mg

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "gpu_check.py"
no_gpu_here = pytest.mark.skipif(mg.cuda.is_available(), reason="this machine has a GPU: run make gpu-check")


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("minigrad_gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a killed process may linger as a zombie until its new parent reaps it)."""
    for _ in range(50):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.1)
    return True


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@no_gpu_here
def test_without_a_gpu_every_gpu_step_says_so_and_the_summary_is_written(tmp_path):
    out = tmp_path / "check"
    res = subprocess.run([sys.executable, str(SCRIPT), "--no-build", "--out", str(out)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 2, res.stdout + res.stderr  # 2: no GPU, nothing else failed
    s = summary(out)
    steps = {st["name"]: st for st in s["steps"]}
    assert list(steps) == ["environment", "build", "availability", "compile", "tests", "benchmarks"]
    assert steps["environment"]["status"] == steps["availability"]["status"] == "ok"
    assert steps["build"]["status"] == "skipped"
    assert s["gpu"] is False and s["no_gpu_reason"] == mg.cuda.unavailable_reason()
    for name in ("compile", "tests", "benchmarks"):
        assert steps[name]["status"] == "no GPU" and steps[name]["note"] == s["no_gpu_reason"]
    assert s["machine"]["python"] and s["machine"]["packages"]["numpy"]
    assert s["finished"] and s["wall_s"] < 120
    md = (out / "summary.md").read_text()
    assert "| compile | no GPU |" in md and s["no_gpu_reason"] in md
    assert "no GPU:" in res.stdout


def test_a_hanging_step_is_killed_with_its_children_and_recorded(gpu_check, tmp_path):
    check = gpu_check.Check(tmp_path)
    # A child that starts a grandchild, reports its pid, then both sleep.
    code = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
            " print('grandchild', p.pid, flush=True); time.sleep(60)")
    t = time.monotonic()
    step = check.run("tests", [sys.executable, "-c", code], timeout=2)
    assert time.monotonic() - t < 20
    assert step["status"] == "timeout" and "killed after" in step["note"]
    pid = int(check.log_text(step).rsplit("grandchild", 1)[1].split()[0])  # the last line (the first echoes the command)
    assert not _alive(pid), "the grandchild survived: the step's process group was not killed"
    assert summary(tmp_path)["steps"][-1]["status"] == "timeout"


def test_a_failing_step_and_the_budget(gpu_check, tmp_path):
    check = gpu_check.Check(tmp_path, budget_s=gpu_check.RESERVE_S + 30)
    failed = check.run("build", [sys.executable, "-c", "raise SystemExit(3)"])
    assert failed["status"] == "failed" and failed["returncode"] == 3
    assert check.run("environment", [sys.executable, "-c", "print('ok')"])["status"] == "ok"
    check.deadline = time.monotonic()  # the budget is spent: later steps do not start
    late = check.run("tests", [sys.executable, "-c", "print('never')"])
    assert late["status"] == "out of time" and not (tmp_path / "tests.log").exists()
    assert [st["status"] for st in summary(tmp_path)["steps"]] == ["failed", "ok", "out of time"]


def test_timeouts_fit_the_budget(gpu_check):
    """Each step has its own timeout, and the overall budget keeps the whole check under 8 minutes."""
    assert set(gpu_check.TIMEOUTS) == {"environment", "build", "availability", "compile", "tests", "benchmarks"}
    assert gpu_check.DEFAULT_BUDGET_S + gpu_check.RESERVE_S < 8 * 60


@no_gpu_here
def test_the_gpu_steps_run_their_commands(gpu_check, tmp_path):
    """The tests, benchmarks and compile steps' commands run here too (nothing to select, measure or compile)."""
    check = gpu_check.Check(tmp_path, jobs=1)
    check.test_paths = ["tests/test_dlpack.py"]  # two cuda-marked tests, skipped here
    check.tests()
    assert summary(tmp_path)["tests"]["skipped"] == 2
    check.benchmarks()
    assert summary(tmp_path)["benchmarks"]["skipped"] is True
    check.compile()
    step = summary(tmp_path)["steps"][-1]
    assert step["status"] == "failed" and "CUDAUnavailableError" in check.log_text(step)
    assert "## Tests" in (tmp_path / "summary.md").read_text()


def test_reports_are_parsed(gpu_check, tmp_path):
    report = tmp_path / "r.xml"
    report.write_text("""<?xml version="1.0"?><testsuites><testsuite name="pytest">
      <testcase classname="tests.cuda.test_kernels" name="test_a[gpu-f32]"/>
      <testcase classname="tests.cuda.test_kernels" name="test_b[gpu-f64]"><failure message="assert 1 == 2">trace</failure></testcase>
      <testcase classname="tests.cuda.test_kernels" name="test_c"><error message="fixture broke"/></testcase>
      <testcase classname="tests.norm.test_x" name="test_d[cuda]"><skipped type="pytest.skip" message="no"/></testcase>
      <testcase classname="tests.norm.test_x" name="test_e[cuda]"><skipped type="pytest.xfail" message="known"/></testcase>
    </testsuite></testsuites>""")
    counts = gpu_check.junit_summary(report)
    assert (counts["passed"], counts["failed"], counts["errors"], counts["skipped"], counts["xfailed"]) == (1, 1, 1, 1, 1)
    assert counts["first_failures"][0] == {"test": "tests/cuda/test_kernels.py::test_b[gpu-f64]",
                                           "message": "assert 1 == 2"}
    log = ("[gw0] [ 10%] PASSED tests/a.py::test_1[cuda]\n[gw1] [ 20%] FAILED tests/a.py::test_2[cuda]\n"
           "tests/b.py::test_3 SKIPPED (no GPU)\n")
    counts = gpu_check.count_outcomes(log)
    assert (counts["passed"], counts["failed"], counts["skipped"]) == (1, 1, 1)
    assert counts["first_failures"] == [{"test": "tests/a.py::test_2[cuda]", "message": ""}]
    assert gpu_check.last_json('noise\n{"a": 1}\n') == {"a": 1} and gpu_check.last_json("no json") is None


def _collect(*args) -> set:
    res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return {line for line in res.stdout.splitlines() if "::" in line}


def test_the_cuda_marker_selects_exactly_the_gpu_tests():
    """``-m cuda`` (what the check runs) is every real-GPU case and no emulated one."""
    paths = ["tests/cuda", "tests/test_dlpack.py", "tests/norm/test_functional.py"]
    everything, marked = _collect(*paths), _collect("-m", "cuda", *paths)
    params = {t: t.partition("[")[2].rstrip("]").split("-") for t in everything}
    on_gpu = {t for t, p in params.items() if "gpu" in p or "cuda" in p} | {
        "tests/test_dlpack.py::test_cupy_round_trip_without_copy",
        "tests/test_dlpack.py::test_torch_cuda_round_trip_without_copy"}
    assert marked == on_gpu
    assert any("test_kernels.py" in t for t in marked) and any("test_devices.py" in t for t in marked)
    assert any("test_functional.py" in t for t in marked)
    assert not any("emulated" in t for t in marked)
