"""``Normalizer``: the base class of every normalizer, and the plugin contract.

A normalizer maps x to ``y = γ·(x - μ)/sqrt(σ² + ε) + β`` (or a variant of
it) where μ and σ² are statistics of groups of values of x. The class
shares what all of them have (PyTorch's ``_NormBase``): the arguments
``num_features``, ``eps``, ``momentum``, ``affine``, ``track_running_stats``,
the parameters ``weight`` (γ) and ``bias`` (β), the running-statistics
buffers, ``reset_parameters``/``reset_running_stats``, input validation and
the repr. A subclass declares what makes it itself:

* which inputs it accepts (``input_ranks``, ``channel_axis``, or its own
  ``check_input``);
* its statistics view (``statistics_view``): which values share a mean and
  a variance;
* its train/eval behaviour (``forward``; ``uses_batch_statistics`` says
  whether the current mode normalizes with statistics of the input or with
  running statistics);
* how it folds into an affine map for inference, when it can
  (``inference_affine``);
* example constructor arguments and input shapes for the contract tests
  (``examples``), and a plain NumPy reference of its forward
  (``reference``), which has a default built from the statistics view.

A normalizer with running statistics builds on public pieces only:
``minigrad.norm.functional.batch_norm_train`` / ``batch_norm_eval`` /
``instance_norm_train`` for the numerics, ``update_running_stats`` (one
call per training forward; override it for another averaging rule, with
``running_stats_factor()`` for the weight of the batch), ``running_affine``
for its eval map and ``affine_shape`` to broadcast γ and β. Its test suite
subclasses ``minigrad.testing.NormalizerTestCase``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from .._ext._engine import TensorBase
from ..nn.module import Module, Parameter
from ..tensor import ones, tensor, zeros
from .functional import (_check_count, _check_eps, _check_floating, _check_momentum, _check_tensor,
                         _takes_parameters_of, update_running_stats)

__all__ = ["Normalizer", "Example"]


@dataclass(frozen=True)
class Example:
    """Constructor arguments and inputs of a normalizer, for the shared test suite.

    ``shapes`` are valid batched input shapes (axis 0 is the batch);
    ``unbatched`` valid shapes without a batch axis (a single sample, where
    the normalizer accepts one); ``bad_shapes`` shapes whose rank or
    channel count ``check_input`` must reject with a ValueError (in
    training mode). ``minigrad.testing.NormalizerTestCase`` builds
    ``cls(*args, **kwargs)`` and runs the API, gradient and reference checks
    on every shape.

    Example::

        Example(args=(3,), kwargs=dict(affine=False), shapes=((4, 3), (2, 3, 5)), bad_shapes=((3,),))
    """

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    shapes: tuple = ()
    unbatched: tuple = ()
    bad_shapes: tuple = ()


class Normalizer(Module):
    """Base class of all normalizers (built-in and plugins).

    ``Normalizer(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, *, param_shape=None, device=None, dtype=None)``
    creates ``weight`` (ones) and ``bias`` (zeros) of shape ``param_shape``
    (default ``(num_features,)``) when ``affine``, and the buffers
    ``running_mean`` (zeros), ``running_var`` (ones) of shape
    ``(num_features,)`` and ``num_batches_tracked`` (int64 0) when
    ``track_running_stats``; absent ones are None. ``momentum=None`` means
    a cumulative average of all batches.

    Subclasses set the class attributes ``input_ranks`` (accepted ranks)
    and ``channel_axis`` (the axis whose length must be ``num_features``,
    or None), and implement ``forward``; they override
    ``statistics_view``, ``inference_affine``, ``examples`` and
    ``reference`` where the defaults (per-channel statistics, no folding)
    do not describe them. Register the class with ``@register("Name")``.

    Example (a composed plugin; autograd derives its backward)::

        @register("RMSNorm")
        class RMSNorm(Normalizer):
            input_ranks = (2, 3, 4)
            channel_axis = -1
            standardizes = False

            def __init__(self, num_features, eps=1e-6, *, device=None, dtype=None):
                super().__init__(num_features, eps, momentum=None, affine=True,
                                 track_running_stats=False, device=device, dtype=dtype)
                self.bias = None

            def forward(self, x):
                self.check_input(x)
                rms = ((x * x).mean(axis=-1, keepdims=True) + self.eps).sqrt()
                return x / rms * self.weight

    (the complete version, with ``statistics_view``, ``reference`` and
    ``examples``, is examples/rmsnorm_plugin).
    """

    #: Ranks of the inputs ``check_input`` accepts.
    input_ranks: tuple = ()
    #: Axis whose length must equal ``num_features`` (None: not checked).
    channel_axis: int | None = 1
    #: True if, in training mode with γ = 1 and β = 0, each statistics
    #: group of the output has mean 0 and (biased) variance 1 up to ε.
    standardizes: bool = True
    #: Set by ``@register``: the name the class is registered under.
    registry_name: str | None = None
    #: True if a half input (float16, bfloat16) may meet float32 parameters
    #: and buffers (computed with float32 accumulation, the output in the
    #: input's dtype: docs/normalizers.md); otherwise ``check_input``
    #: wants the input in the module's dtype.
    mixed_precision: bool = False

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, *,
                 param_shape=None, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        # The checks forward runs again (an attribute may be changed later); here for an early error.
        _check_count(name, "num_features", num_features)
        _check_eps(name, eps)
        _check_momentum(name, momentum, allow_none=True)
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        shape = (self.num_features,) if param_shape is None else tuple(param_shape)
        if self.affine:
            self.weight = Parameter(ones(*shape, device=device, dtype=dtype))
            self.bias = Parameter(zeros(*shape, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", zeros(self.num_features, device=device, dtype=dtype))
            self.register_buffer("running_var", ones(self.num_features, device=device, dtype=dtype))
            self.register_buffer("num_batches_tracked", tensor(0, dtype="int64", device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    # ------------------------------------------------------------- state
    def reset_running_stats(self) -> None:
        """Running mean to 0, running variance to 1, batch count to 0."""
        if self.track_running_stats:
            self.running_mean.array[...] = 0
            self.running_var.array[...] = 1
            self.num_batches_tracked.array[...] = 0

    def reset_parameters(self) -> None:
        """Reset the running statistics, γ to 1 and β to 0."""
        self.reset_running_stats()
        if self.weight is not None:
            self.weight.array[...] = 1
        if self.bias is not None:
            self.bias.array[...] = 0

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")

    def __call__(self, x, *args, **kwargs):
        y = self.forward(x, *args, **kwargs)
        # The contract every caller relies on (fold, Sequential, the tests): a normalizer keeps the shape.
        if isinstance(y, TensorBase) and isinstance(x, TensorBase) and y.shape != x.shape:
            raise RuntimeError(f"{type(self).__name__}.forward broke the normalizer contract: it returned shape "
                               f"{tuple(y.shape)} for an input of shape {tuple(x.shape)} (a normalizer returns "
                               f"its input's shape)")
        return y

    # -------------------------------------------------------- validation
    def check_input(self, x) -> None:
        """Validate ``x``: a floating Tensor of an accepted rank, the right channel
        count, and the dtype of the module's parameters/buffers.

        Raises TypeError (not a Tensor, integer/bool dtype, dtype mismatch)
        or ValueError (rank, channel count) naming what was expected. A
        normalizer whose channel axis depends on the input (InstanceNorm's
        unbatched inputs) overrides it with the same three checks.

        Example (InstanceNorm's: channels on axis 0 of an unbatched input)::

            def check_input(self, x):
                self.check_rank(x)
                self.check_channels(x, 1 if x.ndim == self.batched_rank else 0)
                self.check_dtype(x)
        """
        self.check_rank(x)
        self.check_channels(x, self.channel_axis)
        self.check_dtype(x)

    def check_rank(self, x) -> None:
        """``x`` is a Tensor of a rank in ``input_ranks`` (TypeError, ValueError otherwise)."""
        _check_tensor(type(self).__name__, x)
        if x.ndim not in self.input_ranks:
            raise ValueError(f"{type(self).__name__}: expected {_ranks_text(self.input_ranks)} input "
                             f"(got {x.ndim}D input of shape {tuple(x.shape)})")

    def check_channels(self, x, axis) -> None:
        """``x`` has ``num_features`` entries along ``axis`` (None: nothing to check; ValueError otherwise)."""
        if axis is None:
            return
        name = type(self).__name__
        if type(axis) is not int and (not isinstance(axis, numbers.Integral) or isinstance(axis, bool)):
            raise TypeError(f"{name}: channel_axis must be an int or None, got {axis!r}")
        if not -x.ndim <= axis < x.ndim:
            raise ValueError(f"{name}: channel_axis={axis} does not exist in a {x.ndim}D input of shape "
                             f"{tuple(x.shape)} (valid: {-x.ndim} to {x.ndim - 1})")
        if x.shape[axis] != self.num_features:
            raise ValueError(f"{name}: expected {self.num_features} channels along axis {axis} "
                             f"(num_features={self.num_features}), got input of shape {tuple(x.shape)}")

    def check_dtype(self, x) -> None:
        """``x`` is floating and of the dtype of the module's parameters and buffers (TypeError otherwise)."""
        dt = x.dtype
        _check_floating(type(self).__name__, x)
        ref = self._parameter_dtype()
        if ref is not None and dt != ref and not (self.mixed_precision and _takes_parameters_of(dt, ref)):
            raise TypeError(
                f"{type(self).__name__}: input dtype {dt} does not match the module's dtype {ref}; convert the "
                f"input with .to({ref.name!r}) or the module with .to(dtype={dt.name!r})"
            )

    def _parameter_dtype(self):
        for t in (self._parameters.get("weight"), self._buffers.get("running_mean")):
            if t is not None:
                return t.dtype
        return None

    # ------------------------------------------------------ the contract
    @property
    def uses_batch_statistics(self) -> bool:
        """True when forward normalizes with statistics of its input (training,
        or no running statistics), False when it uses the running statistics."""
        return self.training or not self.track_running_stats

    def statistics_view(self, shape):
        """Which values share statistics: ``(view_shape, axes)``.

        ``x.reshape(view_shape)`` reduced over ``axes`` gives the groups.
        The default is per channel: ``(N, C, S)`` over ``(0, 2)`` (Batch
        Normalization). A per-sample normalizer returns e.g. ``(R, K)``
        over ``(1,)``; Ghost Batch Normalization ``(N/k, k, C, S)`` over
        ``(1, 3)``. The reference forward and the contract tests (which
        samples may affect which outputs) read it.
        """
        n, c = shape[0], shape[1]
        return (n, c, math.prod(shape[2:])), (0, 2)

    def inference_affine(self):
        """The normalizer as a per-channel affine map ``y = x·scale[c] + shift[c]``, if it is one.

        Returns ``(scale, shift)`` (float64 backend arrays of shape
        ``(num_features,)``, channels on axis 1) in eval mode when the map
        does not depend on the input; None when the normalizer cannot be
        folded (the default). ``minigrad.norm.fold`` folds such maps into
        the preceding Linear/Conv2d. Raise ``FoldError`` when a normalizer
        that should fold cannot in its current state.
        """
        return None

    # ------------------------------------------- running statistics (public, for plugins too)
    def running_affine(self):
        """The eval-mode map from the running statistics: ``(scale, shift)`` with
        ``scale = γ/sqrt(running_var + ε)`` and ``shift = β - running_mean·scale``.

        Float64 backend arrays of shape ``(num_features,)``; what
        ``inference_affine`` returns for a normalizer that is this map in eval.

        Example::

            bn = minigrad.nn.BatchNorm1d(3).eval()
            scale, shift = bn.running_affine()   # y = x·scale + shift per channel
        """
        weight = self.weight.array.reshape(-1) if self.weight is not None else None
        bias = self.bias.array.reshape(-1) if self.bias is not None else None
        return self.running_mean.backend.batch_norm_eval_affine(self.running_mean.array, self.running_var.array,
                                                                weight, bias, self.eps)

    def running_stats_factor(self) -> float:
        """The weight of the next batch in the running averages: ``momentum``, or
        ``1/(num_batches_tracked + 1)`` (a cumulative average) when ``momentum`` is None.

        A getter: counting the batch is ``update_running_stats``'s job (or an
        override's, with ``num_batches_tracked.add_(1)``).

        Example::

            minigrad.nn.BatchNorm1d(3, momentum=None).running_stats_factor()   # 1.0: the first batch is all
        """
        if self.momentum is None:
            return 1.0 / (float(self.num_batches_tracked.item()) + 1.0)
        return self.momentum

    def update_running_stats(self, mean, var, count) -> None:
        """Fold one training batch's statistics into the running ones (PyTorch's ``_BatchNorm`` rule).

        ``mean`` and ``var`` are the batch mean and *biased* variance per
        channel (Tensors of shape ``(num_features,)``) over ``count`` values
        each. Counts the batch in ``num_batches_tracked``, then
        ``running ← (1 - f)·running + f·batch`` with ``f =
        running_stats_factor()`` and the unbiased variance ``var·m/(m - 1)``.
        Does nothing without ``track_running_stats`` or for an empty batch.
        A normalizer with running statistics calls it once per training
        forward, in its ``forward`` where a reader sees it.

        Example (the core of BatchNorm's forward)::

            y, mean, var = batch_norm_train(x, self.weight, self.bias, self.eps)
            if self.training:
                self.update_running_stats(mean, var, x.numel() // x.shape[1])
        """
        if not self.track_running_stats or not count:
            return
        factor = self.running_stats_factor()
        count_tensor = self.num_batches_tracked
        tracked = count_tensor.array
        tracked += 1  # a 0-d array, in place
        count_tensor._bump_version()
        update_running_stats(self.running_mean, self.running_var, mean, var, factor, count)

    @classmethod
    def examples(cls) -> list:
        """Constructor arguments and input shapes for the shared test suite (a list of ``Example``)."""
        return []

    def affine_shape(self, ndim):
        """Shape γ and β are reshaped to so they broadcast against an input of rank ``ndim``.

        Example::

            minigrad.nn.BatchNorm2d(3).affine_shape(4)   # (1, -1, 1, 1)
        """
        shape = [1] * ndim
        shape[self.channel_axis if self.channel_axis is not None else 1] = -1
        return tuple(shape)

    def reference(self, x: np.ndarray) -> np.ndarray:
        """Plain-NumPy float64 forward of the current mode (running statistics are not updated).

        The default standardizes over ``statistics_view`` (or with the
        running statistics when ``uses_batch_statistics`` is False) and
        applies γ and β along ``affine_shape``. Override it when the
        normalizer computes something else (RMSNorm does).
        """
        x64 = np.asarray(x, dtype=np.float64)
        if self.uses_batch_statistics:
            view, axes = self.statistics_view(x64.shape)
            v = x64.reshape(view)
            mean = v.mean(axis=axes, keepdims=True)
            var = ((v - mean) ** 2).mean(axis=axes, keepdims=True)
            xhat = ((v - mean) / np.sqrt(var + self.eps)).reshape(x64.shape)
        else:
            shape = self.affine_shape(x64.ndim)
            rm = self.running_mean.detach().numpy().astype(np.float64).reshape(shape)
            rv = self.running_var.detach().numpy().astype(np.float64).reshape(shape)
            xhat = (x64 - rm) / np.sqrt(rv + self.eps)
        shape = self.affine_shape(x64.ndim)
        if self.weight is not None:
            xhat = xhat * self.weight.detach().numpy().astype(np.float64).reshape(shape)
        if self.bias is not None:
            xhat = xhat + self.bias.detach().numpy().astype(np.float64).reshape(shape)
        return xhat


def _ranks_text(ranks) -> str:
    if isinstance(ranks, range) and len(ranks) > 3:
        return f"{ranks.start}D or higher-dimensional"
    parts = [f"{r}D" for r in ranks]
    if len(parts) <= 1:
        return parts[0] if parts else "no"
    return ", ".join(parts[:-1]) + " or " + parts[-1]
