"""Devices and the default device.

A device is named ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; ``"cuda"`` means the
first GPU, ``cuda:0``. The default device (where factories such as
``minigrad.zeros`` put new tensors) is held in a context variable, so a
``with minigrad.device("cuda"):`` block changes it only for the code inside.
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["Device", "device", "get_default_device", "set_default_device"]

_KINDS = ("cpu", "cuda")


class Device:
    """A device name, parsed and validated: ``Device("cuda:1")``.

    Compares equal to its string form (``Device("cuda") == "cuda:0"``) and can
    be used as a context manager that makes it the default device::

        with minigrad.device("cuda"):
            x = minigrad.zeros(3)   # on cuda:0
    """

    __slots__ = ("type", "index", "_tokens")

    def __init__(self, spec: "str | Device", index: int | None = None):
        if isinstance(spec, Device):
            kind, idx = spec.type, spec.index
        elif isinstance(spec, str):
            kind, _, rest = spec.strip().lower().partition(":")
            idx = None
            if rest:
                if not rest.isdigit():
                    raise ValueError(f"invalid device {spec!r}: expected 'cpu', 'cuda' or 'cuda:N'")
                idx = int(rest)
        else:
            raise TypeError(
                f"device must be a string like 'cpu' or 'cuda:0' or a Device, got {type(spec).__name__}"
            )
        if kind not in _KINDS:
            raise ValueError(f"unknown device type {kind!r} in {spec!r}: expected one of {_KINDS}")
        if index is not None:
            if idx is not None and idx != index:
                raise ValueError(f"device {spec!r} given with a different index {index}")
            idx = index
        if kind == "cpu":
            if idx not in (None, 0):
                raise ValueError(f"invalid device {spec!r}: the CPU has no index")
            idx = None
        elif idx is None:
            idx = 0
        elif idx < 0:
            raise ValueError(f"invalid device index {idx}")
        self.type = kind
        self.index = idx
        self._tokens = []

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        return f"device('{self}')"

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            try:
                other = Device(other)
            except (ValueError, TypeError):
                return False
        if not isinstance(other, Device):
            return NotImplemented
        return self.type == other.type and self.index == other.index

    def __hash__(self) -> int:
        return hash(str(self))

    def __enter__(self) -> "Device":
        self._tokens.append(_DEFAULT_DEVICE.set(self))
        return self

    def __exit__(self, *exc) -> None:
        _DEFAULT_DEVICE.reset(self._tokens.pop())


#: Lower-case alias, as in ``torch.device``.
device = Device

_DEFAULT_DEVICE: ContextVar[Device] = ContextVar("minigrad_default_device", default=Device("cpu"))


def get_default_device() -> Device:
    """Return the device new tensors are created on when none is given."""
    return _DEFAULT_DEVICE.get()


def set_default_device(dev: "str | Device") -> None:
    """Set the default device for the current context (thread or task)."""
    _DEFAULT_DEVICE.set(Device(dev))
