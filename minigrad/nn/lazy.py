"""Lazy modules: layers whose input size is inferred from their first input (PyTorch's ``Lazy*``).

``LazyLinear(out_features)`` and ``LazyConv2d(out_channels, kernel_size, ...)``
take the arguments of their eager class without the input size (so do
``LazyBatchNorm1d()`` and ``LazyBatchNorm2d()``, which live with BatchNorm
in ``minigrad.norm.batchnorm``, the layer above, built on
``LazyModuleMixin``; ``minigrad.norm`` adds them to this module and to
``minigrad.nn``). Until the first call their parameters
and buffers are ``UninitializedParameter``/``UninitializedBuffer`` objects;
the first call builds the eager layer for the input's size (initialised as
that layer is), moves its values into those same objects (so an optimizer
built before the first call keeps working) and turns the module into the
eager class (``type(LazyLinear(3)(x))`` is ``Linear`` afterwards).
Run one forward pass before ``load_state_dict``, as in PyTorch.

Example::

    net = nn.Sequential(nn.LazyLinear(64), nn.LazyBatchNorm1d(), nn.ReLU(), nn.LazyLinear(10))
    net(mg.randn(2, 784))           # now net[0].weight has shape (64, 784)
"""

from __future__ import annotations

from .._dtypes import is_floating
from ..tensor import Tensor, empty
from .layers import Conv2d, Linear
from .module import Module, Parameter

__all__ = ["UninitializedParameter", "UninitializedBuffer", "LazyModuleMixin", "LazyLinear", "LazyConv2d"]

_STORES = ("_parameters", "_buffers", "_modules", "_non_persistent", "training")


class UninitializedParameter(Parameter):
    """A parameter whose shape is not known yet; it becomes a ``Parameter`` (the same object) when its
    lazy module sees its first input."""

    __slots__ = ()

    def __init__(self, requires_grad=True, device=None, dtype=None):
        super().__init__(empty(0, device=device, dtype=dtype), requires_grad)

    def __repr__(self) -> str:
        return "<UninitializedParameter>"


class UninitializedBuffer(Tensor):
    """A buffer whose shape is not known yet (see ``UninitializedParameter``)."""

    __slots__ = ()

    def __init__(self, device=None, dtype=None):
        super().__init__(empty(0, device=device, dtype=dtype))

    def __repr__(self) -> str:
        return "<UninitializedBuffer>"


class LazyModuleMixin:
    """Makes a layer class lazy: ``cls_to_become`` is the eager class, ``_input_size(x)`` reads the
    missing size from the first input, ``_lazy_init(placeholder, *args, **kwargs)`` builds the module."""

    cls_to_become = None

    def _lazy_init(self, placeholder, *args, **kwargs):
        # An eager layer with a placeholder input size checks the arguments now and names the parameters.
        template = self.cls_to_become(placeholder, *args, **kwargs)
        Module.__init__(self)
        for name, p in template._parameters.items():
            self.register_parameter(
                name, None if p is None else UninitializedParameter(p.requires_grad, p.device, p.dtype))
        for name, b in template._buffers.items():
            self.register_buffer(name, None if b is None else UninitializedBuffer(b.device, b.dtype),
                                 persistent=name not in template._non_persistent)
        for key, value in template.__dict__.items():
            if key not in _STORES:
                object.__setattr__(self, key, value)
        object.__setattr__(self, "_lazy_args", (args, kwargs))

    def has_uninitialized_params(self) -> bool:
        """True until the first input has fixed the shapes."""
        return any(isinstance(t, (UninitializedParameter, UninitializedBuffer))
                   for store in (self._parameters, self._buffers) for t in store.values())

    def _input_size(self, x) -> int:
        raise NotImplementedError

    def initialize_parameters(self, x) -> None:
        """Build the parameters for input ``x`` and become the eager class."""
        args, kwargs = self._lazy_args
        real = self.cls_to_become(self._input_size(x), *args, **kwargs)
        for store in ("_parameters", "_buffers"):
            mine = getattr(self, store)
            for name, value in getattr(real, store).items():
                target = mine.get(name)
                if value is None or target is None:
                    continue
                # The placeholder's device and dtype win: the module may have been moved or cast since.
                arr = value.array
                if value.backend is not target.backend:
                    arr = target.backend.transfer(arr, value.backend)
                if is_floating(arr.dtype) and arr.dtype != target.dtype:
                    arr = arr.astype(target.dtype)
                target._set_fields(arr, target.backend, target.requires_grad)
                if isinstance(target, (UninitializedParameter, UninitializedBuffer)):
                    target.__class__ = Parameter if isinstance(target, Parameter) else Tensor
        for key, value in real.__dict__.items():
            if key not in _STORES:
                object.__setattr__(self, key, value)
        del self._lazy_args
        self.__class__ = self.cls_to_become

    def __call__(self, *args, **kwargs):
        if self.has_uninitialized_params():
            self.initialize_parameters(args[0])
        return Module.__call__(self, *args, **kwargs)


class LazyLinear(LazyModuleMixin, Linear):
    """``Linear`` with ``in_features`` inferred from the last dimension of the first input.

    ``LazyLinear(out_features, bias=True, device=None, dtype=None)``.
    """

    cls_to_become = Linear

    def __init__(self, out_features, bias=True, device=None, dtype=None):
        self._lazy_init(1, out_features, bias=bias, device=device, dtype=dtype)
        object.__setattr__(self, "in_features", 0)

    def _input_size(self, x):
        return x.shape[-1]


class LazyConv2d(LazyModuleMixin, Conv2d):
    """``Conv2d`` with ``in_channels`` inferred from the first input ((N, C, H, W) or (C, H, W)).

    ``LazyConv2d(out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
    padding_mode="zeros", device=None, dtype=None)``; the options are handed to ``Conv2d``.
    """

    cls_to_become = Conv2d

    def __init__(self, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 padding_mode="zeros", device=None, dtype=None):
        kwargs = dict(stride=stride, padding=padding, bias=bias, device=device, dtype=dtype)
        # Only options that differ from the default, so any Conv2d that has the common ones works.
        for name, value, default in (("dilation", dilation, 1), ("groups", groups, 1),
                                     ("padding_mode", padding_mode, "zeros")):
            if value != default:
                kwargs[name] = value
        self._lazy_init(groups, out_channels, kernel_size, **kwargs)
        object.__setattr__(self, "in_channels", 0)

    def _input_size(self, x):
        return x.shape[-3]
