"""The registry of normalizers: built-ins and plugins, found by name.

Every normalizer, built-in or third-party, is a ``Normalizer`` subclass
registered under a name::

    from minigrad.norm import Normalizer, register

    @register("RMSNorm")
    class RMSNorm(Normalizer):
        ...

    layer = minigrad.norm.create("RMSNorm", 64)

Installed packages add normalizers through the entry-point group
``minigrad.normalizers`` (``name = "package.module:Class"``). Entry points
are loaded lazily, on the first lookup (``get``, ``create``, ``available``),
never by ``import minigrad``; a plugin that fails to load (any exception,
``sys.exit()`` included; only Ctrl-C passes) is skipped with a warning that
names it.

A name can be registered once. Registering it again raises unless
``override=True``; overriding a built-in additionally warns, so a built-in
is never shadowed silently.
"""

from __future__ import annotations

import difflib
import threading
import warnings
from importlib import metadata

from .base import Normalizer

__all__ = ["ENTRY_POINT_GROUP", "RegistryError", "PluginWarning", "register", "unregister", "get", "available",
           "create", "is_builtin", "builtin_normalizers", "load_plugins"]

#: The entry-point group third-party packages declare their normalizers in.
ENTRY_POINT_GROUP = "minigrad.normalizers"

_REGISTRY: dict[str, type] = {}
# name -> minigrad's own class, kept when a plugin overrides it.
_BUILTINS: dict[str, type] = {}
_plugins_loaded = False
_loading = False
_lock = threading.RLock()


class RegistryError(KeyError):
    """A normalizer name is unknown, or is already taken."""

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0]) if self.args else ""


class PluginWarning(UserWarning):
    """A normalizer plugin could not be loaded (it is skipped)."""


def _is_builtin_class(cls) -> bool:
    return cls.__module__.startswith("minigrad.norm.")


def register(name: str | None = None, *, override: bool = False):
    """Class decorator: register a ``Normalizer`` subclass under ``name``.

    ``name`` defaults to the class name. A name already taken raises
    ``RegistryError`` unless ``override=True``; overriding a built-in also
    emits a ``UserWarning``. Returns the class unchanged.

    Example::

        @minigrad.norm.register("RMSNorm")
        class RMSNorm(minigrad.norm.Normalizer):
            ...
    """
    if callable(name) and not isinstance(name, str):  # used as @register without parentheses
        return register()(name)

    def decorate(cls):
        if not (isinstance(cls, type) and issubclass(cls, Normalizer)):
            raise TypeError(f"register: {cls!r} is not a subclass of minigrad.norm.Normalizer")
        key = cls.__name__ if name is None else name
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"register: a normalizer name must be a Python identifier, got {key!r}")
        axis = cls.channel_axis
        if axis is not None and (not isinstance(axis, int) or isinstance(axis, bool)):
            raise TypeError(f"register: {cls.__name__}.channel_axis must be an int or None, got {axis!r}")
        with _lock:
            old = _REGISTRY.get(key)
            if old is not None and old is not cls:
                if not override:
                    raise RegistryError(
                        f"a normalizer named {key!r} is already registered ({_qualname(old)}); pass "
                        f"override=True to replace it, or choose another name"
                    )
                if key in _BUILTINS:
                    warnings.warn(f"{_qualname(cls)} overrides the built-in normalizer {key!r}", UserWarning,
                                  stacklevel=3)
            _REGISTRY[key] = cls
            if _is_builtin_class(cls):
                _BUILTINS[key] = cls
        cls.registry_name = key
        return cls

    return decorate


def unregister(name: str) -> type:
    """Remove ``name`` from the registry and return the class it named.

    A built-in cannot be removed; unregistering a class that overrides a
    built-in restores the built-in.
    """
    with _lock:
        cls = _REGISTRY.get(name)
        if cls is None:
            raise RegistryError(f"no normalizer named {name!r} is registered")
        builtin = _BUILTINS.get(name)
        if builtin is cls:
            raise RegistryError(f"{name!r} is a built-in normalizer and cannot be unregistered")
        if builtin is not None:
            _REGISTRY[name] = builtin
        else:
            del _REGISTRY[name]
        return cls


def get(name: str) -> type:
    """The normalizer class registered as ``name`` (loads plugins on first use).

    Raises ``RegistryError`` (a ``KeyError``) listing close matches when
    the name is unknown.
    """
    cls = _REGISTRY.get(name)
    if cls is not None and _plugins_loaded:
        return cls
    load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise RegistryError(
            f"no normalizer named {name!r}{hint} (available: {', '.join(available())})"
        ) from None


def available() -> list[str]:
    """Sorted names of every registered normalizer (built-ins and loaded plugins)."""
    load_plugins()
    return sorted(_REGISTRY)


def is_builtin(name: str) -> bool:
    """True if ``name`` is one of minigrad's own normalizers."""
    return name in _BUILTINS


def builtin_normalizers() -> dict[str, type]:
    """minigrad's own normalizers, ``{name: class}``, as they were registered (plugins are not loaded).

    Example::

        sorted(minigrad.norm.builtin_normalizers())   # ['BatchNorm1d', 'BatchNorm2d', 'GroupNorm', ...]
    """
    return dict(_BUILTINS)


def create(name: str, *args, **kwargs):
    """Instantiate the normalizer registered as ``name``: ``get(name)(*args, **kwargs)``.

    Example::

        bn = minigrad.norm.create("BatchNorm2d", 64, momentum=0.01)
    """
    return get(name)(*args, **kwargs)


def load_plugins(reload: bool = False) -> list[str]:
    """Load the normalizers declared in the ``minigrad.normalizers`` entry-point group.

    Runs once (again with ``reload=True``, e.g. after installing a plugin
    in a running process). Each entry point ``name = "module:Class"`` is
    imported and registered as ``name`` unless the import already
    registered it; one that fails is skipped with a ``PluginWarning``.
    Returns the names loaded by this call.
    """
    global _plugins_loaded, _loading
    with _lock:
        if (_plugins_loaded and not reload) or _loading:
            return []
        _loading = True
        try:
            loaded = []
            for ep in _entry_points():
                if _load_one(ep):
                    loaded.append(ep.name)
            _plugins_loaded = True
            return loaded
        finally:
            _loading = False


def _entry_points():
    try:
        return list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception as exc:  # a broken distribution's metadata must not break minigrad
        warnings.warn(f"minigrad: could not read the {ENTRY_POINT_GROUP!r} entry points: {exc!r}", PluginWarning,
                      stacklevel=4)
        return []


def _load_one(ep) -> bool:
    dist = getattr(getattr(ep, "dist", None), "name", None)
    origin = f"{ep.name} = {ep.value}" + (f" (from distribution {dist!r})" if dist else "")
    try:
        obj = ep.load()
        if not (isinstance(obj, type) and issubclass(obj, Normalizer)):
            raise TypeError(f"it points to {obj!r}, not to a minigrad.norm.Normalizer subclass")
        if _REGISTRY.get(ep.name) is not obj:
            register(ep.name)(obj)
        return True
    except KeyboardInterrupt:  # the user's Ctrl-C is not the plugin's failure
        raise
    except BaseException as exc:  # a plugin's sys.exit() or odd BaseException must not end the host program
        warnings.warn(f"minigrad: skipping the normalizer plugin {origin}: {type(exc).__name__}: {exc}",
                      PluginWarning, stacklevel=4)
        return False


def _qualname(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
