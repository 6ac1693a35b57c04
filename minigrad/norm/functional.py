"""Functional normalization: ``batch_norm``, ``layer_norm``, ``group_norm``, ``instance_norm``.

Two graph nodes do the numeric work of the built-in normalizers, each a
pair of backend kernels with the affine part fused in, and each with
several outputs (the statistics leave as non-differentiable outputs):

* ``BatchNormFunction``: per-channel statistics on the ``(N, C, S)`` view,
  normalize and affine in one pass (``batch_norm_forward_train`` /
  ``batch_norm_backward``; eval is ``batch_norm_forward_eval``, one
  multiply-add); returns ``(y, mean, var)`` in training;
* ``GroupNormFunction``: statistics per (sample, group of channels) on the
  ``(N, C, S)`` view with a per-channel affine (``group_norm_forward`` /
  ``group_norm_backward``): GroupNorm, InstanceNorm (one channel per
  group) and LayerNorm (the ``(R, K, 1)`` view, one group, so its affine
  is per element); returns ``(y, mean, invstd)``.

Their backward passes are nodes of their own (``BatchNormGrad``,
``GroupNormGrad``: the fused backward kernels) whose ``vjp`` is the double
backward, so gradients of gradients work to any order. Running statistics
are updated in one visible place, ``update_running_stats``, by whoever
owns them (the layers, or ``batch_norm``/``instance_norm`` when given
them), never inside a Function.

The public functions validate their arguments on the host, in one place,
then call the Functions. ``minigrad.nn.functional`` re-exports them with
PyTorch's signatures.

Mixed precision (cuDNN's and PyTorch's rule): a float16 or bfloat16 input
may come with float32 γ, β and running statistics, or half ones, all of
one dtype; anything else is one TypeError. The statistics are float32,
never rounded to the half type, y and dx have the input's dtype, dγ and dβ
their parameter's (docs/normalizers.md, "Mixed precision").
"""

from __future__ import annotations

import math
import numbers
import operator
import warnings

import numpy as np

from .. import ops
from .._dtypes import accumulation_dtype, is_floating, is_half
from .._ext._engine import Function, TensorBase, make_tensor
from ..tensor import ones, zeros, zeros_like

__all__ = ["batch_norm", "batch_norm_train", "batch_norm_eval", "layer_norm", "group_norm", "instance_norm",
           "instance_norm_train", "update_running_stats", "BatchNormFunction", "BatchNormGrad", "GroupNormFunction",
           "GroupNormGrad", "ChannelAffineFunction"]


# ----------------------------------------------------------------- Functions
class BatchNormFunction(Function):
    """Batch Normalization of an input with channels on axis 1 (one graph node).

    ``apply(x, weight, bias, training=True, eps=1e-5, mean=None, var=None)``;
    ``weight`` (γ) and ``bias`` (β) are Tensors of shape (C,) or None. With
    m = N·∏spatial values per channel:

    * training: returns ``(y, mean, var)``, ``y = γ·(x - μ_B)/sqrt(σ²_B + ε) + β``
      with the batch mean μ_B and *biased* variance σ²_B, which are the
      other two outputs (non-differentiable: the caller folds them into
      running statistics, see ``update_running_stats``);
    * eval (``training=False``, ``mean``/``var`` the running statistics as
      arrays): returns ``y = x·scale + shift`` with ``scale = γ/sqrt(var + ε)``,
      ``shift = β - mean·scale``, one multiply-add.

    Backward (the paper's chain rule, from the per-channel sums Σdy and
    Σdy·x̂): ``dβ = Σdy``, ``dγ = Σdy·x̂``, and
    ``dx = γ/σ·(dy - Σdy/m - x̂·Σdy·x̂/m)`` in training (the statistics depend
    on x), ``dx = γ/σ·dy`` in eval. Its ``vjp`` is ``BatchNormGrad``, a node
    of its own (the fused backward kernel, with a double backward).

    Mixed precision: a float16/bfloat16 x may come with float32 γ, β and
    running statistics. Everything is accumulated in float32 (float64 for
    float64 data): the batch statistics and what is saved for backward are
    float32, y and dx have x's dtype, dγ and dβ their parameter's.
    """

    mixed_precision = True

    def forward(self, x, weight=None, bias=None, training=True, eps=1e-5, mean=None, var=None):
        v = x.reshape(_channel_view(x.shape))
        self.training, self.eps = training, eps
        self.param_dtypes = _dtypes_of(weight, bias)
        if training:
            y, mean, var = self.backend.batch_norm_forward_train(v, weight, bias, eps)
            self.mark_non_differentiable(mean, var)
            self.save_for_backward(x, weight, mean, 1.0 / self.xp.sqrt(var + eps))
            return y.reshape(x.shape), mean, var
        y = self.backend.batch_norm_forward_eval(v, mean, var, weight, bias, eps)
        if True in self.needs_input_grad:  # recorded: keep what backward needs (half statistics widened)
            acc = accumulation_dtype(x.dtype)
            self.save_for_backward(x, weight, mean.astype(acc, copy=False),
                                   1.0 / self.xp.sqrt(var.astype(acc, copy=False) + eps))
        return y.reshape(x.shape)

    def backward(self, grad, *unused_statistics_grads):
        x, weight, mean, invstd = self.saved_tensors
        v = x.reshape(_channel_view(x.shape))
        dx, dweight, dbias = self.backend.batch_norm_backward(grad.reshape(v.shape), v, mean, invstd, weight,
                                                               self.training)
        dweight, dbias = _as_dtypes((dweight, dbias), self.param_dtypes)
        need = self.needs_input_grad
        return (_reshape_owned(dx, x.shape) if need[0] else None,
                dweight if need[1] else None,
                dbias if need[2] else None)

    def vjp(self, grad, *unused_statistics_grads):
        x, weight, mean, invstd = self.saved_as_tensors()
        dx, dweight, dbias = BatchNormGrad.apply(grad, x, weight, mean=mean.array, invstd=invstd.array,
                                                 training=self.training, eps=self.eps,
                                                 param_dtypes=self.param_dtypes)
        need = self.needs_input_grad
        return dx if need[0] else None, dweight if need[1] else None, dbias if need[2] else None


class BatchNormGrad(Function):
    """The backward of ``BatchNormFunction`` as a node of its own (Chainer's ``BatchNormalizationGrad``).

    ``apply(grad, x, weight, mean=, invstd=, training=)`` → ``(dx, dγ, dβ)``
    through the fused backward kernel; its ``vjp`` is the double backward
    (PyTorch's batchnorm double-backward formulas, ``_double_backward``),
    written with differentiable operations, so any order works. dγ and dβ
    come back in ``param_dtypes`` (those of γ and β; None: accumulation
    dtype).
    """

    mixed_precision = True

    def forward(self, grad, x, weight=None, mean=None, invstd=None, training=True, eps=1e-5,
                param_dtypes=(None, None)):
        self.mean, self.invstd, self.training, self.eps = mean, invstd, training, eps
        v = x.reshape(_channel_view(x.shape))
        dx, dweight, dbias = self.backend.batch_norm_backward(grad.reshape(v.shape), v, mean, invstd, weight,
                                                               training)
        return (dx.reshape(x.shape),) + _as_dtypes((dweight, dbias), param_dtypes)

    def vjp(self, ggx, ggw, ggb):
        grad, x, weight = self.inputs
        view = _channel_view(x.shape)
        stats = None if self.training else (self.mean.reshape(1, -1, 1), self.invstd.reshape(1, -1, 1))
        return _double_backward(grad, x, weight, ggx, ggw, ggb, view, (0, 2), (1, view[1], 1), self.eps, stats,
                                self.needs_input_grad)


class GroupNormFunction(Function):
    """Group normalization with its affine part, on an ``(N, C, S)`` view of x (one graph node).

    ``apply(x, weight, bias, view=(N, C, S), groups=1, eps=1e-5)`` →
    ``(y, mean, invstd)``: x is read as ``x.reshape(view)``; each sample's C
    channels form ``groups`` runs of C/groups consecutive channels, and each
    (sample, group) has its own mean μ and biased variance σ²:
    ``y = γ_c·(x - μ)/sqrt(σ² + ε) + β_c``. ``weight`` (γ) and ``bias`` (β)
    are Tensors of C elements in any shape (LayerNorm's normalized_shape),
    or None. ``mean`` and ``invstd`` (shape (N, groups)) are
    non-differentiable outputs.

    * GroupNorm: view (N, C, ∏spatial), groups G;
    * InstanceNorm: view (N, C, ∏spatial), groups C;
    * LayerNorm: view (R, K, 1) with K = ∏normalized_shape and groups 1, so
      "channels" are the K positions and γ, β act per element.

    Backward (``dx̂ = γ_c·dy``, means over each row):
    ``dx = (dx̂ - mean(dx̂) - x̂·mean(dx̂·x̂))/σ``, ``dγ = Σdy·x̂``, ``dβ = Σdy``;
    its ``vjp`` is ``GroupNormGrad``. Mixed precision as in
    ``BatchNormFunction``: a half x with float32 γ/β, float32 statistics.
    """

    mixed_precision = True

    def forward(self, x, weight=None, bias=None, view=None, groups=1, eps=1e-5):
        self.view, self.groups, self.eps = view, groups, eps
        self.param_dtypes = _dtypes_of(weight, bias)
        w = None if weight is None else weight.reshape(-1)
        b = None if bias is None else bias.reshape(-1)
        y, mean, invstd = self.backend.group_norm_forward(x.reshape(view), w, b, groups, eps)
        self.mark_non_differentiable(mean, invstd)
        self.save_for_backward(x, weight, mean, invstd)
        return y.reshape(x.shape), mean, invstd

    def backward(self, grad, *unused_statistics_grads):
        x, weight, mean, invstd = self.saved_tensors
        dx, dweight, dbias = _group_norm_backward(self.backend, grad, x, weight, mean, invstd, self.view,
                                                  self.groups, self.param_dtypes)
        need = self.needs_input_grad
        return (_reshape_owned(dx, x.shape) if need[0] else None,
                dweight if need[1] else None,
                dbias.reshape(weight.shape if weight is not None else (-1,)) if need[2] else None)

    def vjp(self, grad, *unused_statistics_grads):
        x, weight, mean, invstd = self.saved_as_tensors()
        bias = self.inputs[2]
        dx, dweight, dbias = GroupNormGrad.apply(grad, x, weight, mean=mean.array, invstd=invstd.array,
                                                 view=self.view, groups=self.groups, eps=self.eps,
                                                 bias_shape=None if bias is None else bias.shape,
                                                 param_dtypes=self.param_dtypes)
        need = self.needs_input_grad
        return dx if need[0] else None, dweight if need[1] else None, dbias if need[2] else None


class GroupNormGrad(Function):
    """The backward of ``GroupNormFunction`` as a node of its own: ``(dx, dγ, dβ)`` from the fused
    kernel, and the double backward (``_double_backward`` over each (sample, group) row) as its ``vjp``."""

    mixed_precision = True

    def forward(self, grad, x, weight=None, mean=None, invstd=None, view=None, groups=1, eps=1e-5, bias_shape=None,
                param_dtypes=(None, None)):
        self.view, self.groups, self.eps = view, groups, eps
        dx, dweight, dbias = _group_norm_backward(self.backend, grad, x, weight, mean, invstd, view, groups,
                                                  param_dtypes)
        return dx.reshape(x.shape), dweight, dbias.reshape(bias_shape if bias_shape is not None else (-1,))

    def vjp(self, ggx, ggw, ggb):
        grad, x, weight = self.inputs
        n, c, s = self.view
        g = self.groups
        rows = (n, g, c // g, s)  # statistics over each (sample, group): axes 2 and 3
        return _double_backward(grad, x, weight, ggx, ggw, ggb, rows, (2, 3), (1, g, c // g, 1), self.eps, None,
                                self.needs_input_grad)


class ChannelAffineFunction(Function):
    """``y[:, c] = x[:, c]·scale[c] + shift[c]`` for channels on axis 1 (inference batch norm).

    ``apply(x, scale, shift)`` with scale/shift of shape (C,). Backward:
    ``dx = dy·scale``, ``dscale = Σdy·x``, ``dshift = Σdy`` (per channel).
    """

    def forward(self, x, scale, shift):
        v = x.reshape(_channel_view(x.shape))
        self.save_for_backward(x, scale)
        return self.backend.channel_affine(v, scale, shift).reshape(x.shape)

    def backward(self, grad):
        x, scale = self.saved_tensors
        v = x.reshape(_channel_view(x.shape))
        g = grad.reshape(v.shape)
        need = self.needs_input_grad
        dx = (g * scale[None, :, None]).reshape(x.shape) if need[0] else None
        dscale = (g * v).sum(axis=(0, 2)) if need[1] else None
        dshift = g.sum(axis=(0, 2)) if need[2] else None
        return dx, dscale, dshift

    def vjp(self, grad):
        x, scale = self.saved_as_tensors()
        view = _channel_view(x.shape)
        g = grad.reshape(view)
        need = self.needs_input_grad
        dx = (g * scale.reshape(1, -1, 1)).reshape(x.shape) if need[0] else None
        dscale = ops.sum(g * x.reshape(view), (0, 2)) if need[1] else None
        dshift = ops.sum(g, (0, 2)) if need[2] else None
        return dx, dscale, dshift


def _group_norm_backward(backend, grad, x, weight, mean, invstd, view, groups, param_dtypes):
    w = None if weight is None else weight.reshape(-1)
    dx, dweight, dbias = backend.group_norm_backward(grad.reshape(view), x.reshape(view), mean, invstd, w, groups)
    dweight, dbias = _as_dtypes((dweight, dbias), param_dtypes)
    return dx, (dweight.reshape(weight.shape) if weight is not None else dweight), dbias


def _dtypes_of(*arrays):
    """The dtypes of the arrays (None for None): what the parameter gradients are returned in."""
    return tuple(None if a is None else a.dtype for a in arrays)


def _as_dtypes(arrays, dtypes):
    """Each array in its dtype (a no-op where it already is; None dtype: left as it is)."""
    return tuple(a if dt is None else a.astype(dt, copy=False) for a, dt in zip(arrays, dtypes))


def _double_backward(grad, x, weight, ggx, ggw, ggb, view, axes, param_view, eps, stats, needs):
    """The vjp of a normalizer's backward ``(dy, x, γ) ↦ (dx, dγ, dβ)``, in differentiable operations.

    ``x`` and ``dy`` are read as ``view``; each group of the statistics is
    the values sharing the indices outside ``axes`` (BatchNorm: (N, C, S)
    over (0, 2); GroupNorm: (N, G, C/G, S) over (2, 3)); γ broadcasts as
    ``param_view``. ``stats``: fixed ``(mean, invstd)`` arrays shaped like
    ``param_view`` (eval mode), or None when they are the batch's own (then
    they depend on x). With ⟨·⟩ the mean over a group, s = (σ² + ε)^-½,
    x̂ = (x - μ)·s, ĝ = γ·dy and the projection ``P(u) = u - ⟨u⟩ - x̂·⟨x̂·u⟩``
    (self-adjoint), the backward is ``dx = s·P(ĝ)``, ``dγ = Σdy·x̂``,
    ``dβ = Σdy``, and for upstream gradients (ggx, ggγ, ggβ):

    * d/d(dy) = γ·s·P(ggx) + ggγ·x̂ + ggβ   (the forward's JVP along them);
    * d/dγ    = Σ dy·s·P(ggx);
    * d/dx    = s·P(ggγ·dy) - s²·[x̂·(⟨ggx·ĝ⟩ - ⟨ĝ⟩⟨ggx⟩ - ⟨ĝ·x̂⟩⟨ggx·x̂⟩) + ⟨ggx·x̂⟩·P(ĝ) + ⟨ĝ·x̂⟩·P(ggx)]
      (from ∂s/∂x = -s²·x̂/m and ∂⟨q·x̂⟩/∂x = s·P(q)/m).

    With fixed statistics P is the identity and the s² term vanishes.
    Returns the gradients of (dy, x, γ), None where ``needs`` says none.
    Half-precision tensors are computed in float32 (``accumulation_dtype``)
    and the results returned in the dtypes of dy, x and γ.
    """
    def mean(u):
        return ops.mean(u, axes, keepdims=True)

    acc = accumulation_dtype(x.dtype)
    grad_in, x_in, weight_in = grad, x, weight
    grad, x, weight, ggx, ggw, ggb = (None if t is None else ops.cast(t, acc)
                                      for t in (grad, x, weight, ggx, ggw, ggb))
    xv = x.reshape(view)
    dy = grad.reshape(view)
    w = None if weight is None else weight.reshape(param_view)
    gx = None if ggx is None else ggx.reshape(view)
    if stats is None:
        xc = xv - mean(xv)
        s = (mean(xc * xc) + eps) ** -0.5
    else:
        xc = xv - make_tensor(stats[0], x.backend)
        s = make_tensor(stats[1], x.backend)
    xhat = xc * s
    ghat = dy if w is None else dy * w

    def project(u):
        return u if stats is not None else u - mean(u) - xhat * mean(xhat * u)

    d_dy, d_x, d_w = [], [], None
    if gx is not None:
        pgx = project(gx)
        d_dy.append(s * pgx if w is None else s * pgx * w)
        if w is not None and needs[2]:
            d_w = ops.sum_to(dy * s * pgx, param_view).reshape(weight.shape)
        if stats is None:
            a, b, d = mean(ghat), mean(ghat * xhat), mean(gx * xhat)
            k = mean(gx * ghat) - a * mean(gx) - b * d
            d_x.append(-(s * s) * (xhat * k + d * project(ghat) + b * pgx))
    if ggw is not None:
        gw = ggw.reshape(param_view)
        d_dy.append(gw * xhat)
        d_x.append(s * project(gw * dy))
    if ggb is not None:
        d_dy.append(ops.broadcast_to(ggb.reshape(param_view), view))

    def total(terms, like):
        if not terms:
            return zeros_like(like)
        out = terms[0]
        for t in terms[1:]:
            out = out + t
        return ops.cast(out.reshape(like.shape), like.dtype)

    return (total(d_dy, grad_in) if needs[0] else None,
            total(d_x, x_in) if needs[1] else None,
            (ops.cast(d_w, weight_in.dtype) if d_w is not None else zeros_like(weight_in))
            if len(needs) > 2 and needs[2] else None)


def _reshape_owned(a, shape):
    """``a.reshape(shape)``, but a large array that owns its memory is reshaped in place.

    The engine hands a gradient to a leaf's ``.grad`` without copying only
    when it is not a view; a reshaped view of a fresh 25 MB ``dx`` would be
    copied (and page-faulted) once more.
    """
    if a.base is None and a.size >= (1 << 16) and a.flags.c_contiguous:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a NumPy that deprecates setting .shape: take the view
                a.shape = shape
            return a
        except (AttributeError, ValueError, Warning):
            pass
    return a.reshape(shape)


def update_running_stats(running_mean, running_var, mean, var, factor, count):
    """Fold one batch's statistics into running statistics, in place and outside the graph.

    ``running ← (1 - factor)·running + factor·batch`` for the mean, and for
    the variance with the *unbiased* batch variance ``var·m/(m - 1)``
    (``var`` is the biased variance of ``count`` = m values per channel),
    as in the paper's inference statistics. ``running_mean``/``running_var``
    are Tensors of shape (C,); ``mean``/``var`` Tensors (or arrays) of the
    same length. A normalizer with running statistics calls this (through
    ``Normalizer.update_running_stats``) in one visible place.

    Example::

        y, mean, var = batch_norm_train(x, weight, bias, eps=1e-5)
        update_running_stats(running_mean, running_var, mean, var, 0.1, x.numel() // x.shape[1])
    """
    mean = mean.array if isinstance(mean, TensorBase) else mean
    var = var.array if isinstance(var, TensorBase) else var
    unbias = count / (count - 1) if count > 1 else 1.0
    running_mean.backend.batch_norm_update_stats(running_mean.array, running_var.array, mean, var, float(factor),
                                                 unbias)
    running_mean._bump_version()
    running_var._bump_version()


# ------------------------------------------------------------- validation
# Every entry of the built-in normalizers, functional or module, runs the
# check of its family (``_check_batch_norm`` etc.) before any kernel: the
# backends and their kernels trust the shapes, dtypes and devices they get.
# One function per problem, so a problem has one message on every path and
# every backend; ``fname`` names the caller ("batch_norm", "BatchNorm1d").
def _check_tensor(fname, x):
    if not isinstance(x, TensorBase):
        raise TypeError(f"{fname}: expected a minigrad Tensor as input, got {type(x).__name__}")


def _check_floating(fname, x):
    if not is_floating(x.dtype):
        raise TypeError(f"{fname}: expected a floating point input (float16, bfloat16, float32 or float64), got "
                        f"dtype {x.dtype}")


def _takes_parameters_of(x_dtype, dtype) -> bool:
    """Whether an input of ``x_dtype`` may be normalized with parameters/statistics of ``dtype``: the
    same dtype, or float32 for a half input (float32 γ, β and running statistics, as cuDNN and PyTorch)."""
    return dtype == x_dtype or (dtype == np.float32 and is_half(x_dtype))


def _parameter_dtype_rule(x_dtype) -> str:
    """The rule ``_takes_parameters_of`` enforces, in words, for an input of ``x_dtype``."""
    if is_half(x_dtype):
        return f"a {x_dtype} input takes {x_dtype} or float32 parameters and statistics, all of one dtype"
    return "they must match"


def _check_input(fname, x, min_rank):
    _check_tensor(fname, x)
    _check_floating(fname, x)
    if x.ndim < min_rank:
        raise ValueError(f"{fname}: expected an input with at least {min_rank} dimensions, got shape "
                         f"{tuple(x.shape)}")


def _check_vector(fname, name, t, x, shape):
    """A parameter/statistic tensor must be a Tensor of ``shape`` on x's device, with x's dtype (or
    float32 for a half x: ``_takes_parameters_of``)."""
    if t is None:
        return
    if not isinstance(t, TensorBase):
        raise TypeError(f"{fname}: {name} must be a Tensor or None, got {type(t).__name__}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{fname}: {name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if not _takes_parameters_of(x.dtype, t.dtype):
        raise TypeError(f"{fname}: {name} has dtype {t.dtype} but the input has dtype {x.dtype}; "
                        f"{_parameter_dtype_rule(x.dtype)}")
    if t.backend is not x.backend:
        raise RuntimeError(f"{fname}: {name} is on {t.device} but the input is on {x.device}")


def _vectors_match(x, shape, vectors) -> bool:
    """The usual case, checked at once: each vector is None or a Tensor of ``shape`` with x's dtype on x's
    device (a half input with float32 vectors, or anything wrong, takes the detailed checks)."""
    dtype, backend = x.dtype, x.backend
    for t in vectors:
        if t is not None and not (isinstance(t, TensorBase) and t.shape == shape and t.dtype == dtype
                                  and t.backend is backend):
            return False
    return True


def _check_one_parameter_dtype(fname, named):
    """The parameters and statistics given (``(name, Tensor or None)`` pairs, each already checked
    by ``_check_vector``) share one dtype: a half input's may be float32 or half, not both."""
    given = [(name, t.dtype) for name, t in named if t is not None]
    for name, dt in given[1:]:
        if dt != given[0][1]:
            raise TypeError(f"{fname}: {name} has dtype {dt} but {given[0][0]} has dtype {given[0][1]}; the "
                            f"parameters and statistics of one call must share a dtype")


def _check_count(fname, name, value):
    """A number of features, channels or groups: an int >= 0."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{fname}: {name} must be an int >= 0, got {value!r}")


def _check_eps(fname, eps):
    if type(eps) is float and 0.0 <= eps < math.inf:  # the usual case, without the slow ABC isinstance
        return
    if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not eps >= 0 or not math.isfinite(eps):
        raise ValueError(f"{fname}: eps must be a finite number >= 0, got {eps!r}")


def _check_momentum(fname, momentum, allow_none=False):
    if (momentum is None and allow_none) or (type(momentum) is float and 0.0 <= momentum <= 1.0):
        return
    if not isinstance(momentum, numbers.Real) or isinstance(momentum, bool) or not 0.0 <= momentum <= 1.0:
        also = " (or None for a cumulative average)" if allow_none else ""
        raise ValueError(f"{fname}: momentum must be a number in [0, 1]{also}, got {momentum!r}")


def _check_groups(fname, num_groups, channels):
    if not isinstance(num_groups, numbers.Integral) or isinstance(num_groups, bool) or num_groups <= 0:
        raise ValueError(f"{fname}: num_groups must be a positive int, got {num_groups!r}")
    if channels % num_groups:
        raise ValueError(f"{fname}: the number of channels ({channels}) must be divisible by num_groups "
                         f"({num_groups})")


def _values_per_channel(shape):
    """N·∏spatial: how many values share a channel's batch statistics."""
    return shape[0] * math.prod(shape[2:])


def _check_channel_arguments(fname, input, weight, bias, running_mean, running_var, batch_stats, momentum, eps,
                             eval_spelling, min_rank, momentum_may_be_none):
    """The checks shared by the per-channel normalizers (batch and instance norm)."""
    _check_input(fname, input, min_rank)
    c = input.shape[1]
    if not _vectors_match(input, (c,), (weight, bias, running_mean, running_var)):
        # Something differs from the usual case: find what, and say it.
        named = (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var))
        for name, t in named:
            _check_vector(fname, name, t, input, (c,))
        _check_one_parameter_dtype(fname, named)
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{fname}: pass both running_mean and running_var, or neither")
    if not batch_stats and running_mean is None:
        raise ValueError(f"{fname}: {eval_spelling} normalizes with the running statistics, so running_mean and "
                         f"running_var are required")
    _check_eps(fname, eps)
    if batch_stats and running_mean is not None:
        _check_momentum(fname, momentum, allow_none=momentum_may_be_none)


def _check_batch_norm(fname, input, running_mean, running_var, weight, bias, training, momentum, eps,
                      momentum_may_be_none=False):
    """Everything ``batch_norm`` needs: the input (N, C, *), the (C,) vectors, eps, momentum, and more
    than one value per channel to take batch statistics from. (A module's momentum may be None: a
    cumulative average.)"""
    _check_channel_arguments(fname, input, weight, bias, running_mean, running_var, training, momentum, eps,
                             "training=False", 2, momentum_may_be_none)
    if training and _values_per_channel(input.shape) == 1:
        # PyTorch's words, which users search for.
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(input.shape)}")


def _check_instance_norm(fname, input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps,
                         momentum_may_be_none=False):
    """Everything ``instance_norm`` needs: the input (N, C, *spatial), the (C,) vectors, eps, momentum,
    and more than one spatial value per instance to take statistics from."""
    _check_channel_arguments(fname, input, weight, bias, running_mean, running_var, use_input_stats, momentum, eps,
                             "use_input_stats=False", 3, momentum_may_be_none)
    if use_input_stats and math.prod(input.shape[2:]) == 1:
        raise ValueError(f"Expected more than 1 spatial element when training, got input size {tuple(input.shape)}")


def _check_layer_norm(fname, input, shape, weight, bias, eps):
    """Everything ``layer_norm`` needs: an input ending in ``shape``, γ and β of ``shape``, eps."""
    _check_input(fname, input, len(shape))
    if tuple(input.shape[input.ndim - len(shape):]) != shape:
        raise ValueError(f"{fname}: expected an input whose last {len(shape)} dimension(s) are {shape} "
                         f"(normalized_shape), got input of shape {tuple(input.shape)}")
    _check_vector(fname, "weight", weight, input, shape)
    _check_vector(fname, "bias", bias, input, shape)
    _check_one_parameter_dtype(fname, (("weight", weight), ("bias", bias)))
    _check_eps(fname, eps)


def _check_group_norm(fname, input, num_groups, weight, bias, eps):
    """Everything ``group_norm`` needs: the input (N, C, *), C divisible by num_groups, (C,) vectors, eps."""
    _check_input(fname, input, 2)
    c = input.shape[1]
    _check_groups(fname, num_groups, c)
    _check_vector(fname, "weight", weight, input, (c,))
    _check_vector(fname, "bias", bias, input, (c,))
    _check_one_parameter_dtype(fname, (("weight", weight), ("bias", bias)))
    _check_eps(fname, eps)


def _empty_output(input, weight, bias, param_shape):
    """The result for an input without values: empty, the same on every backend, no statistics taken.

    As PyTorch does, it is the affine part alone (``x·γ + β`` on nothing),
    so γ and β still get their (zero) gradients.
    """
    y = input.clone()
    if weight is not None:
        y = y * weight.reshape(param_shape).to(input.dtype)  # float32 γ of a half input: y stays half
    if bias is not None:
        y = y + bias.reshape(param_shape).to(input.dtype)
    return y


def _channel_param_shape(input):
    """γ/β of a per-channel normalizer reshaped to broadcast against (N, C, *)."""
    return (input.shape[1],) + (1,) * (input.ndim - 2)


# ------------------------------------------------------------ batch norm
def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Batch Normalization over the batch and spatial axes, per channel (axis 1).

    input: (N, C, *). running_mean/running_var: (C,) Tensors or None;
    weight (γ) and bias (β): (C,) or None. With μ, σ² the statistics of
    each channel over its N·∏spatial values,
    ``y = γ·(x - μ)/sqrt(σ² + ε) + β``:

    * ``training=True``: batch statistics (biased variance); running
      statistics, when given, are updated in place:
      ``running = (1 - momentum)·running + momentum·batch`` (unbiased
      variance), whether or not gradients are recorded;
    * ``training=False``: the running statistics (both required).

    An input without values (N, C or a spatial size 0) gives an empty
    output and leaves the running statistics unchanged.

    Example::

        x = minigrad.randn(8, 3, 4, 4)
        rm, rv = minigrad.zeros(3), minigrad.ones(3)
        y = batch_norm(x, rm, rv, training=True)   # rm, rv move towards the batch statistics
    """
    _check_batch_norm("batch_norm", input, running_mean, running_var, weight, bias, training, momentum, eps)
    if not training:
        return _batch_norm_eval(input, running_mean, running_var, weight, bias, eps)
    y, mean, var = _batch_norm_train(input, weight, bias, eps)
    count = _values_per_channel(input.shape)
    if running_mean is not None and momentum and input.numel():
        update_running_stats(running_mean, running_var, mean, var, momentum, count)
    return y


def batch_norm_train(input, weight=None, bias=None, eps=1e-5):
    """Training batch norm without running statistics: ``(y, mean, var)``.

    The batch mean and *biased* variance per channel come back as Tensors
    outside the graph, for ``update_running_stats`` (the building block of
    ``batch_norm`` and of normalizer plugins with running statistics;
    arguments as in ``batch_norm``). An input without values gives an empty
    ``y`` and statistics of zeros and ones, which must not be folded in.

    Example::

        y, mean, var = batch_norm_train(minigrad.randn(8, 3), eps=1e-5)
    """
    _check_batch_norm("batch_norm_train", input, None, None, weight, bias, True, 0.0, eps)
    return _batch_norm_train(input, weight, bias, eps)


def _batch_norm_train(input, weight, bias, eps):
    """``batch_norm_train`` after ``_check_batch_norm`` (which the modules call with their own name)."""
    if input.numel() == 0:
        c = input.shape[1]
        acc = accumulation_dtype(input.dtype)
        return (_empty_output(input, weight, bias, _channel_param_shape(input)),
                zeros(c, dtype=acc, device=input.device), ones(c, dtype=acc, device=input.device))
    return BatchNormFunction.apply(input, weight, bias, training=True, eps=eps)


def batch_norm_eval(input, running_mean, running_var, weight=None, bias=None, eps=1e-5):
    """Inference batch norm with fixed statistics: ``y = x·scale[c] + shift[c]``, one multiply-add.

    ``scale = γ/sqrt(running_var + ε)``, ``shift = β - running_mean·scale``;
    the statistics are constants (no gradient flows into them).

    Example::

        y = batch_norm_eval(x, bn.running_mean, bn.running_var, bn.weight, bn.bias)
    """
    _check_batch_norm("batch_norm_eval", input, running_mean, running_var, weight, bias, False, 0.0, eps)
    return _batch_norm_eval(input, running_mean, running_var, weight, bias, eps)


def _batch_norm_eval(input, running_mean, running_var, weight, bias, eps):
    """``batch_norm_eval`` after ``_check_batch_norm``."""
    if input.numel() == 0:
        return _empty_output(input, weight, bias, _channel_param_shape(input))
    return BatchNormFunction.apply(input, weight, bias, training=False, eps=eps, mean=running_mean.array,
                                   var=running_var.array)


# ------------------------------------------------------------ layer norm
def _normalized_shape(fname, normalized_shape):
    if isinstance(normalized_shape, numbers.Integral) and not isinstance(normalized_shape, bool):
        normalized_shape = (int(normalized_shape),)
    try:
        if isinstance(normalized_shape, (str, bytes)):
            raise TypeError
        shape = tuple(operator.index(s) for s in normalized_shape)  # ints only: no 2.5, no "3"
    except TypeError:
        raise TypeError(f"{fname}: normalized_shape must be an int or a tuple of ints, got "
                        f"{normalized_shape!r}") from None
    if not shape or any(s < 0 for s in shape):
        raise ValueError(f"{fname}: normalized_shape must be non-empty with entries >= 0, got {shape}")
    return shape


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Layer Normalization over the last ``len(normalized_shape)`` axes of each sample.

    input: (*, *normalized_shape); weight (γ) and bias (β): normalized_shape
    or None. Each of the R = ∏leading sizes rows of K = ∏normalized_shape
    values is standardized with its own mean and biased variance:
    ``y = γ·(x - μ)/sqrt(σ² + ε) + β``. Same in training and eval. An
    input without values gives an empty output.

    Example::

        y = layer_norm(minigrad.randn(2, 5, 16), (16,))
    """
    shape = _normalized_shape("layer_norm", normalized_shape)
    _check_layer_norm("layer_norm", input, shape, weight, bias, eps)
    return _layer_norm(input, shape, weight, bias, eps)


def _layer_norm(input, shape, weight, bias, eps):
    """``layer_norm`` after ``_check_layer_norm``."""
    if input.numel() == 0:
        return _empty_output(input, weight, bias, shape)
    k = math.prod(shape)
    # The (R, K, 1) view: K "channels" of one value each, one group per row, so γ and β act per element.
    y, _, _ = GroupNormFunction.apply(input, weight, bias, view=(input.numel() // k, k, 1), groups=1, eps=eps)
    return y


# ------------------------------------------------------------ group norm
def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Group Normalization: statistics per sample over groups of channels.

    input: (N, C, *) with C divisible by ``num_groups``; weight (γ) and
    bias (β): (C,) or None. The C/G·∏spatial values of each (sample,
    group) share one mean and biased variance:
    ``y = γ_c·(x - μ_ng)/sqrt(σ²_ng + ε) + β_c``. Same in training and
    eval. An input without values gives an empty output.

    Example::

        y = group_norm(minigrad.randn(2, 6, 4, 4), 3)
    """
    _check_group_norm("group_norm", input, num_groups, weight, bias, eps)
    return _group_norm(input, int(num_groups), weight, bias, eps)


def _channel_view(shape):
    """The (N, C, S) view of an (N, C, *) shape."""
    return (shape[0], shape[1], math.prod(shape[2:]))


def _group_norm(input, num_groups, weight, bias, eps):
    """``group_norm`` after ``_check_group_norm``."""
    if input.numel() == 0:
        return _empty_output(input, weight, bias, _channel_param_shape(input))
    y, _, _ = GroupNormFunction.apply(input, weight, bias, view=_channel_view(input.shape), groups=num_groups,
                                      eps=eps)
    return y


# --------------------------------------------------------- instance norm
def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5):
    """Instance Normalization: statistics per sample and channel over the spatial axes.

    input: (N, C, *) with at least one spatial axis; weight (γ), bias (β),
    running_mean, running_var: (C,) or None.

    * ``use_input_stats=True``: each (sample, channel) is standardized with
      its own mean and biased variance; running statistics, when given,
      are updated in place with the batch average of the instance means
      and of the unbiased instance variances;
    * ``use_input_stats=False``: the running statistics are used (the
      inference path of ``track_running_stats=True``), one multiply-add.

    An input without values (N, C or a spatial size 0) gives an empty
    output and leaves the running statistics unchanged (as PyTorch does
    for L = 0; PyTorch turns them into NaN for N = 0).

    Example::

        y = instance_norm(minigrad.randn(2, 3, 8, 8))
    """
    _check_instance_norm("instance_norm", input, running_mean, running_var, weight, bias, use_input_stats, momentum,
                         eps)
    return _instance_norm(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)


def _instance_norm(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps):
    """``instance_norm`` after ``_check_instance_norm``."""
    if not use_input_stats:
        return _batch_norm_eval(input, running_mean, running_var, weight, bias, eps)
    y, mean, var, count = instance_norm_train(input, weight, bias, eps, with_statistics=running_mean is not None)
    if running_mean is not None and momentum and count:
        update_running_stats(running_mean, running_var, mean, var, momentum, count)
    return y


def instance_norm_train(input, weight=None, bias=None, eps=1e-5, with_statistics=True):
    """Instance norm with the input's statistics: ``(y, mean, var, count)``.

    ``mean`` and ``var`` are the batch averages of the instance means and
    *biased* variances (Tensors (C,) outside the graph; None unless
    ``with_statistics``, or when the input has no values) over ``count`` =
    ∏spatial values each (0 with no statistics): what
    ``update_running_stats`` folds into running statistics (PyTorch's
    rule). Arguments as in ``instance_norm``, which validates them.

    Example::

        y, mean, var, count = instance_norm_train(minigrad.randn(2, 3, 8))
    """
    if input.numel() == 0:
        return _empty_output(input, weight, bias, _channel_param_shape(input)), None, None, 0
    n, c = input.shape[0], input.shape[1]
    y, _, _ = GroupNormFunction.apply(input, weight, bias, view=_channel_view(input.shape), groups=c, eps=eps)
    if not with_statistics:
        return y, None, None, 0
    # Exact instance variances from the data (recovering them from 1/sqrt(var + ε) loses precision).
    count = math.prod(input.shape[2:])
    xp = input.backend.xp
    v = input.array.reshape(n, c, count).astype(xp.float64)
    inst_mean = v.mean(axis=2)
    inst_var = ((v - inst_mean[..., None]) ** 2).mean(axis=2)
    backend = input.backend
    return y, make_tensor(inst_mean.mean(axis=0), backend), make_tensor(inst_var.mean(axis=0), backend), count
