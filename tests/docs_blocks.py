"""The code blocks of a Markdown page, as tests/test_docs_examples.py runs them.

A fenced block (```` ``` ```` or ``~~~``, at any indentation, so blocks inside list items
count) is run when its language is ``bash``, ``sh`` or ``shell`` (a bash script) or ``python``
or ``py`` (Python; a block whose first line starts with ``>>>`` is a doctest, its shown
output checked). Every other language, ``console`` included, and a fence without one, is
text. The line directly before the opening fence may hold one marker:

- ``<!-- docs-test: skip REASON -->``: never run (the reason is required);
- ``<!-- docs-test: slow -->``: run only by the slow step (``make test-slow``);
- ``<!-- docs-test: output -->``: shown output, not code.

Anything else after ``docs-test:``, a marker not directly followed by a fence, ``slow`` on a
block that would not run anyway, and a fence left open are errors (:class:`DocsBlockError`),
each naming the page, the line and the fix.

>>> page = "Intro\\n\\n<!-- docs-test: slow -->\\n```bash\\nlth run x.toml\\n```\\n"
>>> [(b.line, b.action, b.slow, b.code) for b in extract_blocks(page, "p.md")]
[(4, 'bash', True, 'lth run x.toml\\n')]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SHELL_LANGUAGES = frozenset({"bash", "sh", "shell"})
PYTHON_LANGUAGES = frozenset({"python", "py"})
MARKERS = ("skip", "slow", "output")

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:(?P<body>.*?)-->\s*$")


class DocsBlockError(ValueError):
    """A page's markers or fences cannot be read; the message names the page and line."""


@dataclass(frozen=True)
class Block:
    """One fenced block: where it opens (1-based line of the fence), its language and
    code (dedented by the fence's indentation), and what the runner does with it:
    ``action`` is ``"bash"``, ``"python"``, ``"doctest"`` or ``None`` (not run)."""

    page: str
    line: int
    language: str
    code: str
    action: str | None
    slow: bool = False
    skip_reason: str | None = None

    @property
    def first_code_line(self) -> int:
        return self.line + 1


def _language(info: str) -> str:
    """The first word of a fence's info string: ``python title="x"`` and ``{.python}``
    both give ``python``."""
    words = info.strip().lstrip("{").split()
    return words[0].lstrip(".").rstrip("}").lower() if words else ""


def _action(language: str, code: str) -> str | None:
    if language in SHELL_LANGUAGES:
        return "bash"
    if language in PYTHON_LANGUAGES:
        first = next((s.strip() for s in code.splitlines() if s.strip()), "")
        return "doctest" if first.startswith(">>>") else "python"
    return None


def _marker(body: str, page: str, line: int) -> tuple[str, str]:
    """(marker, reason) from the text between ``docs-test:`` and ``-->``."""
    word, _, rest = body.strip().partition(" ")
    rest = rest.strip()
    allowed = ", ".join(f"'{m}'" for m in MARKERS)
    if word not in MARKERS:
        raise DocsBlockError(
            f"{page}, line {line}: unknown docs-test marker {word!r}; allowed: {allowed} "
            "(<!-- docs-test: skip REASON -->, <!-- docs-test: slow -->, "
            "<!-- docs-test: output -->)")
    if word == "skip" and not rest:
        raise DocsBlockError(
            f"{page}, line {line}: 'skip' needs a reason, e.g. "
            "<!-- docs-test: skip needs a CUDA GPU -->")
    if word != "skip" and rest:
        raise DocsBlockError(
            f"{page}, line {line}: {word!r} takes no argument (got {rest!r}); write "
            f"<!-- docs-test: {word} -->")
    return word, rest


def _dedent(line: str, indent: int) -> str:
    """``line`` without up to ``indent`` leading spaces (CommonMark's rule for the content
    of an indented fence)."""
    stripped = len(line) - len(line.lstrip(" "))
    return line[min(indent, stripped):]


def extract_blocks(text: str, page: str) -> list[Block]:
    """Every fenced block of the Markdown ``text`` of ``page`` (the name used in errors),
    in order, with its marker applied; raises :class:`DocsBlockError` on a bad marker or an
    unclosed fence."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: tuple[str, str, int] | None = None  # the marker on the line before
    i = 0
    while i < len(lines):
        number = i + 1
        if pending is not None and pending[2] != number - 1:
            raise DocsBlockError(
                f"{page}, line {pending[2]}: the docs-test marker is not directly followed "
                "by a code fence; put it on the line just before the opening ``` (no blank "
                "line between)")
        marker = _MARKER.match(lines[i])
        if marker:
            if pending is not None:
                raise DocsBlockError(
                    f"{page}, line {pending[2]}: two docs-test markers in a row; a block "
                    "takes one marker, on the line just before its opening fence")
            pending = (*_marker(marker["body"], page, number), number)
            i += 1
            continue
        fence = _FENCE.match(lines[i])
        if not fence or (fence["fence"][0] == "`" and "`" in fence["info"]):
            i += 1
            continue
        indent, mark = len(fence["indent"].expandtabs(4)), fence["fence"]
        closing = re.compile(rf"^[ \t]*{re.escape(mark[0])}{{{len(mark)},}}[ \t]*$")
        end = next((j for j in range(i + 1, len(lines)) if closing.match(lines[j])), None)
        if end is None:
            raise DocsBlockError(
                f"{page}, line {number}: the code fence {mark!r} is never closed; end the "
                f"block with a line holding {mark}")
        code = "".join(_dedent(s, indent) + "\n" for s in lines[i + 1:end])
        language = _language(fence["info"])
        action = _action(language, code)
        slow, skip_reason = False, None
        if pending is not None:
            word, reason = pending[0], pending[1]
            if word == "slow" and action is None:
                raise DocsBlockError(
                    f"{page}, line {pending[2]}: 'slow' marks a {language or 'plain'!s} "
                    "block, which is not run anyway; remove the marker or give the block "
                    "a run language (bash, sh, shell, python, py)")
            if word == "output":
                action = None
            slow, skip_reason = word == "slow", (reason if word == "skip" else None)
            pending = None
        blocks.append(Block(page, number, language, code, action, slow, skip_reason))
        i = end + 1
    if pending is not None:
        raise DocsBlockError(
            f"{page}, line {pending[2]}: the docs-test marker is not directly followed by a "
            "code fence; put it on the line just before the opening ```")
    return blocks


def runnable(blocks: list[Block]) -> list[Block]:
    """The blocks a runner executes: a run language, no ``skip`` or ``output`` marker."""
    return [b for b in blocks if b.action is not None and b.skip_reason is None]
