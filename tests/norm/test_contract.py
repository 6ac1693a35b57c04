"""The normalizer contract on every built-in normalizer, through the public ``NormalizerTestCase``.

One subclass per built-in, generated from the registry (a new built-in is
tested by being registered). The example plugins run the same class from
their own test suites (examples/*_plugin/tests).
"""

from __future__ import annotations

import minigrad
from minigrad.testing import NormalizerTestCase

for _name in sorted(minigrad.norm.builtin_normalizers()):
    globals()[f"Test{_name}"] = type(f"Test{_name}", (NormalizerTestCase,), {"normalizer": _name, "__doc__":
                                     f"The normalizer contract on the built-in {_name}."})


def test_builtins_and_example_plugins_are_registered():
    names = minigrad.norm.available()
    builtins = minigrad.norm.builtin_normalizers()
    assert {"BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d"} <= set(builtins)
    assert all(minigrad.norm.is_builtin(name) and name in names for name in builtins)
    for plugin in ("RMSNorm", "FusedRMSNorm", "BatchRenorm1d", "BatchRenorm2d", "GhostBatchNorm1d",
                   "GhostBatchNorm2d"):
        assert plugin in names and not minigrad.norm.is_builtin(plugin), f"the example plugin {plugin} was not found"


def test_every_builtin_has_a_contract_class():
    assert {f"Test{name}" for name in minigrad.norm.builtin_normalizers()} <= set(globals())
