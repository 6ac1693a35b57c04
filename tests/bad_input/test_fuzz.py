"""Fuzzing the functional normalizers with odd shapes: NumPy reference always, PyTorch where installed.

Hypothesis draws a normalizer, a shape (sizes 0 and 1 included), the mode,
affine and running-statistics options; the call must either raise the
documented ValueError (statistics of a single value) or return what a
plain NumPy computation gives, running statistics included, and what
PyTorch gives where PyTorch accepts the same call. Bounded in the ci
profile, broad in the thorough one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigrad as mg
from minigrad.nn import functional as F

try:
    import torch
except ImportError:  # the NumPy reference still runs
    torch = None

TOL = dict(rtol=1e-9, atol=1e-11)


@st.composite
def cases(draw):
    fn = draw(st.sampled_from(["batch_norm", "layer_norm", "group_norm", "instance_norm"]))
    ndim = draw(st.integers(3 if fn == "instance_norm" else 2, 4))
    shape = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 3, 4]), min_size=ndim, max_size=ndim)))
    c = shape[1]
    case = dict(fn=fn, shape=shape, eps=draw(st.sampled_from([1e-5, 1e-2, 0.5])),
                affine=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))
    if fn == "layer_norm":
        case["k"] = draw(st.integers(1, ndim - 1))
    if fn == "group_norm":
        case["groups"] = draw(st.sampled_from([g for g in (1, 2, 3, 4) if c % g == 0]))
    if fn in ("batch_norm", "instance_norm"):
        case["training"] = draw(st.booleans())
        case["stats"] = draw(st.booleans()) or not case["training"]
        case["momentum"] = draw(st.sampled_from([0.0, 0.1, 1.0]))
    return case


def _param_shape(case):
    shape = case["shape"]
    return shape[-case["k"]:] if case["fn"] == "layer_norm" else (shape[1],)


def _groups_view(case, x):
    """x as (rows, values) for the normalizers whose statistics are per sample."""
    n = x.shape[0]
    if case["fn"] == "layer_norm":
        return x.reshape(-1, math.prod(x.shape[x.ndim - case["k"]:]))
    if case["fn"] == "group_norm":
        return x.reshape(n * case["groups"], -1)
    return x.reshape(n * x.shape[1], -1)  # instance norm


def reference(case, x, w, b, rm, rv):
    """(y, running_mean, running_var, error) in float64 NumPy, following the documented rules."""
    fn, shape = case["fn"], case["shape"]
    per_channel = fn in ("batch_norm", "instance_norm")
    batch_stats = not per_channel or case["training"]
    if fn == "batch_norm" and batch_stats and shape[0] * math.prod(shape[2:]) == 1:
        return None, None, None, "Expected more than 1 value per channel"
    if fn == "instance_norm" and batch_stats and math.prod(shape[2:]) == 1:
        return None, None, None, "Expected more than 1 spatial element"
    pshape = _param_shape(case)
    bshape = pshape if fn == "layer_norm" else (shape[1],) + (1,) * (len(shape) - 2)
    rm_new, rv_new = (None if rm is None else rm.copy()), (None if rv is None else rv.copy())
    if x.size == 0:
        y = x.copy()
    elif fn == "batch_norm" or not batch_stats:
        axes = (0,) + tuple(range(2, x.ndim))
        if batch_stats:
            mean, var = x.mean(axis=axes), x.var(axis=axes)
            if rm is not None and case["momentum"]:
                m = x.size // shape[1]
                rm_new = (1 - case["momentum"]) * rm + case["momentum"] * mean
                rv_new = (1 - case["momentum"]) * rv + case["momentum"] * var * m / (m - 1)
        else:
            mean, var = rm, rv
        y = (x - mean.reshape(bshape)) / np.sqrt(var.reshape(bshape) + case["eps"])
    else:
        rows = _groups_view(case, x)
        mean, var = rows.mean(axis=1, keepdims=True), rows.var(axis=1, keepdims=True)
        y = ((rows - mean) / np.sqrt(var + case["eps"])).reshape(shape)
        if fn == "instance_norm" and rm is not None and case["momentum"]:
            k = math.prod(shape[2:])
            inst_mean = mean.reshape(shape[0], shape[1]).mean(axis=0)
            inst_var = (var.reshape(shape[0], shape[1]) * k / (k - 1)).mean(axis=0)
            rm_new = (1 - case["momentum"]) * rm + case["momentum"] * inst_mean
            rv_new = (1 - case["momentum"]) * rv + case["momentum"] * inst_var
    if w is not None:
        y = y * w.reshape(bshape) + b.reshape(bshape)
    return y, rm_new, rv_new, None


def _args(case, lib, x, w, b, rm, rv):
    t = (lambda a: None if a is None else mg.tensor(a)) if lib is mg else \
        (lambda a: None if a is None else torch.tensor(a))
    fn = case["fn"]
    kw = dict(weight=t(w), bias=t(b), eps=case["eps"])
    if fn == "layer_norm":
        return (t(x), tuple(case["shape"][-case["k"]:])), kw
    if fn == "group_norm":
        return (t(x), case["groups"]), kw
    kw.update(running_mean=t(rm), running_var=t(rv), momentum=case["momentum"])
    kw["training" if fn == "batch_norm" else "use_input_stats"] = case["training"]
    return (t(x),), kw


@given(case=cases())
def test_functional_normalizers_agree_with_numpy_and_torch(case):
    rng = np.random.default_rng(case["seed"])
    shape, pshape, c = case["shape"], _param_shape(case), case["shape"][1]
    x = rng.standard_normal(shape) * 2 + 0.5
    w = rng.uniform(0.5, 1.5, pshape) if case["affine"] else None
    b = rng.standard_normal(pshape) if case["affine"] else None
    stats = case.get("stats")
    rm = rng.standard_normal(c) if stats else None
    rv = rng.uniform(0.5, 2.0, c) if stats else None
    y_ref, rm_ref, rv_ref, error = reference(case, x, w, b, rm, rv)

    args, kwargs = _args(case, mg, x, w, b, rm, rv)
    if error is not None:
        with pytest.raises(ValueError, match=error):
            getattr(F, case["fn"])(*args, **kwargs)
        return
    y = getattr(F, case["fn"])(*args, **kwargs)
    np.testing.assert_allclose(y.numpy(), y_ref, **TOL)
    if stats:
        np.testing.assert_allclose(kwargs["running_mean"].numpy(), rm_ref, **TOL)
        np.testing.assert_allclose(kwargs["running_var"].numpy(), rv_ref, **TOL)

    if torch is not None:
        targs, tkwargs = _args(case, torch, x, w, b, rm, rv)
        try:
            ty = getattr(torch.nn.functional, case["fn"])(*targs, **tkwargs)
        except (RuntimeError, ValueError, IndexError):
            return  # PyTorch refuses some empty shapes minigrad accepts (e.g. BatchNorm with C = 0 in a module)
        np.testing.assert_allclose(y.numpy(), ty.numpy(), **TOL)
        if stats and x.size and case["fn"] == "batch_norm":  # PyTorch's InstanceNorm NaNs the stats at N = 0
            np.testing.assert_allclose(kwargs["running_mean"].numpy(), tkwargs["running_mean"].numpy(), **TOL)
            np.testing.assert_allclose(kwargs["running_var"].numpy(), tkwargs["running_var"].numpy(), **TOL)
