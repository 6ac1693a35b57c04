"""Hostile inputs to the public API: one table, run on every backend (issue 10's regression cases).

Each row is a call, the exception it must raise and a fragment of the
message (a regular expression, searched for): the error names what was
wrong and what was expected, the same on every backend, and nothing
crashes, hangs or returns a wrong number. Add a row for every hostile
input found; rows that need a second device run where there is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import minigrad as mg
from minigrad import backends, nn
from minigrad.nn import functional as F
from minigrad.norm import ChannelAffine, FoldError, Normalizer, fold


@dataclass(frozen=True)
class Ctx:
    """What a row's call gets: the device under test and a temporary directory."""

    device: str
    tmp: object

    def randn(self, *shape, dtype="float32"):
        return mg.randn(*shape, device=self.device, dtype=dtype)

    def ones(self, *shape, dtype="float32"):
        return mg.ones(*shape, device=self.device, dtype=dtype)

    def module(self, make):
        return make().to(self.device)


@dataclass(frozen=True)
class Bad:
    id: str
    call: Callable[[Ctx], object]
    error: type
    match: str
    two_devices: bool = False  # mixes the device under test with the CPU

    def __repr__(self) -> str:
        return self.id


def _replace(name, make):
    """A module whose ``name`` was replaced by ``make(ctx, module)`` (a user's assignment)."""
    def build(ctx, module):
        setattr(module, name, make(ctx, module))
        return module
    return build


def _module_call(make, x_shape, *, train=True, edit=None):
    def call(ctx):
        m = ctx.module(make).train(train)
        if edit is not None:
            edit(ctx, m)
        return m(ctx.randn(*x_shape))
    return call


def _short(ctx, m):
    return ctx.ones(1)


def _short_param(ctx, m):
    return nn.Parameter(ctx.ones(1))


def _fold_then(x_shape):
    def call(ctx):
        model = ctx.module(lambda: nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))).eval()
        return fold(model)(ctx.randn(*x_shape))
    return call


class _WrongShape(Normalizer):
    """Returns half its input."""

    input_ranks = (2,)

    def forward(self, x):
        return x[:, :1]


class _AxisFive(Normalizer):
    """Declares a channel axis its inputs do not have."""

    input_ranks = (2,)
    channel_axis = 5

    def forward(self, x):
        self.check_input(x)
        return x


def _save_then_load(ctx, content):
    path = ctx.tmp / "ck.npz"
    path.write_bytes(content)
    return mg.load(path, device=ctx.device)


TABLE = [
    # 10.1: parameters and buffers of the wrong length reached the kernels (segfault at C = 64e6, NaN at 512)
    Bad("BatchNorm1d-eval-1-element-running-stats", _module_call(
        lambda: nn.BatchNorm1d(512), (2, 512), train=False,
        edit=lambda ctx, m: (_replace("running_mean", _short)(ctx, m), _replace("running_var", _short)(ctx, m))),
        ValueError, r"BatchNorm1d: running_mean must have shape \(512,\), got \(1,\)"),
    Bad("BatchNorm1d-train-1-element-weight", _module_call(
        lambda: nn.BatchNorm1d(512), (2, 512), edit=_replace("weight", _short_param)),
        ValueError, r"BatchNorm1d: weight must have shape \(512,\), got \(1,\)"),
    Bad("BatchNorm2d-1-element-bias", _module_call(
        lambda: nn.BatchNorm2d(8), (2, 8, 3, 3), edit=_replace("bias", _short_param)),
        ValueError, r"BatchNorm2d: bias must have shape \(8,\)"),
    Bad("LayerNorm-1-element-weight", _module_call(
        lambda: nn.LayerNorm(64), (2, 64), edit=_replace("weight", _short_param)),
        ValueError, r"LayerNorm: weight must have shape \(64,\), got \(1,\)"),
    Bad("GroupNorm-1-element-weight", _module_call(
        lambda: nn.GroupNorm(4, 64), (2, 64, 3), edit=_replace("weight", _short_param)),
        ValueError, r"GroupNorm: weight must have shape \(64,\)"),
    Bad("InstanceNorm1d-1-element-running-var", _module_call(
        lambda: nn.InstanceNorm1d(16, track_running_stats=True), (2, 16, 5), train=False,
        edit=_replace("running_var", _short)), ValueError, r"InstanceNorm1d: running_var must have shape \(16,\)"),
    Bad("BatchNorm1d-running-stats-removed", _module_call(
        lambda: nn.BatchNorm1d(3), (2, 3), train=False,
        edit=lambda ctx, m: (setattr(m, "running_mean", None), setattr(m, "running_var", None))),
        ValueError, "training=False normalizes with the running statistics"),
    Bad("BatchNorm1d-float64-running-mean", _module_call(
        lambda: nn.BatchNorm1d(3), (2, 3), train=False,
        edit=_replace("running_mean", lambda ctx, m: ctx.ones(3, dtype="float64"))),
        TypeError, "BatchNorm1d: running_mean has dtype float64 but the input has dtype float32"),
    Bad("BatchNorm1d-negative-eps", _module_call(
        lambda: nn.BatchNorm1d(3), (4, 3), edit=lambda ctx, m: setattr(m, "eps", -1.0)),
        ValueError, "BatchNorm1d: eps must be a finite number >= 0, got -1.0"),
    Bad("BatchNorm1d-momentum-5", _module_call(
        lambda: nn.BatchNorm1d(3), (4, 3), edit=lambda ctx, m: setattr(m, "momentum", 5)),
        ValueError, r"BatchNorm1d: momentum must be a number in \[0, 1\] \(or None for a cumulative average\)"),
    Bad("GroupNorm-num-groups-changed", _module_call(
        lambda: nn.GroupNorm(2, 4), (2, 4, 3), edit=lambda ctx, m: setattr(m, "num_groups", 3)),
        ValueError, r"GroupNorm: the number of channels \(4\) must be divisible by num_groups \(3\)"),
    # functional arguments
    Bad("batch_norm-weight-numpy", lambda ctx: F.batch_norm(ctx.randn(2, 3), None, None, np.ones(3), training=True),
        TypeError, "batch_norm: weight must be a Tensor or None, got ndarray"),
    Bad("batch_norm-input-numpy", lambda ctx: F.batch_norm(np.ones((2, 3)), None, None, training=True),
        TypeError, "batch_norm: expected a minigrad Tensor as input, got ndarray"),
    Bad("batch_norm-integer-input", lambda ctx: F.batch_norm(ctx.ones(2, 3, dtype="int64"), None, None,
                                                             training=True),
        TypeError, "batch_norm: expected a floating point input"),
    Bad("batch_norm-dtype-mismatch", lambda ctx: F.batch_norm(ctx.randn(4, 3, dtype="float64"), None, None,
                                                              ctx.ones(3), training=True),
        TypeError, "batch_norm: weight has dtype float32 but the input has dtype float64; they must match"),
    Bad("batch_norm-one-running-stat", lambda ctx: F.batch_norm(ctx.randn(2, 3), ctx.ones(3), None, training=True),
        ValueError, "pass both running_mean and running_var, or neither"),
    Bad("batch_norm-momentum-nan", lambda ctx: F.batch_norm(ctx.randn(2, 3), ctx.ones(3), ctx.ones(3), training=True,
                                                            momentum=float("nan")),
        ValueError, r"momentum must be a number in \[0, 1\], got nan"),
    Bad("batch_norm-momentum-string", lambda ctx: F.batch_norm(ctx.randn(2, 3), ctx.ones(3), ctx.ones(3),
                                                               training=True, momentum="0.1"),
        ValueError, "momentum must be a number"),
    Bad("batch_norm-eps-inf", lambda ctx: F.batch_norm(ctx.randn(2, 3), None, None, training=True,
                                                       eps=float("inf")),
        ValueError, "eps must be a finite number >= 0, got inf"),
    Bad("batch_norm-eps-bool", lambda ctx: F.batch_norm(ctx.randn(2, 3), None, None, training=True, eps=True),
        ValueError, "eps must be a finite number >= 0, got True"),
    Bad("batch_norm-one-value-per-channel", lambda ctx: F.batch_norm(ctx.randn(1, 3, 1), None, None, training=True),
        ValueError, r"Expected more than 1 value per channel when training, got input size \(1, 3, 1\)"),
    Bad("layer_norm-shape-string", lambda ctx: F.layer_norm(ctx.randn(2, 3), "abc"),
        TypeError, "normalized_shape must be an int or a tuple of ints, got 'abc'"),
    Bad("layer_norm-shape-float", lambda ctx: F.layer_norm(ctx.randn(2, 3), (2.5,)),
        TypeError, "normalized_shape must be an int or a tuple of ints"),
    Bad("layer_norm-shape-negative", lambda ctx: F.layer_norm(ctx.randn(2, 3), (-3,)),
        ValueError, "normalized_shape must be non-empty with entries >= 0"),
    Bad("group_norm-groups-float", lambda ctx: F.group_norm(ctx.randn(2, 4), 2.5),
        ValueError, "num_groups must be a positive int, got 2.5"),
    Bad("group_norm-groups-bool", lambda ctx: F.group_norm(ctx.randn(2, 4), True),
        ValueError, "num_groups must be a positive int, got True"),
    Bad("instance_norm-one-spatial-value", lambda ctx: F.instance_norm(ctx.randn(2, 3, 1)),
        ValueError, "Expected more than 1 spatial element when training"),
    Bad("ChannelAffine-channels", lambda ctx: ChannelAffine(ctx.ones(3), ctx.ones(3))(ctx.ones(2, 4)),
        ValueError, r"ChannelAffine: expected an input \(N, C, \*\) with C = 3, got shape \(2, 4\)"),
    # constructors
    Bad("BatchNorm2d-num-features-float", lambda ctx: nn.BatchNorm2d(2.5),
        ValueError, "BatchNorm2d: num_features must be an int >= 0, got 2.5"),
    Bad("GroupNorm-indivisible", lambda ctx: nn.GroupNorm(4, 6),
        ValueError, r"the number of channels \(6\) must be divisible by num_groups \(4\)"),
    # 10.8: a fold that is not the same map is refused, not wrong
    Bad("fold-Linear-BatchNorm1d-on-NCL", _fold_then((2, 3, 4)), FoldError,
        r"fold merged BatchNorm1d into Linear, which is the same map only for 2D input"),
    Bad("fold-in-training-mode", lambda ctx: fold(ctx.module(lambda: nn.BatchNorm1d(2))), FoldError,
        "must be in eval mode"),
    # 10.16: the normalizer contract, checked where normalizers are called
    Bad("plugin-wrong-output-shape", lambda ctx: ctx.module(lambda: _WrongShape(4))(ctx.randn(2, 4)),
        RuntimeError, r"_WrongShape.forward broke the normalizer contract: it returned shape \(2, 1\)"),
    Bad("plugin-channel-axis-out-of-range", lambda ctx: ctx.module(lambda: _AxisFive(4))(ctx.randn(2, 4)),
        ValueError, r"_AxisFive: channel_axis=5 does not exist in a 2D input of shape \(2, 4\)"),
    # 10.18: messages that name the right thing
    Bad("to-unknown-device", lambda ctx: ctx.ones(2).to("tpu"),
        ValueError, r"to\(\): unknown device type 'tpu' in 'tpu': expected one of 'cpu', 'cuda'.* \('tpu' is not a "
                    r"dtype either\)"),
    Bad("Module-to-unknown-device", lambda ctx: ctx.module(lambda: nn.Linear(2, 2)).to("tpu"),
        ValueError, r"Module.to\(\): unknown device type 'tpu'"),
    Bad("randn-integer-dtype", lambda ctx: mg.randn(2, dtype="int64", device=ctx.device),
        TypeError, "randn samples floating point numbers: dtype must be float16, float32 or float64, got int64"),
    Bad("Linear-0d-input", lambda ctx: ctx.module(lambda: nn.Linear(1, 2))(mg.tensor(1.0, device=ctx.device)),
        ValueError, "linear: the input needs at least 1 dimension, the last of in_features=1 features; got a 0-d"),
    Bad("device-index-string", lambda ctx: mg.Device("cuda", index="x"), TypeError, "a device index must be an int"),
    Bad("device-cpu-index", lambda ctx: mg.Device("cpu:1"), ValueError, "devices of type 'cpu' have no index"),
    Bad("factory-unknown-device", lambda ctx: mg.zeros(2, device="tpu:0"), ValueError, "unknown device type 'tpu'"),
    Bad("register-backend-bad-type", lambda ctx: backends.register_backend("my:dev", "a.b:C"),
        ValueError, "a device type must be a lower-case identifier"),
    # checkpoints (10.3, 10.14)
    Bad("load_state_dict-size", lambda ctx: ctx.module(lambda: nn.Linear(2, 2)).load_state_dict(
        {"weight": mg.ones(3, 3), "bias": mg.ones(2)}), ValueError,
        r"size mismatch for 'weight': the checkpoint has shape \(3, 3\), the model \(2, 2\)"),
    Bad("load_state_dict-int-into-float", lambda ctx: ctx.module(lambda: nn.Linear(2, 2)).load_state_dict(
        {"weight": mg.ones(2, 2, dtype="int64"), "bias": mg.ones(2)}), TypeError, "dtype mismatch for 'weight'"),
    Bad("load-text-file", lambda ctx: _save_then_load(ctx, b"hello"), mg.CheckpointError,
        "not a minigrad checkpoint"),
    Bad("load-empty-file", lambda ctx: _save_then_load(ctx, b""), mg.CheckpointError, "not a minigrad checkpoint"),
    Bad("save-a-function", lambda ctx: mg.save({"f": print}, ctx.tmp / "x.npz"), TypeError,
        "cannot store an object of type builtin_function_or_method"),
    # mixing devices
    Bad("batch_norm-weight-on-cpu", lambda ctx: F.batch_norm(ctx.randn(2, 3), None, None, mg.ones(3),
                                                             training=True),
        RuntimeError, "batch_norm: weight is on cpu but the input is on", two_devices=True),
    Bad("BatchNorm1d-buffer-on-cpu", _module_call(
        lambda: nn.BatchNorm1d(3), (2, 3), train=False, edit=_replace("running_var", lambda ctx, m: mg.ones(3))),
        RuntimeError, "BatchNorm1d: running_var is on cpu but the input is on", two_devices=True),
]


def test_ids_are_unique():
    ids = [row.id for row in TABLE]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("row", TABLE, ids=str)
def test_hostile_input_raises_a_clear_error(row, backend_device, tmp_path):
    if row.two_devices and backend_device == "cpu":
        pytest.skip("mixes the device under test with the CPU")
    with pytest.raises(row.error, match=row.match):
        row.call(Ctx(backend_device, tmp_path))
