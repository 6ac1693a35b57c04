"""Run the ``check_*`` functions of a test file on every rank of an MPI job (started by conftest.py).

    mpiexec -n 3 python tests/distributed/mpi_runner.py TEST_FILE OUT.json BACKEND DEVICE TMPDIR

Each check runs on all ranks, in the order the file defines them, with a
``Context`` (rank, size, backend, device, a shared temporary directory);
a check that does not apply calls ``pytest.skip(reason)``.
After each check the ranks exchange their outcome (None, "skip: reason"
or a traceback) and rank 0 rewrites OUT.json, so a check that hangs is
named by the last file written before the launcher's timeout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import traceback
from dataclasses import dataclass, field

import numpy as np
import pytest


@dataclass
class Context:
    """What a check knows: its rank, the world size, backend and device, a directory all ranks share.

    ``expect_close``/``expect`` record a failed comparison instead of
    raising at once, so a rank whose numbers are wrong still joins every
    collective the others make; the runner raises the recorded failures
    when the check returns.
    """

    rank: int
    size: int
    backend: str
    device: str
    tmp: str
    failures: list = field(default_factory=list)

    def expect_close(self, actual, desired, err_msg="", **tol):
        try:
            np.testing.assert_allclose(actual, desired, err_msg=err_msg, **tol)
        except AssertionError as exc:
            self.failures.append(str(exc))

    def expect(self, condition, message):
        if not condition:
            self.failures.append(message)


def main(argv):
    path, out, backend, device, tmp = argv
    import minigrad
    import minigrad.distributed as dist

    minigrad.set_num_threads(1)  # the ranks share the machine's cores
    dist.init_process_group(backend, abort_on_exception=False)
    ctx = Context(dist.get_rank(), dist.get_world_size(), backend, device, tmp)
    spec = importlib.util.spec_from_file_location("mpi_checks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = [n for n in vars(module) if n.startswith("check_") and callable(getattr(module, n))]
    results, failed = {}, None
    for name in names:
        if failed is not None:  # a rank left a check early: the ranks may be out of step in their collectives
            results[name] = [f"skip: not run, because {failed} failed first"] * ctx.size
            continue
        minigrad.manual_seed(1234)
        ctx.failures = []
        raised = False
        try:
            getattr(module, name)(ctx)
            outcome = "\n\n".join(ctx.failures) or None
        except pytest.skip.Exception as exc:  # the check called pytest.skip(reason)
            outcome = f"skip: {exc.msg}"
        except BaseException:  # noqa: BLE001 - reported to pytest with the traceback
            outcome, raised = traceback.format_exc(), True
        group = dist.process_group.default_group()  # a check may have destroyed and re-created it
        gathered = group.allgather_object((outcome, raised))
        results[name] = [o for o, _ in gathered]
        if any(r for _, r in gathered):
            failed = name
        if ctx.rank == 0:
            _write(out, results, done=False)
    if ctx.rank == 0:
        _write(out, results, done=True)
    dist.destroy_process_group()


def _write(out, results, done):
    with open(out + ".part", "w") as f:
        json.dump({"done": done, "results": results}, f)
    os.replace(out + ".part", out)


if __name__ == "__main__":
    main(sys.argv[1:])
