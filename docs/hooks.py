"""MkDocs hooks: the configuration reference, generated from the schema at build time.

A page holding the line ``<!-- config-reference -->`` gets, in its place, one table per
section of :class:`lth.config.ExperimentConfig`: every key with its type, default, allowed
values (asked of the section's own checks: a value no check accepts is tried, and the
"allowed: ..." of the problem it raises is shown) and its one-line meaning
(:data:`lth.config_schema.KEY_DOCS`). ``<!-- config-models -->`` becomes the table of
registered models and their options. A key with no meaning written fails the build.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lth import config as C  # noqa: E402
from lth.config_schema import KEY_DOCS, Section  # noqa: E402
from lth.errors import ConfigError  # noqa: E402
from lth.experiment.spec import SPEED_ONLY  # noqa: E402
from lth.models import MODELS  # noqa: E402

CONFIG_MARK = "<!-- config-reference -->"
MODELS_MARK = "<!-- config-models -->"
NOT_A_CHOICE = "\x00"  # no registry holds this name, so every choice check reports its list
# Allowed values that depend on another key: the meaning says what they are.
CONTEXTUAL = {"task.early_stop"}
# Keys checked only under another setting: the setting their check needs.
PROBE_WITH = {"mask_updates.decay": {"method": "rigl"}}


def _type(annotation: str) -> str:
    """A field's annotation as a TOML user reads it."""
    text = annotation.replace("Duration", "duration")
    if m := re.fullmatch(r"tuple\[(.+), \.\.\.\]", text):
        return f"list of {m[1]}"
    if m := re.fullmatch(r"tuple\[(.+)\]", text):
        return f"[{m[1]}]"
    if m := re.fullmatch(r"dict\[(\w+), (.+)\]", text):
        return f"table {m[1]} → {m[2]}"
    text = text.replace("str | int", "duration").replace(" | None", " (optional)")
    return text.replace(" | ", " or ")


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, tuple):
        value = list(value)
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _allowed(cls: type[Section], name: str, default: Any, key: str) -> str:
    """The values a string key accepts, as its section's checks list them."""
    if not isinstance(default, str):
        return ""
    try:
        cls(**{**PROBE_WITH.get(key, {}), name: NOT_A_CHOICE})
    except ConfigError as exc:
        for key, message in getattr(exc, "problems", []):
            if key == name and "allowed: " in message:
                values = message.split("allowed: ", 1)[1].split(", ")
                return ", ".join(f"`{v}`" for v in values)
    return ""


def _sections() -> list[tuple[str, type[Section]]]:
    top = [("", C.ExperimentConfig)]
    fields = dataclasses.fields(C.ExperimentConfig)
    return top + [(f.name, getattr(C, f.type)) for f in fields if f.type.endswith("Config")]


def _rows(prefix: str, cls: type[Section]) -> list[str]:
    rows = []
    defaults = cls() if cls is not C.ExperimentConfig else None
    for f in dataclasses.fields(cls):
        if f.type.endswith("Config"):
            continue  # a section of its own
        key = f"{prefix}.{f.name}" if prefix else f.name
        if key not in KEY_DOCS:
            raise SystemExit(f"docs/hooks.py: {key} has no meaning in "
                             "lth.config_schema.KEY_DOCS; write one there")
        default = getattr(defaults, f.name) if defaults else (
            f.default if f.default is not dataclasses.MISSING else None)
        allowed = "" if key in CONTEXTUAL else _allowed(cls, f.name, default, key)
        if key == "model.options":
            shown_default, shown_type = "`{}`", "the model's options"
        else:
            shown_default, shown_type = _default(default), _type(f.type)
        meaning = KEY_DOCS[key].replace("|", "\\|")
        if key in SPEED_ONLY:
            meaning += " *Speed only: not part of the run's identity.*"
        rows.append(f"| `{f.name}` | {shown_type} | {shown_default} | {allowed} | {meaning} |")
    return rows


def config_reference() -> str:
    out = []
    for prefix, cls in _sections():
        title = f"`[{prefix}]`" if prefix else "Top level"
        doc = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].replace("\n", " ")
        doc = re.sub(r":\w+:`~?([\w.]+)`", r"`\1`", doc).replace("``", "`")
        out += [f"### {title}", "", doc, "",
                "| key | type | default | allowed | meaning |", "|---|---|---|---|---|",
                *_rows(prefix, cls), ""]
    return "\n".join(out)


def models_reference() -> str:
    filled = {"input_shape", "num_classes"}
    out = ["| `model.name` | options (default) |", "|---|---|"]
    for name in sorted(MODELS):
        params = [p for p in inspect.signature(MODELS[name]).parameters.values()
                  if p.name not in filled and p.kind is not p.VAR_KEYWORD]
        shown = ", ".join(f"`{p.name}` ({_default(p.default)})"
                          if p.default is not p.empty else f"`{p.name}`" for p in params)
        out.append(f"| `{name}` | {shown or '—'} |")
    return "\n".join(out) + "\n"


def on_page_markdown(markdown: str, **_: Any) -> str:
    if CONFIG_MARK in markdown:
        markdown = markdown.replace(CONFIG_MARK, config_reference())
    if MODELS_MARK in markdown:
        markdown = markdown.replace(MODELS_MARK, models_reference())
    if CLI_MARK in markdown:
        markdown = markdown.replace(CLI_MARK, cli_reference())
    return markdown


CLI_MARK = "<!-- cli-reference -->"


def cli_reference() -> str:
    """``lth --help`` and each subcommand's help, as argparse prints them."""
    import argparse
    import os

    from lth.cli.main import build_parser

    os.environ["COLUMNS"] = "92"  # argparse wraps to the terminal's width
    parser = build_parser()
    out = ["## `lth`", "", "```text", parser.format_help().rstrip(), "```", ""]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += [f"## `lth {name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(out)
