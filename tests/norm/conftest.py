"""Shared fixtures of the normalizer tests.

(The example plugin projects, examples/*_plugin, are made importable with
their entry points by the repository's root conftest.py, so the registry
tests find them as installed plugins.)
"""

from __future__ import annotations

import numpy as np
import pytest

from minigrad.testing import NormalizerTestCase


@pytest.fixture
def rng():
    """A NumPy generator, the same in every test."""
    return np.random.default_rng(20150211)


@pytest.fixture
def randomize_module():
    """``randomize(module, rng)``: random γ, β and running statistics (``NormalizerTestCase.randomize``)."""
    return NormalizerTestCase.randomize
