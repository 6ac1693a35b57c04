"""The other claims of the BN paper, measured: initialisation scale, learning rate, dropout.

Ioffe & Szegedy (2015) also claim that BN makes training less sensitive to
the scale of the initial weights (Section 3.3), lets the learning rate be
higher without divergence (Section 3.3) and regularizes, so that dropout
can be reduced or removed (Sections 3.4 and 4.2.1). Three sweeps on the
Figure 1 network (784-100-100-100-10, sigmoid, SGD, batch 60), each pair
with and without BN from the same initial weights and the same batches:

* ``init``: weights from N(0, s²/fan_in) for scales s in ``--init-scales``;
* ``lr``: learning rates in ``--lrs``; a run whose loss stops being finite
  (or exceeds ``--diverge-loss``) counts as diverged and ends there;
* ``dropout``: dropout ``--dropout`` after each hidden sigmoid, on and off,
  trained on a small training set (``--dropout-train`` images, so that the
  networks can overfit) for ``--dropout-steps`` steps; train and test
  accuracy, and the gap between them.

Outputs in ``--out``: ``sweep_init.png``, ``sweep_lr.png``,
``sweep_dropout.png``, ``sweeps.csv``, ``summary.json``.

Run from a source checkout::

    python -m examples.sweeps                      # all three
    python -m examples.sweeps --sweep lr           # one of them
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

import minigrad
from minigrad import optim
from minigrad.nn import functional as F

if __package__ in (None, ""):  # run as a file: make the sibling helper importable
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import (
        accuracy_and_loss, build_mlp, decorate, endless_batches, flat, make_parser, progress, pyplot,
        require_positive, run_info, save_figure, start, write_json, write_rows)
else:
    from ._common import (
        accuracy_and_loss, build_mlp, decorate, endless_batches, flat, make_parser, progress, pyplot,
        require_positive, run_info, save_figure, start, write_json, write_rows)

SWEEPS = ("init", "lr", "dropout")
LABEL = {False: "without BN", True: "with BN"}
COLOR = {False: "tab:gray", True: "tab:blue"}


def train_run(args, x, y, x_test, y_test, *, batch_norm, lr, steps, init_scale=1.0, dropout=0.0, desc=""):
    """Train one network; returns final train/test accuracy and loss, and the step it diverged at (or None)."""
    model = build_mlp(batch_norm, "gaussian", args.seed, x.shape[1], 10, init_scale=init_scale,
                      dropout=dropout).to(args.device)
    opt = optim.SGD(model.parameters(), lr=lr)
    stream = endless_batches(x, y, args.batch_size, args.seed, args.device)
    diverged = None
    for step in progress(range(1, steps + 1), steps, desc, args.no_progress):
        xb, yb = next(stream)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        value = loss.item()
        if not math.isfinite(value) or value > args.diverge_loss:
            diverged = step
            break
    out = {"batch_norm": batch_norm, "lr": lr, "init_scale": init_scale, "dropout": dropout, "steps": steps,
           "diverged_at": diverged}
    if diverged:
        out.update(test_acc=0.1, train_acc=0.1, test_loss=float("inf"), train_loss=float("inf"))
    else:
        out["test_acc"], out["test_loss"] = accuracy_and_loss(model, x_test, y_test)
        out["train_acc"], out["train_loss"] = accuracy_and_loss(model, minigrad.tensor(x, device=args.device),
                                                                minigrad.tensor(y, device=args.device))
    return out


def run_sweep(kind, args, data, x_test, y_test):
    x, y = flat(data.x_train), data.y_train
    runs = []
    if kind == "init":
        for s in args.init_scales:
            for bn in (False, True):
                runs.append(train_run(args, x, y, x_test, y_test, batch_norm=bn, lr=args.lr, steps=args.steps,
                                      init_scale=s, desc=f"init sweep: scale {s:g}, {LABEL[bn]}"))
    elif kind == "lr":
        for lr in args.lrs:
            for bn in (False, True):
                runs.append(train_run(args, x, y, x_test, y_test, batch_norm=bn, lr=lr, steps=args.steps,
                                      desc=f"lr sweep: lr {lr:g}, {LABEL[bn]}"))
    else:
        idx = np.random.default_rng(args.seed).permutation(len(y))[:args.dropout_train]
        for p in (0.0, args.dropout):
            for bn in (False, True):
                runs.append(train_run(args, x[idx], y[idx], x_test, y_test, batch_norm=bn, lr=args.lr,
                                      steps=args.dropout_steps, dropout=p,
                                      desc=f"dropout sweep: dropout {p:g}, {LABEL[bn]}"))
    for r in runs:
        r["sweep"] = kind
    return runs


def _sweep_plot(plt, runs, key, xlabel, title):
    """Test accuracy against ``key`` with and without BN; diverged runs marked with a red cross."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    for bn in (False, True):
        rs = [r for r in runs if r["batch_norm"] == bn]
        ax.plot([r[key] for r in rs], [r["test_acc"] for r in rs], "o-", color=COLOR[bn], label=LABEL[bn])
        bad = [r for r in rs if r["diverged_at"]]
        if bad:
            ax.plot([r[key] for r in bad], [r["test_acc"] for r in bad], "x", color="tab:red", ms=10, mew=2,
                    label=f"{LABEL[bn]}: diverged")
    ax.set(xscale="log", xlabel=xlabel, ylabel="test accuracy after training", ylim=(0, 1))
    decorate(ax, title, "lower left", grid="both")
    return fig, ax


def plot(out, results, args, title):
    plt = pyplot()
    if "init" in results:
        fig, ax = _sweep_plot(plt, results["init"], "init_scale",
                              "initial weight scale s: W ~ N(0, s²/fan_in) (log scale)",
                              f"Sensitivity to the initial weight scale ({args.steps} steps, lr {args.lr:g})")
        ax.axvline(1.0, color="k", lw=0.6, ls="--")
        save_figure(fig, os.path.join(out, "sweep_init.png"), title)
    if "lr" in results:
        fig, _ = _sweep_plot(plt, results["lr"], "lr", "SGD learning rate (log scale)",
                             f"Tolerance of high learning rates ({args.steps} steps)")
        save_figure(fig, os.path.join(out, "sweep_lr.png"), title)
    if "dropout" in results:
        runs = results["dropout"]
        fig, ax = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
        labels = [f"{LABEL[r['batch_norm']]}\ndropout {r['dropout']:g}" for r in runs]
        pos = np.arange(len(runs))
        ax.bar(pos - 0.2, [r["train_acc"] for r in runs], 0.4, color="tab:olive", label="training accuracy")
        ax.bar(pos + 0.2, [r["test_acc"] for r in runs], 0.4, color="tab:purple", label="test accuracy")
        for p, r in zip(pos, runs):
            ax.annotate(f"gap {100 * (r['train_acc'] - r['test_acc']):.1f} pt", (p, max(r["train_acc"], r["test_acc"])),
                        xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8)
        ax.set_xticks(pos, labels, fontsize=8)
        lo = min(min(r["train_acc"], r["test_acc"]) for r in runs)
        ax.set(ylabel="accuracy", ylim=(max(0.0, lo - 0.05), 1.01))
        decorate(ax, f"Regularization: {args.dropout_train} training images, {args.dropout_steps} steps, "
                     f"lr {args.lr:g}", "lower right", grid="major")
        save_figure(fig, os.path.join(out, "sweep_dropout.png"), title)


def _floats(text):
    return [float(v) for v in text.split(",") if v.strip()]


def parse_args(argv=None):
    p = make_parser(__doc__, os.path.join("runs", "sweeps"), steps=2000, lr=1.0,
                    steps_help="training steps per run of the init and lr sweeps",
                    lr_help="SGD learning rate of the init and dropout sweeps")
    p.add_argument("--sweep", default=",".join(SWEEPS), help="which sweeps, comma-separated")
    p.add_argument("--init-scales", default="0.1,0.3,1,3,10", help="initial weight scales s, comma-separated")
    p.add_argument("--lrs", default="0.1,0.3,1,3,10,30,100", help="learning rates, comma-separated")
    p.add_argument("--dropout", type=float, default=0.3, help="dropout probability of the dropout sweep")
    p.add_argument("--dropout-train", type=int, default=2000, help="training images of the dropout sweep")
    p.add_argument("--dropout-steps", type=int, default=5000, help="training steps per run of the dropout sweep")
    p.add_argument("--diverge-loss", type=float, default=100.0,
                   help="a training loss above this (or not finite) counts as divergence and ends the run")
    args = p.parse_args(argv)
    args.sweep = [s.strip() for s in args.sweep.split(",") if s.strip()]
    if not args.sweep or any(s not in SWEEPS for s in args.sweep):
        p.error(f"--sweep: expected a comma-separated subset of {', '.join(SWEEPS)}")
    try:
        args.init_scales, args.lrs = _floats(args.init_scales), _floats(args.lrs)
    except ValueError:
        p.error("--init-scales and --lrs take comma-separated numbers")
    if not args.init_scales or not args.lrs or min(args.init_scales + args.lrs) <= 0:
        p.error("--init-scales and --lrs must be positive numbers")
    require_positive(p, args, "steps", "batch_size", "dropout_train", "dropout_steps")
    if not 0 < args.dropout < 1:
        p.error(f"--dropout must be in (0, 1), got {args.dropout}")
    return args


def main(argv=None):
    args = parse_args(argv)
    data = start(args)
    x_test = minigrad.tensor(flat(data.x_test), device=args.device)
    y_test = minigrad.tensor(data.y_test, device=args.device)
    t0 = time.perf_counter()
    with np.errstate(all="ignore"):  # diverging runs overflow on purpose
        results = {kind: run_sweep(kind, args, data, x_test, y_test) for kind in args.sweep}
    total = time.perf_counter() - t0
    write_rows(os.path.join(args.out, "sweeps.csv"), [r for runs in results.values() for r in runs])
    summary = run_info(args, data, ("sweep", "steps", "batch_size", "lr", "init_scales", "lrs", "dropout",
                                    "dropout_train", "dropout_steps", "diverge_loss", "seed", "device", "data",
                                    "subset", "threads"))
    summary.update({"results": results, "total_s": total})
    write_json(os.path.join(args.out, "summary.json"), summary)
    if not args.no_plot:
        plot(args.out, results, args, f"{data.name}: Figure 1's sigmoid MLP, SGD, batch {args.batch_size}, "
                                      f"seed {args.seed}")
    print()
    print(f"Sweeps ({', '.join(args.sweep)}); data: {data.description}")
    for kind, runs in results.items():
        print(f"{kind}:")
        for r in runs:
            what = {"init": f"scale {r['init_scale']:g}", "lr": f"lr {r['lr']:g}",
                    "dropout": f"dropout {r['dropout']:g}"}[kind]
            end = f"diverged at step {r['diverged_at']}" if r["diverged_at"] else (
                f"test accuracy {r['test_acc']:.4f}, training accuracy {r['train_acc']:.4f}")
            print(f"  {what:<12} {LABEL[r['batch_norm']]:<11} {end}")
    print(f"total time {total:.1f} s; outputs written to {os.path.abspath(args.out)}")
    return summary


if __name__ == "__main__":
    main()
