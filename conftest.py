"""pytest set-up shared by tests/ and the example plugin projects (examples/*_plugin).

Hypothesis profiles (select with HYPOTHESIS_PROFILE, default "dev"; CI uses "ci"):

* ``ci``: bounded and derandomized, no deadline (a shared 2-core machine);
* ``dev``: the default for local runs, a little broader;
* ``thorough``: many examples, for a long local run before a release.

Each example plugin project is made importable together with its metadata
(a generated ``*.dist-info`` directory holding the entry points declared in
its pyproject.toml), as ``pip install`` would make it: the plugins' own test
suites (``examples/*_plugin/tests``, subclasses of
``minigrad.testing.NormalizerTestCase``) run from this checkout, and
minigrad's registry finds the plugins through the entry-point mechanism an
installed plugin uses.
"""

from __future__ import annotations

import importlib
import os
import pathlib
import shutil
import sys
import tempfile

from hypothesis import HealthCheck, settings

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None

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

REPO = pathlib.Path(__file__).resolve().parent
#: The example plugin projects, each an installable package with a pyproject.toml.
PLUGIN_PROJECTS = sorted(p.parent for p in REPO.glob("examples/*_plugin/pyproject.toml"))


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


def _install_example_plugins():
    if tomllib is None:
        return None
    meta = pathlib.Path(tempfile.mkdtemp(prefix="minigrad-plugin-meta-"))
    for project in PLUGIN_PROJECTS:
        write_dist_info(meta, project)
    sys.path[:0] = [str(p) for p in PLUGIN_PROJECTS] + [str(meta)]
    importlib.invalidate_caches()
    import minigrad

    minigrad.norm.load_plugins(reload=True)
    return meta


_PLUGIN_META = _install_example_plugins()


def pytest_unconfigure(config):
    if _PLUGIN_META is not None:
        for p in [str(p) for p in PLUGIN_PROJECTS] + [str(_PLUGIN_META)]:
            if p in sys.path:
                sys.path.remove(p)
        shutil.rmtree(_PLUGIN_META, ignore_errors=True)
