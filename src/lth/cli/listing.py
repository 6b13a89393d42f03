"""``lth list [KIND]``: what can be named in a config, one line each.

``lth list`` names the kinds; ``lth list models`` (``datasets``, ``criteria``, ``reinit``,
``tasks``, ``presets``) lists one kind's entries with the first sentence of each one's
description: its docstring, or the description it was registered with.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import shutil
import sys
import tomllib
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import ConfigError, unknown_name

_WIDTH = 100  # columns when not a terminal: a description is cut (at a word, with …)


class _Kind(NamedTuple):
    """One kind of name: what it is, where a config names one, and its entries (name, one
    line) when asked."""

    help: str
    where: str
    entries: Callable[[], Iterable[tuple[str, str]]]


def _registry(module: str, name: str) -> Callable[[], Iterable[tuple[str, str]]]:
    def entries() -> Iterable[tuple[str, str]]:
        registry = getattr(importlib.import_module(module), name)
        return [(key, describe(obj)) for key, obj in registry.items()]

    return entries


def _tasks() -> Iterable[tuple[str, str]]:
    from ..tasks import TASKS

    return [(name, f"{task.loss_name} loss; metrics: {', '.join(task.scores)}; targets: "
                   f"{task.labels}") for name, task in TASKS.items()]


def presets_dir() -> Path | None:
    """Where the presets are: ``configs/`` here, else the one of the checkout lth runs
    from (``src/lth`` two levels below it)."""
    for path in (Path("configs"), Path(__file__).resolve().parents[3] / "configs"):
        if path.is_dir() and any(path.glob("*.toml")):
            return path
    return None


def _presets() -> Iterable[tuple[str, str]]:
    where = presets_dir()
    if where is None:
        raise ConfigError("no presets found: they are the TOML files of the configs/ folder "
                          "of an lth checkout; run `lth list presets` from the checkout")
    out = []
    for path in sorted(where.glob("*.toml")):
        text = path.read_text(encoding="utf-8")
        comment = []
        for line in text.splitlines():
            if not line.startswith("#"):
                break
            comment.append(line.lstrip("#").strip())
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            data = {}
        command = ("session" if "base" in data else
                   "forward-sweep" if "selection" in data else "run")
        summary = first_sentence(" ".join(comment)) or "(no description)"
        out.append((path.stem, f"{command:<13}  {summary}"))
    return out


KINDS = {
    "models": _Kind("model builders", "[model] name = ...; lth.create_model(name, ...)",
                    _registry("lth.models", "MODELS")),
    "datasets": _Kind("datasets", "[data] name = ...; lth.load_dataset(name)",
                      _registry("lth.data", "DATASETS")),
    "criteria": _Kind("pruning criteria: a score per weight, higher keeps",
                      "[prune] criterion = ...", _registry("lth.pruning", "CRITERIA")),
    "reinit": _Kind("what the surviving weights start from at each level",
                    "[reinit] mode = ...", _registry("lth.reinitialization", "REINIT_MODES")),
    "tasks": _Kind("losses and metrics", "[task] name = ...", _tasks),
    "presets": _Kind("the experiments of configs/, each with the command that runs it",
                     "lth run|session|forward-sweep configs/NAME.toml", _presets),
}


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` (of its first paragraph), on one line.

    >>> first_sentence("Adam. Then SGD.\\n\\nMore.")
    'Adam.'
    """
    para = " ".join(text.strip().split("\n\n")[0].split()).replace("``", "")
    for i, ch in enumerate(para):
        if ch == "." and (i + 1 == len(para) or para[i + 1] == " ") and not _abbreviation(para, i):
            return para[:i + 1]
    return para


def _abbreviation(text: str, dot: int) -> bool:
    """Whether the full stop at ``dot`` ends an abbreviation ("et al.", "e.g.")."""
    word = text[:dot].rsplit(" ", 1)[-1]
    return word in ("al", "e.g", "i.e", "cf", "vs") or len(word) == 1


def describe(obj: Any) -> str:
    """One line saying what a registered entry is: its ``description``, else the first
    sentence of its own docstring (a reinit mode's: its function's)."""
    text = getattr(obj, "description", None)
    if isinstance(text, str) and text:
        return first_sentence(text)
    target = getattr(obj, "values", obj)  # a ReinitMode: the function it wraps
    doc = target.__doc__
    if not isinstance(target, types.FunctionType | type) and doc == type(target).__doc__:
        doc = None  # an object's class docstring says nothing of this entry
    if not doc and isinstance(target, types.FunctionType):
        doc = inspect.getdoc(target)
    return first_sentence(doc) if doc else "(no description)"


def add_parser(sub: Any) -> None:
    """Register ``lth list`` on the CLI's subparsers."""
    p = sub.add_parser("list", help="what can be named in a config: models, datasets, "
                       "criteria, reinit modes, tasks, presets")
    p.add_argument("kind", nargs="?", metavar="KIND",
                   help=f"one of {', '.join(KINDS)} (default: list the kinds)")
    p.set_defaults(func=_cmd_list)


def _cmd_list(args: argparse.Namespace) -> int:
    if args.kind is None:
        print("lth list KIND, for KIND one of:")
        _print_rows([(name, kind.help) for name, kind in KINDS.items()])
        return 0
    if args.kind not in KINDS:
        raise ConfigError(unknown_name("kind", args.kind, KINDS))
    kind = KINDS[args.kind]
    print(f"{args.kind} ({kind.where}):")
    _print_rows(kind.entries())
    return 0


def _print_rows(rows: Iterable[tuple[str, str]]) -> None:
    rows = list(rows)
    width = max(len(name) for name, _ in rows)
    columns = shutil.get_terminal_size((_WIDTH, 24)).columns  # _WIDTH when not a terminal
    room = max(40, columns - width - 5)  # each entry on one line
    for name, text in rows:
        shown = text if len(text) <= room else (
            text[:room - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…")
        sys.stdout.write(f"  {name:<{width}}  {shown}\n")
