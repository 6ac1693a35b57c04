"""Functional normalization: ``batch_norm``, ``layer_norm``, ``group_norm``, ``instance_norm``.

Two graph nodes do the numeric work of the built-in normalizers, each a
pair of backend kernels with the affine part fused in:

* ``BatchNormFunction``: per-channel statistics on the ``(N, C, S)`` view,
  normalize and affine in one pass (``batch_norm_forward_train`` /
  ``batch_norm_backward``; eval is ``batch_norm_forward_eval``, one
  multiply-add);
* ``GroupNormFunction``: statistics per (sample, group of channels) on the
  ``(N, C, S)`` view with a per-channel affine (``group_norm_forward`` /
  ``group_norm_backward``): GroupNorm, InstanceNorm (one channel per
  group) and LayerNorm (the ``(R, K, 1)`` view, one group, so its affine
  is per element). The backward gives dx, dγ and dβ from one node.

``RowNormFunction`` (``x̂`` per row of an ``(R, K)`` view, no affine) is
the building block for plugins that apply their own affine part.

The public functions validate their arguments on the host, in one place,
then call the Functions. ``minigrad.nn.functional`` re-exports them with
PyTorch's signatures. The modules in this package call the unchecked
``_batch_norm`` etc. after their own (cheaper) ``check_input``.
"""

from __future__ import annotations

import math
import numbers
import operator
import warnings

from .._ext._engine import Function, TensorBase

__all__ = ["batch_norm", "layer_norm", "group_norm", "instance_norm", "BatchNormFunction", "GroupNormFunction",
           "RowNormFunction", "ChannelAffineFunction"]


# ----------------------------------------------------------------- Functions
class BatchNormFunction(Function):
    """Batch Normalization of an input with channels on axis 1 (one graph node).

    ``apply(x, weight, bias, running_mean=None, running_var=None,
    training=True, momentum=0.1, eps=1e-5)``; ``weight``/``bias`` are
    Tensors or None, the running statistics raw arrays (updated in place
    when ``training``, never differentiated). With m = N·S values per
    channel:

    * training: ``y = γ·(x - μ_B)/sqrt(σ²_B + ε) + β`` with the batch mean
      and biased variance; ``running = (1 - momentum)·running +
      momentum·batch`` with the unbiased variance ``σ²_B·m/(m - 1)``;
    * eval: ``y = x·scale + shift`` with ``scale = γ/sqrt(running_var + ε)``,
      ``shift = β - running_mean·scale``.

    Backward (the paper's chain rule, from the per-channel sums Σdy and
    Σdy·x̂): ``dβ = Σdy``, ``dγ = Σdy·x̂``, and
    ``dx = γ/σ·(dy - Σdy/m - x̂·Σdy·x̂/m)`` in training (batch statistics
    depend on x), ``dx = γ/σ·dy`` in eval.
    """

    def forward(self, x, weight=None, bias=None, running_mean=None, running_var=None, training=True,
                momentum=0.1, eps=1e-5):
        shape = x.shape
        n, c = shape[0], shape[1]
        s = math.prod(shape[2:])
        v = x.reshape(n, c, s)
        xp = self.xp
        self.shape, self.training = shape, training
        if training:
            if n * s == 0:  # an empty batch: nothing to normalize, no statistics to update
                y = xp.empty(v.shape, dtype=x.dtype)
                mean = xp.zeros(c, dtype=x.dtype)
                invstd = xp.ones(c, dtype=x.dtype)
            else:
                y, mean, var = self.backend.batch_norm_forward_train(v, weight, bias, eps)
                invstd = 1.0 / xp.sqrt(var + eps)
                if running_mean is not None and momentum:
                    m = n * s
                    _update_running(running_mean, running_var, mean, var, momentum, m / (m - 1))
        else:
            y = self.backend.batch_norm_forward_eval(v, running_mean, running_var, weight, bias, eps)
            if True not in self.needs_input_grad:  # not recorded (no_grad, or nothing requires grad)
                return y.reshape(shape)
            mean = running_mean
            invstd = 1.0 / xp.sqrt(running_var + eps)
        self.save_for_backward(v, mean, invstd, weight)
        return y.reshape(shape)

    def backward(self, grad):
        v, mean, invstd, weight = self.saved_tensors
        dx, dweight, dbias = self.backend.batch_norm_backward(grad.reshape(v.shape), v, mean, invstd, weight,
                                                               self.training)
        need = self.needs_input_grad
        return (_reshape_owned(dx, self.shape) if need[0] else None,
                dweight if need[1] else None,
                dbias if need[2] else None)


class GroupNormFunction(Function):
    """Group normalization with its affine part, on an ``(N, C, S)`` view of x (one graph node).

    ``apply(x, weight, bias, view=(N, C, S), groups=1, eps=1e-5, stats=None)``:
    x is read as ``x.reshape(view)``; each sample's C channels form
    ``groups`` runs of C/groups consecutive channels, and each (sample,
    group) has its own mean μ and biased variance σ²:
    ``y = γ_c·(x - μ)/sqrt(σ² + ε) + β_c``. ``weight`` (γ) and ``bias``
    (β) are Tensors of C elements in any shape (LayerNorm's
    normalized_shape), or None. If ``stats`` is a list, ``(mean, invstd)``
    (arrays of shape (N, groups)) is appended to it.

    * GroupNorm: view (N, C, ∏spatial), groups G;
    * InstanceNorm: view (N, C, ∏spatial), groups C;
    * LayerNorm: view (R, K, 1) with K = ∏normalized_shape and groups 1, so
      "channels" are the K positions and γ, β act per element.

    Backward (``dx̂ = γ_c·dy``, means over each row):
    ``dx = (dx̂ - mean(dx̂) - x̂·mean(dx̂·x̂))/σ``, ``dγ = Σdy·x̂``, ``dβ = Σdy``.
    """

    def forward(self, x, weight=None, bias=None, view=None, groups=1, eps=1e-5, stats=None):
        self.shape = x.shape
        v = x.reshape(view)
        self.groups = groups
        self.param_shapes = (None if weight is None else weight.shape, None if bias is None else bias.shape)
        w = None if weight is None else weight.reshape(-1)
        b = None if bias is None else bias.reshape(-1)
        y, mean, invstd = self.backend.group_norm_forward(v, w, b, groups, eps)
        if stats is not None:
            stats.append((mean, invstd))
        self.save_for_backward(v, mean, invstd, w)
        return y.reshape(self.shape)

    def backward(self, grad):
        v, mean, invstd, w = self.saved_tensors
        dx, dweight, dbias = self.backend.group_norm_backward(grad.reshape(v.shape), v, mean, invstd, w,
                                                              self.groups)
        need = self.needs_input_grad
        wshape, bshape = self.param_shapes
        return (_reshape_owned(dx, self.shape) if need[0] else None,
                dweight.reshape(wshape) if need[1] else None,
                dbias.reshape(bshape) if need[2] else None)


class RowNormFunction(Function):
    """``x̂ = (x - μ)/sqrt(σ² + ε)`` per row of the ``(R, K)`` view of x (one graph node).

    For normalizers that apply their own affine part (plugins); the
    built-in ones use ``GroupNormFunction``, which fuses it.

    ``apply(x, rows=R, eps=1e-5, stats=None)``: statistics of each of the
    R rows of K = x.size/R consecutive values (biased variance). If
    ``stats`` is a list, ``(mean, invstd)`` (arrays of shape (R,)) is
    appended to it (InstanceNorm's running statistics use them).
    Backward: ``dx = (dx̂ - mean(dx̂) - x̂·mean(dx̂·x̂))/σ`` per row.
    """

    def forward(self, x, rows=1, eps=1e-5, stats=None):
        self.shape = x.shape
        k = x.size // rows if rows else 0
        xhat, mean, invstd = self.backend.row_norm_forward(x.reshape(rows, k), eps)
        if stats is not None:
            stats.append((mean, invstd))
        self.save_for_backward(xhat, invstd)
        return xhat.reshape(self.shape)

    def backward(self, grad):
        xhat, invstd = self.saved_tensors
        return self.backend.row_norm_backward(grad.reshape(xhat.shape), xhat, invstd).reshape(self.shape)


class ChannelAffineFunction(Function):
    """``y[:, c] = x[:, c]·scale[c] + shift[c]`` for channels on axis 1 (inference batch norm).

    ``apply(x, scale, shift)`` with scale/shift of shape (C,).
    """

    def forward(self, x, scale, shift):
        shape = x.shape
        v = x.reshape(shape[0], shape[1], math.prod(shape[2:]))
        self.shape = shape
        self.save_for_backward(v, scale)
        return self.backend.channel_affine(v, scale, shift).reshape(shape)

    def backward(self, grad):
        v, scale = self.saved_tensors
        g = grad.reshape(v.shape)
        need = self.needs_input_grad
        dx = (g * scale[None, :, None]).reshape(self.shape) if need[0] else None
        dscale = (g * v).sum(axis=(0, 2)) if need[1] else None
        dshift = g.sum(axis=(0, 2)) if need[2] else None
        return dx, dscale, dshift


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


def _update_running(running_mean, running_var, mean, var, momentum, unbias=1.0):
    """``running ← (1 - momentum)·running + momentum·batch`` in place; ``var·unbias`` is the unbiased variance."""
    running_mean *= 1.0 - momentum
    running_mean += momentum * mean
    running_var *= 1.0 - momentum
    running_var += (momentum * unbias) * var



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
    if x.dtype.kind != "f":
        raise TypeError(f"{fname}: expected a floating point input (float32 or float64), got dtype {x.dtype}")


def _check_input(fname, x, min_rank):
    _check_tensor(fname, x)
    _check_floating(fname, x)
    if x.ndim < min_rank:
        raise ValueError(f"{fname}: expected an input with at least {min_rank} dimensions, got shape "
                         f"{tuple(x.shape)}")


def _check_vector(fname, name, t, x, shape):
    """A parameter/statistic tensor must be a Tensor of ``shape`` with x's dtype and device."""
    if t is None:
        return
    if not isinstance(t, TensorBase):
        raise TypeError(f"{fname}: {name} must be a Tensor or None, got {type(t).__name__}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{fname}: {name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if t.dtype != x.dtype:
        raise TypeError(f"{fname}: {name} has dtype {t.dtype} but the input has dtype {x.dtype}; "
                        f"they must match")
    if t.backend is not x.backend:
        raise RuntimeError(f"{fname}: {name} is on {t.device} but the input is on {x.device}")


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
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                    ("running_var", running_var)):
        _check_vector(fname, name, t, input, (c,))
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
    _check_eps(fname, eps)


def _check_group_norm(fname, input, num_groups, weight, bias, eps):
    """Everything ``group_norm`` needs: the input (N, C, *), C divisible by num_groups, (C,) vectors, eps."""
    _check_input(fname, input, 2)
    c = input.shape[1]
    _check_groups(fname, num_groups, c)
    _check_vector(fname, "weight", weight, input, (c,))
    _check_vector(fname, "bias", bias, input, (c,))
    _check_eps(fname, eps)


def _empty_output(input, weight, bias, param_shape):
    """The result for an input without values: empty, the same on every backend, no statistics taken.

    As PyTorch does, it is the affine part alone (``x·γ + β`` on nothing),
    so γ and β still get their (zero) gradients.
    """
    y = input.clone()
    if weight is not None:
        y = y * weight.reshape(param_shape)
    if bias is not None:
        y = y + bias.reshape(param_shape)
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
    return _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


def _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps):
    """``batch_norm`` after ``_check_batch_norm`` (which the modules call with their own name)."""
    if input.numel() == 0:
        return _empty_output(input, weight, bias, _channel_param_shape(input))
    return BatchNormFunction.apply(
        input, weight, bias,
        running_mean=None if running_mean is None else running_mean.array,
        running_var=None if running_var is None else running_var.array,
        training=training, momentum=momentum, eps=eps,
    )


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
    return GroupNormFunction.apply(input, weight, bias, view=(input.numel() // k, k, 1), groups=1, eps=eps)


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


def _channel_view(input):
    """The (N, C, S) view of an (N, C, *) input."""
    return (input.shape[0], input.shape[1], math.prod(input.shape[2:]))


def _group_norm(input, num_groups, weight, bias, eps):
    """``group_norm`` after ``_check_group_norm``."""
    if input.numel() == 0:
        return _empty_output(input, weight, bias, _channel_param_shape(input))
    return GroupNormFunction.apply(input, weight, bias, view=_channel_view(input), groups=num_groups, eps=eps)


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
    if input.numel() == 0:
        return _empty_output(input, weight, bias, _channel_param_shape(input))
    if not use_input_stats:
        return _batch_norm(input, running_mean, running_var, weight, bias, False, 0.0, eps)
    c = input.shape[1]
    stats = [] if running_mean is not None and momentum else None
    y = GroupNormFunction.apply(input, weight, bias, view=_channel_view(input), groups=c, eps=eps, stats=stats)
    if stats:
        _update_instance_running(input, stats[0], running_mean.array, running_var.array, momentum, eps)
    return y


def _update_instance_running(input, stats, running_mean, running_var, momentum, eps):
    """Running statistics of InstanceNorm: batch averages of the instance statistics (PyTorch's rule)."""
    xp = input.backend.xp
    mean, invstd = stats
    n, c = input.shape[0], input.shape[1]
    k = math.prod(input.shape[2:])
    inv64 = invstd.astype(xp.float64)
    var = xp.maximum(1.0 / (inv64 * inv64) - eps, 0.0)  # the biased variance back from 1/sqrt(var + eps)
    _update_running(running_mean, running_var, mean.reshape(n, c).astype(xp.float64).mean(axis=0),
                    var.reshape(n, c).mean(axis=0), momentum, k / (k - 1))
