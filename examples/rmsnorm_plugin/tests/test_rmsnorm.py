"""RMSNorm's tests: minigrad's normalizer contract, through the public ``NormalizerTestCase``.

Run with ``pytest`` once the package (and ``minigrad-bn[test]``) is installed.
"""

from minigrad.testing import NormalizerTestCase
from minigrad_rmsnorm import RMSNorm
from minigrad_rmsnorm.fused import FusedRMSNorm


class TestRMSNorm(NormalizerTestCase):
    """The contract on RMSNorm (composed of minigrad ops; autograd derives its backward)."""

    normalizer = RMSNorm  # it declares standardizes = False: it rescales but does not centre


class TestFusedRMSNorm(NormalizerTestCase):
    """The contract on FusedRMSNorm (a hand-written backward, checked by finite differences, and a vjp)."""

    normalizer = FusedRMSNorm
