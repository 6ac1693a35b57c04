"""GPU benchmark of minigrad's batch-norm kernels against PyTorch (cuDNN) on the same GPU.

Cases: BatchNorm2d on (128, 64, 56, 56) and (32, 256, 28, 28), BatchNorm1d
on (4096, 1024), each in float32 and in float16 (mixed precision: float32
γ, β and running statistics, as cuDNN runs it); for each: training forward,
training forward+backward and eval (inference) forward.

Both libraries get the same input (shared through DLPack, no copy) in the
same process. Every measurement is the median over ``--iters`` runs after
``--warmup`` runs, timed with CUDA events around each run. Results are also
given as a fraction of a measured device-to-device copy bandwidth (a
``cudaMemcpy`` of a buffer four times the L2 cache, at least 256 MiB),
using these byte models for a tensor of S bytes: eval 2S (read x, write
y), training forward 3S (read x for the statistics, read it again and
write y), backward 3S (read grad and x, write dx; a two-pass backward
really moves about 5S, so its fraction is a lower bound of the efficiency).

Targets: eval >= 85% of the copy bandwidth; training forward and backward
at least as fast as cuDNN through PyTorch.

Neither library accumulates gradients across timed runs: minigrad's kernels
return fresh dx/dweight/dbias, and PyTorch's ``.grad`` of x, weight and bias
are set to None before each forward+backward (what
``zero_grad(set_to_none=True)`` does), so its runs time no extra
read-modify-write pass.

Usage::

    python benchmarks/gpu_bench.py [--iters 50] [--warmup 10] [--json results.json]

Without CuPy or a GPU it prints why and exits with status 0 (nothing to measure).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

import minigrad  # noqa: E402

CASES = [
    ("BatchNorm2d", (128, 64, 56, 56)),
    ("BatchNorm2d", (32, 256, 28, 28)),
    ("BatchNorm1d", (4096, 1024)),
]
DTYPES = ("float32", "float16")  # the input's; parameters and statistics are float32 in both
EPS = 1e-5


def _timer(cupy, fn, iters, warmup):
    """Median milliseconds of ``fn()`` over ``iters`` runs (CUDA events), after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    cupy.cuda.Device().synchronize()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    times = []
    for _ in range(iters):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop))
    return statistics.median(times)


def copy_bandwidth(cupy, iters, warmup):
    """Device-to-device copy bandwidth in GB/s (bytes read + written), buffers larger than L2."""
    dev = cupy.cuda.Device()
    l2 = int(dev.attributes.get("L2CacheSize", 50 * 2**20))
    nbytes = max(4 * l2, 256 * 2**20)
    src = cupy.empty(nbytes // 4, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    src.fill(1.0)
    ms = _timer(cupy, lambda: dst.data.copy_from_device(src.data, nbytes), iters, warmup)
    return 2 * nbytes / (ms * 1e-3) / 1e9, nbytes


def _as_ncs(shape):
    return (shape[0], shape[1], 1) if len(shape) == 2 else (shape[0], shape[1], shape[2] * shape[3])


def torch_cases(torch, x, g, shape, device="cuda"):
    """PyTorch's timed operations on the arrays ``x`` and ``g`` (shared through DLPack, no copy; float32
    parameters and running statistics whatever their dtype, cuDNN's mixed precision for float16).

    Returns ``({op: fn}, (x, weight, bias))``: training forward (no graph),
    forward+backward and eval, and the leaves whose ``.grad`` each
    forward+backward run starts without.
    """
    F = torch.nn.functional
    c = shape[1]
    tx = torch.from_dlpack(x).reshape(shape)  # same memory, no copy
    tg = torch.from_dlpack(g).reshape(shape)
    tw = torch.ones(c, device=device, requires_grad=True)
    tb = torch.zeros(c, device=device, requires_grad=True)
    rm, rv = torch.zeros(c, device=device), torch.ones(c, device=device)
    txg = tx.detach().requires_grad_()
    leaves = (txg, tw, tb)

    def train_fwd():
        with torch.no_grad():
            F.batch_norm(tx, rm, rv, tw, tb, training=True, momentum=0.1, eps=EPS)

    def train_fwd_bwd():
        for t in leaves:  # as zero_grad(set_to_none=True): backward writes .grad instead of adding to it
            t.grad = None
        F.batch_norm(txg, rm, rv, tw, tb, training=True, momentum=0.1, eps=EPS).backward(tg)

    def eval_fwd():
        with torch.no_grad():
            F.batch_norm(tx, rm, rv, tw, tb, training=False, eps=EPS)

    return {"train_forward": train_fwd, "train_forward_backward": train_fwd_bwd, "eval": eval_fwd}, leaves


def bench_case(kind, shape, dtype, backend, cupy, torch, iters, warmup):
    xp = backend.xp
    n, c, s = _as_ncs(shape)
    rng = xp.random.RandomState(0)
    x = (rng.standard_normal(size=(n, c, s), dtype=xp.float32) * 2 + 1).astype(dtype)
    g = rng.standard_normal(size=(n, c, s), dtype=xp.float32).astype(dtype)
    w = xp.ones(c, dtype=xp.float32)
    b = xp.zeros(c, dtype=xp.float32)
    nbytes = x.nbytes

    def mg_train_fwd():
        return backend.batch_norm_forward_train(x, w, b, EPS)

    _, mean, var = mg_train_fwd()
    invstd = 1.0 / xp.sqrt(var + EPS)
    scale = w * invstd
    shift = b - mean * scale

    def mg_train_fwd_bwd():
        _, m, v = backend.batch_norm_forward_train(x, w, b, EPS)
        backend.batch_norm_backward(g, x, m, 1.0 / xp.sqrt(v + EPS), w, True)

    def mg_backward():
        backend.batch_norm_backward(g, x, mean, invstd, w, True)

    def mg_eval():
        return backend.channel_affine(x, scale, shift)

    ours = {
        "train_forward": _timer(cupy, mg_train_fwd, iters, warmup),
        "train_forward_backward": _timer(cupy, mg_train_fwd_bwd, iters, warmup),
        "backward": _timer(cupy, mg_backward, iters, warmup),
        "eval": _timer(cupy, mg_eval, iters, warmup),
    }
    theirs = {}
    if torch is not None:
        theirs = {op: _timer(cupy, fn, iters, warmup) for op, fn in torch_cases(torch, x, g, shape)[0].items()}
        theirs["backward"] = max(theirs["train_forward_backward"] - theirs["train_forward"], 1e-9)
    models = {"train_forward": 3, "backward": 3, "train_forward_backward": 6, "eval": 2}
    rows = []
    for op, ms in ours.items():
        gbps = models[op] * nbytes / (ms * 1e-3) / 1e9
        row = {"layer": kind, "shape": list(shape), "dtype": dtype, "op": op, "bytes_model": f"{models[op]}S",
               "tensor_bytes": nbytes, "minigrad_ms": ms, "minigrad_GBps": gbps}
        if op in theirs:
            row["torch_ms"] = theirs[op]
            row["speedup_vs_torch"] = theirs[op] / ms
            row["torch_GBps"] = models[op] * nbytes / (theirs[op] * 1e-3) / 1e9
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)

    if not minigrad.cuda.is_available():
        reason = minigrad.cuda.unavailable_reason()
        print(f"no GPU: {reason}")
        print("nothing to benchmark; run this script on a machine with an NVIDIA GPU and CuPy.")
        if args.json:
            args.json.write_text(json.dumps({"skipped": True, "reason": reason}, indent=2))
        return 0

    import cupy

    from minigrad.backends import get_backend

    try:
        import torch

        if not torch.cuda.is_available():
            print("PyTorch has no CUDA here: minigrad only, no cuDNN comparison")
            torch = None
        else:
            torch.backends.cudnn.enabled = True
            torch.backends.cudnn.benchmark = True
    except ImportError:
        print("PyTorch not installed: minigrad only, no cuDNN comparison")
        torch = None

    backend = get_backend("cuda")
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    bw, copy_bytes = copy_bandwidth(cupy, args.iters, args.warmup)
    print(f"device: {name}; CuPy {cupy.__version__}; PyTorch {torch.__version__ if torch else 'n/a'}")
    print(f"device-to-device copy bandwidth: {bw:.1f} GB/s ({copy_bytes / 2**20:.0f} MiB buffers)")

    rows = []
    for dtype in DTYPES:
        for kind, shape in CASES:
            rows += bench_case(kind, shape, dtype, backend, cupy, torch, args.iters, args.warmup)
    for r in rows:
        r["fraction_of_copy_bw"] = r["minigrad_GBps"] / bw
        if "torch_GBps" in r:
            r["torch_fraction_of_copy_bw"] = r["torch_GBps"] / bw

    header = (f"{'layer':12} {'shape':20} {'dtype':8} {'op':24} {'minigrad ms':>11} {'torch ms':>9} {'speedup':>8} "
              f"{'%copy BW':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        t = f"{r['torch_ms']:9.3f}" if "torch_ms" in r else f"{'n/a':>9}"
        sp = f"{r['speedup_vs_torch']:8.2f}" if "speedup_vs_torch" in r else f"{'n/a':>8}"
        print(f"{r['layer']:12} {str(tuple(r['shape'])):20} {r['dtype']:8} {r['op']:24} {r['minigrad_ms']:11.3f} {t} {sp} "
              f"{100 * r['fraction_of_copy_bw']:7.1f}%")

    verdicts = []
    for r in rows:
        what = f"{r['layer']} {tuple(r['shape'])} {r['dtype']}"
        if r["op"] == "eval":
            verdicts.append((f"{what} eval >= 85% of copy BW", r["fraction_of_copy_bw"] >= 0.85))
        if r["op"] in ("train_forward", "backward") and "speedup_vs_torch" in r:
            verdicts.append((f"{what} {r['op']} at least as fast as cuDNN", r["speedup_vs_torch"] >= 1.0))
    print("\ntargets:")
    for text, ok in verdicts:
        print(f"  [{'met' if ok else 'MISSED'}] {text}")

    if args.json:
        args.json.write_text(json.dumps({
            "device": name, "cupy": cupy.__version__, "torch": torch.__version__ if torch else None,
            "python": platform.python_version(), "copy_bandwidth_GBps": bw, "iters": args.iters,
            "warmup": args.warmup, "results": rows,
            "targets": [{"target": t, "met": ok} for t, ok in verdicts],
        }, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
