"""Every backend behaves the same: one table of good and bad cases, run on each (issue 11.1).

Each case calls the public API (functional normalizers and the modules)
on tensors of one device and returns what it computed: the output, the
gradients of the inputs and parameters, the running statistics. The table
runs on every backend, the NumPy reference ``Backend`` included (Thinc's
``VANILLA_OPS`` beside the fast ops), and each backend must give the
reference's numbers (to the dtype's tolerance) or raise the reference's
exception, type and message alike. Bad cases never reach a backend
(validation lives above them, in norm/functional.py), and empty inputs are
answered there too, so they agree by construction; this test keeps it so.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import minigrad as mg
from minigrad import backends, nn
from minigrad.nn import functional as F


@dataclass(frozen=True)
class Case:
    id: str
    run: Callable  # run(device, rng) -> dict of named Tensors/arrays

    def __repr__(self) -> str:
        return self.id


def _t(dev, a, grad=False):
    return None if a is None else mg.tensor(a, device=dev, requires_grad=grad)


def _results(y, **named):
    """y, then the gradients of every named leaf after one backward pass, then the named state."""
    out = {"y": y}
    if y.requires_grad:
        g = np.random.default_rng(99).standard_normal(y.shape).astype(y.dtype)
        y.backward(mg.tensor(g, device=y.device))
    for name, t in named.items():
        if t is None:
            continue
        out[name] = t
        if t.requires_grad:
            out["d" + name] = t.grad
    return out


def functional(fn, shape, dtype="float64", c=None, stats=False, affine=True, overrides=None, param_dtype=None,
               **kwargs):
    """A call of ``F.<fn>`` on an input of ``shape`` with (C,) vectors (of ``param_dtype``, default the
    input's); ``overrides`` replaces some of them (name -> function of (device, dtype) giving the Tensor to
    pass instead)."""
    c = shape[1] if c is None else c
    pdt = dtype if param_dtype is None else param_dtype

    def run(dev, rng):
        x = _t(dev, rng.standard_normal(shape).astype(dtype), True)
        args = dict(
            weight=_t(dev, (1 + 0.2 * rng.standard_normal(c)).astype(pdt), True) if affine else None,
            bias=_t(dev, (0.2 * rng.standard_normal(c)).astype(pdt), True) if affine else None,
            running_mean=_t(dev, (0.1 * rng.standard_normal(c)).astype(pdt)) if stats else None,
            running_var=_t(dev, (1 + rng.uniform(0, 0.5, c)).astype(pdt)) if stats else None,
        )
        for name, make in (overrides or {}).items():
            args[name] = make(dev, dtype)
        if fn in ("layer_norm", "group_norm"):
            args.pop("running_mean"), args.pop("running_var")
        y = getattr(F, fn)(x, **args, **kwargs)
        return _results(y, x=x, **args)

    return run


def module(make, shape, dtype="float64", train=True, steps=1, mutate=None, input_dtype=None):
    """``steps`` calls of a normalizer module built by ``make()`` (its tensors randomized, in ``dtype``),
    after ``mutate(module, device)``, on inputs of ``input_dtype`` (default ``dtype``)."""

    def run(dev, rng):
        m = make().to(dev, dtype)
        for t in list(m.parameters()) + list(m.buffers()):
            if t.dtype.kind == "f":  # positive: the running variance is one of them
                t.array[...] = mg.tensor(rng.uniform(0.5, 1.5, t.shape), dtype=dtype, device=dev).array
        if mutate is not None:
            mutate(m, dev)
        m.train(train)
        x = _t(dev, rng.standard_normal(shape).astype(input_dtype or dtype), True)
        for _ in range(steps - 1):
            m(x)
        return _results(m(x), x=x, **dict(m.named_parameters()), **dict(m.named_buffers()))

    return run


def one(dev, dtype):
    return mg.ones(1, device=dev, dtype=dtype)


def setattr_(name, value):
    def mutate(m, dev):
        setattr(m, name, value(dev) if callable(value) else value)

    return mutate


GOOD = [
    # batch norm, functional: layouts, modes, dtypes
    Case("bn-train-2d", functional("batch_norm", (8, 3), stats=True, training=True)),
    Case("bn-train-3d-f32", functional("batch_norm", (4, 3, 5), "float32", stats=True, training=True, momentum=0.3)),
    Case("bn-train-4d-noaffine", functional("batch_norm", (2, 3, 4, 4), affine=False, training=True)),
    Case("bn-eval-3d", functional("batch_norm", (4, 3, 5), stats=True, training=False)),
    Case("bn-eval-4d-f32", functional("batch_norm", (2, 3, 2, 3), "float32", stats=True, training=False)),
    # batch norm, modules
    Case("BatchNorm1d-train", module(lambda: nn.BatchNorm1d(3), (8, 3), steps=2)),
    Case("BatchNorm1d-cumulative", module(lambda: nn.BatchNorm1d(3, momentum=None), (6, 3, 2), steps=3)),
    Case("BatchNorm2d-eval-f32", module(lambda: nn.BatchNorm2d(3), (2, 3, 3, 3), "float32", train=False)),
    Case("BatchNorm2d-nostats", module(lambda: nn.BatchNorm2d(2, track_running_stats=False), (2, 2, 3, 3),
                                       train=False)),
    # layer, group and instance norm
    Case("ln-2d", functional("layer_norm", (4, 5), c=5, normalized_shape=(5,))),
    Case("LayerNorm-3d-f32", module(lambda: nn.LayerNorm((3, 4)), (2, 3, 4), "float32")),
    Case("gn-3d", functional("group_norm", (2, 6, 4), num_groups=3)),
    Case("GroupNorm-4d", module(lambda: nn.GroupNorm(2, 4), (3, 4, 2, 2))),
    Case("in-stats", functional("instance_norm", (2, 3, 5), stats=True, momentum=0.2)),
    Case("in-eval", functional("instance_norm", (2, 3, 5), stats=True, use_input_stats=False)),
    Case("InstanceNorm1d-track", module(lambda: nn.InstanceNorm1d(3, affine=True, track_running_stats=True),
                                        (2, 3, 5), steps=2)),
    Case("InstanceNorm2d-unbatched-f32", module(lambda: nn.InstanceNorm2d(3, affine=True), (3, 4, 4), "float32")),
    # half inputs: float32 (or half) parameters and statistics, float32 accumulation (issue 16)
    Case("bn-train-4d-f16", functional("batch_norm", (3, 3, 4, 5), "float16", stats=True, training=True,
                                       param_dtype="float32")),
    Case("bn-eval-3d-f16-half-params", functional("batch_norm", (4, 3, 5), "float16", stats=True, training=False)),
    Case("ln-2d-f16", functional("layer_norm", (4, 40), "float16", c=40, normalized_shape=(40,),
                                 param_dtype="float32")),
    Case("GroupNorm-4d-f16-input", module(lambda: nn.GroupNorm(2, 4), (3, 4, 2, 2), "float32", input_dtype="float16")),
    Case("InstanceNorm1d-track-f16-input", module(lambda: nn.InstanceNorm1d(3, affine=True, track_running_stats=True),
                                                  (2, 3, 5), "float32", steps=2, input_dtype="float16")),
    # inputs without values: empty results, statistics untouched (10.9, 10.13)
    Case("bn-empty-batch", functional("batch_norm", (0, 3), stats=True, training=True)),
    Case("bn-empty-length", functional("batch_norm", (2, 3, 0), stats=True, training=True)),
    Case("bn-empty-eval", functional("batch_norm", (0, 3, 4), stats=True, training=False)),
    Case("bn-zero-channels", functional("batch_norm", (4, 0), training=True)),
    Case("BatchNorm1d-empty", module(lambda: nn.BatchNorm1d(3), (0, 3))),
    Case("BatchNorm2d-zero-channels", module(lambda: nn.BatchNorm2d(0), (2, 0, 2, 2))),
    Case("ln-empty", functional("layer_norm", (0, 3), c=3, normalized_shape=(3,))),
    Case("ln-zero-features", functional("layer_norm", (2, 0), c=0, normalized_shape=(0,))),
    Case("LayerNorm-zero-features", module(lambda: nn.LayerNorm(0), (2, 0))),
    Case("gn-empty", functional("group_norm", (0, 4, 2), num_groups=2)),
    Case("in-empty-length", functional("instance_norm", (2, 3, 0), stats=True)),
    Case("in-empty-batch", functional("instance_norm", (0, 3, 4), stats=True)),
    Case("InstanceNorm1d-empty-length", module(lambda: nn.InstanceNorm1d(3, track_running_stats=True), (2, 3, 0))),
]

BAD = [
    # a parameter or buffer of the wrong length (10.1: a segfault or NaN before)
    Case("BatchNorm1d-short-running-stats", module(
        lambda: nn.BatchNorm1d(3), (2, 3), train=False,
        mutate=lambda m, dev: (setattr(m, "running_mean", mg.zeros(1, device=dev, dtype=m.weight.dtype)),
                               setattr(m, "running_var", mg.ones(1, device=dev, dtype=m.weight.dtype))))),
    Case("BatchNorm1d-short-weight", module(
        lambda: nn.BatchNorm1d(3), (4, 3), mutate=lambda m, dev: setattr(m, "weight", nn.Parameter(one(dev, m.bias.dtype))))),
    Case("LayerNorm-short-bias", module(
        lambda: nn.LayerNorm(4), (2, 4), mutate=lambda m, dev: setattr(m, "bias", nn.Parameter(one(dev, m.weight.dtype))))),
    Case("GroupNorm-short-weight", module(
        lambda: nn.GroupNorm(2, 4), (2, 4, 3), mutate=lambda m, dev: setattr(m, "weight", nn.Parameter(one(dev, m.bias.dtype))))),
    Case("InstanceNorm1d-short-running-var", module(
        lambda: nn.InstanceNorm1d(3, track_running_stats=True), (2, 3, 4), train=False,
        mutate=lambda m, dev: setattr(m, "running_var", one(dev, m.running_mean.dtype)))),
    Case("bn-short-running-mean", functional("batch_norm", (2, 3), stats=True, overrides=dict(running_mean=one))),
    # a dtype mismatch (TypeError on CPU, a silent fallback on CUDA before)
    Case("bn-dtype-mismatch", functional("batch_norm", (4, 3), training=True,
                                         overrides=dict(weight=lambda dev, dt: mg.ones(3, device=dev)))),
    Case("gn-dtype-mismatch", functional("group_norm", (2, 4, 3), num_groups=2,
                                         overrides=dict(bias=lambda dev, dt: mg.zeros(4, device=dev)))),
    Case("BatchNorm2d-double-input", module(lambda: nn.BatchNorm2d(2).float(), (2, 2, 2, 2),
                                            mutate=lambda m, dev: m.to(dtype="float32"))),
    Case("bn-f16-input-f64-weight", functional("batch_norm", (4, 3), "float16", training=True, param_dtype="float64")),
    Case("ln-f16-input-mixed-params", functional("layer_norm", (2, 4), "float16", c=4, normalized_shape=(4,),
                                                 param_dtype="float32",
                                                 overrides=dict(bias=lambda dev, dt: mg.zeros(4, device=dev).half()))),
    # eps, momentum and groups, one check each
    Case("BatchNorm1d-negative-eps", module(lambda: nn.BatchNorm1d(3), (4, 3), mutate=setattr_("eps", -1.0))),
    Case("LayerNorm-nan-eps", module(lambda: nn.LayerNorm(3), (4, 3), mutate=setattr_("eps", float("nan")))),
    Case("BatchNorm1d-momentum-2", module(lambda: nn.BatchNorm1d(3), (4, 3), mutate=setattr_("momentum", 2.0))),
    Case("in-momentum-none", functional("instance_norm", (2, 3, 4), stats=True, momentum=None)),
    Case("GroupNorm-groups-changed", module(lambda: nn.GroupNorm(2, 4), (2, 4, 3), mutate=setattr_("num_groups", 3))),
    Case("gn-groups", functional("group_norm", (2, 6, 3), num_groups=4)),
    # statistics of one value
    Case("bn-one-value-per-channel", functional("batch_norm", (1, 3), training=True)),
    Case("in-one-spatial-value", functional("instance_norm", (2, 3, 1))),
    Case("bn-eval-without-stats", functional("batch_norm", (2, 3), training=False)),
]


def _outcome(case, device):
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    try:
        out = case.run(device, rng)
    except Exception as exc:  # noqa: BLE001 - the exception is the result being compared
        return type(exc), str(exc)
    return {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in out.items()}


_REFERENCE = {}


def _reference(case):
    if case.id not in _REFERENCE:
        known = "reference" in backends.device_types()
        if not known:
            backends.register_backend("reference", "minigrad.backends.base:Backend")
        try:
            _REFERENCE[case.id] = _outcome(case, "reference")
        finally:
            if not known:
                from minigrad.device import _DEVICE_TYPES

                del _DEVICE_TYPES["reference"]
    return _REFERENCE[case.id]


def _tolerance(arrays, array):
    """float64 cases agree to summation order, float32 ones (and float32 results of half inputs) to a few
    float32 ulps, half results to one rounding of a float32 value (an ulp)."""
    if array.dtype == np.float16:
        return dict(rtol=2.0**-10, atol=2.0**-10)
    f32 = any(a.dtype in (np.float32, np.float16) for a in arrays.values())
    return dict(rtol=2e-5, atol=2e-5) if f32 else dict(rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("case", GOOD, ids=str)
def test_good_cases_agree(case, backend_device):
    expected = _reference(case)
    assert isinstance(expected, dict), f"the reference raised {expected}"
    got = _outcome(case, backend_device)
    assert isinstance(got, dict), f"{backend_device} raised {got}"
    assert got.keys() == expected.keys()
    for name, want in expected.items():
        assert got[name].shape == want.shape and got[name].dtype == want.dtype, name
        np.testing.assert_allclose(got[name], want, err_msg=f"{case.id}: {name}", **_tolerance(expected, want))


@pytest.mark.parametrize("case", BAD, ids=str)
def test_bad_cases_raise_the_same(case, backend_device):
    expected = _reference(case)
    assert not isinstance(expected, dict), "the reference accepted a bad case"
    assert _outcome(case, backend_device) == expected


def test_empty_inputs_leave_statistics_unchanged():
    # The agreement above could be agreement on a wrong answer: pin the empty cases' meaning (PyTorch's).
    for case in ("bn-empty-batch", "bn-empty-length", "in-empty-length", "in-empty-batch"):
        out = _reference(next(c for c in GOOD if c.id == case))
        assert out["y"].size == 0 and np.all(np.isfinite(out["running_mean"])), case
        assert np.all(out["dweight"] == 0) and np.all(out["dbias"] == 0), case
    bn = nn.BatchNorm1d(3)
    bn(mg.zeros(0, 3))
    assert int(bn.num_batches_tracked) == 0
    norm = nn.InstanceNorm1d(3, track_running_stats=True)
    norm(mg.zeros(2, 3, 0))
    assert norm.running_mean.tolist() == [0, 0, 0] and norm.running_var.tolist() == [1, 1, 1]
