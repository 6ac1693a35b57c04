"""Santurkar et al. (2018), Figure 4: BN makes the loss landscape smoother along the gradient.

At regular steps of training, with and without BN (the Figure 1 network,
same initial weights, same mini-batches, same learning rate η), the script
stands at the current weights w with the current mini-batch's gradient
g = ∇L(w) and moves along it, to w − λ·g for step sizes λ = c·η
(c in ``--step-sizes``). On the same mini-batch (BN in training mode, as
the optimizer sees it) it measures, as Santurkar et al. do:

* loss landscape: the range of L(w − λg) over the step sizes (their 4a);
* gradient predictiveness: the range of ‖∇L(w) − ∇L(w − λg)‖ (their 4b);
* effective β-smoothness: max over λ of ‖∇L(w) − ∇L(w − λg)‖ / ‖λg‖, the
  largest change of the gradient per unit of distance (their 4c);
* the top eigenvalue of the Hessian of the loss, by power iteration on
  Hessian-vector products (``top_hessian_eigenvalue``), every
  ``--hessian-every`` probes. The products are exact, from
  ``minigrad.autograd.functional.hvp`` (higher-order gradients through
  every layer, BatchNorm included) on a float64 copy of the model.

Outputs in ``--out``: ``landscape.png``, ``history.csv``, ``summary.json``.

Run from a source checkout::

    python -m examples.landscape
"""

from __future__ import annotations

import copy
import os
import sys
import time

import numpy as np

import minigrad
from minigrad.autograd import functional as autograd_functional
from minigrad import optim
from minigrad.nn import functional as F

if __package__ in (None, ""):  # run as a file: make the sibling helper importable
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import (
        build_mlp, decorate, endless_batches, flat, make_parser, progress, pyplot, require_positive, restore,
        run_info, save_figure, snapshot, start, train_step_each, write_json, write_rows)
else:
    from ._common import (
        build_mlp, decorate, endless_batches, flat, make_parser, progress, pyplot, require_positive, restore,
        run_info, save_figure, snapshot, start, train_step_each, write_json, write_rows)

NAMES = {"plain": "Standard (no BN)", "bn": "BN"}
COLORS = {"plain": "tab:gray", "bn": "tab:blue"}


def loss_and_grad(model, xb, yb):
    """Training-mode loss on (xb, yb) and its gradient (copies of the parameters' .grad arrays)."""
    model.zero_grad()
    loss = F.cross_entropy(model(xb), yb)
    loss.backward()
    grads = [p.grad.array.copy() for p in model.parameters()]
    model.zero_grad()
    return loss.item(), grads


def _norm(arrays) -> float:
    return float(np.sqrt(sum(float((a * a).sum()) for a in arrays)))


def probe(model, xb, yb, lr, multiples):
    """Move along the gradient by λ = c·lr and measure the loss, the gradient change and β (a dict).

    Nothing changes: the weights and BN's running statistics are put back.
    """
    saved = snapshot(model)
    params = list(model.parameters())
    w0 = [p.array.copy() for p in params]
    loss0, g0 = loss_and_grad(model, xb, yb)
    gnorm = _norm(g0)
    losses, changes, betas = [], [], []
    for c in multiples:
        lam = c * lr
        for p, w, g in zip(params, w0, g0):
            p.array[...] = w - lam * g
        loss, g = loss_and_grad(model, xb, yb)
        change = _norm([a - b for a, b in zip(g, g0)])
        losses.append(loss)
        changes.append(change)
        betas.append(change / (lam * gnorm) if gnorm > 0 else 0.0)
    restore(model, saved)
    return {"loss": loss0, "grad_norm": gnorm, "loss_min": min(losses + [loss0]), "loss_max": max(losses + [loss0]),
            "grad_change_min": min(changes), "grad_change_max": max(changes), "beta": max(betas)}


# ------------------------------------------------------------- the Hessian
def power_iteration(hvp, shapes, iters, seed=0, tol=1e-4):
    """The eigenvalue of largest magnitude of a symmetric operator given as ``hvp(v) -> H·v``.

    ``v`` is a list of float64 NumPy arrays of ``shapes`` (one per
    parameter). Returns ``(eigenvalue, iterations used)``; stops early when
    the Rayleigh quotient changes by less than ``tol`` (relative).
    """
    rng = np.random.default_rng(seed)
    v = [rng.standard_normal(s) for s in shapes]
    n = _norm(v)
    v = [a / n for a in v]
    value = 0.0
    for i in range(1, iters + 1):
        hv = hvp(v)
        new = float(sum((a * b).sum() for a, b in zip(v, hv)))  # Rayleigh quotient v·Hv, ‖v‖ = 1
        n = _norm(hv)
        if n == 0:
            return 0.0, i
        v = [a / n for a in hv]
        if i > 1 and abs(new - value) <= tol * abs(new):
            return new, i
        value = new
    return value, iters


def hvp_operator(model, xb, yb):
    """v ↦ H·v for the training-mode loss of ``model`` on (xb, yb), on a float64 copy; and how it is computed.

    Exact products through ``minigrad.autograd.functional.hvp`` (PyTorch's
    signature): the loss as a function of the parameters, which are
    substituted into the copy for each call. ``v`` and the result are lists
    of NumPy arrays shaped like the parameters.
    """
    net = copy.deepcopy(model).double().train()
    params = list(net.parameters())
    x64 = xb.to(dtype="float64")
    slots = [(m, name) for m in net.modules() for name, p in m._parameters.items() if p is not None]

    def loss_of(*ps):
        old = [m._parameters[name] for m, name in slots]
        for (m, name), p in zip(slots, ps):
            m._parameters[name] = p
        try:
            return F.cross_entropy(net(x64), yb)
        finally:
            for (m, name), p in zip(slots, old):
                m._parameters[name] = p

    def exact(v):
        vs = tuple(minigrad.tensor(a, dtype="float64", device=x64.device) for a in v)
        _, hv = autograd_functional.hvp(loss_of, tuple(p.detach() for p in params), vs)
        return [h.detach().numpy() for h in hv]

    return exact, "exact (minigrad.autograd.functional.hvp)"


def top_hessian_eigenvalue(model, xb, yb, iters=20, seed=0):
    """The top eigenvalue of ∇²L at the model's weights, on one mini-batch; returns (value, method)."""
    hvp, method = hvp_operator(model, xb, yb)
    shapes = [tuple(p.shape) for p in model.parameters()]
    value, _ = power_iteration(hvp, shapes, iters, seed)
    return value, method


# ------------------------------------------------------------------ run
def run(args, data):
    device = args.device
    x_train = flat(data.x_train)
    hidden = tuple(args.hidden)
    nets = {k: build_mlp(bn, "gaussian", args.seed, x_train.shape[1], data.num_classes, hidden=hidden,
                         activation=args.activation).to(device) for k, bn in (("plain", False), ("bn", True))}
    opts = {k: optim.SGD(m.parameters(), lr=args.lr) for k, m in nets.items()}
    stream = endless_batches(x_train, data.y_train, args.batch_size, args.seed, device)
    rows, methods = [], {}
    loss_sum, step_time = {k: 0.0 for k in nets}, {k: 0.0 for k in nets}
    t0 = time.perf_counter()
    bar = progress(range(1, args.steps + 1), args.steps, "Landscape: training and probing the nets without and with BN",
                   args.no_progress)
    probes = 0
    for step in bar:
        xb, yb = next(stream)
        if step == 1 or step % args.every == 0:
            row = {"step": step}
            hessian = args.hessian_every and probes % args.hessian_every == 0
            for k, m in nets.items():
                for name, v in probe(m, xb, yb, args.lr, args.step_sizes).items():
                    row[f"{name}_{k}"] = v
                if hessian:
                    row[f"hessian_top_{k}"], methods[k] = top_hessian_eigenvalue(m, xb, yb, args.hessian_iters,
                                                                                 args.seed)
            probes += 1
            rows.append(row)
            bar.set_postfix(beta_without_BN=f"{row['beta_plain']:.3g}", beta_with_BN=f"{row['beta_bn']:.3g}")
        train_step_each(nets, opts, xb, yb, loss_sum, step_time)
    return rows, methods, time.perf_counter() - t0


def _band(ax, rows, lo, hi, ylabel, title):
    for k in NAMES:
        steps = [r["step"] for r in rows]
        ax.fill_between(steps, [r[f"{lo}_{k}"] for r in rows], [r[f"{hi}_{k}"] for r in rows], color=COLORS[k],
                        alpha=0.35, label=NAMES[k])
    ax.set(xlabel="training steps", ylabel=ylabel, yscale="log")
    decorate(ax, title, grid="both")


def plot(path, rows, methods, args, title):
    plt = pyplot()
    hess = [r for r in rows if "hessian_top_bn" in r]
    fig, axes = plt.subplots(1, 4 if hess else 3, figsize=(20 if hess else 15, 4.3), layout="constrained")
    sizes = f"λ = {min(args.step_sizes):g}–{max(args.step_sizes):g}·η"
    _band(axes[0], rows, "loss_min", "loss_max", "training loss L(w − λ∇L)",
          f"(a) loss landscape: range over {sizes}")
    _band(axes[1], rows, "grad_change_min", "grad_change_max", "‖∇L(w) − ∇L(w − λ∇L)‖",
          "(b) gradient predictiveness: range of the change")
    ax = axes[2]
    for k in NAMES:
        ax.plot([r["step"] for r in rows], [r[f"beta_{k}"] for r in rows], color=COLORS[k], label=NAMES[k])
    ax.set(xlabel="training steps", ylabel="max ‖Δ∇L‖ / ‖λ∇L‖", yscale="log")
    decorate(ax, "(c) effective β-smoothness", grid="both")
    if hess:
        ax = axes[3]
        for k in NAMES:
            ax.plot([r["step"] for r in hess], [r[f"hessian_top_{k}"] for r in hess], "o-", color=COLORS[k],
                    label=NAMES[k])
        values = [r[f"hessian_top_{k}"] for r in hess for k in NAMES]
        # A log axis where every estimate is positive (the usual case); symlog shows a negative one too.
        ax.set(xlabel="training steps", ylabel="top eigenvalue of ∇²L",
               yscale="log" if min(values) > 0 else "symlog")
        decorate(ax, "(d) top Hessian eigenvalue (power iteration)", "upper right", grid="both")
        how = "; ".join(f"{NAMES[k]}: {m.split(' (')[0]}" for k, m in methods.items())
        ax.text(0.02, 0.02, "Hv: " + how, transform=ax.transAxes, fontsize=6)
    save_figure(fig, path, title)


def _floats(text):
    return [float(v) for v in text.split(",") if v.strip()]


def parse_args(argv=None):
    p = make_parser(__doc__, os.path.join("runs", "landscape"), steps=3000, lr=1.0,
                    lr_help="SGD learning rate η, the same for both networks")
    p.add_argument("--hidden", default="100,100,100", help="hidden layer widths, comma-separated")
    p.add_argument("--activation", choices=("sigmoid", "relu", "tanh"), default="sigmoid", help="hidden units")
    p.add_argument("--step-sizes", default="0.5,1,1.5,2,2.5,3,3.5,4",
                   help="multiples c of η: the landscape is probed at w − c·η·∇L (Santurkar et al.: 0.5–4)")
    p.add_argument("--every", type=int, default=None, help="probe every N steps (without it: steps/100)")
    p.add_argument("--hessian-every", type=int, default=10,
                   help="top Hessian eigenvalue at every N-th probe (0: never)")
    p.add_argument("--hessian-iters", type=int, default=20, help="power iterations per eigenvalue")
    args = p.parse_args(argv)
    try:
        args.step_sizes = _floats(args.step_sizes)
        args.hidden = [int(v) for v in _floats(args.hidden)]
    except ValueError:
        p.error("--step-sizes and --hidden take comma-separated numbers")
    if not args.step_sizes or min(args.step_sizes) <= 0 or not args.hidden or min(args.hidden) < 1:
        p.error("--step-sizes must be positive and --hidden at least one width of at least 1")
    require_positive(p, args, "steps", "batch_size", "hessian_iters")
    if args.hessian_every < 0:
        p.error("--hessian-every must be at least 0")
    if args.every is None:
        args.every = max(1, args.steps // 100)
    return args


def main(argv=None):
    args = parse_args(argv)
    data = start(args)
    rows, methods, total = run(args, data)
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "step", k))
    write_rows(os.path.join(args.out, "history.csv"), [{k: r.get(k, "") for k in keys} for r in rows])

    def median(name, k):
        vals = [r[f"{name}_{k}"] for r in rows[len(rows) // 10:] if f"{name}_{k}" in r]
        return float(np.median(vals)) if vals else None

    measures = ("beta", "grad_change_max", "loss_max", "hessian_top")
    summary = run_info(args, data, ("steps", "batch_size", "lr", "hidden", "activation", "step_sizes", "every",
                                    "hessian_every", "hessian_iters", "seed", "device", "data", "subset", "threads"))
    summary.update({
        "hessian_method": methods,
        "median_after_first_10pct": {k: {m: median(m, k) for m in measures} for k in NAMES},
        "loss_range_median": {k: float(np.median([r[f"loss_max_{k}"] - r[f"loss_min_{k}"] for r in rows]))
                              for k in NAMES},
        "total_s": total, "history": rows,
    })
    write_json(os.path.join(args.out, "summary.json"), summary)
    if not args.no_plot:
        plot(os.path.join(args.out, "landscape.png"), rows, methods, args,
             f"{data.name}: MLP {'-'.join(map(str, args.hidden))} {args.activation}, SGD η {args.lr}, "
             f"batch {args.batch_size}, seed {args.seed}")
    print()
    print(f"Loss landscape along the gradient (Santurkar et al. 2018, Figure 4): {args.steps} steps; "
          f"data: {data.description}")
    print("medians over the probes after the first 10% of training:")
    for k in NAMES:
        m = summary["median_after_first_10pct"][k]
        hess = f"{m['hessian_top']:.3g}" if m["hessian_top"] is not None else "-"
        print(f"  {NAMES[k]:<17} β-smoothness {m['beta']:.3g}   max gradient change {m['grad_change_max']:.3g}   "
              f"loss range {summary['loss_range_median'][k]:.3g}   top Hessian eigenvalue {hess}")
    for k, m in methods.items():
        print(f"Hessian-vector products, {NAMES[k]}: {m}")
    print(f"total time {total:.1f} s; outputs written to {os.path.abspath(args.out)}")
    return summary


if __name__ == "__main__":
    main()
