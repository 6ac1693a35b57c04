"""Shared set-up of the normalizer tests.

The example plugin package (examples/rmsnorm_plugin) is made importable
together with its metadata (a generated ``*.dist-info`` directory holding
the entry points declared in its pyproject.toml) before the tests are
collected, so the parametrized contract tests run on its normalizers too,
found through the same entry-point mechanism an installed plugin uses.
"""

from __future__ import annotations

import importlib
import pathlib
import shutil
import sys
import tempfile

import numpy as np
import pytest

import minigrad

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None

REPO = pathlib.Path(__file__).resolve().parents[2]
PLUGIN_PROJECT = REPO / "examples" / "rmsnorm_plugin"


def write_dist_info(target: pathlib.Path, project_dir: pathlib.Path) -> pathlib.Path:
    """Write ``<name>-<version>.dist-info`` (METADATA, entry_points.txt) for ``project_dir``'s pyproject.toml."""
    project = tomllib.loads((project_dir / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project["version"]
    dist = target / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, entries in project.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines.extend(f"{key} = {value}" for key, value in entries.items())
        lines.append("")
    (dist / "entry_points.txt").write_text("\n".join(lines))
    return dist


def _install_example_plugin():
    if tomllib is None:
        return None
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="minigrad-plugin-meta-"))
    write_dist_info(tmp, PLUGIN_PROJECT)
    sys.path[:0] = [str(PLUGIN_PROJECT), str(tmp)]
    importlib.invalidate_caches()
    minigrad.norm.load_plugins(reload=True)
    return tmp


_PLUGIN_META = _install_example_plugin()


def pytest_unconfigure(config):
    if _PLUGIN_META is not None:
        for p in (str(PLUGIN_PROJECT), str(_PLUGIN_META)):
            if p in sys.path:
                sys.path.remove(p)
        shutil.rmtree(_PLUGIN_META, ignore_errors=True)


@pytest.fixture
def rng():
    """A NumPy generator, the same in every test."""
    return np.random.default_rng(20150211)


def randomize(module, rng, positive_var=True):
    """Random γ, β and running statistics (so tests do not pass by γ = 1, β = 0 alone)."""
    with minigrad.no_grad():
        for name in ("weight", "bias", "running_mean"):
            t = getattr(module, name, None)
            if t is not None:
                t.array[...] = t.backend.asarray(rng.uniform(-1.5, 1.5, t.shape) + (name == "weight") * 0.5,
                                                 dtype=t.dtype)
        rv = getattr(module, "running_var", None)
        if rv is not None:
            rv.array[...] = rv.backend.asarray(rng.uniform(0.3, 2.0, rv.shape), dtype=rv.dtype)
    return module


@pytest.fixture
def randomize_module():
    """The ``randomize(module, rng)`` helper, as a fixture."""
    return randomize
