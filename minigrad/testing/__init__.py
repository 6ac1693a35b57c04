"""Testing helpers for minigrad and its plugins: ``gradcheck``, ``gradgradcheck`` and Hypothesis strategies.

``minigrad.testing.strategies`` needs Hypothesis (the ``test`` extra) and is
imported on demand.
"""

from .finite_differences import GradcheckError, gradcheck, gradgradcheck, numerical_vjp

__all__ = ["gradcheck", "gradgradcheck", "GradcheckError", "numerical_vjp", "strategies"]


def __getattr__(name):
    if name == "strategies":
        # import_module, not "from . import": the latter looks the attribute up
        # first, which would call this function again.
        import importlib

        return importlib.import_module(f"{__name__}.strategies")
    raise AttributeError(f"module 'minigrad.testing' has no attribute {name!r}")
