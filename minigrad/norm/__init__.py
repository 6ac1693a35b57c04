"""Normalizers: a plugin registry centred on Batch Normalization.

* The registry: ``register`` (a class decorator), ``get``, ``available``,
  ``create``; third-party packages add normalizers through the entry-point
  group ``minigrad.normalizers`` (loaded lazily, on the first lookup).
* ``Normalizer``: the base class and plugin contract (see its docstring and
  docs/normalizers.md, docs/plugins.md).
* The built-ins, registered like any plugin: ``BatchNorm1d``,
  ``BatchNorm2d``, ``LayerNorm``, ``GroupNorm``, ``InstanceNorm1d``,
  ``InstanceNorm2d`` (also available from ``minigrad.nn``).
* ``functional``: ``batch_norm``, ``layer_norm``, ``group_norm``,
  ``instance_norm`` (also ``minigrad.nn.functional``).
* ``fold(model)``: an inference copy with eval-mode BatchNorms folded into
  the preceding Linear/Conv2d (the paper's Algorithm 2).
* ``recompute_statistics(model, batches)``: every BatchNorm's running
  statistics recomputed from training mini-batches (Algorithm 2, steps
  8–11; "precise BN").

Every registered normalizer is also an attribute of this package:
``minigrad.norm.RMSNorm`` once a plugin registered it.

Example::

    import minigrad
    bn = minigrad.norm.create("BatchNorm2d", 16)
    minigrad.norm.available()   # ['BatchNorm1d', 'BatchNorm2d', 'GroupNorm', ...]
"""

import importlib as _importlib
import pkgutil as _pkgutil

from . import functional
from .base import Example, Normalizer
from .fold import ChannelAffine, Folded, FoldError, fold
from .precise import recompute_statistics
from .registry import (ENTRY_POINT_GROUP, PluginWarning, RegistryError, available, create, get, is_builtin,
                       load_plugins, register, unregister)

# The built-ins, imported by name for readers and documentation tools ...
from .batchnorm import BatchNorm1d, BatchNorm2d
from .groupnorm import GroupNorm
from .instancenorm import InstanceNorm1d, InstanceNorm2d
from .layernorm import LayerNorm

# ... and every other module of this package, so a new built-in is one file
# with its @register line: importing the module registers it.
_INFRASTRUCTURE = {"base", "fold", "functional", "precise", "registry"}
for _module in _pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name not in _INFRASTRUCTURE:
        _importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "BatchNorm1d", "BatchNorm2d", "ChannelAffine", "ENTRY_POINT_GROUP", "Example", "Folded", "FoldError", "GroupNorm",
    "InstanceNorm1d", "InstanceNorm2d", "LayerNorm", "Normalizer", "PluginWarning", "RegistryError", "available",
    "create", "fold", "functional", "get", "is_builtin", "load_plugins", "recompute_statistics", "register",
    "unregister",
]


def __getattr__(name):
    # Any registered normalizer (a plugin, or a built-in not imported above).
    if not name.startswith("_"):
        try:
            return get(name)
        except RegistryError:
            pass
    raise AttributeError(f"module 'minigrad.norm' has no attribute {name!r}")
