"""``Optimizer``: parameter groups, per-parameter state and (de)serialisation.

Updates run on the raw arrays through the parameters' backend
(``backend.sgd_update`` / ``backend.adam_update``), in place and outside
the graph, so the optimizer state lives on the parameters' device.
"""

from __future__ import annotations

import copy

import numpy as np

from .._ext._engine import TensorBase
from ..autograd import zero_grads
from ..backends import to_host

__all__ = ["Optimizer"]


class Optimizer:
    """Base class: holds ``param_groups`` (dicts with "params" and hyper-parameters) and ``state``.

    ``params`` is an iterable of Tensors or of dicts ``{"params": [...], "lr": ...}``
    whose entries override ``defaults`` for that group.
    """

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        self.state: dict = {}  # id(param) -> dict of arrays/numbers
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        for group in params:
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        """Add a group of parameters with its own hyper-parameters."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError("a parameter group must be a dict with a 'params' entry")
        params = group["params"]
        params = [params] if isinstance(params, TensorBase) else list(params)
        for p in params:
            if not isinstance(p, TensorBase):
                raise TypeError(f"optimizers take Tensors, got {type(p).__name__}")
            if not p.requires_grad:
                raise ValueError("optimizing a tensor that does not require grad")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf tensor")
        existing = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in existing for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        full = dict(self.defaults)
        full.update(group)
        full["params"] = params
        self._validate_group(full)
        self.param_groups.append(full)

    def _validate_group(self, group: dict) -> None:
        """Check hyper-parameters of a group (subclasses raise ValueError)."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all optimized parameters."""
        zero_grads((p for group in self.param_groups for p in group["params"]), set_to_none)

    def step(self):
        """Update the parameters from their ``.grad`` (override)."""
        raise NotImplementedError

    # ------------------------------------------------------------ state
    def _param_state(self, p) -> dict:
        st = self.state.get(id(p))
        if st is None:
            st = self.state[id(p)] = {}
        elif st:
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
                st = self.state.get(id(p))
                if st:
                    state[index[id(p)]] = {
                        k: (np.array(p.backend.to_numpy(v), copy=True) if hasattr(v, "shape") else v)
                        for k, v in st.items()
                    }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore state saved by ``state_dict`` (onto the parameters' devices and dtypes)."""
        if not isinstance(state_dict, dict) or "param_groups" not in state_dict or "state" not in state_dict:
            raise ValueError("not an optimizer state dict: expected keys 'state' and 'param_groups'")
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"the state dict has {len(groups)} parameter groups, the optimizer {len(self.param_groups)}"
            )
        for i, (saved, own) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(
                    f"parameter group {i} has {len(saved['params'])} parameters in the state dict and "
                    f"{len(own['params'])} in the optimizer"
                )
        by_index = {}
        for saved, own in zip(groups, self.param_groups):
            for idx, p in zip(saved["params"], own["params"]):
                by_index[int(idx)] = p
        new_state = {}
        for idx, st in state_dict["state"].items():
            p = by_index.get(int(idx))
            if p is None:
                raise ValueError(f"state for parameter {idx}, which is in no parameter group")
            converted = {}
            for k, v in st.items():
                if hasattr(v, "shape") and getattr(v, "ndim", 0) > 0:
                    arr = v.numpy_view() if isinstance(v, TensorBase) else to_host(v)
                    if tuple(arr.shape) != tuple(p.shape):
                        raise ValueError(
                            f"state {k!r} of parameter {idx} has shape {tuple(arr.shape)}, the parameter {tuple(p.shape)}"
                        )
                    v = p.backend.from_numpy(np.ascontiguousarray(arr, dtype=p.dtype))
                elif hasattr(v, "item"):
                    v = v.item()
                converted[k] = v
            new_state[id(p)] = converted
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
            state[key] = p.backend.from_numpy(np.ascontiguousarray(to_host(value), dtype=dtype))
