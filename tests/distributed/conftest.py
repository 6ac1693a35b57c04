"""Running checks across MPI ranks from pytest.

A test file in this folder defines ``check_*(ctx)`` functions, the world
sizes to run them at (``WORLD_SIZES``) and one test taking the
``mpi_case`` parameter, ``(size, check, backend, device)``, that calls
``mpi_run(__file__, *mpi_case)``; ``pytest_generate_tests`` below makes
one case per check and world size with MPI on the CPU, and one per check
on one GPU with NCCL (marked ``cuda``, skipped with the reason where there
is no GPU). The first case of a (file, world size, backend)
launches ONE job, ``mpiexec -n SIZE python mpi_runner.py FILE ...``, that
runs every check of the file on all ranks; its per-check, per-rank
outcomes are cached on disk (shared by the pytest-xdist workers, under a
file lock) and each test reports its own check: passed, skipped, or
failed with every failing rank's traceback. A job that hangs is killed
after ``LAUNCH_TIMEOUT`` seconds and the check that was running is named.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RUNNER = HERE / "mpi_runner.py"
#: Seconds one launch may take on a loaded 2-core machine before it counts as hung.
LAUNCH_TIMEOUT = 300


def pytest_generate_tests(metafunc):
    if "mpi_case" not in metafunc.fixturenames:
        return
    checks = [n for n, f in vars(metafunc.module).items() if n.startswith("check_") and callable(f)]
    cases = [pytest.param((size, c, "mpi", "cpu"), id=f"{c}-{size}")
             for c in checks for size in getattr(metafunc.module, "WORLD_SIZES", (2,))]
    cases += [pytest.param((1, c, "nccl", "cuda"), id=f"{c}-nccl", marks=pytest.mark.cuda) for c in checks]
    metafunc.parametrize("mpi_case", cases)


def mpiexec() -> str | None:
    """The ``mpiexec`` next to this Python (the mpich wheel's), else the one on PATH."""
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


def mpi_unavailable_reason() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install 'minigrad-bn[distributed]')"
    if mpiexec() is None:
        return "no mpiexec found (pip install 'minigrad-bn[distributed]' brings MPICH's)"
    return None


def mpi_env() -> dict:
    """The environment of a launch: this checkout importable, one thread per rank (more ranks than cores)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    return env


def launch(args, nprocs, timeout=LAUNCH_TIMEOUT, launcher_args=()):
    """Run ``mpiexec -n NPROCS [launcher_args] python ARGS``; returns (returncode, output, seconds, timed_out).

    On timeout the launcher gets SIGTERM (it ends its ranks), then its whole
    process group SIGKILL, so no rank is left spinning on the machine.
    """
    cmd = [mpiexec(), "-n", str(nprocs), *launcher_args, sys.executable, *map(str, args)]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=mpi_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out, time.monotonic() - start, False
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        return proc.returncode, out, time.monotonic() - start, True


def _shared_root(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _job(root: Path, test_file: str, size: int, backend: str, device: str) -> dict:
    """The record of the job for (file, size, backend): launched by the first caller, read by the others."""
    key = hashlib.sha1(f"{test_file}|{size}|{backend}|{device}".encode()).hexdigest()[:16]
    record_path = root / f"mpi-{key}.json"
    with open(root / f"mpi-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if record_path.exists():
            return json.loads(record_path.read_text())
        tmp = root / f"mpi-{key}-tmp"
        tmp.mkdir(exist_ok=True)
        out = root / f"mpi-{key}-results.json"
        rc, output, seconds, timed_out = launch([RUNNER, test_file, out, backend, device, tmp], size)
        results = json.loads(out.read_text()) if out.exists() else {"done": False, "results": {}}
        record = dict(results, rc=rc, output=output[-6000:], seconds=round(seconds, 1), timed_out=timed_out)
        record_path.write_text(json.dumps(record))
        return record


@pytest.fixture
def mpi_launch():
    """``launch`` (see above), skipped where MPI is missing."""
    reason = mpi_unavailable_reason()
    if reason:
        pytest.skip(reason)
    return launch


def nccl_unavailable_reason() -> str | None:
    import minigrad
    import minigrad.distributed as dist

    if not dist.is_nccl_available():
        return "NCCL needs CuPy with NCCL support (pip install 'minigrad-bn[cuda]') and a GPU"
    if not minigrad.cuda.is_available():
        return f"no CUDA device: {minigrad.cuda.unavailable_reason()}"
    return None


@pytest.fixture(scope="session")
def mpi_run(tmp_path_factory):
    """``mpi_run(test_file, size, check, backend="mpi", device="cpu")``: report ``check``'s outcome on every rank."""
    root = _shared_root(tmp_path_factory)
    memo = {}

    def run(test_file, size, check, backend="mpi", device="cpu"):
        reason = mpi_unavailable_reason() or (nccl_unavailable_reason() if backend == "nccl" else None)
        if reason:
            pytest.skip(reason)
        key = (str(test_file), size, backend, device)
        if key not in memo:
            memo[key] = _job(root, str(test_file), size, backend, device)
        job = memo[key]
        outcomes = job["results"].get(check)
        if outcomes is None:
            what = f"timed out after {job['seconds']} s" if job["timed_out"] else f"ended with status {job['rc']}"
            pytest.fail(f"{check} did not report: the {size}-rank job {what} (a hang or a crash in this check, or "
                        f"before it). Job output:\n{job['output']}", pytrace=False)
        failed = [(r, o) for r, o in enumerate(outcomes) if o is not None and not o.startswith("skip: ")]
        if failed:
            pytest.fail("\n".join(f"--- rank {r} of {size}:\n{o}" for r, o in failed), pytrace=False)
        skipped = [o for o in outcomes if o is not None]
        if skipped:
            pytest.skip(skipped[0][len("skip: "):])

    return run

