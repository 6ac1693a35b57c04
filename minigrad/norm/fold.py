"""Folding normalizers into the preceding layer for inference (the paper's Algorithm 2).

In eval mode Batch Normalization is a fixed per-channel affine map,
``y = x·s + t`` with ``s = γ/sqrt(Var + ε)`` and ``t = β - E·s`` (E and Var
the running statistics). After a Linear or Conv2d it can be absorbed into
that layer:

    W' = W·s (each output unit / output channel scaled)
    b' = (b - E)·s + β  =  b·s + t

``fold(model)`` returns such an inference copy; every other normalizer
that is an affine map in eval mode becomes a ``ChannelAffine`` module (the
single multiply-add). Which normalizers qualify is their own decision:
``Normalizer.inference_affine``.

The merge is the same map only when the axis the normalizer scales is the
axis the layer's output features live on: axis 1 of a Conv2d's (N, C, H, W)
output, but the *last* axis of a Linear's output, which is axis 1 only for
2-D (N, features) data. So a Linear followed by BatchNorm1d is merged for
2-D inputs and the merged model refuses 3-D ones (``FoldError``), and a
Linear followed by BatchNorm2d or InstanceNorm is never merged.
"""

from __future__ import annotations

import copy

from .._ext._engine import TensorBase
from ..nn.layers import Conv2d, Identity, Linear, Sequential
from ..nn.module import Module, Parameter
from ..tensor import tensor
from .base import Normalizer
from .functional import ChannelAffineFunction

__all__ = ["fold", "ChannelAffine", "FoldError", "Folded"]


class FoldError(ValueError):
    """A model (or a normalizer in it) cannot be folded for inference."""


class ChannelAffine(Module):
    """``y[:, c] = x[:, c]·scale[c] + shift[c]``: an eval-mode normalizer reduced to one multiply-add.

    ``ChannelAffine(scale, shift, channel_axes=None)``: ``scale`` and
    ``shift`` are buffers of shape (C,); inputs are (N, C, *), channels on
    axis 1, unless ``channel_axes`` maps each accepted input rank to its
    channel axis (InstanceNorm2d: ``{4: 1, 3: 0}``, an unbatched (C, H, W)
    input has them first). ``fold`` creates these from normalizers it
    cannot merge into a preceding layer; ``ChannelAffine.from_normalizer(bn)``
    does it for one.

    Example::

        bn.eval()
        affine = ChannelAffine.from_normalizer(bn)   # same outputs as bn(x) in eval mode
    """

    def __init__(self, scale, shift, channel_axes=None):
        super().__init__()
        if not isinstance(scale, TensorBase) or not isinstance(shift, TensorBase):
            raise TypeError("ChannelAffine: scale and shift must be Tensors")
        if scale.ndim != 1 or tuple(scale.shape) != tuple(shift.shape):
            raise ValueError(f"ChannelAffine: scale and shift must be 1-D of the same shape, got "
                             f"{tuple(scale.shape)} and {tuple(shift.shape)}")
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)
        self.channel_axes = None if channel_axes is None else {int(r): int(a) for r, a in channel_axes.items()}

    @classmethod
    def from_normalizer(cls, norm: Normalizer) -> "ChannelAffine":
        """The multiply-add equal to ``norm`` in its current (eval) state; FoldError if there is none."""
        affine = norm.inference_affine()
        if affine is None:
            raise FoldError(f"{type(norm).__name__} is not a per-channel affine map in its current state "
                            f"(is it in eval mode with running statistics?)")
        scale, shift = affine
        ref = norm.weight if norm.weight is not None else norm.running_mean
        dtype, backend = norm._parameter_dtype(), ref.backend
        axes = {rank: _channel_axis(norm, rank) for rank in norm.input_ranks}
        return cls(_as_tensor(scale, dtype, backend), _as_tensor(shift, dtype, backend),
                   None if set(axes.values()) == {1} else axes)

    def forward(self, x):
        if not isinstance(x, TensorBase):
            raise TypeError(f"ChannelAffine: expected a minigrad Tensor, got {type(x).__name__}")
        c = self.scale.shape[0]
        axis = (1 if x.ndim >= 2 else None) if self.channel_axes is None else self.channel_axes.get(x.ndim)
        if axis is None or x.shape[axis] != c:
            expected = "(N, C, *)" if self.channel_axes is None else \
                ", ".join(f"{r}D with channels on axis {a}" for r, a in sorted(self.channel_axes.items()))
            raise ValueError(f"ChannelAffine: expected an input {expected} with C = {c}, got shape {tuple(x.shape)}")
        if x.dtype != self.scale.dtype:
            raise TypeError(f"ChannelAffine: input dtype {x.dtype} does not match the module's dtype "
                            f"{self.scale.dtype}")
        if x.numel() == 0:
            return x.clone()
        if axis == 1:
            return ChannelAffineFunction.apply(x, self.scale, self.shift)
        shape = [1] * x.ndim
        shape[axis] = c
        return x * self.scale.reshape(shape) + self.shift.reshape(shape)

    def extra_repr(self) -> str:
        return f"{self.scale.shape[0]}"


class Folded(Identity):
    """The place of a normalizer merged into the layer before it: passes its input on.

    ``Folded(what, ranks)``: the merge is the same map only for inputs of
    the ranks ``ranks`` (a Linear's features are on axis 1 only for 2-D
    data), so any other rank raises ``FoldError`` instead of a wrong number.

    Example::

        fast = minigrad.norm.fold(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).eval())
        fast[1]   # Folded(BatchNorm1d into Linear, ranks=(2,))
    """

    def __init__(self, what, ranks):
        super().__init__()
        self.what = str(what)
        self.ranks = tuple(sorted(ranks))

    def forward(self, x):
        if x.ndim not in self.ranks:
            raise FoldError(f"fold merged {self.what}, which is the same map only for {_ranks(self.ranks)} input "
                            f"there (where the normalizer's channel axis is the layer's feature axis); got "
                            f"{x.ndim}D input of shape {tuple(x.shape)}: run the unfolded model on such inputs")
        return x

    def extra_repr(self) -> str:
        return f"{self.what}, ranks={self.ranks}"


def _ranks(ranks):
    return " or ".join(f"{r}D" for r in ranks)


def _channel_axis(norm, rank):
    """The axis the per-channel map of ``norm`` acts on, for an input of ``rank`` dimensions."""
    return norm.affine_shape(rank).index(-1)


def _feature_axis(layer, rank):
    """The axis a Linear's or Conv2d's output features live on, for an output of ``rank`` dimensions
    (None: the layer cannot give such an output)."""
    if isinstance(layer, Linear):
        return rank - 1 if rank >= 1 else None
    return rank - 3 if rank in (3, 4) else None  # Conv2d: (N, C, H, W), unbatched (C, H, W)


def _merge_ranks(layer, norm):
    """``(ranks where merging norm into layer is the same map, ranks where the pair can run at all)``."""
    possible = [r for r in norm.input_ranks if _feature_axis(layer, r) is not None]
    same = [r for r in possible if _feature_axis(layer, r) == _channel_axis(norm, r)]
    return same, possible


def _as_tensor(array, dtype, backend):
    return tensor(backend.to_numpy(array), dtype=dtype, device=backend.device)


def fold(model: Module) -> Module:
    """An inference copy of ``model`` with its eval-mode normalizers folded away.

    Every normalizer that directly follows a Linear or Conv2d in a
    Sequential (nested Sequentials included, in execution order), is an
    affine map in eval mode (BatchNorm with running statistics) and scales
    the axis the layer's output features are on is merged into that layer
    (``W' = W·s``, ``b' = (b - E)·s + β``, s = γ/sqrt(Var + ε), per output
    unit) and replaced by ``nn.Identity``, or by ``Folded`` where that holds
    for some input ranks only (Linear + BatchNorm1d: 2-D inputs; others
    raise ``FoldError``); any other such normalizer becomes a
    ``ChannelAffine`` (its single multiply-add).
    Normalizers that are not affine maps (LayerNorm, GroupNorm, ...) are
    kept. A layer used more than once in the model is never modified.

    Raises ``FoldError`` if any module is in training mode, or for a
    BatchNorm without running statistics. ``model`` itself is not modified.

    Example::

        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
        ...train...
        fast = minigrad.norm.fold(model.eval())   # Conv2d (folded), Identity, ReLU
    """
    if not isinstance(model, Module):
        raise TypeError(f"fold: expected a minigrad Module, got {type(model).__name__}")
    for name, m in model.named_modules():
        if m.training:
            where = f"its submodule {name!r} ({type(m).__name__})" if name else f"the model ({type(m).__name__})"
            raise FoldError(f"fold: the model must be in eval mode, but {where} is in training mode; call "
                            f"model.eval() first")
    folded = _deepcopy(model)
    uses = _count_uses(folded)
    for root in _sequential_roots(folded):
        order = list(_execution_order(root))
        for (_, _, prev), (parent, name, mod) in zip(order, order[1:]):
            if not isinstance(mod, Normalizer) or not isinstance(prev, (Linear, Conv2d)):
                continue
            if uses[id(prev)] != 1 or uses[id(mod)] != 1:
                continue  # shared: folding would change its other uses
            affine = mod.inference_affine()
            if affine is None or affine[0].shape[0] != _out_channels(prev):
                continue
            same, possible = _merge_ranks(prev, mod)
            if not same:
                continue  # another axis than the layer's features: it stays a ChannelAffine (below)
            _fold_into(prev, *affine)
            marker = Identity() if same == possible else Folded(f"{type(mod).__name__} into {type(prev).__name__}",
                                                                 same)
            setattr(parent, name, marker)
    for parent, name, mod in list(_named_children_all(folded)):
        if isinstance(mod, Normalizer) and mod.inference_affine() is not None:
            setattr(parent, name, ChannelAffine.from_normalizer(mod))
    if isinstance(folded, Normalizer) and folded.inference_affine() is not None:
        return ChannelAffine.from_normalizer(folded)
    return folded


def _deepcopy(model):
    """``copy.deepcopy`` of a module tree whose tensors keep their backend objects.

    (A plain deepcopy would copy each tensor's Backend too, and tensors on
    different Backend objects count as being on different devices.)
    Gradients are not copied: the copy is for inference.
    """
    memo = {}
    for m in model.modules():
        for store in (m._parameters, m._buffers):
            for t in store.values():
                if t is not None and id(t) not in memo:
                    new = type(t).__new__(type(t))
                    new._set_fields(t.array.copy(), t.backend, t.requires_grad)
                    memo[id(t)] = new
    return copy.deepcopy(model, memo)


def _out_channels(layer):
    return layer.out_features if isinstance(layer, Linear) else layer.out_channels


def _fold_into(layer, scale, shift):
    """W' = W·scale (per output unit), b' = b·scale + shift, computed in float64."""
    w = layer.weight
    xp = w.backend.xp
    s = scale.reshape((-1,) + (1,) * (w.ndim - 1))
    w.array[...] = (w.array.astype(xp.float64) * s).astype(w.dtype)
    b = xp.zeros(scale.shape, dtype=xp.float64) if layer.bias is None else layer.bias.array.astype(xp.float64)
    new_bias = (b * scale + shift).astype(w.dtype)
    if layer.bias is None:
        layer.bias = Parameter(tensor(w.backend.to_numpy(new_bias), dtype=w.dtype, device=w.device))
    else:
        layer.bias.array[...] = new_bias


def _count_uses(model):
    """How many times each module object appears in the tree (shared modules count more than once)."""
    counts = {}
    stack = [model]
    while stack:
        m = stack.pop()
        counts[id(m)] = counts.get(id(m), 0) + 1
        if counts[id(m)] == 1:
            stack.extend(c for c in m._modules.values() if c is not None)
    return counts


def _sequential_roots(model):
    """Sequentials that are not directly inside another Sequential (each is one chain)."""
    roots, seen = [], set()
    stack = [(model, False)]
    while stack:
        m, parent_is_seq = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        is_seq = isinstance(m, Sequential)
        if is_seq and not parent_is_seq:
            roots.append(m)
        stack.extend((c, is_seq) for c in reversed(list(m._modules.values())) if c is not None)
    return roots


def _execution_order(seq):
    """(parent, name, module) of the leaves of a Sequential chain, nested Sequentials flattened."""
    for name, child in list(seq._modules.items()):
        if child is None:
            continue
        if isinstance(child, Sequential):
            yield from _execution_order(child)
        else:
            yield seq, name, child


def _named_children_all(model):
    """(parent, name, child) for every edge of the module tree (each parent once)."""
    seen = set()
    stack = [model]
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        for name, child in m._modules.items():
            if child is not None:
                yield m, name, child
                stack.append(child)

