"""Distributed benchmarks: data-parallel training steps on 1, 2 and 4 MPI ranks of this machine.

For each world size the script launches one MPI job (``mpiexec -n R``) that
measures, with a fixed batch per rank (weak scaling: the paper's MLP at 60,
the seed CNN at 64, float32, synthetic MNIST-shaped data):

* the time per training step (SGD) of
  - ``compute``: the plain model, no communication (what one rank computes);
  - ``ddp+syncbn``: DistributedDataParallel around the model with SyncBatchNorm;
  - ``ddp+bn``: DistributedDataParallel, BatchNorm on each rank's samples
    (rank 0's BN buffers broadcast at each forward, as by default);
  - ``per-param``: the plain model, then one blocking all-reduce per
    parameter after backward (what hand-written averaging does);
  - ``bucketed``: DDP's bucketed, non-blocking averaging alone (no buffer
    broadcast), to compare with ``per-param`` like for like;
  - ``bucket 0``: the same with one bucket per parameter;
* the share of each step spent blocked in communication (every collective
  and every wait goes through a timing wrapper of the process group);
* the SyncBatchNorm layer's forward+backward against BatchNorm's on the
  models' BN inputs;
* the latency of an all-reduce of 16 doubles and of 1 MiB, with and
  without minigrad's MPICH waiting settings (``MINIGRAD_MPI_TUNING=0``).

Each rank uses ``cores // ranks`` threads (at least 1; ``--threads`` pins
it). The load average before and after each job is recorded: the figures of
a loaded machine are not those of a quiet one. "Blocked in communication"
includes waiting for a slower rank: on a machine whose cores are shared
with other work, that waiting dominates.

Usage:
    python benchmarks/distributed_bench.py                     # 1, 2, 4 ranks (a few minutes)
    python benchmarks/distributed_bench.py --json benchmarks/results/distributed-DATE.json
    python benchmarks/distributed_bench.py --quick              # a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = {"mlp": dict(batch=60, shape=(784,)), "cnn": dict(batch=64, shape=(1, 28, 28))}
MODES = ("compute", "ddp+syncbn", "ddp+bn", "per-param", "bucketed", "bucket 0")
BN_INPUTS = {"BatchNorm1d (60, 100)": (60, 100), "BatchNorm2d (64, 32, 26, 26)": (64, 32, 26, 26)}


# ================================================================== worker
def build(name, sync_group=None):
    from examples.bn_mnist import build_mlp
    from examples.cnn import build_cnn
    from minigrad import nn

    model = build_mlp(True, "gaussian", 0) if name == "mlp" else build_cnn(True, 0)
    if sync_group is not None:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group=sync_group)
    return model


class _TimedWork:
    def __init__(self, work, clock):
        self.work, self.clock = work, clock

    def wait(self):
        t0 = time.perf_counter()
        self.work.wait()
        self.clock.seconds += time.perf_counter() - t0
        return True

    def is_completed(self):
        t0 = time.perf_counter()
        done = self.work.is_completed()
        self.clock.seconds += time.perf_counter() - t0
        return done


def timed_group(inner):
    """The process group ``inner``, adding the time spent in each collective (and its waits) to ``.seconds``."""
    import minigrad.distributed as dist

    class TimedGroup(dist.ProcessGroup):
        def __init__(self):
            self.inner, self.rank, self.size, self.backend = inner, inner.rank, inner.size, inner.backend
            self.seconds = 0.0

        def _call(self, fn, *args, **kwargs):
            t0 = time.perf_counter()
            work = fn(*args, **kwargs)
            self.seconds += time.perf_counter() - t0
            return _TimedWork(work, self)

        def allreduce(self, *args, **kwargs):
            return self._call(self.inner.allreduce, *args, **kwargs)

        def allgather(self, *args, **kwargs):
            return self._call(self.inner.allgather, *args, **kwargs)

        def broadcast(self, *args, **kwargs):
            return self._call(self.inner.broadcast, *args, **kwargs)

        def barrier(self):
            self.inner.barrier()

        def allgather_object(self, obj):
            return self.inner.allgather_object(obj)

    return TimedGroup()


def train_steps(name, mode, group, steps, warmup):
    """Median seconds per step and the fraction of the steps spent in communication (this rank)."""
    import minigrad
    from minigrad import optim
    from minigrad.distributed import ReduceOp
    from minigrad.nn import functional as F
    from minigrad.nn.parallel import DistributedDataParallel as DDP

    spec = MODELS[name]
    clock = timed_group(group)
    model = build(name, clock if mode == "ddp+syncbn" else None)
    if mode.startswith("ddp") or mode.startswith("bucket"):
        model = DDP(model, process_group=clock, broadcast_buffers=mode.startswith("ddp"),
                    bucket_cap_mb=0 if mode == "bucket 0" else None)
    opt = optim.SGD(model.parameters(), lr=0.01)
    rng = np.random.default_rng(clock.rank)
    x = minigrad.tensor(rng.standard_normal((spec["batch"],) + spec["shape"]).astype(np.float32))
    y = minigrad.tensor(rng.integers(0, 10, spec["batch"]))
    params = list(model.parameters())
    times, comm = [], []
    for i in range(warmup + steps):
        group.barrier()
        clock.seconds = 0.0
        t0 = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if mode == "per-param":
            for p in params:
                clock.allreduce(p.grad.array, ReduceOp.AVG, p.backend, async_op=False)
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            comm.append(clock.seconds)
    return float(np.median(times)), float(np.sum(comm) / np.sum(times))


def syncbn_overhead(group, repeat):
    """Median forward+backward seconds of BatchNorm and SyncBatchNorm on the models' BN inputs."""
    import minigrad
    from minigrad import nn

    out = {}
    for label, shape in BN_INPUTS.items():
        x = minigrad.randn(*shape, requires_grad=True)
        dy = minigrad.randn(*shape)
        row = {}
        for kind, layer in (("bn", nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d),
                            ("syncbn", nn.SyncBatchNorm)):
            m = layer(shape[1]) if kind == "bn" else layer(shape[1], process_group=group)
            samples = []
            for i in range(repeat + 2):
                group.barrier()
                t0 = time.perf_counter()
                m(x).backward(dy)
                if i >= 2:
                    samples.append(time.perf_counter() - t0)
                x.grad = None
            row[kind] = float(np.median(samples))
        out[label] = row
    return out


def latency(group, repeat):
    """Median seconds of a blocking all-reduce of 16 doubles and of 1 MiB of float32."""
    from minigrad.backends import get_backend
    from minigrad.distributed import ReduceOp

    backend = get_backend("cpu")
    out = {}
    for label, array in (("16 float64", np.ones(16)), ("1 MiB float32", np.ones(1 << 18, dtype=np.float32))):
        samples = []
        for i in range(repeat + 5):
            group.barrier()
            t0 = time.perf_counter()
            group.allreduce(array, ReduceOp.SUM, backend, async_op=False)
            if i >= 5:
                samples.append(time.perf_counter() - t0)
        out[label] = float(np.median(samples))
    return out


def worker(args):
    import minigrad
    import minigrad.distributed as dist

    dist.init_process_group()
    group = dist.process_group.default_group()
    _, local = dist.process_group.local_rank_and_size()
    threads = args.threads or max(1, (os.cpu_count() or 1) // local)
    minigrad.set_num_threads(threads)
    minigrad.manual_seed(0)
    result = {"ranks": group.size, "threads_per_rank": threads,
              "mpi_tuning": {k: os.environ.get(k) for k in ("MPIR_CVAR_POLLS_BEFORE_YIELD",
                                                            "MPIR_CVAR_ENABLE_HEAVY_YIELD")}}
    result["latency_s"] = latency(group, args.repeat * 10)
    if not args.latency_only:
        result["steps"] = {name: {mode: train_steps(name, mode, group, args.steps, args.warmup) for mode in MODES}
                           for name in MODELS}
        result["syncbn_layer_s"] = syncbn_overhead(group, args.repeat)
    every = group.allgather_object(result)
    if group.rank == 0:
        result["per_rank_steps"] = [r.get("steps") for r in every]
        Path(args.worker_out).write_text(json.dumps(result))
    dist.destroy_process_group()


# ================================================================== driver
def machine():
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from mpi4py import MPI  # noqa: F401 - only to name the library; the driver never calls MPI

        mpi = MPI.Get_library_version().splitlines()[0].strip()
    except Exception as exc:  # noqa: BLE001
        mpi = f"unknown ({exc})"
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "mpi": mpi, "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def launch(ranks, args, latency_only=False, tuning=True):
    mpiexec = Path(sys.executable).parent / "mpiexec"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [str(mpiexec if mpiexec.exists() else "mpiexec"), "-n", str(ranks), sys.executable, __file__,
               "--worker-out", str(out), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--repeat", str(args.repeat), "--threads", str(args.threads or 0)]
        cmd += ["--latency-only"] if latency_only else []
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        if not tuning:
            env["MINIGRAD_MPI_TUNING"] = "0"
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
        if proc.returncode != 0 or not out.exists():
            raise SystemExit(f"the {ranks}-rank job failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
                             f"{proc.stderr[-3000:]}")
        result = json.loads(out.read_text())
    result.update(load_before=load_before, load_after=os.getloadavg(), wall_s=time.perf_counter() - t0)
    return result


def fmt(seconds):
    return f"{seconds * 1e3:.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.0f} µs"


def report(runs):
    lines = ["| model | ranks | " + " | ".join(MODES) + " | blocked in communication (ddp+syncbn / ddp+bn) |",
             "|---|---:|" + "---:|" * len(MODES) + "---:|"]
    for name in MODELS:
        for r in runs["jobs"]:
            s = r["steps"][name]
            lines.append(f"| {name} | {r['ranks']} | " + " | ".join(fmt(s[m][0]) for m in MODES)
                         + f" | {s['ddp+syncbn'][1]:.0%} / {s['ddp+bn'][1]:.0%} |")
    lines += ["", "| BN input | ranks | BatchNorm | SyncBatchNorm | overhead |", "|---|---:|---:|---:|---:|"]
    for r in runs["jobs"]:
        for label, row in r["syncbn_layer_s"].items():
            lines.append(f"| {label} | {r['ranks']} | {fmt(row['bn'])} | {fmt(row['syncbn'])} | "
                         f"{row['syncbn'] / row['bn'] - 1:+.0%} |")
    lines += ["", "| ranks | MPICH settings | all-reduce 16 float64 | all-reduce 1 MiB float32 |", "|---:|---|---:|---:|"]
    for r in runs["jobs"] + runs["latency_untuned"]:
        tuned = ", ".join(f"{k.replace('MPIR_CVAR_', '')}={v}" for k, v in r["mpi_tuning"].items() if v) or "defaults"
        lines.append(f"| {r['ranks']} | {tuned} | {fmt(r['latency_s']['16 float64'])} | "
                     f"{fmt(r['latency_s']['1 MiB float32'])} |")
    lines += ["", "load average (1 min) before/after each job: " + "; ".join(
        f"{r['ranks']} ranks {r['load_before'][0]:.1f}/{r['load_after'][0]:.1f}"
        for r in runs["jobs"] + runs["latency_untuned"])]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", default=None, help="comma-separated world sizes (default: 1,2,4; --quick: 1,2)")
    p.add_argument("--steps", type=int, default=30, help="timed training steps per case")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--repeat", type=int, default=30, help="repetitions of the layer timings (latency: x10)")
    p.add_argument("--threads", type=int, default=None, help="threads per rank (default: cores // ranks)")
    p.add_argument("--quick", action="store_true", help="ranks 1,2 and a few steps: a smoke test")
    p.add_argument("--json", help="write the results (and the machine) to this file")
    p.add_argument("--timeout", type=int, default=1800, help="seconds one job may take")
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    p.add_argument("--latency-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker_out:
        return worker(args)
    if args.quick:
        args.steps, args.warmup, args.repeat = 2, 1, 2
    ranks = [int(r) for r in (args.ranks or ("1,2" if args.quick else "1,2,4")).split(",")]
    runs = {"machine": machine(), "config": {k: getattr(args, k) for k in ("steps", "warmup", "repeat", "threads")},
            "models": MODELS, "jobs": [], "latency_untuned": []}
    for r in ranks:
        print(f"{r} rank(s) ...", flush=True)
        runs["jobs"].append(launch(r, args))
    for r in ranks:
        if r > 1:
            runs["latency_untuned"].append(launch(r, args, latency_only=True, tuning=False))
    runs["table"] = report(runs)
    m = runs["machine"]
    print(f"\n{m['cpu']}, {m['cores']} cores, {m['mpi']}, {m['date']}\n")
    print(runs["table"])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(runs, indent=2) + "\n")
        print(f"\nwritten to {args.json}")
    return runs


if __name__ == "__main__":
    main()
