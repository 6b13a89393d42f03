"""A griffe extension for the API reference: lth's docstrings are plain text with
doctests and Sphinx roles; this makes them Markdown as mkdocstrings renders them.

- a doctest (``>>>`` lines and their output, up to a blank line) becomes a fenced
  ``pycon`` block, so its output (``[True, True]``) is not read as a Markdown link;
- ``:class:`~lth.masks.Mask``` and the other roles become inline code (``Mask``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`~?([^`]+)`")


def markdown(text: str) -> str:
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
                i += 1
            out += [f"{indent}```pycon", *(indent + b for b in block), f"{indent}```"]
            continue
        out.append(ROLE.sub(lambda m: f"`{m[1]}`", line).replace("``", "`"))
        i += 1
    return "\n".join(out)


class Docstrings(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
