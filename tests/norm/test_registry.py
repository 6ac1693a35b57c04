"""The registry: registration rules, lookups, entry-point plugins (lazy, fault tolerant), the example plugin."""

from __future__ import annotations

import importlib
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import minigrad
from minigrad import norm
from minigrad.norm import Normalizer, PluginWarning, RegistryError, register

REPO = pathlib.Path(__file__).resolve().parents[2]
PLUGIN_PROJECTS = sorted(p.parent for p in REPO.glob("examples/*_plugin/pyproject.toml"))


class _Scale(Normalizer):
    """A test normalizer: y = γ·x."""

    input_ranks = (2,)

    def forward(self, x):
        self.check_input(x)
        return x * self.weight


@pytest.fixture
def cleanup():
    """Names registered by a test are removed afterwards."""
    names = []
    yield names
    for name in names:
        try:
            norm.unregister(name)
        except RegistryError:
            pass


def test_register_get_create_available(cleanup):
    cleanup.append("TestScale")
    assert register("TestScale")(_Scale) is _Scale
    assert norm.get("TestScale") is _Scale and _Scale.registry_name == "TestScale"
    layer = norm.create("TestScale", 3, eps=0.0)
    assert isinstance(layer, _Scale) and layer.num_features == 3
    assert "TestScale" in norm.available() and norm.available() == sorted(norm.available())
    assert norm.TestScale is _Scale  # every registered normalizer is an attribute of minigrad.norm
    assert not norm.is_builtin("TestScale")


def test_registering_a_name_twice_raises_unless_override(cleanup):
    cleanup.append("TestTwice")
    register("TestTwice")(_Scale)
    register("TestTwice")(_Scale)  # the same class again is harmless

    class Other(_Scale):
        """Another."""

    with pytest.raises(RegistryError, match="'TestTwice' is already registered.*override=True"):
        register("TestTwice")(Other)
    register("TestTwice", override=True)(Other)
    assert norm.get("TestTwice") is Other


def test_builtins_are_never_shadowed_silently():
    class MyBN(minigrad.norm.BatchNorm2d):
        """A replacement."""

    with pytest.raises(RegistryError, match="already registered"):
        register("BatchNorm2d")(MyBN)
    with pytest.warns(UserWarning, match="overrides the built-in normalizer 'BatchNorm2d'"):
        register("BatchNorm2d", override=True)(MyBN)
    try:
        assert norm.get("BatchNorm2d") is MyBN and norm.is_builtin("BatchNorm2d")
    finally:
        assert norm.unregister("BatchNorm2d") is MyBN  # restores the built-in
    assert norm.get("BatchNorm2d") is minigrad.norm.BatchNorm2d
    with pytest.raises(RegistryError, match="built-in"):
        norm.unregister("BatchNorm2d")


def test_register_validates_its_arguments():
    with pytest.raises(TypeError, match="Normalizer"):
        register("NotANormalizer")(object)
    with pytest.raises(TypeError, match="Normalizer"):
        register("NotANormalizer")(minigrad.nn.Linear)
    with pytest.raises(ValueError, match="identifier"):
        register("has space")(_Scale)


def test_unknown_names_suggest_close_matches():
    with pytest.raises(RegistryError, match="no normalizer named 'BatchNorm3d'; did you mean 'BatchNorm2d'"):
        norm.get("BatchNorm3d")
    with pytest.raises(KeyError):  # RegistryError is a KeyError
        norm.create("Nope", 3)
    with pytest.raises(AttributeError):
        norm.NoSuchNormalizer


# ----------------------------------------------------------- entry points
def _write_plugin(tmp_path, entry_points, modules):
    """A fake installed distribution: modules on a path entry and a dist-info with entry points."""
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    dist = tmp_path / "fake_minigrad_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-minigrad-plugins\nVersion: 1.0\n")
    lines = ["[minigrad.normalizers]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


GOOD = """
    from minigrad.norm import Normalizer

    class Doubler(Normalizer):
        '''y = 2·x (registered only through its entry point).'''
        input_ranks = (2,)

        def forward(self, x):
            self.check_input(x)
            return x * 2.0
"""


@pytest.fixture
def on_path(cleanup):
    added = []

    def add(path):
        sys.path.insert(0, str(path))
        added.append(str(path))
        importlib.invalidate_caches()

    yield add
    for p in added:
        sys.path.remove(p)
    for mod in ("fake_good_plugin", "fake_broken_plugin", "fake_wrong_plugin", "fake_exit_plugin", "fake_odd_plugin"):
        sys.modules.pop(mod, None)
    importlib.invalidate_caches()
    norm.load_plugins(reload=True)


def test_entry_point_plugins_load_and_broken_ones_warn(tmp_path, on_path, cleanup):
    cleanup.extend(["Doubler"])
    on_path(_write_plugin(
        tmp_path,
        {"Doubler": "fake_good_plugin:Doubler", "Broken": "fake_broken_plugin:Thing",
         "Wrong": "fake_wrong_plugin:VALUE", "Missing": "no_such_module_anywhere:X"},
        {"fake_good_plugin": GOOD, "fake_broken_plugin": "raise RuntimeError('plugin import exploded')\n",
         "fake_wrong_plugin": "VALUE = 42\n"},
    ))
    with pytest.warns(PluginWarning) as record:
        loaded = norm.load_plugins(reload=True)
    messages = "\n".join(str(w.message) for w in record)
    assert "Broken = fake_broken_plugin:Thing" in messages and "plugin import exploded" in messages
    assert "Wrong = fake_wrong_plugin:VALUE" in messages and "not to a minigrad.norm.Normalizer" in messages
    assert "Missing = no_such_module_anywhere:X" in messages
    assert "fake-minigrad-plugins" in messages  # the distribution is named
    assert "Doubler" in loaded and "Broken" not in loaded
    layer = norm.create("Doubler", 3)
    x = minigrad.randn(2, 3)
    np.testing.assert_allclose(layer(x).numpy(), 2 * x.numpy())
    assert "Broken" not in norm.available()


def test_a_plugin_that_exits_or_raises_base_exceptions_is_skipped(tmp_path, on_path, cleanup, monkeypatch):
    monkeypatch.setattr(norm.registry, "_plugins_loaded", False)  # as in a fresh process
    on_path(_write_plugin(
        tmp_path, {"Exits": "fake_exit_plugin:X", "Odd": "fake_odd_plugin:X"},
        {"fake_exit_plugin": "import sys\nsys.exit(3)\n",
         "fake_odd_plugin": "class Odd(BaseException):\n    pass\nraise Odd('not an Exception')\n"},
    ))
    with pytest.warns(PluginWarning) as record:
        names = norm.available()  # a sys.exit() here used to end the host program
    messages = "\n".join(str(w.message) for w in record)
    assert "Exits = fake_exit_plugin:X" in messages and "SystemExit: 3" in messages
    assert "Odd: not an Exception" in messages
    assert "BatchNorm1d" in names and "Exits" not in names


def test_ctrl_c_during_a_plugin_import_is_not_swallowed(tmp_path, on_path):
    on_path(_write_plugin(tmp_path, {"Interrupts": "fake_broken_plugin:X"},
                          {"fake_broken_plugin": "raise KeyboardInterrupt\n"}))
    with pytest.raises(KeyboardInterrupt):
        norm.load_plugins(reload=True)


def test_register_checks_the_channel_axis_type():
    # (A channel_axis the input does not have, and a forward returning another shape, are rows of
    # tests/bad_input/test_table.py: they are checked on every call.)
    class AxisText(_Scale):
        """channel_axis given as text."""

        channel_axis = "1"

    with pytest.raises(TypeError, match="channel_axis must be an int or None"):
        register("TestAxisText")(AxisText)


def _run(code, extra_path=()):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), *map(str, extra_path)]))
    return subprocess.run([sys.executable, "-W", "default", "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, cwd=str(REPO), timeout=120)


def test_plugins_load_lazily_and_a_broken_one_never_breaks_import(tmp_path):
    _write_plugin(tmp_path, {"Doubler": "fake_good_plugin:Doubler", "Broken": "fake_broken_plugin:Thing"},
                  {"fake_good_plugin": GOOD, "fake_broken_plugin": "raise ImportError('missing dependency')\n"})
    result = _run("""
        import sys
        import minigrad
        assert "fake_good_plugin" not in sys.modules, "plugins must not load on import minigrad"
        names = minigrad.norm.available()
        assert "fake_good_plugin" in sys.modules
        print(",".join(names))
    """, [tmp_path])
    assert result.returncode == 0, result.stderr
    assert "Doubler" in result.stdout and "BatchNorm2d" in result.stdout and "Broken" not in result.stdout
    assert "Broken = fake_broken_plugin:Thing" in result.stderr and "missing dependency" in result.stderr


def test_the_example_plugin_through_its_entry_point():
    """The root conftest.py exposes examples/rmsnorm_plugin with its pyproject's entry points."""
    layer = norm.create("RMSNorm", 4)
    assert type(layer).__module__ == "minigrad_rmsnorm" and norm.get("FusedRMSNorm").__module__ == "minigrad_rmsnorm.fused"
    x = minigrad.randn(3, 4, dtype="float64")
    with minigrad.no_grad():
        layer.double()
        expected = x.numpy() / np.sqrt((x.numpy() ** 2).mean(axis=-1, keepdims=True) + layer.eps)
        np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-12)
        fused = norm.create("FusedRMSNorm", 4, dtype="float64")
        np.testing.assert_allclose(fused(x).numpy(), expected, rtol=1e-12)


@pytest.mark.slow
def test_pip_installs_the_example_plugins(tmp_path):
    """``pip install`` the example packages (no network, no build isolation) and use them from a fresh process."""
    pytest.importorskip("setuptools")
    if shutil.which("pip") is None and importlib.util.find_spec("pip") is None:
        pytest.skip("pip is not available")
    sources = []
    for project in PLUGIN_PROJECTS:  # build in copies: leaves no build/ or egg-info in the repository
        sources.append(tmp_path / "src" / project.name)
        shutil.copytree(project, sources[-1], ignore=shutil.ignore_patterns("tests", "__pycache__"))
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--target", str(target), *map(str, sources)],
        capture_output=True, text=True, timeout=300,
    )
    if install.returncode != 0:
        # The test extra brings setuptools and wheel, so in CI (make test) a failed build is a failure.
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            f"pip could not build the example offline: {install.stderr[-500:]}")
    result = _run("""
        import minigrad
        for name in ("RMSNorm", "BatchRenorm1d", "GhostBatchNorm1d"):
            layer = minigrad.norm.create(name, 8)
            print(type(layer).__module__, layer(minigrad.randn(2, 8)).shape)
    """, [target])
    assert result.returncode == 0, result.stderr
    for module in ("minigrad_rmsnorm", "minigrad_batchrenorm", "minigrad_ghostbn"):
        assert f"{module} (2, 8)" in result.stdout
