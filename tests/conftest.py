"""Shared test configuration: the device and backend fixtures.

(The Hypothesis profiles are registered by the repository's root conftest.py,
which also serves the example plugins' test suites.)
"""

import importlib.util
import pathlib
import shutil

import numpy as np
import pytest

import minigrad
from minigrad import backends
from minigrad.device import _DEVICE_TYPES, Device
from minigrad.testing.strategies import available_devices

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


def _install_backend(device: str, backend) -> None:
    """Let the device ``device`` (a string) be run by the backend object ``backend``."""
    dev = Device(device)
    backends._INSTANCES[dev] = backend
    backends._BY_NAME.update({device: backend, str(dev): backend})


@pytest.fixture
def backend_tables():
    """The device-type and backend tables, restored as they were after the test.

    Gives ``install(device, backend)``, which makes a backend object run a
    device for the test (``backends.register_backend`` registers a class).
    """
    tables = (_DEVICE_TYPES, backends._INSTANCES, backends._BY_NAME)
    saved = [dict(t) for t in tables]
    yield _install_backend
    for table, old in zip(tables, saved):
        table.clear()
        table.update(old)


_EMULATED = {}


def emulated_cuda_backend():
    """The CUDA backend on the GPU emulator of tests/cuda (its kernels compiled with g++), or None
    without g++. Built once, by the factory tests/cuda/conftest.py defines."""
    if "backend" not in _EMULATED:
        _EMULATED["backend"] = None
        if shutil.which("g++"):
            path = pathlib.Path(__file__).parent / "cuda" / "conftest.py"
            spec = importlib.util.spec_from_file_location("minigrad_tests_cuda_conftest", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            if not module.NO_GXX:
                _EMULATED["backend"] = module.make_emulated_backend(threads=64)
    return _EMULATED["backend"]


#: Every backend: the NumPy reference ``Backend`` and every registered device type (CPU, CUDA, ...).
BACKEND_KINDS = ["reference", *backends.device_types()]


@pytest.fixture(params=[pytest.param(k, marks=[pytest.mark.cuda] if k == "cuda" else []) for k in BACKEND_KINDS])
def backend_device(request, backend_tables):
    """A device string run by each backend in turn, for the conformance and bad-input suites.

    "reference" is ``minigrad.backends.base.Backend`` (the reference every
    kernel is written against), registered as a device type for the test;
    "cuda" is a real GPU when there is one, else the emulated GPU of
    tests/cuda (skipped without g++).
    """
    kind = request.param
    if kind == "reference":
        backends.register_backend("reference", "minigrad.backends.base:Backend")
    elif kind == "cuda" and "cuda" not in available_devices():
        emulated = emulated_cuda_backend()
        if emulated is None:
            pytest.skip("no CUDA device and no g++ for the CUDA emulation")
        install = backend_tables
        install("cuda", emulated)
    elif kind != "cuda":
        try:
            backends.get_backend(kind)
        except Exception as exc:  # noqa: BLE001 - a backend that cannot run here is skipped, with why
            pytest.skip(f"the {kind!r} backend cannot run here: {exc}")
    return kind


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
