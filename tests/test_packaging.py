"""The project as a new user meets it: its distribution name, make's reinstall rule, the docs' code
examples and the test summary's one line for the CUDA skips."""

import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIST = "minigrad-bn"


def test_the_distribution_has_its_own_name():
    """PyPI's "minigrad" is an unrelated project: installing it would not give this one (issue 13)."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        meta = tomllib.load(f)
    assert meta["project"]["name"] == DIST
    with open(os.path.join(ROOT, "examples", "rmsnorm_plugin", "pyproject.toml"), "rb") as f:
        plugin = tomllib.load(f)
    assert any(re.fullmatch(rf"{DIST}\b.*", d) for d in plugin["project"]["dependencies"])


def test_every_install_hint_names_the_distribution():
    stale = []
    pattern = re.compile(r"""(?<![\w-])minigrad\[|dependencies = \["minigrad"\]|pip install minigrad(?![\w-])""")
    for top in ("minigrad", "docs", "examples", "tests", "Makefile", "pyproject.toml"):
        path = os.path.join(ROOT, top)
        files = [path] if os.path.isfile(path) else [
            os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith((".py", ".md", ".toml", ".pyx"))]
        for name in files:
            with open(name, encoding="utf-8", errors="replace") as f:
                for i, line in enumerate(f, 1):
                    if pattern.search(line) and not name.endswith("test_packaging.py"):
                        stale.append(f"{os.path.relpath(name, ROOT)}:{i}: {line.strip()}")
    assert not stale, "hints that would install PyPI's unrelated 'minigrad':\n" + "\n".join(stale)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_reinstalls_only_when_sources_change(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    os.symlink(sys.executable, venv / "bin" / "python")

    def plan():
        return subprocess.run(["make", "-n", f"VENV={venv}", "experiment", "ARGS=--help"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout

    assert "pip install" in plan()  # never installed: install
    stamp = venv / ".installed-examples"
    stamp.touch()
    assert "pip install" not in plan() and "bn_mnist.py --help" in plan()  # installed and up to date
    os.utime(stamp, (0, 0))  # older than setup.py and the Cython sources: rebuild
    assert "pip install" in plan()


def test_literal_blocks_render_as_code_in_the_api_pages():
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        griffe_literal_blocks = pytest.importorskip("griffe_literal_blocks")
    finally:
        sys.path.pop(0)
    doc = textwrap.dedent("""\
        Summary.

        Example::

            x = f(1)

            y = g(x)

        Or as a context manager::

            with f():
                pass
        """)
    out = griffe_literal_blocks.rewrite(doc)
    assert "::" not in out
    assert "Example:\n    ```python\n    x = f(1)\n\n    y = g(x)\n    ```" in out
    assert "Or as a context manager:\n\n```python\nwith f():\n    pass\n```" in out


def test_cuda_skips_are_summarised_in_one_line(tmp_path):
    """Many CUDA cases skipped for want of a GPU fold into one summary line; other skips stay listed."""
    shutil.copy(os.path.join(ROOT, "tests", "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_skips.py").write_text(textwrap.dedent("""\
        import pytest

        @pytest.mark.parametrize("i", range(3))
        def test_a(i):
            pytest.skip("no CUDA device: CuPy is missing")

        @pytest.mark.skip(reason="no CUDA device: CuPy is missing")
        def test_b():
            pass

        def test_c():
            pytest.skip("some other reason")
        """))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("SKIPPED")]
    assert len(lines) == 2, proc.stdout
    assert any("[4]" in ln and "no CUDA device" in ln for ln in lines)
    assert any("[1]" in ln and "some other reason" in ln for ln in lines)
