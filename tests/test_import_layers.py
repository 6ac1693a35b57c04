"""minigrad's modules form layers: imports point one way, down, with no cycle hidden anywhere.

The check reads the import statements of every module of the package
(``ast``, nothing is imported) and builds the graph of module-level imports.
Importing ``a.b.c`` first runs the packages ``a`` and ``a.b``, so an import
also depends on those ancestors of its target that are not ancestors of the
importer. Two rules:

* that graph has no cycle (a cycle works, when it does, only by the order of
  the lines of the modules involved);
* an import inside a function (run late, when called) may only reach down:
  its target must not itself depend on the importer, or the function-level
  import is a cycle in hiding.

Example of what fails: ``minigrad/ops/elementwise.py`` importing
``minigrad.tensor`` inside a function, while ``minigrad.tensor`` imports
``minigrad.ops``.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import minigrad

ROOT = pathlib.Path(minigrad.__file__).parent
PACKAGE = "minigrad"


def _module_name(path: pathlib.Path) -> str:
    parts = (PACKAGE,) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py")) if "__pycache__" not in p.parts}


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not MODULES[importer].name == "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _existing(name: str) -> str | None:
    """``name`` or its nearest ancestor that is a Python module of the package (compiled ones are leaves)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name if name.startswith(PACKAGE) else None


def _targets(importer: str, node) -> list[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = _resolve(importer, node)
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    found = []
    for name in names:
        target = _existing(name)
        if target is None or target == importer:
            continue
        # Importing the target first runs those of its packages that are not already running (ours).
        mine = set(_ancestors(importer)) | {importer}
        found += [t for t in _ancestors(target) + [target] if t not in mine]
    return found


def _imports():
    """``{module: set of module-level targets}`` and ``[(module, target, line)]`` of function-level imports."""
    top, late = {m: set() for m in MODULES}, []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))

        def visit(node, in_function):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target in _targets(name, child):
                        if in_function:
                            late.append((name, target, child.lineno))
                        else:
                            top[name].add(target)
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

        visit(tree, False)
    return top, late


TOP, LATE = _imports()


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in TOP[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _cycle():
    """One cycle of the module-level graph as a list of modules, or None."""
    state, stack = {}, []

    def dfs(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(TOP[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for module in sorted(TOP):
        if module not in state:
            found = dfs(module)
            if found:
                return found
    return None


def test_the_checker_sees_the_package():
    assert {"minigrad.tensor", "minigrad.ops.elementwise", "minigrad.norm.base", "minigrad.nn.module"} <= set(MODULES)
    assert "minigrad.ops" in TOP["minigrad.tensor"], "tensor imports ops at module level"
    # An import of a.b.c from outside a.b depends on the package a.b too.
    assert "minigrad.nn" in TOP["minigrad.norm.base"]


def test_module_level_imports_have_no_cycle():
    cycle = _cycle()
    if cycle is not None:
        pytest.fail("import cycle: " + " -> ".join(cycle))


@pytest.mark.parametrize("importer, target, line", LATE, ids=[f"{m}:{n}->{t}" for m, t, n in LATE])
def test_function_level_imports_only_reach_down(importer, target, line):
    if importer in _reachable(target) | {target}:
        pytest.fail(f"{MODULES[importer]}:{line} imports {target} inside a function, but {target} depends on "
                    f"{importer}: a cycle hidden in a function; move the shared code below both, or invert the "
                    f"dependency")


def test_a_hidden_cycle_is_caught():
    """The rules fail on the kind of code they are meant to catch."""
    assert "minigrad.ops.elementwise" in _reachable("minigrad.tensor")
    assert "minigrad.tensor" in _reachable("minigrad.nn.module")
