"""The README's quick start runs as written (a new user's first contact must stay true)."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_quick_start_runs():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md quick start", "exec"), namespace)
    assert namespace["loss"].item() < 2.5  # it trained
    assert namespace["fast"] is not namespace["model"]  # fold returned an inference copy


def test_readme_names_the_two_commands_ci_runs():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert "make experiment" in text and "make test" in text
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert "make test" in ci
