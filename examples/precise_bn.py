"""Algorithm 2 (population statistics) against BN's moving averages, with minigrad.norm.recompute_statistics.

Ioffe & Szegedy's Algorithm 2 evaluates a trained BN network with the
statistics of the whole training population: E[x] = E_B[μ_B] and
Var[x] = m/(m−1)·E_B[σ²_B] over K training mini-batches (steps 8–11).
Frameworks keep moving averages instead (``running = (1 − momentum)·running
+ momentum·μ_B``), which lag behind the weights early in training (small
momentum) and follow the last few batches (large momentum).

The script trains three copies of the Figure 1 BN network (784-100-100-100-10,
Linear → BatchNorm1d → Sigmoid, SGD, batch 60) that differ only in BN's
momentum (0.01, 0.1 = PyTorch's default, 0.9). The momentum does not enter
training (the training forward pass uses batch statistics), so the three
follow the same weights, which the script checks. At log-spaced steps it
evaluates each network in eval mode with its moving averages, and once with
Algorithm 2's statistics over K = ``--batches`` training mini-batches. At the
end it measures the accuracy for several K, and checks that the model folded
(``minigrad.norm.fold``) after ``recompute_statistics`` gives the eval-mode
outputs.

Outputs in ``--out``: ``precise_bn.png``, ``history.csv``, ``summary.json``.

Run from a source checkout::

    python -m examples.precise_bn               # full MNIST, 5,000 steps
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

import minigrad
from minigrad import optim
from minigrad.norm import fold, recompute_statistics

if __package__ in (None, ""):  # run as a file: make the sibling helper importable
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import (
        accuracy_and_loss, build_mlp, decorate, endless_batches, flat, make_parser, progress, pyplot,
        require_positive, restore, run_info, save_figure, snapshot, start, train_step_each, write_json, write_rows)
else:
    from ._common import (
        accuracy_and_loss, build_mlp, decorate, endless_batches, flat, make_parser, progress, pyplot,
        require_positive, restore, run_info, save_figure, snapshot, start, train_step_each, write_json, write_rows)

MOMENTA = (0.01, 0.1, 0.9)
K_SWEEP = (1, 2, 5, 10, 20, 50, 100, 200)


def eval_steps(steps: int, points: int) -> list[int]:
    """About ``points`` log-spaced steps from 1 to ``steps`` (distinct integers, ``steps`` last)."""
    return sorted(set(np.unique(np.geomspace(1, steps, points).round().astype(int)).tolist()) | {steps})


def bn_statistics(model):
    """Running means and variances of every BN layer, concatenated, on the host (float64)."""
    mean = np.concatenate([m.running_mean.detach().numpy() for m in model.modules() if hasattr(m, "running_mean")])
    var = np.concatenate([m.running_var.detach().numpy() for m in model.modules() if hasattr(m, "running_var")])
    return mean.astype(np.float64), var.astype(np.float64)


def statistics_error(model, population):
    """Mean over BN units of |running mean − population mean| / population std: how far eval mode is off."""
    mean, _ = bn_statistics(model)
    pmean, pvar = population
    return float(np.mean(np.abs(mean - pmean) / np.sqrt(pvar)))


def precise_accuracy(model, batches, x, y):
    """Test accuracy and loss with Algorithm 2's statistics over ``batches``; the moving averages are put back."""
    saved = snapshot(model, only_buffers=True)
    recompute_statistics(model, batches)
    population = bn_statistics(model)
    acc, loss = accuracy_and_loss(model, x, y)
    restore(model, saved)
    return acc, loss, population


def run(args, data):
    device = args.device
    x_train = flat(data.x_train)
    x_test = minigrad.tensor(flat(data.x_test), device=device)
    y_test = minigrad.tensor(data.y_test, device=device)
    nets = {m: build_mlp(True, "gaussian", args.seed, x_train.shape[1], data.num_classes, momentum=m).to(device)
            for m in MOMENTA}
    opts = {m: optim.SGD(net.parameters(), lr=args.lr) for m, net in nets.items()}
    # K fixed training mini-batches for Algorithm 2 (another seed than the training order).
    pool = endless_batches(x_train, data.y_train, args.batch_size, args.seed + 1, device)
    pop_batches = [next(pool)[0] for _ in range(max(K_SWEEP + (args.batches,)))]
    stream = endless_batches(x_train, data.y_train, args.batch_size, args.seed, device)
    when = set(eval_steps(args.steps, args.points))
    rows = []
    loss_sum, step_time = {m: 0.0 for m in MOMENTA}, {m: 0.0 for m in MOMENTA}
    t0 = time.perf_counter()
    bar = progress(range(1, args.steps + 1), args.steps,
                   f"Algorithm 2: training BN nets with momentum {', '.join(map(str, MOMENTA))}", args.no_progress)
    for step in bar:
        xb, yb = next(stream)
        train_step_each(nets, opts, xb, yb, loss_sum, step_time)
        if step not in when:
            continue
        ref = nets[MOMENTA[0]]
        acc, loss, population = precise_accuracy(ref, pop_batches[:args.batches], x_test, y_test)
        row = {"step": step, "acc_precise": acc, "loss_precise": loss}
        for m, net in nets.items():
            row[f"acc_running_{m}"], row[f"loss_running_{m}"] = accuracy_and_loss(net, x_test, y_test)
            row[f"stat_error_{m}"] = statistics_error(net, population)
        rows.append(row)
        bar.set_postfix(test_acc_algorithm2=f"{acc:.3f}",
                        **{f"test_acc_momentum_{m}": f"{row[f'acc_running_{m}']:.3f}" for m in MOMENTA})
    # Same weights: the momentum only changes the running statistics.
    weights = [[p.detach().numpy() for p in net.parameters()] for net in nets.values()]
    same = all(np.array_equal(a, b) for w in weights[1:] for a, b in zip(weights[0], w))
    ref = nets[0.1]
    k_sweep = []
    for k in K_SWEEP:
        acc, loss, _ = precise_accuracy(ref, pop_batches[:k], x_test, y_test)
        k_sweep.append({"batches": k, "acc": acc, "loss": loss})
    folding = check_fold(ref, pop_batches[:args.batches], x_test)
    return rows, k_sweep, folding, same, time.perf_counter() - t0


@minigrad.no_grad()
def check_fold(model, batches, x):
    """After recompute_statistics, the folded model must give the eval-mode outputs."""
    recompute_statistics(model, batches)
    model.eval()
    folded = fold(model)
    a, b = model(x).numpy(), folded(x).numpy()
    return {"max_abs_logit_diff": float(np.abs(a - b).max()), "max_abs_logit": float(np.abs(a).max()),
            "prediction_agreement": float((a.argmax(1) == b.argmax(1)).mean())}


def plot(path, rows, k_sweep, args, title):
    plt = pyplot()
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), layout="constrained")
    ax = axes[0]
    ax.plot(steps, [r["acc_precise"] for r in rows], "-", color="k", lw=2,
            label=f"Algorithm 2 (K = {args.batches} batches)")
    styles = {0.01: ("tab:red", ":"), 0.1: ("tab:blue", "--"), 0.9: ("tab:green", "-.")}
    for m in MOMENTA:
        color, ls = styles[m]
        ax.plot(steps, [r[f"acc_running_{m}"] for r in rows], ls, color=color, label=f"moving averages, momentum {m}")
    ax.set(xscale="log", xlabel="training steps (log scale)", ylabel="test accuracy (eval mode)", ylim=(0, 1))
    decorate(ax, "(a) accuracy with each kind of statistics", "lower right")
    ax = axes[1]
    for m in MOMENTA:
        color, ls = styles[m]
        ax.plot(steps, [r[f"stat_error_{m}"] for r in rows], ls, color=color, label=f"momentum {m}")
    ax.set(xscale="log", yscale="log", xlabel="training steps (log scale)",
           ylabel="mean |running mean − E[x]| / √Var[x]")
    decorate(ax, "(b) moving averages vs Algorithm 2's statistics", grid="both")
    ax = axes[2]
    ax.plot([r["batches"] for r in k_sweep], [r["acc"] for r in k_sweep], "o-", color="k",
            label="Algorithm 2 with K batches")
    ax.axhline(rows[-1]["acc_running_0.1"], color="tab:blue", ls="--", label="moving averages, momentum 0.1")
    ax.set(xscale="log", xlabel=f"K, training mini-batches of {args.batch_size} averaged (log scale)",
           ylabel="test accuracy (eval mode)")
    decorate(ax, f"(c) at step {args.steps}: how many batches Algorithm 2 needs")
    save_figure(fig, path, title)


def parse_args(argv=None):
    p = make_parser(__doc__, os.path.join("runs", "precise_bn"), steps=5000, lr=1.0,
                    lr_help="SGD learning rate (Figure 1's)", batch_help="mini-batch size (the paper's m)")
    p.add_argument("--batches", type=int, default=100, help="K, training mini-batches Algorithm 2 averages over")
    p.add_argument("--points", type=int, default=30, help="log-spaced evaluations")
    args = p.parse_args(argv)
    require_positive(p, args, "steps", "batch_size", "batches", "points")
    return args


def main(argv=None):
    args = parse_args(argv)
    data = start(args)
    rows, k_sweep, folding, same, total = run(args, data)
    write_rows(os.path.join(args.out, "history.csv"), rows)
    last = rows[-1]
    summary = run_info(args, data, ("steps", "batch_size", "lr", "batches", "points", "seed", "device", "data",
                                    "subset", "threads"))
    summary.update({
        "momenta": list(MOMENTA), "same_weights_for_every_momentum": same,
        "final": last, "k_sweep": k_sweep, "folding_after_recompute": folding, "total_s": total, "history": rows,
    })
    write_json(os.path.join(args.out, "summary.json"), summary)
    if not args.no_plot:
        plot(os.path.join(args.out, "precise_bn.png"), rows, k_sweep, args,
             f"{data.name}: Figure 1's BN network, SGD lr {args.lr}, batch {args.batch_size}, seed {args.seed}")
    print()
    print(f"Algorithm 2 vs moving averages: {args.steps} steps, K = {args.batches}; data: {data.description}")
    print(f"{'step':>6}  {'Algorithm 2':>11}  " + "  ".join(f"{'momentum ' + str(m):>13}" for m in MOMENTA))
    for r in rows:
        print(f"{r['step']:>6}  {r['acc_precise']:>11.4f}  " +
              "  ".join(f"{r[f'acc_running_{m}']:>13.4f}" for m in MOMENTA))
    print("accuracy with K batches at the end: " + ", ".join(f"K={r['batches']}: {r['acc']:.4f}" for r in k_sweep))
    print(f"the three networks kept identical weights: {same}")
    print(f"folded after recompute_statistics vs eval mode: max |logit difference| "
          f"{folding['max_abs_logit_diff']:.2e} (logits up to {folding['max_abs_logit']:.1f}), predictions agree on "
          f"{folding['prediction_agreement']:.2%}")
    print(f"total time {total:.1f} s; outputs written to {os.path.abspath(args.out)}")
    return summary


if __name__ == "__main__":
    main()
