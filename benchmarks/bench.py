"""CPU benchmarks: minigrad against plain NumPy and PyTorch, each library in its own process.

Every library runs in a worker process of its own (two OpenMP runtimes in
one process distort both, and no user has that setting), on the same input
arrays (same seeds), and reports the median time over repeated samples after
warm-up and the spread (interquartile range). The driver (this script
without ``--worker``) starts the workers, alternates them (ABAB: minigrad,
PyTorch, minigrad, PyTorch) so that both see the same minutes of a shared
machine, and takes the median of the rounds.

Two settings: ``pinned`` (``--threads N`` set through each library's own
call: ``mg.set_num_threads``, ``torch.set_num_threads``, threadpoolctl for
NumPy) and ``default`` (nothing set: what a user gets). Training steps are
timed quiet and, with ``--load K``, again beside K competing processes
(``--load-kind``: ``spin`` a busy Python loop, ``numpy`` a BLAS matmul loop,
``minigrad``/``torch`` a training loop of the seed CNN with default threads,
``mix`` cycling through them). Competitors are bounded: each stops after
``--load-seconds`` or when the driver is gone, whichever comes first.

For the normalization kernels the table also gives the achieved bandwidth
as a fraction of a copy of the same tensor measured in the same process.
Byte model (S = the tensor's size in bytes): eval forward moves 2S (read x,
write y), training forward 3S (read x twice: statistics, then normalize;
write y), backward 3S, forward+backward 6S. A copy moves 2S, so fraction =
(model_bytes / t) / (2S / t_copy).

Usage:
    python benchmarks/bench.py                       # kernels and steps, quiet (several minutes)
    python benchmarks/bench.py --load 1              # and the steps beside one busy process
    python benchmarks/bench.py --load 2 --load-kind mix --steps-only
    python benchmarks/bench.py --quick               # tiny sizes: a smoke test
    python benchmarks/bench.py --json out.json --threads 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LIBS = ("minigrad", "numpy", "torch")


# ================================================================ worker side
def measure(fn, repeat, warmup, min_time=0.0):
    """Median and interquartile range (seconds) of ``fn()`` over ``repeat`` samples.

    Fast functions are called several times per sample so that each sample
    lasts at least ``min_time``.
    """
    import numpy as np

    for _ in range(warmup):
        fn()
    inner = 1
    if min_time:
        t0 = time.perf_counter()
        fn()
        once = max(time.perf_counter() - t0, 1e-7)
        inner = max(1, int(min_time / once))
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    q1, med, q3 = np.percentile(samples, [25, 50, 75])
    return float(med), float(q3 - q1)


def measure_steps(step, seconds, min_steps=30, warmup=10):
    """Median and IQR of single training steps, timed one by one for ``seconds`` (at least ``min_steps``):
    under load the scheduler's hiccups then show up in the spread, not in an average."""
    import numpy as np

    for _ in range(warmup):
        step()
    samples, end = [], time.perf_counter() + seconds
    while len(samples) < min_steps or (time.perf_counter() < end and len(samples) < 5000):
        t0 = time.perf_counter()
        step()
        samples.append(time.perf_counter() - t0)
    q1, med, q3 = np.percentile(samples, [25, 50, 75])
    return float(med), float(q3 - q1)


def _np_bn_train(x, axes, eps=1e-5):
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    invstd = 1.0 / (var + eps) ** 0.5
    return (x - mean) * invstd, mean, invstd


def _np_bn_backward(dy, xhat, invstd, axes):
    m = dy.size // invstd.size
    dbeta = dy.sum(axis=axes, keepdims=True)
    dgamma = (dy * xhat).sum(axis=axes, keepdims=True)
    return invstd * (dy - dbeta / m - xhat * dgamma / m), dgamma, dbeta


def paper_mlp(nn):
    """The paper's MLP with BN before each sigmoid, built from ``nn`` (minigrad.nn or torch.nn)."""
    layers, d = [], 784
    for _ in range(3):
        layers += [nn.Linear(d, 100), nn.BatchNorm1d(100), nn.Sigmoid()]
        d = 100
    return nn.Sequential(*layers, nn.Linear(100, 10))


def seed_cnn(nn):
    """The seed's CNN, built from ``nn`` (minigrad.nn or torch.nn)."""
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(32 * 13 * 13, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))


class Lib:
    """One library's way to build layers, tensors and steps (the worker imports only its own)."""

    def __init__(self, name, threads):
        import numpy as np

        self.name, self.np = name, np
        if name == "minigrad":
            import minigrad as mg

            self.mod, self.nn, self.optim = mg, mg.nn, mg.optim
            if threads:
                mg.set_num_threads(threads)
        elif name == "torch":
            import torch

            self.mod, self.nn, self.optim = torch, torch.nn, torch.optim
            if threads:
                torch.set_num_threads(threads)
        elif name == "numpy":
            if threads:
                from threadpoolctl import threadpool_limits

                threadpool_limits(threads)
        else:
            raise ValueError(name)

    def tensor(self, a, requires_grad=False):
        if self.name == "minigrad":
            return self.mod.tensor(a, requires_grad=requires_grad)
        t = self.mod.from_numpy(a.copy())
        return t.requires_grad_(True) if requires_grad else t

    def no_grad(self):
        return self.mod.no_grad()

    def versions(self):
        info = {"numpy": self.np.__version__}
        if self.name != "numpy":
            info[self.name] = self.mod.__version__
        if self.name == "minigrad":
            from minigrad.backends import cpu

            info["minigrad_openmp"] = self.mod.threads.have_openmp()
            info["minigrad_kernels"] = cpu._kernels().simd()
            info["malloc_tuned"] = cpu.MALLOC_TUNED
            info["threads_used"] = self.mod.get_num_threads()
        elif self.name == "torch":
            info["threads_used"] = self.mod.get_num_threads()
        return info


def bn_cases(lib, shape, dtype, repeat, warmup, min_time):
    """Training forward, forward+backward and eval of BatchNorm on one shape (one library)."""
    np = lib.np
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal(shape).astype(dtype)
    dy_np = rng.standard_normal(shape).astype(dtype)
    c, size = shape[1], x_np.nbytes
    axes = (0,) + tuple(range(2, len(shape)))
    kind = "BatchNorm2d" if len(shape) == 4 else "BatchNorm1d"
    copy_dst = np.empty_like(x_np)
    copy_bw = 2 * size / measure(lambda: np.copyto(copy_dst, x_np), repeat, warmup, min_time)[0]
    if lib.name == "numpy":
        bshape = (1, c) + (1,) * (len(shape) - 2)
        scale, shift = rng.standard_normal(bshape).astype(dtype), rng.standard_normal(bshape).astype(dtype)

        def fwd_bwd():
            xhat, _, invstd = _np_bn_train(x_np, axes)
            _np_bn_backward(dy_np, xhat, invstd, axes)

        impls = {"train_forward": lambda: _np_bn_train(x_np, axes), "forward_backward": fwd_bwd,
                 "eval_forward": lambda: x_np * scale + shift}
        layer = None
    else:
        layer = getattr(lib.nn, kind)(c, dtype=getattr(lib.mod, np.dtype(dtype).name))
        x, dy = lib.tensor(x_np, requires_grad=True), lib.tensor(dy_np)

        def fwd_bwd():
            x.grad = None
            layer(x).backward(dy)

        def ev():
            with lib.no_grad():
                return layer(x)

        impls = {"train_forward": lambda: layer(x), "forward_backward": fwd_bwd, "eval_forward": ev}
    rows = []
    for mode, nbytes in (("train_forward", 3), ("forward_backward", 6), ("eval_forward", 2)):
        if layer is not None:
            layer.train(mode != "eval_forward")
        t = measure(impls[mode], repeat, warmup, min_time)
        rows.append(dict(case=f"{kind}{shape} {np.dtype(dtype).name} {mode}", time_s=t[0], iqr_s=t[1],
                         bandwidth_fraction=(nbytes * size / t[0]) / copy_bw, bytes_model=f"{nbytes}S",
                         copy_gbps=copy_bw / 1e9))
    return rows


def layer_group_norm_case(lib, kind, shape, repeat, warmup, min_time):
    """Training forward+backward of LayerNorm or GroupNorm (one library)."""
    np = lib.np
    rng = np.random.default_rng(1)
    x_np = rng.standard_normal(shape).astype(np.float32)
    dy_np = rng.standard_normal(shape).astype(np.float32)
    if lib.name == "numpy":
        xr = x_np if kind == "LayerNorm" else x_np.reshape(shape[0], 8, -1)
        axes = tuple(range(1, len(shape))) if kind == "LayerNorm" else (2,)

        def f():
            xhat, _, invstd = _np_bn_train(xr, axes)
            _np_bn_backward(dy_np.reshape(xr.shape), xhat, invstd, axes)
    else:
        layer = lib.nn.LayerNorm(shape[1:]) if kind == "LayerNorm" else lib.nn.GroupNorm(8, shape[1])
        x, dy = lib.tensor(x_np, requires_grad=True), lib.tensor(dy_np)

        def f():
            x.grad = None
            layer(x).backward(dy)
    t = measure(f, repeat, warmup, min_time)
    return [dict(case=f"{kind}{shape} float32 forward_backward", time_s=t[0], iqr_s=t[1])]


def overhead_case(lib, chain, repeat, warmup, min_time):
    """The engine's per-operation overhead: ``chain`` multiply-adds on a one-element tensor, forward and
    backward, so that recording, dispatch and the backward walk are all that is timed (per operation)."""
    if lib.name == "numpy":
        return []

    def f():
        x = lib.tensor(lib.np.ones(1, dtype=lib.np.float32), requires_grad=True)
        y = x
        for _ in range(chain):
            y = y * 1.0001 + 0.5
        y.sum().backward()

    per = 2 * chain + 1
    t = measure(f, repeat, warmup, min_time)
    return [dict(case="engine overhead per op (fwd+bwd, 1 element)", time_s=t[0] / per, iqr_s=t[1] / per)]


def make_step(lib, which, quick=False):
    """One SGD training step (forward, cross-entropy, backward, update) of the paper's MLP or the seed CNN."""
    np = lib.np
    if which == "mlp":
        batch = 8 if quick else 60
        rng = np.random.default_rng(2)
        x_np = rng.standard_normal((batch, 784)).astype(np.float32)
        model = paper_mlp(lib.nn)
    else:
        batch = 4 if quick else 64
        rng = np.random.default_rng(3)
        x_np = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
        model = seed_cnn(lib.nn)
    y_np = rng.integers(0, 10, batch)
    opt = lib.optim.SGD(model.parameters(), lr=0.1)
    x, y = lib.tensor(x_np), lib.tensor(y_np)
    cross_entropy = lib.nn.functional.cross_entropy

    def step():
        loss = cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    name = f"MLP step 784-100x3-10 BN batch {batch}" if which == "mlp" else f"CNN step batch {batch}"
    return name, step


def run_worker(args):
    lib = Lib(args.worker, args.threads)
    quick = args.quick
    repeat = args.repeat or (3 if quick else 21)
    warmup, min_time = (1, 0.0) if quick else (3, 0.02)
    rows = []
    if "kernels" in args.cases:
        if quick:
            bn_shapes = [((4, 3, 5, 5), "float32"), ((6, 8), "float32")]
            norm_shapes = [("LayerNorm", (4, 8)), ("GroupNorm", (2, 8, 3, 3))]
        else:
            bn_shapes = [((32, 64, 56, 56), "float32"), ((128, 256, 14, 14), "float32"),
                         ((32, 64, 56, 56), "float64"), ((256, 1024), "float32"), ((60, 100), "float32")]
            norm_shapes = [("LayerNorm", (256, 1024)), ("GroupNorm", (32, 64, 28, 28))]
        for shape, dtype in bn_shapes:
            rows += bn_cases(lib, shape, dtype, repeat, warmup, min_time)
        for kind, shape in norm_shapes:
            rows += layer_group_norm_case(lib, kind, shape, repeat, warmup, min_time)
        rows += overhead_case(lib, 10 if quick else 200, repeat, warmup, min_time)
    if "steps" in args.cases and lib.name != "numpy":
        for which in ("mlp", "cnn"):
            name, step = make_step(lib, which, quick)
            t = measure_steps(step, 0.2 if quick else args.step_seconds, min_steps=5 if quick else 30,
                              warmup=2 if quick else 10)
            rows.append(dict(case=name, time_s=t[0], iqr_s=t[1]))
    json.dump({"library": lib.name, "versions": lib.versions(), "rows": rows}, sys.stdout)


# ============================================================ competitors
def run_competitor(kind, seconds):
    """A competing process: runs its kind of work until ``seconds`` have passed or its parent is gone."""
    parent, end = os.getppid(), time.monotonic() + seconds

    def alive():
        return time.monotonic() < end and os.getppid() == parent

    if kind == "spin":
        while alive():
            x = 0
            for _ in range(200_000):
                x += 1
        return
    if kind == "numpy":
        import numpy as np

        a = np.random.default_rng(0).standard_normal((384, 384))
        while alive():
            a = a @ a
            a /= np.abs(a).max()
        return
    lib = Lib(kind, 0)  # a training job with its library's default threads
    _, step = make_step(lib, "cnn")
    while alive():
        step()


class Load:
    """K competing processes beside the benchmark, for a bounded time; stopped on exit."""

    def __init__(self, k, kind, seconds):
        kinds = ["spin", "numpy", "minigrad", "torch"] if kind == "mix" else [kind]
        if "torch" in kinds and importlib.util.find_spec("torch") is None:
            kinds = [k for k in kinds if k != "torch"] or ["spin"]
        self.kinds = [kinds[i % len(kinds)] for i in range(k)]
        self.seconds, self.procs = seconds, []

    def __enter__(self):
        for kind in self.kinds:
            self.procs.append(subprocess.Popen([sys.executable, __file__, "--competitor", kind, "--load-seconds",
                                                str(self.seconds)], env=_env(), stdout=subprocess.DEVNULL))
        time.sleep(2.0)  # let them import and reach their steady state
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


# ================================================================ driver side
def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def call_worker(lib, cases, threads, args):
    cmd = [sys.executable, __file__, "--worker", lib, "--cases", cases, "--threads", str(threads),
           "--step-seconds", str(args.step_seconds)]
    if args.quick:
        cmd.append("--quick")
    if args.repeat:
        cmd += ["--repeat", str(args.repeat)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=3600)
    if proc.returncode:
        raise RuntimeError(f"{lib} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def machine_info(threads):
    """CPU model, core count and the load, for the record."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu, "cores": os.cpu_count(), "threads": threads,
            "python": platform.python_version(), "loadavg_start": list(os.getloadavg())}


def run_libs(libs, cases, setting, args, rounds):
    """Every library's rows for ``cases``, in alternating rounds; the median of each row over the rounds."""
    import statistics

    per_lib = {lib: [] for lib in libs}
    versions = {}
    for _ in range(rounds):
        for lib in libs:
            out = call_worker(lib, cases, args.threads if setting == "pinned" else 0, args)
            per_lib[lib].append(out["rows"])
            versions[lib] = out["versions"]
    merged = {}
    for lib, runs in per_lib.items():
        for i, row in enumerate(runs[0]):
            times = [run[i]["time_s"] for run in runs]
            merged.setdefault(row["case"], {})[lib] = dict(row, time_s=statistics.median(times), rounds_s=times)
    return merged, versions


def _fmt(t):
    if t is None:
        return "-"
    return f"{t * 1e3:.3f} ms" if t >= 1e-3 else f"{t * 1e6:.1f} us"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (a smoke test)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="the pinned thread count")
    ap.add_argument("--repeat", type=int, default=None, help="timed samples per kernel case")
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds per library (median taken)")
    ap.add_argument("--step-seconds", type=float, default=3.0, help="seconds of single steps timed per case")
    ap.add_argument("--load", type=int, default=0, metavar="K", help="also time the steps beside K competitors")
    ap.add_argument("--load-kind", default="spin", choices=["spin", "numpy", "minigrad", "torch", "mix"])
    ap.add_argument("--load-seconds", type=float, default=900.0, help="upper bound on a competitor's life")
    ap.add_argument("--steps-only", action="store_true", help="only the training steps")
    ap.add_argument("--kernels-only", action="store_true", help="only the kernel rows (quiet, pinned)")
    ap.add_argument("--worker", choices=LIBS, help=argparse.SUPPRESS)
    ap.add_argument("--cases", default="kernels,steps", help=argparse.SUPPRESS)
    ap.add_argument("--competitor", choices=["spin", "numpy", "minigrad", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return run_worker(args)
    if args.competitor:
        return run_competitor(args.competitor, args.load_seconds)

    have_torch = importlib.util.find_spec("torch") is not None
    rounds = args.rounds or (1 if args.quick else 2)
    info = machine_info(args.threads)
    print(f"{info['cpu']} ({info['cores']} cores) | pinned threads {args.threads} | load average "
          f"{info['loadavg_start'][0]:.2f} | torch {'installed' if have_torch else 'not installed'}", flush=True)
    report = {"machine": info, "byte_model": {"eval_forward": "2S", "train_forward": "3S", "backward": "3S",
                                              "forward_backward": "6S", "copy": "2S"}, "results": []}
    versions = {}
    if not args.steps_only:
        libs = [lib for lib in LIBS if lib != "torch" or have_torch]
        rows, v = run_libs(libs, "kernels", "pinned", args, rounds)
        versions.update(v)
        for case, by_lib in rows.items():
            report["results"].append(_row(case, by_lib, "pinned", "quiet"))
    if not args.kernels_only:
        libs = ["minigrad"] + (["torch"] if have_torch else [])
        phases = [("quiet", None)] + ([(f"load {args.load} {args.load_kind}", args.load)] if args.load else [])
        for phase, k in phases:
            for setting in ("pinned", "default"):
                if k:
                    with Load(k, args.load_kind, args.load_seconds) as load:
                        rows, v = run_libs(libs, "steps", setting, args, rounds)
                    report.setdefault("competitors", load.kinds)
                else:
                    rows, v = run_libs(libs, "steps", setting, args, rounds)
                versions.update(v)
                for case, by_lib in rows.items():
                    report["results"].append(_row(case, by_lib, setting, phase))
    info["loadavg_end"] = list(os.getloadavg())
    info["versions"] = versions
    print_table(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return report


def _row(case, by_lib, setting, phase):
    def get(lib, key="time_s"):
        return by_lib.get(lib, {}).get(key)

    mg, tt = get("minigrad"), get("torch")
    return {"case": case, "setting": setting, "load": phase,
            "minigrad_s": mg, "minigrad_iqr_s": get("minigrad", "iqr_s"),
            "numpy_s": get("numpy"), "numpy_iqr_s": get("numpy", "iqr_s"),
            "torch_s": tt, "torch_iqr_s": get("torch", "iqr_s"),
            "ratio_minigrad_torch": mg / tt if mg and tt else None,
            "bandwidth_fraction": get("minigrad", "bandwidth_fraction"),
            "rounds": {lib: d.get("rounds_s") for lib, d in by_lib.items()}}


def print_table(report):
    head = (f"{'case':46s} {'setting':8s} {'load':14s} {'minigrad':>11s} {'numpy':>11s} {'torch':>11s} "
            f"{'mg/torch':>9s} {'bw frac':>8s}")
    print(head)
    print("-" * len(head))
    for r in report["results"]:
        ratio = f"{r['ratio_minigrad_torch']:.2f}" if r["ratio_minigrad_torch"] else "-"
        bw = f"{r['bandwidth_fraction']:.0%}" if r["bandwidth_fraction"] is not None else "-"
        print(f"{r['case'][:46]:46s} {r['setting']:8s} {r['load'][:14]:14s} {_fmt(r['minigrad_s']):>11s} "
              f"{_fmt(r['numpy_s']):>11s} {_fmt(r['torch_s']):>11s} {ratio:>9s} {bw:>8s}")


if __name__ == "__main__":
    main()
