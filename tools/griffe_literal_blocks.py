"""A Griffe extension for minigrad's docstring style (``extensions:`` in mkdocs.yml).

minigrad's docstrings are Google style (``Args:``, ``Returns:``, ``Raises:``
sections), with code examples written as literal blocks: a line ending in
``::`` followed by an indented block, which reads well in ``help()`` and
in an editor. The Google parser of the API pages does not know literal
blocks (it showed a literal "Example::"), so this extension rewrites each
one before parsing: ``Example::`` becomes a Google ``Example:`` section and
any other ``text::`` keeps its text (ending in ":"); the indented block
becomes a fenced Python code block.
"""

from __future__ import annotations

import re
import textwrap

from griffe import Extension

_SECTION = re.compile(r"^(\s*)(Examples?)\s*::\s*$")
_INTRO = re.compile(r"^(\s*)(\S.*?)\s*::\s*$")


def rewrite(doc: str) -> str:
    """The docstring with its literal blocks turned into fenced code (see the module docstring)."""
    lines = doc.splitlines()
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        m = _SECTION.match(line) or _INTRO.match(line)
        if not m:
            out.append(line)
            i += 1
            continue
        indent, text = m.group(1), m.group(2)
        block, j = [], i + 1
        while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > len(indent)):
            block.append(lines[j])
            j += 1
        while block and not block[-1].strip():
            block.pop()
        code = textwrap.dedent("\n".join(block)).strip("\n")
        if _SECTION.match(line):
            inner = indent + "    "
            out.append(f"{indent}{text}:")
        else:
            inner = indent
            out.append(f"{indent}{text}:")
            out.append("")
        out.append(f"{inner}```python")
        out.extend(f"{inner}{c}" if c else "" for c in code.splitlines())
        out.append(f"{inner}```")
        out.append("")
        i = j
    return "\n".join(out)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


class LiteralBlocks(Extension):
    """Rewrites reST literal blocks of every docstring into fenced code before the Google parser runs."""

    def on_instance(self, *, obj, **kwargs) -> None:
        """Called by Griffe for every loaded object."""
        if obj.docstring is not None and "::" in obj.docstring.value:
            obj.docstring.value = rewrite(obj.docstring.value)
