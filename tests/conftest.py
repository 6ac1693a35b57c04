"""Shared test configuration: Hypothesis profiles and the device fixture.

Profiles (select with HYPOTHESIS_PROFILE, default "dev"; CI uses "ci"):

* ``ci``: bounded and derandomized, no deadline (a shared 2-core machine);
* ``dev``: the default for local runs, a little broader;
* ``thorough``: many examples, for a long local run before a release.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import minigrad
from minigrad.testing.strategies import available_devices

settings.register_profile(
    "ci", max_examples=12, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

ALL_DEVICES = ["cpu", "cuda"]


def _device_param(name):
    # The cuda cases carry the "cuda" marker: ``pytest -m cuda`` runs every test that needs a GPU (tools/gpu_check.py).
    marks = [] if name == "cpu" else [pytest.mark.cuda]
    if name == "cpu" or name in available_devices():
        return pytest.param(name, id=name, marks=marks)
    reason = minigrad.cuda.unavailable_reason() or "CUDA is not available"
    return pytest.param(name, id=name, marks=[*marks, pytest.mark.skip(reason=f"no CUDA device: {reason}")])


@pytest.fixture(params=[_device_param(d) for d in ALL_DEVICES], scope="session")
def device(request):
    """Every device kind; the CUDA cases are skipped (with the reason) where there is no GPU."""
    return request.param


# Every case skipped for want of a GPU shares this prefix; the hook below gives them all this file's
# location, so pytest's summary (-ra) folds them into one "SKIPPED [N] ... no CUDA device: ..." line
# and the other skip reasons stay visible.
CUDA_SKIP_PREFIX = "no CUDA device"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
        if reason.removeprefix("Skipped: ").startswith(CUDA_SKIP_PREFIX):
            report.longrepr = (__file__, None, reason.removeprefix("Skipped: "))


@pytest.fixture(autouse=True)
def _seed():
    """Each test starts from the same random state."""
    minigrad.manual_seed(1234)
    np.random.seed(1234)
    yield
