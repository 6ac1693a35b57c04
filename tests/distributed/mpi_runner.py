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
from dataclasses import dataclass

import pytest


@dataclass
class Context:
    rank: int
    size: int
    backend: str
    device: str
    tmp: str


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
    group = dist.process_group.default_group()
    results = {}
    for name in names:
        minigrad.manual_seed(1234)
        try:
            getattr(module, name)(ctx)
            outcome = None
        except pytest.skip.Exception as exc:  # the check called pytest.skip(reason)
            outcome = f"skip: {exc.msg}"
        except BaseException:  # noqa: BLE001 - reported to pytest with the traceback
            outcome = traceback.format_exc()
        results[name] = group.allgather_object(outcome)
        if ctx.rank == 0:
            with open(out + ".part", "w") as f:
                json.dump({"done": False, "results": results}, f)
            os.replace(out + ".part", out)
    if ctx.rank == 0:
        with open(out + ".part", "w") as f:
            json.dump({"done": True, "results": results}, f)
        os.replace(out + ".part", out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
