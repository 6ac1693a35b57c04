"""Devices, the table of device types, and the default device.

A device is named ``"<type>"`` or ``"<type>:N"``: ``"cpu"``, ``"cuda"``,
``"cuda:1"``. The device types are the keys of one table, type → the
backend class that runs it (``"cpu"`` and ``"cuda"`` are built in;
``minigrad.backends.register_backend`` adds more), so a new backend is one
registration, and a device string is valid exactly when its type has a
backend. ``"cuda"`` means the first GPU, ``cuda:0``; the CPU has no index.

The default device (where factories such as ``minigrad.zeros`` put new
tensors) is held in a context variable, so a ``with minigrad.device("cuda"):``
block changes it only for the code inside.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import NamedTuple

__all__ = ["Device", "device", "device_types", "get_default_device", "set_default_device"]


class _DeviceType(NamedTuple):
    backend: str  # "package.module:Class", imported on first use
    indexed: bool  # whether devices of this type are numbered ("cuda:1"); the CPU is not


# Device type -> its backend. Written only through backends.register_backend.
_DEVICE_TYPES: dict[str, _DeviceType] = {
    "cpu": _DeviceType("minigrad.backends.cpu:CPUBackend", indexed=False),
    "cuda": _DeviceType("minigrad.backends.cuda_backend:CUDABackend", indexed=True),
}


def device_types() -> tuple[str, ...]:
    """The registered device types, ``("cpu", "cuda", ...)``.

    Example::

        minigrad.backends.device_types()   # ("cpu", "cuda")
    """
    return tuple(_DEVICE_TYPES)


def _known_types() -> str:
    return ", ".join(repr(t) for t in _DEVICE_TYPES)


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
                    raise ValueError(f"invalid device {spec!r}: expected a device type ({_known_types()}), "
                                     f"optionally followed by ':N'")
                idx = int(rest)
        else:
            raise TypeError(
                f"device must be a string like 'cpu' or 'cuda:0' or a Device, got {type(spec).__name__}"
            )
        kind_info = _DEVICE_TYPES.get(kind)
        if kind_info is None:
            raise ValueError(f"unknown device type {kind!r} in {spec!r}: expected one of {_known_types()}; "
                             f"minigrad.backends.register_backend adds more")
        if index is not None:
            if not isinstance(index, int) or isinstance(index, bool):
                raise TypeError(f"a device index must be an int, got {index!r}")
            if idx is not None and idx != index:
                raise ValueError(f"device {spec!r} given with a different index {index}")
            idx = index
        if not kind_info.indexed:
            if idx not in (None, 0):
                raise ValueError(f"invalid device {spec!r}: devices of type {kind!r} have no index")
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
