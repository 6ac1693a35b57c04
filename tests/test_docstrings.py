"""Every public name of the package has a docstring (the API reference is generated from them)."""

import importlib
import inspect
import pkgutil

import pytest

import minigrad

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(minigrad.__path__, "minigrad.")
    if not any(part.startswith("_") for part in m.name.split(".")[1:])
)


def _public(module):
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in dir(module) if not n.startswith("_")]
    for name in names:
        obj = getattr(module, name, None)
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and getattr(obj, "__module__", "").startswith("minigrad"):
            yield name, obj


@pytest.mark.parametrize("modname", MODULES)
def test_public_names_have_docstrings(modname):
    try:
        module = importlib.import_module(modname)
    except ImportError as exc:  # e.g. an optional dependency of an example-only module
        pytest.skip(f"{modname}: {exc}")
    assert module.__doc__, f"module {modname} has no docstring"
    missing = [name for name, obj in _public(module) if not inspect.getdoc(obj)]
    for name, obj in _public(module):
        if not inspect.isclass(obj):
            continue
        for attr in vars(obj):
            if attr.startswith("_"):
                continue
            member = getattr(obj, attr)  # through the class: overrides inherit their base's docstring
            if callable(member) and not isinstance(member, type) and not inspect.getdoc(member):
                missing.append(f"{name}.{attr}")
    assert not missing, f"{modname}: public names without a docstring: {sorted(set(missing))}"
