"""One command for a machine with an NVIDIA GPU: build, test and benchmark minigrad there, and summarise.

Run from the repository root with the Python of the GPU machine (no virtual
environment, nothing installed: NumPy, Cython, setuptools, pytest,
pytest-xdist, Hypothesis, CuPy and, for the comparisons, PyTorch must be
there already)::

    make gpu-check                      # or: python3 tools/gpu_check.py [--out gpu-check]

Steps, each a subprocess with its own timeout inside an overall budget
(7.5 minutes by default), so a step that fails or hangs still leaves a
summary:

1. ``environment``: Python, packages, ``nvidia-smi`` (GPU, driver), CuPy,
   CUDA runtime/driver and NVRTC versions, as CuPy sees them;
2. ``build``: ``python setup.py build_ext --inplace -j N`` (the Cython
   extensions, in place);
3. ``availability``: ``minigrad.cuda.is_available()`` and its reason (it
   compiles and runs a test kernel);
4. ``compile``: every kernel module compiled with an empty CuPy cache, then
   loaded again by a fresh process from that cache (cold and warm times: the
   warm one shows whether CuPy reads its disk cache, which CuPy 14.0 does
   not for modules built with ``name_expressions``);
5. ``tests``: every test that needs a GPU (``pytest -m cuda``, not the
   emulated ones), in parallel, with a JUnit report;
6. ``benchmarks``: ``benchmarks/gpu_bench.py`` with few iterations.

Steps 4-6 need a GPU; without one they report ``no GPU`` with the reason.
A step's status is ``ok``, ``failed``, ``timeout`` (killed at its timeout),
``out of time`` (the budget was spent before it), ``no GPU`` or
``skipped`` (``--no-build``).
After every step ``summary.json`` and ``summary.md`` (date, device, driver,
CuPy/NVRTC versions, each step's status and time, test counts with the
first failures, compile times, the benchmark table) are rewritten in the
output folder, next to each step's log. Exit status: 0 when every step
passed, 2 when there was no GPU (and nothing else failed), 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUDGET_S = 450
# Step -> its own timeout in seconds (the overall budget caps them further).
TIMEOUTS = {"environment": 45, "build": 150, "availability": 45, "compile": 60, "tests": 210, "benchmarks": 90}
GPU_STEPS = ("compile", "tests", "benchmarks")
RESERVE_S = 5  # kept back from the budget for writing the summary
MAX_FAILURES = 10

# The scripts the child processes run: each prints one JSON object as its last line of output.
ENVIRONMENT_SCRIPT = r"""
import json, os, platform, sys
from importlib import metadata
info = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
        "cpus": os.cpu_count(), "packages": {}}
for name in ("numpy", "Cython", "setuptools", "pytest", "pytest-xdist", "hypothesis", "torch", "mpi4py"):
    try:
        info["packages"][name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        info["packages"][name] = None
try:
    import cupy
    info["cupy"] = cupy.__version__
    rt = cupy.cuda.runtime
    info["cuda_runtime"] = rt.runtimeGetVersion()
    info["cuda_driver"] = rt.driverGetVersion()
    info["nvrtc"] = ".".join(str(v) for v in cupy.cuda.nvrtc.getVersion())
    info["device_count"] = rt.getDeviceCount()
    props = rt.getDeviceProperties(0)
    name = props["name"]
    info["device"] = name.decode() if isinstance(name, bytes) else str(name)
    info["compute_capability"] = f"{props['major']}.{props['minor']}"
    info["multiprocessors"] = props["multiProcessorCount"]
    info["memory_GiB"] = round(props["totalGlobalMem"] / 2**30, 1)
except Exception as exc:
    info["cupy_error"] = f"{type(exc).__name__}: {exc}"
try:
    import torch
    info["torch_cuda"] = torch.version.cuda
    info["torch_sees_gpu"] = torch.cuda.is_available()
    info["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
except Exception as exc:
    info["torch_error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(info))
"""

AVAILABILITY_SCRIPT = r"""
import json, time
t = time.perf_counter()
import minigrad
available = minigrad.cuda.is_available()
print(json.dumps({"available": available, "reason": minigrad.cuda.unavailable_reason(),
                  "device_count": minigrad.cuda.device_count(), "seconds": time.perf_counter() - t}))
"""

COMPILE_SCRIPT = r"""
import json, time
from minigrad.backends import get_backend
from minigrad.backends.cuda_launch import C_TYPES, KERNEL_FILES
launcher = get_backend("cuda").launcher
t = time.perf_counter()
for names in KERNEL_FILES.values():
    for name in names:
        for dtype in C_TYPES:
            launcher.function(name, dtype)
print(json.dumps({"modules": len(KERNEL_FILES), "kernels": sum(map(len, KERNEL_FILES.values())) * len(C_TYPES),
                  "seconds": time.perf_counter() - t}))
"""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def last_json(text: str):
    """The JSON object on the last line of ``text`` that parses as one (None if none does)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


_OUTCOME = re.compile(r"\b(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b\s+(\S+::\S+)|(\S+::\S+)\s+(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")


def count_outcomes(log: str) -> dict:
    """Test outcomes from a ``pytest -v`` log (the xdist form "[gw0] [ 3%] PASSED t::x" or "t::x PASSED")."""
    outcomes = {}
    for m in _OUTCOME.finditer(log):
        outcome, test = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
        outcomes[test] = outcome
    counts = {k: 0 for k in ("passed", "failed", "errors", "skipped", "xfailed", "xpassed")}
    key = {"PASSED": "passed", "FAILED": "failed", "ERROR": "errors", "SKIPPED": "skipped", "XFAIL": "xfailed",
           "XPASS": "xpassed"}
    for outcome in outcomes.values():
        counts[key[outcome]] += 1
    counts["first_failures"] = [{"test": t, "message": ""} for t, o in outcomes.items() if o in ("FAILED", "ERROR")]
    counts["first_failures"] = counts["first_failures"][:MAX_FAILURES]
    return counts


def junit_summary(path: Path) -> dict:
    """Counts and the first failures (test id, first lines of the message) from a pytest JUnit XML report."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "xfailed": 0, "xpassed": 0, "first_failures": []}
    for suite in suites:
        for case in suite.iter("testcase"):
            test = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
            problem = case.find("failure")
            if problem is None:
                problem = case.find("error")
            skipped = case.find("skipped")
            if problem is not None:
                counts["failed" if problem.tag == "failure" else "errors"] += 1
                if len(counts["first_failures"]) < MAX_FAILURES:
                    text = (problem.get("message") or problem.text or "").strip()
                    counts["first_failures"].append({"test": test, "message": "\n".join(text.splitlines()[:6])})
            elif skipped is not None:
                counts["xfailed" if skipped.get("type") == "pytest.xfail" else "skipped"] += 1
            else:
                counts["passed"] += 1
    return counts


class Check:
    """The steps, their results and the summary files of one run."""

    def __init__(self, out: Path, budget_s: float = DEFAULT_BUDGET_S, python: str = sys.executable,
                 jobs: "int | None" = None, bench_iters: int = 20, timeouts: "dict | None" = None):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.python = python
        self.jobs = jobs or max(1, min(8, os.cpu_count() or 1))
        self.bench_iters = bench_iters
        self.timeouts = {**TIMEOUTS, **(timeouts or {})}
        self.test_paths = ["tests"]
        self.start = time.monotonic()
        self.deadline = self.start + budget_s
        self.summary = {
            "tool": "tools/gpu_check.py", "started": _now(), "finished": None, "wall_s": None, "budget_s": budget_s,
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]], "machine": {}, "gpu": None, "no_gpu_reason": None,
            "steps": [], "tests": None, "compile": None, "benchmarks": None,
        }

    # ---------------------------------------------------------------- running
    def remaining(self) -> float:
        return self.deadline - time.monotonic() - RESERVE_S

    def run(self, name: str, cmd: list, env: "dict | None" = None, log_name: "str | None" = None,
            timeout: "float | None" = None) -> dict:
        """Run ``cmd`` as step ``name`` (log in the output folder); the step record, appended to the summary."""
        limit = min(timeout or self.timeouts[name], self.remaining())
        log = self.out / (log_name or f"{name}.log")
        step = {"name": name, "status": None, "seconds": 0.0, "timeout_s": round(max(limit, 0), 1), "log": log.name,
                "returncode": None, "note": None}
        if limit < 1:
            step.update(status="out of time", note="the overall time budget was spent before this step")
            return self._record(step)
        t = time.monotonic()
        with open(log, "w") as f:
            f.write(f"$ {' '.join(map(str, cmd))}\n")
            f.flush()
            # A session of its own: a timeout kills the step's whole process group (xdist workers included).
            proc = subprocess.Popen([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                                    env={**os.environ, **(env or {})}, start_new_session=True)
            try:
                step["returncode"] = proc.wait(timeout=limit)
                step["status"] = "ok" if step["returncode"] == 0 else "failed"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                step.update(status="timeout", note=f"killed after {limit:.0f} s")
        step["seconds"] = round(time.monotonic() - t, 1)
        return self._record(step)

    def not_run(self, name: str, status: str, note: str) -> dict:
        return self._record({"name": name, "status": status, "seconds": 0.0, "timeout_s": None, "log": None,
                             "returncode": None, "note": note})

    def _record(self, step: dict) -> dict:
        self.summary["steps"].append(step)
        self.write()
        return step

    def fresh(self, name: str) -> Path:
        """The path of report ``name`` in the output folder, an earlier run's file removed."""
        path = self.out / name
        if path.exists():
            path.unlink()
        return path

    def log_text(self, step: dict) -> str:
        return (self.out / step["log"]).read_text(errors="replace") if step.get("log") else ""

    # ------------------------------------------------------------------ steps
    def environment(self) -> None:
        step = self.run("environment", [self.python, "-c", ENVIRONMENT_SCRIPT])
        info = last_json(self.log_text(step)) or {}
        smi = shutil.which("nvidia-smi")
        if smi:
            try:
                res = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,compute_cap",
                                      "--format=csv,noheader"], capture_output=True, text=True, timeout=15)
                info["nvidia_smi"] = res.stdout.strip() or res.stderr.strip()
            except (subprocess.TimeoutExpired, OSError) as exc:
                info["nvidia_smi"] = f"{type(exc).__name__}: {exc}"
        else:
            info["nvidia_smi"] = None
        try:
            res = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                                 cwd=ROOT)
            info["commit"] = res.stdout.strip() or None
        except (subprocess.TimeoutExpired, OSError):
            info["commit"] = None
        self.summary["machine"] = info
        self.write()

    def build(self) -> dict:
        return self.run("build", [self.python, "setup.py", "build_ext", "--inplace", "-j", self.jobs])

    def availability(self) -> None:
        step = self.run("availability", [self.python, "-c", AVAILABILITY_SCRIPT])
        result = last_json(self.log_text(step))
        if result is None:
            why = f"minigrad could not be imported or asked (availability step {step['status']}; see {step['log']})"
            self.summary.update(gpu=False, no_gpu_reason=why)
        else:
            self.summary.update(gpu=bool(result["available"]), no_gpu_reason=result["reason"])
            step["note"] = "CUDA available" if result["available"] else f"no GPU: {result['reason']}"
        self.write()

    def compile(self) -> None:
        cache = self.out / "cupy-cache"
        shutil.rmtree(cache, ignore_errors=True)
        env = {"CUPY_CACHE_DIR": str(cache)}
        cold = self.run("compile", [self.python, "-c", COMPILE_SCRIPT], env=env, log_name="compile-cold.log")
        result = {"cold": last_json(self.log_text(cold))}
        if cold["status"] == "ok":
            warm = self.run("compile", [self.python, "-c", COMPILE_SCRIPT], env=env, log_name="compile-warm.log")
            result["warm"] = last_json(self.log_text(warm))
            if result["cold"] and result["warm"]:
                cold_s, warm_s = result["cold"]["seconds"], result["warm"]["seconds"]
                result["disk_cache_used"] = warm_s < 0.5 * cold_s
                warm["note"] = f"all kernels: {cold_s:.2f} s cold, {warm_s:.2f} s from CuPy's disk cache"
        self.summary["compile"] = result
        self.write()

    def tests(self) -> None:
        report = self.fresh("tests.xml")
        step = self.run("tests", [self.python, "-m", "pytest", *self.test_paths, "-m", "cuda", "-n", self.jobs, "-v", "-rfE",
                                  "-p", "no:cacheprovider", f"--junitxml={report}", "--durations=15"],
                        env={"HYPOTHESIS_PROFILE": "ci"})
        if report.exists():
            counts = junit_summary(report)
        else:  # killed before pytest wrote its report: count what the log shows
            counts = count_outcomes(self.log_text(step))
            counts["partial"] = True
        if step["status"] == "failed" and not (counts["failed"] or counts["errors"]):
            counts["first_failures"].append({"test": "(pytest)", "message": self.log_text(step)[-1500:]})
        step["note"] = ", ".join(f"{v} {k}" for k, v in counts.items() if isinstance(v, int) and v)
        self.summary["tests"] = counts
        self.write()

    def benchmarks(self) -> None:
        report = self.fresh("gpu_bench.json")
        step = self.run("benchmarks", [self.python, "benchmarks/gpu_bench.py", "--iters", self.bench_iters,
                                       "--warmup", max(2, self.bench_iters // 4), "--json", report])
        self.summary["benchmarks"] = json.loads(report.read_text()) if report.exists() else None
        if self.summary["benchmarks"] is None and step["status"] == "ok":
            step.update(status="failed", note="no benchmark report was written")
        self.write()

    def main(self, build: bool = True) -> int:
        """Run every step; returns the exit status (0 passed, 2 no GPU, 1 a step failed)."""
        try:
            self.environment()
            if build:
                self.build()
            else:
                self.not_run("build", "skipped", "--no-build")
            self.availability()
            for name in GPU_STEPS:
                if self.summary["gpu"]:
                    getattr(self, name)()
                else:
                    self.not_run(name, "no GPU", self.summary["no_gpu_reason"])
        finally:
            self.summary["finished"] = _now()
            self.summary["wall_s"] = round(time.monotonic() - self.start, 1)
            self.write()
        if any(st["status"] in ("failed", "timeout", "out of time") for st in self.summary["steps"]):
            return 1
        return 0 if self.summary["gpu"] else 2

    # ----------------------------------------------------------------- output
    def write(self) -> None:
        """Rewrite summary.json and summary.md (atomically: a killed run leaves the previous ones whole)."""
        for name, text in (("summary.json", json.dumps(self.summary, indent=2, default=str)),
                           ("summary.md", render_markdown(self.summary))):
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.out / name)


def _table(header: list, rows: list) -> list:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return lines


def render_markdown(s: dict) -> str:
    """The summary as a Markdown page (what to paste into docs/backends.md and docs/benchmarks.md)."""
    m = s.get("machine") or {}
    device = m.get("device") or "no GPU"
    out = [f"# minigrad GPU check: {s['started'][:10]}, {device}", ""]
    out += _table(["", ""], [
        ["started / finished (UTC)", f"{s['started']} / {s.get('finished') or 'running'}"],
        ["wall time", f"{s.get('wall_s')} s of a {s['budget_s']} s budget"],
        ["minigrad commit", m.get("commit")],
        ["GPU", f"{device}, compute capability {m.get('compute_capability')}, {m.get('multiprocessors')} SMs, "
                f"{m.get('memory_GiB')} GiB" if m.get("device") else (s.get("no_gpu_reason") or "no GPU")],
        ["nvidia-smi (name, driver, memory, cc)", m.get("nvidia_smi")],
        ["CuPy / CUDA runtime / driver / NVRTC",
         f"{m.get('cupy')} / {m.get('cuda_runtime')} / {m.get('cuda_driver')} / {m.get('nvrtc')}"
         if m.get("cupy") else m.get("cupy_error")],
        ["PyTorch (CUDA, cuDNN)", f"{(m.get('packages') or {}).get('torch')} ({m.get('torch_cuda')}, {m.get('cudnn')})"],
        ["Python", f"{m.get('python')} ({m.get('executable')}), {m.get('cpus')} CPUs, {m.get('platform')}"],
        ["packages", ", ".join(f"{k} {v}" for k, v in (m.get("packages") or {}).items())],
    ])
    out += ["", "## Steps", ""]
    out += _table(["step", "status", "seconds", "timeout (s)", "log", "note"],
                  [[st["name"], st["status"], st["seconds"], st["timeout_s"], st["log"], st["note"]] for st in s["steps"]])
    t = s.get("tests")
    if t:
        out += ["", "## Tests (`pytest -m cuda`)", ""]
        out += [", ".join(f"{t[k]} {k}" for k in ("passed", "failed", "errors", "skipped", "xfailed", "xpassed"))
                + (" (partial: the step was killed)" if t.get("partial") else "")]
        for f in t["first_failures"]:
            out += ["", f"- `{f['test']}`"] + ([f"  ```\n  {f['message']}\n  ```".replace("\n", "\n  ")]
                                                if f["message"] else [])
    c = s.get("compile")
    if c and c.get("cold"):
        out += ["", "## Kernel compilation", ""]
        warm = c.get("warm") or {}
        out += [f"{c['cold']['kernels']} kernels in {c['cold']['modules']} modules: {c['cold']['seconds']:.2f} s with an "
                f"empty CuPy cache, {warm.get('seconds', float('nan')):.2f} s from the disk cache in a new process "
                f"(disk cache used: {c.get('disk_cache_used')})."]
    b = s.get("benchmarks")
    if b and not b.get("skipped"):
        out += ["", f"## BatchNorm benchmark (`benchmarks/gpu_bench.py --iters {b.get('iters')}`)", "",
                f"Device-to-device copy bandwidth: {b['copy_bandwidth_GBps']:.0f} GB/s.", ""]
        out += _table(["layer", "shape", "dtype", "op", "minigrad ms", "torch ms", "speed-up", "% of copy BW"],
                      [[r["layer"], tuple(r["shape"]), r.get("dtype", "float32"), r["op"], f"{r['minigrad_ms']:.3f}",
                        f"{r['torch_ms']:.3f}" if "torch_ms" in r else "n/a",
                        f"{r['speedup_vs_torch']:.2f}" if "speedup_vs_torch" in r else "n/a",
                        f"{100 * r['fraction_of_copy_bw']:.1f}"] for r in b["results"]])
        out += [""] + [f"- [{'met' if t['met'] else 'MISSED'}] {t['target']}" for t in b.get("targets", [])]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "gpu-check", help="output folder (default: gpu-check/)")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="overall time budget in seconds")
    parser.add_argument("--jobs", type=int, default=None, help="parallel build jobs and test workers (default: min(8, CPUs))")
    parser.add_argument("--bench-iters", type=int, default=20, help="timed runs per benchmark case")
    parser.add_argument("--no-build", action="store_true", help="use the extensions already built in place")
    parser.add_argument("--step-timeout", action="append", default=[], metavar="STEP=SECONDS",
                        help=f"change a step's timeout (steps: {', '.join(TIMEOUTS)}); repeatable")
    args = parser.parse_args(argv)
    timeouts = {}
    for item in args.step_timeout:
        step, _, seconds = item.partition("=")
        if step not in TIMEOUTS or not seconds.replace(".", "", 1).isdigit():
            parser.error(f"--step-timeout expects STEP=SECONDS with STEP one of {', '.join(TIMEOUTS)}, got {item!r}")
        timeouts[step] = float(seconds)
    check = Check(args.out, budget_s=args.budget, jobs=args.jobs, bench_iters=args.bench_iters, timeouts=timeouts)
    status = check.main(build=not args.no_build)
    s = check.summary
    print(f"gpu-check: {'GPU: ' + str(s['machine'].get('device')) if s['gpu'] else 'no GPU: ' + str(s['no_gpu_reason'])}")
    for st in s["steps"]:
        print(f"  {st['name']:12} {st['status']:8} {st['seconds']:7.1f} s  {st['note'] or ''}")
    print(f"summary: {check.out / 'summary.md'} and summary.json ({s['wall_s']} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
