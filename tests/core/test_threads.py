"""The thread budget: validated, process-wide (threads started later), reaching BLAS, and safe across fork.

Speed is never asserted here (benchmarks/bench.py measures it); these check
that the budget is the one every parallel region and the BLAS pool get.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import minigrad as mg
from minigrad._ext import _parallel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
openmp = pytest.mark.skipif(not mg.threads.have_openmp(), reason="built without OpenMP")


@pytest.fixture
def budget():
    """Restore the thread budget (and BLAS's) and the threading threshold after the test; the team is the
    budget meanwhile (not adaptive: on a busy test machine a probe may find fewer threads ready)."""
    old, old_min, old_adaptive = mg.get_num_threads(), _parallel.parallel_min_size(), _parallel.adaptive()
    _parallel.set_adaptive(False)
    yield
    mg.set_num_threads(old)
    _parallel.set_parallel_min_size(old_min)
    _parallel.set_adaptive(old_adaptive)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None, 10**5, 20_000, mg.threads.max_threads() + 1])
def test_set_num_threads_rejects_nonsense(bad, budget):
    # 10.2: 100,000 used to crash the process later and 20,000 started 20,000 threads
    before = mg.get_num_threads()
    with pytest.raises((TypeError, ValueError), match="set_num_threads"):
        mg.set_num_threads(bad)
    assert mg.get_num_threads() == before


def test_set_num_threads_accepts_numpy_ints(budget):
    mg.set_num_threads(np.int64(1))
    assert mg.get_num_threads() == 1


@openmp
def test_the_budget_is_the_team_size(budget):
    _parallel.set_parallel_min_size(0)
    for n in (1, 2, 3):
        mg.set_num_threads(n)
        assert _parallel.team_size(1 << 20) == n
    _parallel.set_parallel_min_size(1 << 40)
    assert _parallel.team_size(1 << 20) == 1  # below the threshold: one thread


@openmp
def test_the_budget_applies_in_threads_started_later(budget):
    # 10.17: OpenMP's own setting is per thread; minigrad's budget is process-wide, like torch's
    _parallel.set_parallel_min_size(0)
    seen = {}

    def probe(key):
        seen[key] = (mg.get_num_threads(), _parallel.team_size(1 << 20), _blas_threads())

    for n in (1, 2):
        mg.set_num_threads(n)
        t = threading.Thread(target=probe, args=(n,))
        t.start()
        t.join()
        assert seen[n][:2] == (n, n), seen
        assert seen[n][2] in ({n}, set()), seen  # every BLAS pool (if any) at n, seen from the new thread


@openmp
def test_adaptive_team_is_never_larger_than_the_budget(budget):
    # a probe counts the threads ready to work; the team shrinks on a busy machine, never grows
    _parallel.set_parallel_min_size(0)
    mg.set_num_threads(3)
    _parallel.set_adaptive(True, interval=0.0)  # probe at every kernel
    for _ in range(5):
        assert 1 <= _parallel.team_size(1 << 20) <= 3
        assert 1 <= _parallel.ready_threads() <= 3
    _parallel.set_adaptive(True, interval=0.0, late=1e9)  # nobody is ever late: the whole budget
    assert _parallel.team_size(1 << 20) == 3
    with pytest.raises(ValueError):
        _parallel.set_adaptive(True, late=0.0)


def _blas_threads():
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_set_num_threads_reaches_blas(budget):
    # one budget: NumPy's BLAS (what threadpoolctl reports) follows minigrad's setting
    if not _blas_threads():
        pytest.skip("no BLAS library that threadpoolctl can control is loaded")
    for n in (1, 2):
        mg.set_num_threads(n)
        assert _blas_threads() == {n}


def _run(code, timeout=90):
    """Run ``code`` in a fresh interpreter; a hang (the fork bug) fails by timeout, never blocks the suite."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"hung (killed after {timeout} s): {e.stdout!r} {e.stderr!r}")


_WARM = """
import os, sys, numpy as np, minigrad as mg
from minigrad._ext import _parallel
mg.set_num_threads(2)
_parallel.set_parallel_min_size(0)          # every kernel threaded, however small
bn = mg.nn.BatchNorm2d(4)
x, w = mg.randn(8, 4, 16, 16), mg.randn(3, 4, 3, 3)
def work():
    y = bn(x)
    return float((y * y).sum().item()) + float(mg.nn.functional.conv2d(x, w).sum().item())
ref = work()                                # the parent's OpenMP team now exists
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_os_fork_after_threaded_kernels_does_not_hang():
    # 10.5: libgomp cannot restart its pool in a forked child; the child must run single-threaded
    proc = _run(_WARM + """
pid = os.fork()
if pid == 0:
    ok = abs(work() - ref) < 1e-3 and mg.get_num_threads() == 1 and _parallel.forked_child()
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert abs(work() - ref) < 1e-3 and mg.get_num_threads() == 2   # the parent keeps its threads
print("ok")
""")
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_multiprocessing_fork_pool_after_threaded_kernels():
    proc = _run(_WARM + """
import multiprocessing as mp, warnings
def task(i):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        mg.set_num_threads(2)               # asked for, refused with a warning: one thread in the child
    return work(), mg.get_num_threads(), len(w)
with mp.get_context("fork").Pool(2) as pool:
    results = pool.map(task, range(4))
assert all(abs(r - ref) < 1e-3 and n == 1 and warned == 1 for r, n, warned in results), results
print("ok")
""")
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_before_any_threaded_kernel_keeps_the_budget():
    # a child forked before the parent started a team has no broken pool: it keeps its threads
    proc = _run("""
import os, minigrad as mg
mg.set_num_threads(2)
pid = os.fork()
if pid == 0:
    os._exit(0 if mg.get_num_threads() == 2 else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0
print("ok")
""")
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout + proc.stderr
