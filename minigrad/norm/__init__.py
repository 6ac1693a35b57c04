"""Normalizers: a plugin registry centred on Batch Normalization.

* The registry: ``register`` (a class decorator), ``get``, ``available``,
  ``create``; third-party packages add normalizers through the entry-point
  group ``minigrad.normalizers`` (loaded lazily, on the first lookup).
* ``Normalizer``: the base class and plugin contract (see its docstring and
  docs/normalizers.md, docs/plugins.md); ``minigrad.testing.NormalizerTestCase``
  tests a normalizer against it.
* The built-ins, registered like any plugin: ``BatchNorm1d``,
  ``BatchNorm2d``, ``LayerNorm``, ``GroupNorm``, ``InstanceNorm1d``,
  ``InstanceNorm2d`` (and ``LazyBatchNorm1d``/``2d``).
* ``functional``: ``batch_norm``, ``layer_norm``, ``group_norm``,
  ``instance_norm``, and the building blocks of normalizers with running
  statistics (``batch_norm_train``, ``batch_norm_eval``,
  ``instance_norm_train``, ``update_running_stats``).
* ``fold(model)``: an inference copy with eval-mode BatchNorms folded into
  the preceding Linear/Conv2d (the paper's Algorithm 2).
* ``recompute_statistics(model, batches)``: every BatchNorm's running
  statistics recomputed from training mini-batches (Algorithm 2, steps
  8–11; "precise BN").

Every module of this package is imported here, so a new built-in normalizer
is one file with its ``@register`` line: importing it registers it, and the
layers (the ``Module`` classes in ``__all__``) of every module that
registers a built-in become names of this package and of ``minigrad.nn``
(PyTorch's namespace; ``nn`` is the layer below, so it is this package that
adds them there), as the normalization functions become names of
``minigrad.nn.functional``. Any other registered normalizer is an attribute
too: ``minigrad.norm.RMSNorm`` once a plugin registered it.

Example::

    import minigrad
    bn = minigrad.norm.create("BatchNorm2d", 16)
    minigrad.norm.available()   # ['BatchNorm1d', 'BatchNorm2d', 'GroupNorm', ...]
"""

import importlib as _importlib
import pkgutil as _pkgutil
import sys as _sys

from .. import nn as _nn
from . import functional
from .base import Example, Normalizer
from .fold import ChannelAffine, Folded, FoldError, fold
from .precise import recompute_statistics
from .registry import (ENTRY_POINT_GROUP, PluginWarning, RegistryError, available, builtin_normalizers, create, get,
                       is_builtin, load_plugins, register, unregister)

__all__ = [
    "ChannelAffine", "ENTRY_POINT_GROUP", "Example", "Folded", "FoldError", "Normalizer", "PluginWarning",
    "RegistryError", "available", "builtin_normalizers", "create", "fold", "functional", "get", "is_builtin",
    "load_plugins", "recompute_statistics", "register", "unregister",
]

for _module in _pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        _importlib.import_module(f"{__name__}.{_module.name}")


def _publish():
    """The layers of the built-in modules into this package and ``minigrad.nn``; the functions
    ``minigrad.nn.functional`` declares but cannot define (they are ``functional``'s) into it."""
    for module in sorted({cls.__module__ for cls in builtin_normalizers().values()}):
        for name in _sys.modules[module].__all__:
            obj = getattr(_sys.modules[module], name)
            if not (isinstance(obj, type) and issubclass(obj, _nn.Module)):
                continue
            for namespace in (_sys.modules[__name__], _nn):
                setattr(namespace, name, obj)
                if name not in namespace.__all__:
                    namespace.__all__.append(name)
    for name in _nn.functional.__all__:
        if not hasattr(_nn.functional, name):
            setattr(_nn.functional, name, getattr(functional, name))


_publish()


def __getattr__(name):
    # Any other registered normalizer (a plugin).
    if not name.startswith("_"):
        try:
            return get(name)
        except RegistryError:
            pass
    raise AttributeError(f"module 'minigrad.norm' has no attribute {name!r}")
