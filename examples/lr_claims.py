"""Section 4.2 of Ioffe & Szegedy (2015) at small scale: higher learning rates, fewer steps, with BN.

The paper trains Inception on ImageNet in variants (its Table 2 and
Figure 2): Baseline (no BN), BN-Baseline (BN, the same learning rate),
BN-x5 (5× the learning rate, dropout removed, among other changes), BN-x30
(30×) and BN-x5-Sigmoid (sigmoid instead of ReLU). BN-x5 reached the
Baseline's best validation accuracy (72.2%) in 2.1M steps instead of 31M:
"14 times fewer". Without BN, Inception with sigmoids never trained.

Here the same variants of a small CNN on MNIST (or Fashion-MNIST)::

    Conv2d(1, 8, 5) → [BatchNorm2d] → act → MaxPool2d(2)
    → Conv2d(8, 16, 5) → [BatchNorm2d] → act → MaxPool2d(2)
    → Flatten → Dropout(p) → Linear(256, 10)

all from the same initial weights and on the same mini-batches, SGD with
momentum 0.9 at a constant rate; plus Baseline-x5 and Baseline-x30 (no BN at
the higher rates), which should diverge. Validation accuracy (on a fixed
subset of the validation split, or of the test split where the data has no
validation split) every ``--eval-every`` steps. The script reports, for
every variant, the steps it needs to reach the Baseline's best accuracy,
and the ratio Baseline / BN-x5 next to the paper's 14×.

Outputs in ``--out``: ``lr_claims.png``, ``history.csv``, ``summary.json``.

Run from a source checkout::

    python -m examples.lr_claims                          # full MNIST
    python -m examples.lr_claims --data fashion-mnist     # Debian's Fashion-MNIST
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

import minigrad
from minigrad import nn, optim
from minigrad.nn import functional as F

if __package__ in (None, ""):  # run as a file: make the sibling helper importable
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import (
        ACTIVATIONS, accuracy_and_loss, decorate, endless_batches, make_parser, progress, pyplot, require_positive,
        run_info, save_figure, start, steps_to_reach, write_json, write_rows)
else:
    from ._common import (
        ACTIVATIONS, accuracy_and_loss, decorate, endless_batches, make_parser, progress, pyplot, require_positive,
        run_info, save_figure, start, steps_to_reach, write_json, write_rows)

#: name -> (batch norm, learning-rate multiple, activation, dropout multiple of --dropout)
VARIANTS = {
    "Baseline": (False, 1, "relu", 1.0),
    "BN-Baseline": (True, 1, "relu", 1.0),
    "BN-x5": (True, 5, "relu", 0.0),
    "BN-x30": (True, 30, "relu", 0.0),
    "BN-x5-Sigmoid": (True, 5, "sigmoid", 0.0),
    "Baseline-x5": (False, 5, "relu", 1.0),
    "Baseline-x30": (False, 30, "relu", 1.0),
}
#: The paper's Table 2: steps to reach Inception's best (72.2%) and each variant's best accuracy.
PAPER = {
    "Baseline": {"steps_to_baseline_best": 31.0e6, "best": 0.722},
    "BN-Baseline": {"steps_to_baseline_best": 13.3e6, "best": 0.727},
    "BN-x5": {"steps_to_baseline_best": 2.1e6, "best": 0.730},
    "BN-x30": {"steps_to_baseline_best": 2.7e6, "best": 0.748},
    "BN-x5-Sigmoid": {"steps_to_baseline_best": None, "best": 0.698},
}
PAPER_RATIO = 31.0 / 2.1  # "14 times fewer"
STYLES = {"Baseline": ("k", "-"), "BN-Baseline": ("tab:blue", "-"), "BN-x5": ("tab:orange", "-"),
          "BN-x30": ("tab:green", "-"), "BN-x5-Sigmoid": ("tab:purple", "--"), "Baseline-x5": ("tab:gray", ":"),
          "Baseline-x30": ("tab:brown", ":")}


def build_cnn(batch_norm: bool, activation: str, dropout: float, seed: int, image_size: int = 28,
              num_classes: int = 10):
    """The small CNN; the same ``seed`` gives every variant the same conv/linear weights."""
    minigrad.manual_seed(seed)
    act = ACTIVATIONS[activation]
    side = ((image_size - 4) // 2 - 4) // 2  # two 5x5 convolutions without padding, each then 2x2 pooling: 28 → 4
    layers = []
    for cin, cout in ((1, 8), (8, 16)):
        layers.append(nn.Conv2d(cin, cout, 5))
        if batch_norm:
            layers.append(nn.BatchNorm2d(cout))
        layers += [act(), nn.MaxPool2d(2)]
    layers += [nn.Flatten()] + ([nn.Dropout(dropout)] if dropout else []) + [nn.Linear(16 * side * side,
                                                                                      num_classes)]
    return nn.Sequential(*layers)


def train_variant(name, args, data, x_val, y_val):
    """Train one variant; returns its history (steps, validation accuracy, mean training loss) and step time."""
    bn, mult, act, drop = VARIANTS[name]
    model = build_cnn(bn, act, drop * args.dropout, args.seed, data.x_train.shape[-1], data.num_classes)
    model = model.to(args.device)
    opt = optim.SGD(model.parameters(), lr=args.lr * mult, momentum=args.momentum)
    stream = endless_batches(data.x_train[:, None], data.y_train, args.batch_size, args.seed, args.device)
    hist = {"step": [0], "acc": [accuracy_and_loss(model, x_val, y_val)[0]], "loss": [float("nan")]}
    loss_sum, n, diverged_at, t_train = 0.0, 0, None, 0.0
    bar = progress(range(1, args.steps + 1), args.steps, f"Section 4.2: {name} (lr {args.lr * mult:g})",
                   args.no_progress)
    for step in bar:
        xb, yb = next(stream)
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        value = loss.item()
        t_train += time.perf_counter() - t0
        loss_sum, n = loss_sum + value, n + 1
        if not math.isfinite(value) or value > args.diverge_loss:
            diverged_at = step  # the weights are lost: chance accuracy from here on
            hist["step"].append(step)
            hist["acc"].append(1.0 / data.num_classes)
            hist["loss"].append(float("inf"))
            break
        if step % args.eval_every == 0 or step == args.steps:
            hist["step"].append(step)
            hist["acc"].append(accuracy_and_loss(model, x_val, y_val)[0])
            hist["loss"].append(loss_sum / n)
            loss_sum, n = 0.0, 0
            bar.set_postfix(val_acc=f"{hist['acc'][-1]:.4f}")
    return hist, diverged_at, 1e3 * t_train / max(1, hist["step"][-1])


def analyse(hists, diverged):
    """Baseline's best, the steps each variant needs to reach it, and the ratios."""
    base_best = max(hists["Baseline"]["acc"])
    res = {}
    for name, h in hists.items():
        reach = steps_to_reach(h["step"], h["acc"], base_best)
        res[name] = {"best": max(h["acc"]), "best_step": h["step"][int(np.argmax(h["acc"]))],
                     "final": h["acc"][-1], "steps_to_baseline_best": reach, "diverged_at_step": diverged[name]}
    base_steps = res["Baseline"]["steps_to_baseline_best"]
    for r in res.values():
        s = r["steps_to_baseline_best"]
        r["fewer_steps_than_baseline"] = base_steps / s if s else None
    return base_best, res


def plot(path, hists, base_best, res, args, title):
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 4.6), layout="constrained")
    for name, h in hists.items():
        color, ls = STYLES[name]
        steps = np.maximum(h["step"], 1)
        for ax in (ax1, ax2):
            ax.plot(steps, h["acc"], ls, color=color, label=f"{name} (lr {args.lr * VARIANTS[name][1]:g})")
        s = res[name]["steps_to_baseline_best"]
        if s:
            ax2.plot([s], [base_best], "o", color=color)
    for ax in (ax1, ax2):
        ax.axhline(base_best, color="k", lw=0.6, ls="--")
        ax.set(xscale="log", xlabel="training steps (log scale)", ylabel="validation accuracy")
    ax1.set_ylim(0, 1)
    decorate(ax1, "(a) all variants; no BN at 5× and 30× the rate", "lower right", grid="both")
    top = [a for h in hists.values() for a in h["acc"] if a > 0.5]
    ax2.set_ylim(max(0.5, min(top) if top else 0.5, base_best - 0.05), min(1.0, max(top, default=1.0) + 0.003))
    ratio = res["BN-x5"]["fewer_steps_than_baseline"]
    ratio_text = f"{ratio:.1f}×" if ratio else "not reached"
    ax2.set_xlim(left=max(1, args.steps // 40))
    decorate(ax2, f"(b) magnified; dots: first step at the Baseline's best ({base_best:.2%})\n"
                  f"BN-x5 needs {ratio_text} fewer steps than the Baseline (paper: {PAPER_RATIO:.1f}×)", legend=None,
             grid="both")
    save_figure(fig, path, title)


def parse_args(argv=None):
    p = make_parser(__doc__, os.path.join("runs", "lr_claims"), steps=2000, lr=0.01,
                    steps_help="training steps per variant",
                    lr_help="the Baseline's SGD learning rate (BN-x5: 5 times it)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--dropout", type=float, default=0.4,
                   help="dropout before the classifier in Baseline and BN-Baseline (Inception's 40%%; the "
                        "accelerated variants drop it, as the paper's BN-x5 did)")
    p.add_argument("--eval-every", type=int, default=None, help="evaluate every N steps (without it: steps/40)")
    p.add_argument("--val-images", type=int, default=2000, help="validation images evaluated (a fixed subset)")
    p.add_argument("--diverge-loss", type=float, default=100.0,
                   help="a training loss above this (or not finite) counts as divergence and stops the variant")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of the variants")
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or "Baseline" not in args.variants or "BN-x5" not in args.variants:
        p.error(f"--variants: expected names from {', '.join(VARIANTS)}, including Baseline and BN-x5; got {unknown}")
    require_positive(p, args, "steps", "batch_size", "val_images")
    if args.eval_every is None:
        args.eval_every = max(1, args.steps // 40)
    return args


def main(argv=None):
    args = parse_args(argv)
    data = start(args)
    xv, yv, split = (data.x_val, data.y_val, "validation") if data.x_val is not None else (data.x_test, data.y_test,
                                                                                             "test")
    idx = np.random.default_rng(args.seed).permutation(len(yv))[:args.val_images]
    x_val = minigrad.tensor(xv[idx][:, None], device=args.device)
    y_val = minigrad.tensor(yv[idx], device=args.device)
    hists, diverged, ms = {}, {}, {}
    t0 = time.perf_counter()
    with np.errstate(all="ignore"):  # the diverging variants overflow on purpose
        for name in args.variants:
            hists[name], diverged[name], ms[name] = train_variant(name, args, data, x_val, y_val)
    total = time.perf_counter() - t0
    base_best, res = analyse(hists, diverged)
    rows = [{"variant": n, "step": s, "val_acc": a, "train_loss": lo}
            for n, h in hists.items() for s, a, lo in zip(h["step"], h["acc"], h["loss"])]
    write_rows(os.path.join(args.out, "history.csv"), rows)
    summary = run_info(args, data, ("steps", "batch_size", "lr", "momentum", "dropout", "eval_every", "val_images",
                                    "diverge_loss", "variants", "seed", "device", "data", "subset", "threads"))
    summary.update({
        "evaluated_on": f"{len(idx)} fixed {split} images",
        "variants": {n: {"batch_norm": VARIANTS[n][0], "lr": args.lr * VARIANTS[n][1], "activation": VARIANTS[n][2],
                         "dropout": VARIANTS[n][3] * args.dropout} for n in args.variants},
        "baseline_best": base_best, "results": res, "paper": PAPER, "paper_ratio_bn_x5": PAPER_RATIO,
        "ms_per_step": ms, "total_s": total, "history": hists,
    })
    write_json(os.path.join(args.out, "summary.json"), summary)
    if not args.no_plot:
        plot(os.path.join(args.out, "lr_claims.png"), hists, base_best, res, args,
             f"{data.name}: small CNN, SGD momentum {args.momentum}, batch {args.batch_size}, base lr {args.lr}, "
             f"seed {args.seed}; accuracy on {len(idx)} {split} images")
    print()
    print(f"Section 4.2 at small scale: {args.steps} steps per variant; data: {data.description}; "
          f"evaluated on {len(idx)} {split} images")
    print(f"Baseline's best accuracy: {base_best:.4f}")
    print(f"{'variant':<14} {'lr':>6} {'best':>7} {'final':>7} {'steps to Baseline best':>23} {'fewer steps':>12}")
    for n in args.variants:
        r = res[n]
        steps = r["steps_to_baseline_best"]
        fewer = r["fewer_steps_than_baseline"]
        note = f"diverged at step {r['diverged_at_step']}" if r["diverged_at_step"] else ""
        print(f"{n:<14} {args.lr * VARIANTS[n][1]:>6g} {r['best']:>7.4f} {r['final']:>7.4f} "
              f"{steps if steps is not None else '-':>23} {f'{fewer:.1f}x' if fewer else '-':>12} {note}")
    print(f"the paper (Inception, ImageNet): BN-x5 needs {PAPER_RATIO:.1f}x fewer steps than the Baseline")
    print(f"total time {total:.1f} s; outputs written to {os.path.abspath(args.out)}")
    return summary


if __name__ == "__main__":
    main()
