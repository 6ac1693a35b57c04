"""Testing helpers for minigrad and its plugins.

* ``gradcheck``, ``gradgradcheck``, ``numerical_vjp``: finite-difference
  checks of first and second derivatives;
* ``NormalizerTestCase`` (``minigrad.testing.normalizer``): the normalizer
  contract as a pytest test class a plugin's test suite subclasses;
* ``minigrad.testing.strategies``: Hypothesis strategies for tensors.

``NormalizerTestCase`` and ``strategies`` need pytest and Hypothesis (the
``test`` extra) and are imported on first use.

Example::

    from minigrad.testing import NormalizerTestCase

    class TestMyNorm(NormalizerTestCase):
        normalizer = "MyNorm"
"""

import importlib

from .finite_differences import GradcheckError, gradcheck, gradgradcheck, numerical_vjp

__all__ = ["gradcheck", "gradgradcheck", "GradcheckError", "numerical_vjp", "NormalizerTestCase", "strategies"]

# Optional dependencies (pytest, Hypothesis): these load on first access.
_ON_DEMAND = {"strategies": ("strategies", None), "normalizer": ("normalizer", None),
              "NormalizerTestCase": ("normalizer", "NormalizerTestCase")}


def __getattr__(name):
    if name in _ON_DEMAND:
        module_name, attr = _ON_DEMAND[name]
        # import_module, not "from . import": the latter looks the attribute up first, which would call this
        # function again.
        module = importlib.import_module(f"{__name__}.{module_name}")
        return module if attr is None else getattr(module, attr)
    raise AttributeError(f"module 'minigrad.testing' has no attribute {name!r}")
