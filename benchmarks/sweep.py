"""How minigrad's threads behave, quiet and loaded: wait policy, spin count, adaptive team, matmul in the team.

Each variant is minigrad's training steps (the paper's MLP, the seed CNN)
in a worker process of its own (``bench.py --worker``), with the variant's
environment, pinned to ``--threads``; rounds alternate the variants so
that all of them see the same minutes of a shared machine, and the median
of the rounds is reported. With ``--load K`` every variant is timed again
beside K competing processes (``bench.py``'s competitors, bounded and
self-stopping).

Variants: the default (GOMP_SPINCOUNT=30000, adaptive team, products in
minigrad's team); spin counts 0, 1000, 10000 (the earlier default), 100000 and 300000 (libgomp's own); OMP_WAIT_POLICY passive and
active; the adaptive team off; the products in NumPy's BLAS pool
(MINIGRAD_CPU_MATMUL=blas, the threadpoolctl alternative); one thread.

    python benchmarks/sweep.py --json sweep.json            # quiet only
    python benchmarks/sweep.py --load 1 --json sweep.json   # and beside one busy process
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (the worker, the competitors, the environment)

VARIANTS = {
    "default": {},
    "spin 0": {"MINIGRAD_GOMP_SPINCOUNT": "0"},
    "spin 1000": {"MINIGRAD_GOMP_SPINCOUNT": "1000"},
    "spin 10000": {"MINIGRAD_GOMP_SPINCOUNT": "10000"},
    "spin 100000": {"MINIGRAD_GOMP_SPINCOUNT": "100000"},
    "spin 300000": {"MINIGRAD_GOMP_SPINCOUNT": "300000"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "active": {"OMP_WAIT_POLICY": "ACTIVE"},
    "fixed team": {"MINIGRAD_ADAPTIVE_THREADS": "0"},
    "blas pool": {"MINIGRAD_CPU_MATMUL": "blas"},
    "one thread": {"THREADS": "1"},
}


def run_variant(name, threads, seconds):
    env = bench._env()
    extra = dict(VARIANTS[name])
    threads = int(extra.pop("THREADS", threads))
    env.update(extra)
    cmd = [sys.executable, bench.__file__, "--worker", "minigrad", "--cases", "steps", "--threads", str(threads),
           "--step-seconds", str(seconds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode:
        raise RuntimeError(f"{name}: {proc.stderr[-2000:]}")
    return {row["case"]: row["time_s"] for row in json.loads(proc.stdout)["rows"]}


def sweep(threads, seconds, rounds, variants):
    runs = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            runs[v].append(run_variant(v, threads, seconds))
    return {v: {case: statistics.median(r[case] for r in rs) for case in rs[0]} for v, rs in runs.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--step-seconds", type=float, default=2.0)
    ap.add_argument("--load", type=int, default=0, metavar="K")
    ap.add_argument("--load-kind", default="spin", choices=["spin", "numpy", "minigrad", "torch", "mix"])
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",")]
    info = bench.machine_info(args.threads)
    report = {"machine": info, "phases": {}}
    report["phases"]["quiet"] = sweep(args.threads, args.step_seconds, args.rounds, variants)
    if args.load:
        with bench.Load(args.load, args.load_kind, 3600) as load:
            report["phases"][f"load {args.load} {args.load_kind}"] = sweep(args.threads, args.step_seconds,
                                                                           args.rounds, variants)
        report["competitors"] = load.kinds
    info["loadavg_end"] = list(os.getloadavg())
    info["date_end"] = time.strftime("%Y-%m-%d %H:%M")
    print(f"{info['cpu']} ({info['cores']} cores), {args.threads} threads, load average {info['loadavg_start'][0]:.2f}"
          f" -> {info['loadavg_end'][0]:.2f}")
    for phase, res in report["phases"].items():
        print(f"\n{phase}")
        for v, cases in res.items():
            print(f"  {v:12s} " + "  ".join(f"{case[:9]} {t * 1e3:8.2f} ms" for case, t in cases.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
