"""``Optimizer``: parameter groups, per-parameter state and (de)serialisation.

Updates run on the raw arrays through the parameters' backend (the fused
``backend.sgd_update`` / ``backend.adam_update``, or ``xp`` code), in place
and outside the graph, so the optimizer state lives on the parameters'
device. The state is keyed by the parameter objects themselves, as in
PyTorch, so ``copy.deepcopy((model, opt))`` and pickling keep each state
bound to its (copied) parameter.
"""

from __future__ import annotations

import copy
import warnings
from collections import defaultdict

import numpy as np

from .._dtypes import is_floating
from .._ext._engine import TensorBase
from ..autograd import enable_grad, zero_grads
from ..backends import to_host

__all__ = ["Optimizer"]

# Options added after state dicts were first saved: a group saved without one keeps the current value.
_OPTIONAL_GROUP_KEYS = frozenset({"foreach"})


class Optimizer:
    """Base class: holds ``param_groups`` (dicts with "params" and hyper-parameters) and ``state``.

    ``params`` is an iterable of Tensors or of dicts ``{"params": [...], "lr": ...}``
    whose entries override ``defaults`` for that group. Tensors that do not
    require grad are accepted and skipped while they have no gradient (the
    freeze-then-``model.parameters()`` pattern). A subclass lists the
    per-parameter state it keeps in ``state_keys`` and implements
    ``_update(p, grad, state, group)`` on raw arrays (``state`` is the
    parameter's dict in ``self.state``).

    Example::

        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        opt.zero_grad(); loss.backward(); opt.step()
    """

    #: Names of the per-parameter state entries; "step" is a number, the others arrays shaped like the parameter.
    state_keys: tuple = ()

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        self.state: dict = defaultdict(dict)  # parameter Tensor -> dict of arrays/numbers, as in PyTorch
        if isinstance(params, TensorBase):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            f"but got {type(params).__name__}")
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        for group in params:
            self.add_param_group(group)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters with its own hyper-parameters.

        A parameter listed twice in the group is kept once, with PyTorch's
        UserWarning; one already in another group is an error.
        """
        if not isinstance(param_group, dict) or "params" not in param_group:
            raise TypeError("a parameter group must be a dict with a 'params' entry")
        params = param_group["params"]
        params = [params] if isinstance(params, TensorBase) else list(params)
        for p in params:
            if not isinstance(p, TensorBase):
                raise TypeError(f"optimizers take Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
            if not is_floating(p.dtype):
                raise TypeError(f"optimizers update floating tensors, got one of dtype {p.dtype}")
        unique = list({id(p): p for p in params}.values())
        if len(unique) != len(params):
            warnings.warn("optimizer contains a parameter group with duplicate parameters; each is updated once",
                          UserWarning, stacklevel=3)
        existing = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in existing for p in unique):
            raise ValueError("some parameters appear in more than one parameter group")
        full = dict(self.defaults)
        full.update(param_group)
        full["params"] = unique
        self._validate_group(full)
        self.param_groups.append(full)

    def _validate_group(self, group: dict) -> None:
        """Check hyper-parameters of a group (subclasses raise ValueError)."""
        if not group["lr"] >= 0.0:
            raise ValueError(f"invalid learning rate {group['lr']}: must be >= 0")
        for key in ("eps", "weight_decay"):
            if key in group and not group[key] >= 0.0:
                raise ValueError(f"invalid {key} {group[key]}: must be >= 0")

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all optimized parameters."""
        zero_grads((p for group in self.param_groups for p in group["params"]), set_to_none)

    def step(self, closure=None):
        """Update every parameter that has a gradient; return ``closure()``'s loss when one is given.

        ``closure`` re-evaluates the model and returns the loss (it should
        call ``zero_grad`` and ``backward``); it runs with grad mode on,
        before the update.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, states = [], [], []
            maximize = group.get("maximize")
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                p._bump_version()
                params.append(p)
                grads.append(-grad.array if maximize else grad.array)
                states.append(self._param_state(p))
            if params:
                self._update_group(params, grads, states, group)
        return loss

    def _update(self, p, grad, state: dict, group: dict) -> None:
        """Update ``p.array`` in place from the gradient array ``grad`` (override)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _update")

    def _update_group(self, params: list, grads: list, states: list, group: dict) -> None:
        """Update the parameters of one group that have gradients (``grads``: their arrays, ``states``:
        their state dicts). The default calls ``_update`` for each; an optimizer with a multi-tensor
        (``foreach``) kernel overrides it."""
        for p, grad, st in zip(params, grads, states):
            self._update(p, grad, st, group)

    # ------------------------------------------------------------ state
    def _param_state(self, p) -> dict:
        st = self.state[p]
        if st:
            _follow_parameter(p, st)
        return st

    def state_dict(self) -> dict:
        """``{"state": {index: {...}}, "param_groups": [...]}`` with parameters replaced by indices.

        State arrays are returned as host (NumPy) copies, so the result can
        be saved with ``minigrad.save`` whatever the device.
        """
        index, groups = {}, []
        for group in self.param_groups:
            g = {k: v for k, v in group.items() if k != "params"}
            g["params"] = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                g["params"].append(index[id(p)])
            groups.append(g)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state.get(p)
                if st:
                    state[index[id(p)]] = {
                        k: (np.array(p.backend.to_numpy(v), copy=True) if hasattr(v, "shape") else v)
                        for k, v in st.items()
                    }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore state saved by ``state_dict`` (onto the parameters' devices and dtypes).

        Refuses, before changing anything, a state dict of another shape or
        of another optimizer (its groups lack this one's hyper-parameters, or
        its state has entries this optimizer does not keep).
        """
        if not isinstance(state_dict, dict) or "param_groups" not in state_dict or "state" not in state_dict:
            raise ValueError("not an optimizer state dict: expected keys 'state' and 'param_groups'")
        name = type(self).__name__
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"the state dict has {len(groups)} parameter groups, the optimizer {len(self.param_groups)}"
            )
        for i, (saved, own) in enumerate(zip(groups, self.param_groups)):
            missing = sorted(k for k in self.defaults if k not in saved and k not in _OPTIONAL_GROUP_KEYS)
            if missing:
                raise ValueError(f"loaded state dict is not a {name} state dict: parameter group {i} lacks "
                                 f"{missing} (saved from another optimizer?)")
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(
                    f"parameter group {i} has {len(saved['params'])} parameters in the state dict and "
                    f"{len(own['params'])} in the optimizer"
                )
        by_index = {}
        for saved, own in zip(groups, self.param_groups):
            for idx, p in zip(saved["params"], own["params"]):
                by_index[int(idx)] = p
        new_state = defaultdict(dict)
        for idx, st in state_dict["state"].items():
            p = by_index.get(int(idx))
            if p is None:
                raise ValueError(f"state for parameter {idx}, which is in no parameter group")
            foreign = sorted(k for k in st if k not in self.state_keys)
            if foreign:
                raise ValueError(f"loaded state dict is not a {name} state dict: the state of parameter {idx} has "
                                 f"{foreign}, which {name} does not keep (it keeps {list(self.state_keys)})")
            new_state[p] = {k: _state_value(k, v, p, idx) for k, v in st.items()}
        for saved, own in zip(groups, self.param_groups):
            for k, v in saved.items():
                if k != "params":
                    own[k] = copy.deepcopy(v)
        self.state = new_state

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(g):
                if k != "params":
                    lines.append(f"    {k}: {g[k]}")
        lines.append(")")
        return "\n".join(lines)


def _by_backend(params) -> dict:
    """Indices of ``params`` by backend, in order (usually one backend: every index); the multi-tensor
    (``foreach``) updates make one call per backend."""
    groups = {}
    for i, p in enumerate(params):
        groups.setdefault(p.backend, []).append(i)
    return groups


def _state_value(key, value, p, idx):
    """A loaded state entry: "step" as a number, the others as arrays of the parameter's shape, dtype, device."""
    if key == "step":
        return value.item() if hasattr(value, "item") else value
    arr = value.numpy_view() if isinstance(value, TensorBase) else to_host(value)
    if tuple(arr.shape) != tuple(p.shape):
        raise ValueError(f"state {key!r} of parameter {idx} has shape {tuple(arr.shape)}, the parameter "
                         f"{tuple(p.shape)}")
    # np.array (not ascontiguousarray, which turns a 0-d array into shape (1,)).
    return p.backend.from_numpy(np.array(arr, dtype=p.dtype, order="C", copy=True))


def _follow_parameter(p, state: dict) -> None:
    """Keep a parameter's state arrays on its device and in its dtype.

    ``Module.to()`` moves and casts parameters in place (same Tensor
    objects), so state created before the move is converted here, once, on
    the next step: the optimizer keeps working after ``model.to("cuda")``
    or ``model.double()``.
    """
    array_type, dtype = type(p.array), p.dtype
    for key, value in state.items():
        if hasattr(value, "shape") and hasattr(value, "dtype") and (type(value) is not array_type
                                                                    or value.dtype != dtype):
            state[key] = p.backend.from_numpy(np.array(to_host(value), dtype=dtype, order="C"))
