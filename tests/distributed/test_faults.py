"""An exception on one rank ends the whole job, non-zero, within seconds (no rank waits forever)."""

import re
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "raising_rank.py"


@pytest.mark.parametrize("runner", [[], ["-m", "mpi4py"]], ids=["python-script", "python-m-mpi4py"])
def test_a_raising_rank_ends_the_job(runner, mpi_launch):
    rc, output, seconds, timed_out = mpi_launch([*runner, SCRIPT], 2, timeout=120)
    ended = time.time()
    assert not timed_out, f"the job hung for {seconds:.0f} s:\n{output[-3000:]}"
    assert rc != 0
    assert "rank 1 fails on purpose" in output
    raised = float(re.search(r"raising at ([0-9.]+)", output).group(1))
    assert ended - raised < 30, f"the job took {ended - raised:.0f} s to end after the exception"
