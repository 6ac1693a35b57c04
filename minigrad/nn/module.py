"""``Module`` and ``Parameter``: the building blocks of networks (PyTorch's API).

A Module holds Parameters (learned tensors), buffers (state that is saved
but not learned, such as BatchNorm's running statistics) and submodules,
all discovered from attribute assignment. Training mode is a flag per
module, switched recursively by ``train()``/``eval()``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterator

import numpy as np

from .._dtypes import is_floating
from .._ext._engine import TensorBase
from ..autograd import zero_grads
from ..backends import get_backend
from ..creation import _bfloat16_dtype, _check_dtype, _device_and_dtype
from ..tensor import Tensor

__all__ = ["Module", "Parameter"]


class Parameter(Tensor):
    """A Tensor that is a learned parameter of a Module (``requires_grad`` by default).

    ``Parameter(tensor)`` shares the tensor's storage.
    """

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            data = np.empty((0,), dtype=np.float32)
        if isinstance(data, TensorBase):
            self._set_fields(data.array, data.backend, requires_grad)
        else:
            super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class of all layers and models.

    Subclasses set Parameters, buffers and submodules as attributes in
    ``__init__`` and implement ``forward``; calling the module runs it.

    Example::

        class MLP(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1 = nn.Linear(784, 100)
                self.fc2 = nn.Linear(100, 10)

            def forward(self, x):
                return self.fc2(self.fc1(x).sigmoid())
    """

    def __init__(self):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())

    # ------------------------------------------------------ registration
    def __setattr__(self, name, value):
        d = self.__dict__
        if "_parameters" not in d:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() is called; call super().__init__() first"
            )
        params, buffers, modules = self._parameters, self._buffers, self._modules
        if isinstance(value, Parameter):
            self._forget(name, keep=params)
            params[name] = value
        elif isinstance(value, Module):
            self._forget(name, keep=modules)
            modules[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} to parameter {name!r}: expected a Parameter or None"
                )
            params[name] = None
        elif name in modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to submodule {name!r}: expected a Module or None")
            modules[name] = None
        elif name in buffers:
            if value is not None and not isinstance(value, TensorBase):
                raise TypeError(f"buffer {name!r} must be a Tensor or None, got {type(value).__name__}")
            buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name, keep):
        """Remove ``name`` from every store but ``keep`` (and from plain attributes)."""
        self.__dict__.pop(name, None)
        for store in (self._parameters, self._buffers, self._modules):
            if store is not keep:
                store.pop(name, None)

    def __getattr__(self, name):
        # Reached for every parameter, buffer and submodule a forward reads (several per layer and step):
        # three dict probes, no loop.
        d = self.__dict__
        params = d.get("_parameters")
        if params is not None:
            if name in params:
                return params[name]
            buffers = d["_buffers"]
            if name in buffers:
                return buffers[name]
            modules = d["_modules"]
            if name in modules:
                return modules[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter (or None, a declared but absent parameter)."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"parameter {name!r} must be a Parameter or None, got {type(param).__name__}")
        _check_name(self, name)
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Add a buffer: state saved in ``state_dict`` (if persistent) but not learned."""
        if tensor is not None and not isinstance(tensor, TensorBase):
            raise TypeError(f"buffer {name!r} must be a Tensor or None, got {type(tensor).__name__}")
        _check_name(self, name)
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: "Module | None") -> None:
        """Add a submodule."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{name!r} must be a Module, got {type(module).__name__}")
        _check_name(self, name)
        self._modules[name] = module

    register_module = add_module

    # ----------------------------------------------------------- calling
    def forward(self, *args, **kwargs):
        """Compute the module's output (override in subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # --------------------------------------------------------- traversal
    def named_modules(self, prefix: str = "", memo=None) -> Iterator[tuple[str, "Module"]]:
        """All modules in the tree (this one first), with dotted names."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self) -> Iterator["Module"]:
        """All modules in the tree, this one first."""
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        """Direct submodules with their names."""
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self) -> Iterator["Module"]:
        """Direct submodules."""
        for _, m in self.named_children():
            yield m

    def _named_members(self, store: str, recurse: bool):
        seen = set()
        mods = self.named_modules() if recurse else [("", self)]
        for prefix, mod in mods:
            for name, value in getattr(mod, store).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{prefix}.{name}" if prefix else name), value

    def named_parameters(self, recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        """Parameters with dotted names (each shared parameter once)."""
        return self._named_members("_parameters", recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """The learned parameters (what an optimizer updates)."""
        for _, p in self.named_parameters(recurse):
            yield p

    def named_buffers(self, recurse: bool = True) -> Iterator[tuple[str, Tensor]]:
        """Buffers with dotted names."""
        return self._named_members("_buffers", recurse)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        """The buffers (non-learned state)."""
        for _, b in self.named_buffers(recurse):
            yield b

    # ------------------------------------------------------------- modes
    def train(self, mode: bool = True) -> "Module":
        """Set training mode on this module and all submodules."""
        if not isinstance(mode, bool):
            raise TypeError(f"train() takes a bool, got {type(mode).__name__}")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        """Set evaluation (inference) mode; same as ``train(False)``."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        """Set ``requires_grad`` of every parameter."""
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all parameters (to None, or to zeros)."""
        zero_grads(self.parameters(), set_to_none)

    # ------------------------------------------------ device and dtypes
    def _apply_to_tensors(self, fn) -> "Module":
        """Replace the storage of every parameter, gradient and buffer by ``fn(array, backend)``.

        The tensors keep their identity, so optimizers built before the
        move keep working.
        """
        for m in self.modules():
            for store in (m._parameters, m._buffers):
                for t in store.values():
                    if t is not None:
                        _move(t, fn)
        return self

    def to(self, *args, device=None, dtype=None) -> "Module":
        """Move parameters and buffers to a device and/or cast floating ones to ``dtype`` (in place)."""
        device, dtype = _device_and_dtype("Module.to", args, device, dtype)
        target = get_backend(device) if device is not None else None
        dt = _check_dtype(dtype)
        if dt is not None and not is_floating(dt):
            raise TypeError(f"Module.to() only casts to floating dtypes, got {dt}")

        def convert(arr, backend):
            if target is not None and target is not backend:
                arr, backend = target.transfer(arr, backend), target
            if dt is not None and is_floating(arr.dtype) and arr.dtype != dt:
                arr = arr.astype(dt)
            return arr, backend

        return self._apply_to_tensors(convert)

    def cpu(self) -> "Module":
        """Move to the CPU."""
        return self.to("cpu")

    def cuda(self, index: int = 0) -> "Module":
        """Move to ``cuda:index``."""
        return self.to(f"cuda:{index}")

    def float(self) -> "Module":
        """Cast floating parameters and buffers to float32."""
        return self.to(dtype="float32")

    def double(self) -> "Module":
        """Cast floating parameters and buffers to float64."""
        return self.to(dtype="float64")

    def half(self) -> "Module":
        """Cast floating parameters and buffers to float16."""
        return self.to(dtype="float16")

    def bfloat16(self) -> "Module":
        """Cast floating parameters and buffers to bfloat16 (needs the ml_dtypes package)."""
        return self.to(dtype=_bfloat16_dtype())

    def apply(self, fn) -> "Module":
        """Call ``fn(module)`` on every submodule (children first) and on self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # -------------------------------------------------------- state dict
    def state_dict(self, prefix: str = "") -> "OrderedDict[str, Tensor]":
        """Parameters and persistent buffers by dotted name (detached, sharing storage)."""
        out = OrderedDict()
        for mprefix, m in self.named_modules(prefix.rstrip(".")):
            for name, p in m._parameters.items():
                if p is not None:
                    out[f"{mprefix}.{name}" if mprefix else name] = p.detach()
            for name, b in m._buffers.items():
                if b is not None and name not in m._non_persistent:
                    out[f"{mprefix}.{name}" if mprefix else name] = b.detach()
        return out

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy values from ``state_dict`` into this module's parameters and buffers.

        Every value must match the target's shape; floating values are cast
        to the target's dtype and moved to its device. With ``strict``
        (the default), missing or unexpected keys raise a KeyError listing
        them; otherwise they are returned as ``(missing, unexpected)``.
        Nothing is modified unless every check passes.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(f"load_state_dict expects a mapping, got {type(state_dict).__name__}")
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys: {missing}")
            if unexpected:
                parts.append(f"unexpected keys: {unexpected}")
            raise KeyError(f"error loading state dict into {type(self).__name__}: " + "; ".join(parts))
        staged = []
        for key, target in own.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            src = value.numpy_view() if isinstance(value, TensorBase) else np.asarray(value)
            if tuple(src.shape) != tuple(target.shape):
                raise ValueError(
                    f"size mismatch for {key!r}: the checkpoint has shape {tuple(src.shape)}, "
                    f"the model {tuple(target.shape)}"
                )
            if is_floating(src.dtype) != is_floating(target.dtype):
                raise TypeError(f"dtype mismatch for {key!r}: checkpoint {src.dtype}, model {target.dtype}")
            staged.append((target, src))
        for target, src in staged:
            target._bump_version()
            target.array[...] = target.backend.asarray(src.astype(target.dtype, copy=False))
        return missing, unexpected

    # -------------------------------------------------------------- repr
    def extra_repr(self) -> str:
        """Extra text for ``repr`` (override to show a module's settings)."""
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        children = [f"({name}): " + _indent(repr(m)) for name, m in self._modules.items() if m is not None]
        if not children:
            return f"{type(self).__name__}({extra})"
        lines = ([extra] if extra else []) + children
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


def _check_name(module, name):
    if not isinstance(name, str) or not name or "." in name:
        raise KeyError(f"invalid attribute name {name!r}: must be a non-empty string without '.'")
    if name in module.__dict__ and not any(
        name in store for store in (module._parameters, module._buffers, module._modules)
    ):
        raise KeyError(f"attribute {name!r} already exists")


def _move(t, fn):
    """Give tensor ``t`` (and its gradient) the storage ``fn(array, backend)`` in place."""
    grad = t.grad
    arr, backend = fn(t.array, t.backend)
    if arr is not t.array or backend is not t.backend:
        # A dtype or device change cannot go through the validating ``array``
        # setter; re-initialise the fields (same object, same requires_grad).
        t._set_fields(arr, backend, t.requires_grad)
    if grad is not None:
        garr, gbackend = fn(grad.array, grad.backend)
        if garr is not grad.array or gbackend is not grad.backend:
            grad._set_fields(garr, gbackend, False)
        t.grad = grad


def _indent(text: str) -> str:
    return text.replace("\n", "\n  ")
