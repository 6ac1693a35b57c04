"""CPU benchmarks: minigrad against plain NumPy and PyTorch, in one process.

Every case runs the three implementations on the same input arrays with the
same thread count and reports the median time over repeated runs (after
warm-up), the spread (interquartile range), the ratio minigrad/PyTorch and,
for the normalization kernels, the achieved bandwidth as a fraction of a
copy of the same tensor measured in the same process.

Byte model (S = the tensor's size in bytes): eval forward moves 2S (read x,
write y), training forward 3S (read x twice: statistics, then normalize;
write y), backward 3S (read x and dy, write dx; the per-channel sums are
taken in the same pass as far as the cache allows), forward+backward 6S.
A copy moves 2S, so fraction = (model_bytes / t) / (2S / t_copy).

Usage:
    python benchmarks/bench.py                 # full run (a few minutes)
    python benchmarks/bench.py --quick         # tiny sizes: a smoke test
    python benchmarks/bench.py --json out.json --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

# Thread counts must be fixed before NumPy/BLAS start their pools.
_pre = argparse.ArgumentParser(add_help=False)
_pre.add_argument("--threads", type=int, default=os.cpu_count() or 1)
_THREADS = _pre.parse_known_args()[0].threads
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(_THREADS)

import numpy as np  # noqa: E402

import minigrad as mg  # noqa: E402
from minigrad import nn, optim  # noqa: E402

try:  # PyTorch is the reference when installed (pip install torch==2.13.0)
    import torch  # noqa: E402
except ImportError:  # pragma: no cover - depends on the machine
    torch = None


# ---------------------------------------------------------------- timing
def measure(fn, repeat, warmup, min_time=0.0):
    """Median and interquartile range (seconds) of ``fn()`` over ``repeat`` samples.

    Fast functions are called several times per sample so that each sample
    lasts at least ``min_time``.
    """
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


# -------------------------------------------------- NumPy references
def np_bn_train(x, axes, eps=1e-5):
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    invstd = 1.0 / np.sqrt(var + eps)
    return (x - mean) * invstd, mean, invstd


def np_bn_backward(dy, xhat, invstd, axes):
    m = dy.size // invstd.size
    dbeta = dy.sum(axis=axes, keepdims=True)
    dgamma = (dy * xhat).sum(axis=axes, keepdims=True)
    return invstd * (dy - dbeta / m - xhat * dgamma / m), dgamma, dbeta


def np_bn_eval(x, scale, shift):
    return x * scale + shift


# ------------------------------------------------------------- cases
def bn_cases(shape, dtype, repeat, warmup, min_time):
    """Training forward, forward+backward and eval of BatchNorm on one shape."""
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal(shape).astype(dtype)
    dy_np = rng.standard_normal(shape).astype(dtype)
    c = shape[1]
    axes = (0,) + tuple(range(2, len(shape)))
    bshape = (1, c) + (1,) * (len(shape) - 2)
    size = x_np.nbytes
    kind = "BatchNorm2d" if len(shape) == 4 else "BatchNorm1d"

    copy_dst = np.empty_like(x_np)
    t_copy, _ = measure(lambda: np.copyto(copy_dst, x_np), repeat, warmup, min_time)
    copy_bw = 2 * size / t_copy

    layer = getattr(nn, kind)(c, dtype=dtype)
    x = mg.tensor(x_np, requires_grad=True)
    dy = mg.tensor(dy_np)

    def mg_fwd():
        return layer(x)

    def mg_fwd_bwd():
        x.grad = None
        layer(x).backward(dy)

    def mg_eval():
        with mg.no_grad():
            return layer(x)

    scale = rng.standard_normal(bshape).astype(dtype)
    shift = rng.standard_normal(bshape).astype(dtype)

    def np_fwd_bwd():
        xhat, _, invstd = np_bn_train(x_np, axes)
        np_bn_backward(dy_np, xhat, invstd, axes)

    impls = {
        "train_forward": (mg_fwd, lambda: np_bn_train(x_np, axes), 3),
        "forward_backward": (mg_fwd_bwd, np_fwd_bwd, 6),
        "eval_forward": (mg_eval, lambda: np_bn_eval(x_np, scale, shift), 2),
    }
    torch_impls = {}
    if torch is not None:
        tl = getattr(torch.nn, kind)(c).to(getattr(torch, np.dtype(dtype).name))
        tx = torch.from_numpy(x_np.copy()).requires_grad_(True)
        tdy = torch.from_numpy(dy_np.copy())

        def t_fwd():
            return tl(tx)

        def t_fwd_bwd():
            tx.grad = None
            tl(tx).backward(tdy)

        def t_eval():
            with torch.no_grad():
                return tl(tx)

        torch_impls = {"train_forward": t_fwd, "forward_backward": t_fwd_bwd, "eval_forward": t_eval}

    results = []
    for mode, (f_mg, f_np, nbytes) in impls.items():
        layer.train(mode != "eval_forward")
        if torch_impls:
            tl.train(mode != "eval_forward")
        t_mg = measure(f_mg, repeat, warmup, min_time)
        t_np = measure(f_np, repeat, warmup, min_time)
        t_t = measure(torch_impls[mode], repeat, warmup, min_time) if torch_impls else (None, None)
        results.append(_row(f"{kind}{shape} {np.dtype(dtype).name} {mode}", t_mg, t_np, t_t,
                            bandwidth_fraction=(nbytes * size / t_mg[0]) / copy_bw,
                            bytes_model=f"{nbytes}S", copy_gbps=copy_bw / 1e9))
    return results


def rownorm_case(kind, shape, dtype, repeat, warmup, min_time):
    """Training forward+backward of LayerNorm or GroupNorm."""
    rng = np.random.default_rng(1)
    x_np = rng.standard_normal(shape).astype(dtype)
    dy_np = rng.standard_normal(shape).astype(dtype)
    if kind == "LayerNorm":
        layer = nn.LayerNorm(shape[1:], dtype=dtype)
        tl = torch.nn.LayerNorm(shape[1:]) if torch is not None else None
        axes = tuple(range(1, len(shape)))
        xr = x_np
    else:
        groups = 8
        layer = nn.GroupNorm(groups, shape[1], dtype=dtype)
        tl = torch.nn.GroupNorm(groups, shape[1]) if torch is not None else None
        axes = (2,)
        xr = x_np.reshape(shape[0], groups, -1)
    x = mg.tensor(x_np, requires_grad=True)
    dy = mg.tensor(dy_np)

    def f_mg():
        x.grad = None
        layer(x).backward(dy)

    def f_np():
        xhat, _, invstd = np_bn_train(xr, axes)
        np_bn_backward(dy_np.reshape(xr.shape), xhat, invstd, axes)

    t_t = (None, None)
    if tl is not None:
        tx = torch.from_numpy(x_np.copy()).requires_grad_(True)
        tdy = torch.from_numpy(dy_np.copy())

        def f_t():
            tx.grad = None
            tl(tx).backward(tdy)

        t_t = measure(f_t, repeat, warmup, min_time)
    return [_row(f"{kind}{shape} {np.dtype(dtype).name} forward_backward", measure(f_mg, repeat, warmup, min_time),
                 measure(f_np, repeat, warmup, min_time), t_t)]


def overhead_case(chain, repeat, warmup, min_time):
    """The engine's per-operation overhead: ``chain`` multiply-adds on a one-element tensor, forward and
    backward, so that the arithmetic is negligible and recording, dispatch and the backward walk are all
    that is timed. Reported per operation (two nodes per step of the chain)."""

    def run(lib_tensor):
        def f():
            x = lib_tensor()
            y = x
            for _ in range(chain):
                y = y * 1.0001 + 0.5
            y.sum().backward()
        return f

    mg_x = lambda: mg.tensor([1.0], requires_grad=True)  # noqa: E731
    per = 2 * chain + 1
    t_mg = measure(run(mg_x), repeat, warmup, min_time)
    t_t = (None, None)
    if torch is not None:
        t_x = lambda: torch.tensor([1.0], requires_grad=True)  # noqa: E731
        t_t = measure(run(t_x), repeat, warmup, min_time)
        t_t = (t_t[0] / per, t_t[1] / per)
    return [_row("engine overhead per op (fwd+bwd, 1 element)", (t_mg[0] / per, t_mg[1] / per), (None, None), t_t)]


def train_step_case(name, build_mg, build_torch, x_np, y_np, repeat, warmup, min_time):
    """One SGD step (forward, cross-entropy, backward, update) of the same model in minigrad and PyTorch."""
    model = build_mg(nn)
    opt = optim.SGD(model.parameters(), lr=0.1)
    x, y = mg.tensor(x_np), mg.tensor(y_np)

    def f_mg():
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    t_t = (None, None)
    if torch is not None:
        tmodel = build_torch(torch.nn)
        topt = torch.optim.SGD(tmodel.parameters(), lr=0.1)
        tx, ty = torch.from_numpy(x_np), torch.from_numpy(y_np)

        def f_t():
            loss = torch.nn.functional.cross_entropy(tmodel(tx), ty)
            topt.zero_grad()
            loss.backward()
            topt.step()

        t_t = measure(f_t, repeat, warmup, min_time)
    return [_row(name, measure(f_mg, repeat, warmup, min_time), (None, None), t_t)]


def paper_mlp(lib):
    """The paper's MLP with BN before each sigmoid, built from ``lib`` (minigrad.nn or torch.nn)."""
    layers, d = [], 784
    for _ in range(3):
        layers += [lib.Linear(d, 100), lib.BatchNorm1d(100), lib.Sigmoid()]
        d = 100
    return lib.Sequential(*layers, lib.Linear(100, 10))


def seed_cnn(lib):
    """The seed's CNN, built from ``lib`` (minigrad.nn or torch.nn)."""
    return lib.Sequential(lib.Conv2d(1, 32, 3), lib.BatchNorm2d(32), lib.ReLU(), lib.MaxPool2d(2), lib.Flatten(),
                          lib.Linear(32 * 13 * 13, 64), lib.BatchNorm1d(64), lib.ReLU(), lib.Linear(64, 10))


def mlp_step_case(batch, repeat, warmup, min_time):
    """One SGD training step of the paper's MLP: 784-100-100-100-10, sigmoid, BatchNorm."""
    rng = np.random.default_rng(2)
    x_np = rng.standard_normal((batch, 784)).astype(np.float32)
    return train_step_case(f"MLP step 784-100x3-10 BN batch {batch}", paper_mlp, paper_mlp, x_np,
                           rng.integers(0, 10, batch), repeat, warmup, min_time)


def cnn_step_case(batch, repeat, warmup, min_time):
    """One SGD training step of the seed CNN on (batch, 1, 28, 28)."""
    rng = np.random.default_rng(3)
    x_np = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    return train_step_case(f"CNN step batch {batch}", seed_cnn, seed_cnn, x_np, rng.integers(0, 10, batch),
                           repeat, warmup, min_time)


def _row(name, t_mg, t_np, t_torch, **extra):
    ratio = t_mg[0] / t_torch[0] if t_torch[0] else None
    return {
        "case": name,
        "minigrad_s": t_mg[0], "minigrad_iqr_s": t_mg[1],
        "numpy_s": t_np[0], "numpy_iqr_s": t_np[1],
        "torch_s": t_torch[0], "torch_iqr_s": t_torch[1],
        "ratio_minigrad_torch": ratio,
        "bandwidth_fraction": extra.pop("bandwidth_fraction", None),
        **extra,
    }


def _fmt(t):
    if t is None:
        return "-"
    return f"{t * 1e3:.3f} ms" if t >= 1e-3 else f"{t * 1e6:.1f} us"


def print_table(rows):
    head = f"{'case':58s} {'minigrad':>11s} {'numpy':>11s} {'torch':>11s} {'mg/torch':>9s} {'bw frac':>8s}"
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = f"{r['ratio_minigrad_torch']:.2f}" if r["ratio_minigrad_torch"] else "-"
        bw = f"{r['bandwidth_fraction']:.0%}" if r["bandwidth_fraction"] is not None else "-"
        print(f"{r['case']:58s} {_fmt(r['minigrad_s']):>11s} {_fmt(r['numpy_s']):>11s} "
              f"{_fmt(r['torch_s']):>11s} {ratio:>9s} {bw:>8s}")


def machine_info():
    """CPU model, core count and library versions, for the record."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": _THREADS,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "minigrad": mg.__version__,
        "minigrad_openmp": mg.threads.have_openmp(),
        # minigrad loads the OpenMP runtime (shared with a PyTorch imported after it) with short spins
        # unless told otherwise, and keeps freed memory for reuse (glibc, process-wide).
        "omp_wait": os.environ.get("OMP_WAIT_POLICY") or "GOMP_SPINCOUNT="
        + os.environ.get("GOMP_SPINCOUNT", os.environ.get("MINIGRAD_GOMP_SPINCOUNT", "10000")),
        "malloc_tuned": getattr(__import__("minigrad.backends.cpu", fromlist=["MALLOC_TUNED"]), "MALLOC_TUNED", None),
        "torch": torch.__version__ if torch is not None else None,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (a smoke test)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--threads", type=int, default=_THREADS, help="threads for minigrad, NumPy/BLAS and PyTorch")
    ap.add_argument("--repeat", type=int, default=None, help="timed samples per implementation")
    args = ap.parse_args(argv)

    mg.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    info = machine_info()
    print(f"minigrad {info['minigrad']} | numpy {info['numpy']} | torch {info['torch'] or 'not installed'} | "
          f"threads {args.threads} | OpenMP wait {info['omp_wait']} | malloc tuned {info['malloc_tuned']} | "
          f"{info['cpu']}")

    if args.quick:
        repeat, warmup, min_time = args.repeat or 3, 1, 0.0
        bn_shapes = [((4, 3, 5, 5), np.float32), ((6, 8), np.float32)]
        rows_shapes = [("LayerNorm", (4, 8)), ("GroupNorm", (2, 8, 3, 3))]
        mlp_batch, cnn_batch = 8, 4
    else:
        repeat, warmup, min_time = args.repeat or 21, 3, 0.02
        bn_shapes = [((32, 64, 56, 56), np.float32), ((128, 256, 14, 14), np.float32),
                     ((32, 64, 56, 56), np.float64), ((256, 1024), np.float32), ((60, 100), np.float32)]
        rows_shapes = [("LayerNorm", (256, 1024)), ("GroupNorm", (32, 64, 28, 28))]
        mlp_batch, cnn_batch = 60, 64

    rows = []
    for shape, dtype in bn_shapes:
        rows += bn_cases(shape, dtype, repeat, warmup, min_time)
    for kind, shape in rows_shapes:
        rows += rownorm_case(kind, shape, np.float32, repeat, warmup, min_time)
    rows += overhead_case(10 if args.quick else 200, repeat, warmup, min_time)
    rows += mlp_step_case(mlp_batch, repeat, warmup, min_time)
    rows += cnn_step_case(cnn_batch, repeat, warmup, min_time)
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "byte_model": {"eval_forward": "2S", "train_forward": "3S",
                                                       "backward": "3S", "forward_backward": "6S", "copy": "2S"},
                       "results": rows}, f, indent=2)
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
