"""``NormalizerTestCase``: the normalizer contract as a pytest test class (Chainer's ``FunctionTestCase``).

A normalizer's test suite subclasses it, names the class under test and
declares what the class can and cannot do; pytest then runs the whole
contract on it: API and state, input validation, the forward against the
NumPy ``reference`` in training and eval, finite-difference gradients of x,
γ and β (and of the gradients: ``gradgradcheck``), sample independence,
standardization, non-contiguous inputs, ``no_grad``, and the inference
affine map, on every device and dtype it declares. minigrad's built-ins and
its example plugins are tested through this same class.

Example (a plugin's ``tests/test_rmsnorm.py``)::

    from minigrad.testing import NormalizerTestCase
    from minigrad_rmsnorm import RMSNorm

    class TestRMSNorm(NormalizerTestCase):
        normalizer = RMSNorm      # or its registry name, "RMSNorm"
        standardizes = False      # it rescales but does not centre

The inputs come from the class's ``examples()`` (or the ``examples``
attribute). Needs pytest and Hypothesis (the ``test`` extra).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .._dtypes import bfloat16
from ..autograd import no_grad
from ..backends import backend_class, device_types
from ..device import device as _device
from ..creation import get_default_dtype, ones, randn, tensor
from ..nn.module import Module
from ..norm import ChannelAffine, FoldError, Normalizer, get
from .finite_differences import gradcheck, gradgradcheck

__all__ = ["NormalizerTestCase"]

_MODES = ("train", "eval")

# Finite differences take their time (no deadline). pytest makes a new instance of the test class for every
# test, so each call of a property below comes from another `self` (Hypothesis's differing_executors check,
# which guards against state kept on `self` between examples; these checks keep none), and the parametrized
# arguments are function-scoped. The number of examples is the active profile's.
_PROPERTY = dict(deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors])


def _host(t):
    return t.detach().numpy().astype(np.float64)


class NormalizerTestCase:
    """The contract every ``Normalizer`` meets, as a pytest base class; subclass it once per normalizer.

    Set ``normalizer`` (the class, or its registry name) and, where the
    defaults do not describe it, the declared capabilities:

    * ``examples``: a list of ``minigrad.norm.Example`` (constructor
      arguments, valid and invalid input shapes); None: ``normalizer.examples()``.
    * ``devices``: device types to test on; None: every registered one
      (those that cannot run here are skipped, with the reason).
    * ``dtypes``: dtypes of the forward checks (gradients are checked in float64).
    * ``skip_backward_test``: True, or the modes (``("train",)``) whose
      gradients are surrogates that finite differences cannot confirm (Batch
      Renormalization treats its corrections r and d as constants); there
      the backward is only run and its gradients' shapes and finiteness
      checked. The double backward is skipped in those modes too.
    * ``skip_double_backward_test``: True, or the modes, when gradients of
      gradients are not supported (no ``vjp``).
    * ``stateful_forward``: True when the training output depends on
      buffers the training forward updates (Batch Renormalization: r and d
      come from the running statistics); the buffers are then restored
      before every call the checks compare (finite differences call the
      forward hundreds of times).
    * ``standardizes``: whether training output groups have mean 0 and
      variance 1 for γ = 1, β = 0; None: the class's ``standardizes``.
    * ``mixed_precision``: whether a float16 input may meet the float32
      module (the output in float16, the parameter gradients in float32);
      None: the class's ``mixed_precision``.

    Which samples share statistics is read from the class's own
    ``statistics_view`` (a ghost-batch normalizer declares its ghost
    batches there), so the sample-independence check needs no declaration.

    Example::

        class TestGhostBatchNorm2d(NormalizerTestCase):
            normalizer = "GhostBatchNorm2d"
    """

    normalizer = None
    examples = None
    devices = None
    dtypes = ("float32", "float64")
    skip_backward_test = False
    skip_double_backward_test = False
    stateful_forward = False
    standardizes = None
    mixed_precision = None

    # ------------------------------------------------------------ set-up
    @property
    def cls(self):
        """The normalizer class under test (``normalizer`` resolved through the registry if a name)."""
        if self.normalizer is None:
            raise TypeError(f"{type(self).__name__}: set `normalizer` to the class (or registry name) under test")
        return get(self.normalizer) if isinstance(self.normalizer, str) else self.normalizer

    def cases(self):
        """The list of ``Example``s the checks run on."""
        return list(self.examples) if self.examples is not None else list(self.cls.examples())

    def build(self, i, device="cpu", dtype=None, **extra):
        """The module of example ``i`` on ``device`` (``extra`` overrides its keyword arguments)."""
        ex = self.cases()[i]
        kwargs = dict(ex.kwargs, **extra)
        if dtype is not None:
            kwargs["dtype"] = dtype
        return self.cls(*ex.args, device=device, **kwargs)

    @staticmethod
    def randomize(module, rng):
        """Random γ, β and running statistics (so no check passes by γ = 1, β = 0 alone); returns ``module``."""
        with no_grad():
            for name in ("weight", "bias", "running_mean"):
                t = getattr(module, name, None)
                if t is not None:
                    t.copy_(tensor(rng.uniform(-1.5, 1.5, t.shape) + (name == "weight") * 0.5, dtype=t.dtype))
            rv = getattr(module, "running_var", None)
            if rv is not None:
                rv.copy_(tensor(rng.uniform(0.3, 2.0, rv.shape), dtype=rv.dtype))
        return module

    def forward(self, module):
        """``module`` as a function of its input for checks that call it repeatedly: with
        ``stateful_forward``, the buffers are restored to their present values before every call."""
        if not self.stateful_forward:
            return module
        saved = [(b, b.detach().clone()) for _, b in module.named_buffers()]

        def call(x):
            with no_grad():
                for buf, value in saved:
                    buf.copy_(value)
            return module(x)

        return call

    def _skips(self, flag, mode):
        return flag is True or (flag and mode in flag)

    # ----------------------------------------------------- parametrization
    def pytest_generate_tests(self, metafunc):
        """Parametrize the checks over the examples, their shapes, modes, dtypes and devices."""
        names = metafunc.fixturenames
        examples = self.cases()
        label = self.cls.__name__
        if "example" in names:
            metafunc.parametrize("example", range(len(examples)), ids=[f"{label}-{i}" for i in range(len(examples))])
        for arg, batched_only in (("case", False), ("batched_case", True)):
            if arg in names:
                cases = [(i, tuple(s)) for i, ex in enumerate(examples)
                         for s in (ex.shapes if batched_only else tuple(ex.shapes) + tuple(ex.unbatched))]
                metafunc.parametrize(arg, cases, ids=[f"{label}-{i}-{'x'.join(map(str, s))}" for i, s in cases])
        if "mode" in names:
            metafunc.parametrize("mode", _MODES)
        if "dtype" in names:
            metafunc.parametrize("dtype", self.dtypes)
        if "device" in names:
            metafunc.parametrize("device", self._device_params(metafunc.config))

    def _device_params(self, config):
        registered = {line.split(":")[0].strip() for line in config.getini("markers")}
        params = []
        for kind in self.devices if self.devices is not None else device_types():
            # A device kind is a pytest marker where the suite registers one ("cuda": pytest -m cuda).
            marks = [getattr(pytest.mark, kind)] if kind in registered and kind != "cpu" else []
            reason = _unavailable(kind)
            if reason is not None:
                marks.append(pytest.mark.skip(reason=f"no {kind.upper()} device: {reason}"))
            params.append(pytest.param(kind, id=kind, marks=marks))
        return params

    # ------------------------------------------------------------ checks
    def test_describes_itself(self):
        """A registered ``Normalizer`` subclass with a docstring and at least one example with shapes."""
        cls = self.cls
        assert issubclass(cls, Normalizer)
        assert cls.__doc__ and cls.__doc__.strip(), f"{cls.__name__} needs a docstring"
        examples = self.cases()
        assert examples, f"{cls.__name__} must describe example inputs (the classmethod examples())"
        assert all(ex.shapes for ex in examples)
        assert cls.registry_name is not None and get(cls.registry_name) is cls, f"{cls.__name__} is not registered"

    def test_state_and_api(self, example, device):
        """Parameters, buffers, ``state_dict``, ``reset_parameters`` and the repr, as PyTorch's layers have them."""
        m = self.build(example, device)
        assert isinstance(m, self.cls) and isinstance(m, Module)
        assert repr(m).startswith(type(m).__name__ + "(")
        params, buffers = dict(m.named_parameters()), dict(m.named_buffers())
        assert set(params) <= {"weight", "bias"}
        assert (m.weight is not None) == ("weight" in params)
        assert not set(params) & set(buffers), "buffers must not be parameters"
        assert set(params) | set(buffers) == set(m.state_dict())
        for p in params.values():
            assert p.requires_grad and p.device == _device(device)
            assert p.dtype == get_default_dtype()
        if m.track_running_stats:
            assert set(buffers) == {"running_mean", "running_var", "num_batches_tracked"}
            assert m.num_batches_tracked.dtype == np.int64
        rng = np.random.default_rng(0)
        self.randomize(m, rng)
        m.reset_parameters()
        if m.weight is not None:
            assert np.all(m.weight.numpy_view() == 1)
        if m.bias is not None:
            assert np.all(m.bias.numpy_view() == 0)
        if m.track_running_stats:
            assert np.all(m.running_mean.numpy_view() == 0) and np.all(m.running_var.numpy_view() == 1)
        self.randomize(m, rng)
        fresh = self.build(example, device)
        fresh.load_state_dict(m.state_dict())
        for (k, a), (_, b) in zip(m.state_dict().items(), fresh.state_dict().items()):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)

    def test_dtype_and_device_arguments(self, example, device):
        """``dtype=``/``device=`` place parameters and buffers; the output keeps the input's shape, dtype, device."""
        m = self.build(example, device, dtype="float64")
        for name, t in list(m.named_parameters()) + list(m.named_buffers()):
            if name != "num_batches_tracked":
                assert t.dtype == np.float64, name
        x = randn(*self.cases()[example].shapes[0], dtype="float64", device=device)
        y = m(x)
        assert y.dtype == np.float64 and y.shape == x.shape and y.device == x.device
        assert self.build(example, device)(x.float()).dtype == np.float32
        m.float()
        assert m(x.float()).dtype == np.float32

    def test_rejects_bad_input(self, example, device):
        """Bad shapes raise ValueError; integer, bool, non-Tensor and mismatched-dtype inputs TypeError."""
        m = self.build(example, device)
        ex = self.cases()[example]
        for shape in ex.bad_shapes:
            with pytest.raises(ValueError):
                m(randn(*shape, device=device))
        shape = ex.shapes[0]
        with pytest.raises(TypeError, match="floating"):
            m(ones(*shape, dtype="int64", device=device))
        with pytest.raises(TypeError, match="floating"):
            m(ones(*shape, dtype="bool", device=device))
        with pytest.raises(TypeError):
            m(np.ones(shape, dtype=np.float32))
        if m.weight is not None or getattr(m, "running_mean", None) is not None:
            with pytest.raises(TypeError, match="dtype"):
                m(randn(*shape, dtype="float64", device=device))

    def test_forward_matches_reference(self, case, mode, dtype, device):
        """The output equals the class's NumPy ``reference`` of the current mode."""
        i, shape = case
        rng = np.random.default_rng(20150211)
        m = self.randomize(self.build(i, device, dtype=dtype), rng)
        m.train(mode == "train")
        x = tensor(rng.standard_normal(shape) * 2.0 + 0.5, dtype=dtype, device=device)
        expected = m.reference(x.numpy().astype(np.float64))
        y = m(x)
        assert y.shape == x.shape and y.dtype == x.dtype
        tol = dict(rtol=1e-4, atol=1e-4) if np.dtype(dtype) == np.float32 else dict(rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(_host(y), expected, **tol)

    @settings(**_PROPERTY)
    @given(data=st.data())
    def test_gradients(self, example, mode, device, data):
        """Finite differences of x, γ and β, with a random upstream gradient and a random ε."""
        if self._skips(self.skip_backward_test, mode):
            pytest.skip(f"{self.cls.__name__}: surrogate gradients in {mode} mode (skip_backward_test)")
        m, x, params, seed = self._gradient_setup(example, mode, device, data, (1e-5, 1e-3, 0.1), unbatched=True)
        gradcheck(self.forward(m), [x], params=params, seed=seed % 1000, atol=1e-6, rtol=1e-4)

    @settings(max_examples=3, **_PROPERTY)
    @given(data=st.data())
    def test_gradients_of_gradients(self, example, mode, device, data):
        """``gradgradcheck`` of x, γ, β and the upstream gradient: the backward is differentiable."""
        for flag, why in ((self.skip_backward_test, "surrogate gradients"),
                          (self.skip_double_backward_test, "no double backward")):
            if self._skips(flag, mode):
                pytest.skip(f"{self.cls.__name__}: {why} in {mode} mode")
        m, x, params, seed = self._gradient_setup(example, mode, device, data, (1e-5, 0.1), unbatched=False)
        gradgradcheck(self.forward(m), [x], params=params, seed=seed % 1000, atol=1e-5, rtol=1e-3)

    def _gradient_setup(self, example, mode, device, data, eps_choices, unbatched):
        m = self.build(example, device, dtype="float64", eps=data.draw(st.sampled_from(eps_choices), label="eps"))
        ex = self.cases()[example]
        shape = data.draw(st.sampled_from(tuple(ex.shapes) + (tuple(ex.unbatched) if unbatched else ())),
                          label="shape")
        seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
        rng = np.random.default_rng(seed)
        self.randomize(m, rng)
        m.train(mode == "train")
        x = tensor(rng.standard_normal(shape), dtype="float64", device=device, requires_grad=True)
        return m, x, [p for p in (m.weight, m.bias) if p is not None], seed

    def test_backward_runs(self, example, mode, device):
        """The backward gives finite gradients of the right shapes for x, γ and β (in every mode)."""
        m = self.randomize(self.build(example, device), np.random.default_rng(3))
        m.train(mode == "train")
        x = randn(*self.cases()[example].shapes[0], device=device, requires_grad=True)
        m(x).sum().backward()
        for t in [x] + [p for p in (m.weight, m.bias) if p is not None]:
            assert t.grad is not None and t.grad.shape == t.shape
            assert np.all(np.isfinite(t.grad.numpy()))

    def test_sample_independence(self, batched_case, mode, device):
        """Samples that share no statistics (``statistics_view``; none in eval with running statistics)
        do not affect each other's output."""
        i, shape = batched_case
        rng = np.random.default_rng(7)
        m = self.randomize(self.build(i, device, dtype="float64"), rng)
        m.train(mode == "train")
        blocks = _sample_blocks(m, shape)
        if len(blocks) < 2:
            pytest.skip("the statistics span the whole batch")
        block = blocks[-1]
        x = tensor(rng.standard_normal(shape), dtype="float64", device=device)
        f = self.forward(m)
        with no_grad():
            full = _host(f(x))
            part = _host(f(x[block[0]:block[-1] + 1]))
        np.testing.assert_allclose(part, full[block[0]:block[-1] + 1], rtol=1e-10, atol=1e-12)

    def test_training_output_is_standardized(self, batched_case, device):
        """γ = 1, β = 0: each statistics group has mean 0 and biased variance var/(var + ε)."""
        standardizes = self.cls.standardizes if self.standardizes is None else self.standardizes
        if not standardizes:
            pytest.skip(f"{self.cls.__name__} does not standardize")
        i, shape = batched_case
        m = self.build(i, device, dtype="float64")
        m.train()
        xa = np.random.default_rng(8).standard_normal(shape) * 3.0 + 2.0
        y = _host(m(tensor(xa, device=device)))
        view, axes = m.statistics_view(shape)
        v, yv = xa.reshape(view), y.reshape(view)
        var = v.var(axis=axes)
        np.testing.assert_allclose(yv.mean(axis=axes), 0.0, atol=1e-10)
        np.testing.assert_allclose(yv.var(axis=axes), var / (var + m.eps), rtol=1e-9)

    def test_half_input(self, case, mode, device):
        """With ``mixed_precision``, a float16 input into the float32 module: the reference of its values
        rounded to float16, dx in float16, γ and β gradients in float32."""
        if not (self.cls.mixed_precision if self.mixed_precision is None else self.mixed_precision):
            pytest.skip(f"{self.cls.__name__} takes its own dtype only (mixed_precision is False)")
        i, shape = case
        rng = np.random.default_rng(12)
        m = self.randomize(self.build(i, device), rng)
        m.train(mode == "train")
        x = tensor(rng.standard_normal(shape) * 2.0 + 0.5, dtype="float16", device=device, requires_grad=True)
        expected = m.reference(x.detach().numpy().astype(np.float64))
        y = self.forward(m)(x)
        assert y.dtype == np.float16 and y.shape == x.shape
        np.testing.assert_allclose(_host(y), expected, rtol=4e-3, atol=4e-3)
        y.sum().backward()
        assert x.grad.dtype == np.float16
        for p in (m.weight, m.bias):
            if p is not None:
                assert p.grad.dtype == np.float32 and np.all(np.isfinite(p.grad.numpy()))

    @pytest.mark.parametrize("half", ["float16", "bfloat16"])
    def test_half_module(self, case, mode, device, half):
        """A module made float16 (or bfloat16) as a whole takes an input of that dtype: the reference of
        its values within the half type's precision, every output and gradient in that dtype, finite."""
        if half == "bfloat16" and bfloat16 is None:
            pytest.skip("bfloat16 needs the ml_dtypes package")
        i, shape = case
        rng = np.random.default_rng(13)
        m = self.randomize(self.build(i, device), rng).to(dtype=half)
        m.train(mode == "train")
        x = tensor(rng.standard_normal(shape) * 2.0 + 0.5, device=device).to(dtype=half).requires_grad_()
        expected = m.reference(_host(x.detach()).astype(np.float64))
        y = self.forward(m)(x)
        assert y.dtype == x.dtype and y.shape == x.shape
        tol = 1e-2 if half == "float16" else 6e-2  # 11 and 8 significant bits
        np.testing.assert_allclose(_host(y).astype(np.float64), expected, rtol=tol, atol=tol)
        y.sum().backward()
        assert x.grad.dtype == x.dtype and np.all(np.isfinite(_host(x.grad).astype(np.float64)))
        for p in m.parameters():
            assert p.grad.dtype == x.dtype and np.all(np.isfinite(_host(p.grad).astype(np.float64)))

    def test_noncontiguous_input(self, case, device):
        """A transposed view gives exactly the output of its contiguous copy, in training and eval."""
        i, shape = case
        rng = np.random.default_rng(9)
        m = self.randomize(self.build(i, device), rng)
        base = tensor(rng.standard_normal(shape[::-1]), dtype="float32", device=device)
        x = base.permute(*reversed(range(len(shape))))
        assert x.shape == tuple(shape)
        xc = tensor(x.numpy().copy(), device=device)
        for mode in (True, False):
            m.train(mode)
            f = self.forward(m)
            np.testing.assert_array_equal(f(x).detach().numpy(), f(xc).detach().numpy())

    def test_no_grad_and_detached_output(self, case, device):
        """Under ``no_grad`` the output records nothing; otherwise it requires grad."""
        i, shape = case
        m = self.build(i, device)
        x = tensor(np.random.default_rng(10).standard_normal(shape), dtype="float32", device=device,
                   requires_grad=True)
        with no_grad():
            assert not m(x).requires_grad
        assert m(x).requires_grad

    def test_inference_affine_map(self, case, device):
        """Where the normalizer folds to a per-channel affine map in eval, the map equals its output."""
        i, shape = case
        rng = np.random.default_rng(11)
        m = self.randomize(self.build(i, device, dtype="float64"), rng)
        assert m.inference_affine() is None, "a normalizer in training mode is not a fixed affine map"
        m.eval()
        try:
            affine = m.inference_affine()
        except FoldError:
            return
        x = tensor(rng.standard_normal(shape), dtype="float64", device=device)
        if affine is None or x.ndim < 2 or x.shape[1] != m.num_features:
            return
        np.testing.assert_allclose(_host(ChannelAffine.from_normalizer(m)(x)), _host(m(x)), rtol=1e-12, atol=1e-12)


def _unavailable(kind):
    """Why device type ``kind`` cannot run here, or None."""
    if kind == "cpu":
        return None
    try:
        cls = backend_class(kind)
    except Exception as exc:  # noqa: BLE001 - a backend that cannot even be imported is skipped, with why
        return f"{type(exc).__name__}: {exc}"
    reason = cls.unavailable_reason() if hasattr(cls, "unavailable_reason") else None
    if reason is None and not cls.is_available():
        reason = "its backend reports it unavailable"
    return reason


def _sample_blocks(module, shape):
    """The samples of a batch of ``shape`` grouped by shared statistics in the module's current mode:
    a list of sorted lists of sample indices (one per connected group)."""
    n = shape[0]
    if not module.uses_batch_statistics:
        return [[s] for s in range(n)]
    view, axes = module.statistics_view(shape)
    index = np.arange(math.prod(shape)).reshape(view)
    last = tuple(range(index.ndim - len(axes), index.ndim))
    members = np.moveaxis(index, axes, last).reshape(-1, math.prod(view[a] for a in axes))
    owner = list(range(n))

    def find(s):
        while owner[s] != s:
            owner[s] = owner[owner[s]]
            s = owner[s]
        return s

    per_sample = math.prod(shape[1:])
    for row in members // per_sample:
        first = find(int(row[0]))
        for s in np.unique(row[1:]):
            owner[find(int(s))] = first
    blocks = {}
    for s in range(n):
        blocks.setdefault(find(s), []).append(s)
    return sorted(blocks.values())
