"""One verb per registered study (:data:`lth.studies.STUDIES`):
``lth NAME CONFIG [--FIELD VALUE ...] [--set key=value] [--store DIR] [--csv PATH]``.

A study's flags are its settings' fields (``rewind_steps`` is ``--rewind-steps``); lists
are comma-separated (``--levels 0,5``). The values are read here, after argparse, so that
a bad one is an ``lth: error:`` naming the flag, as for every other setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from functools import partial
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, StoreError

if TYPE_CHECKING:  # pandas loads when a table is made: `lth --help` stays quick
    import pandas as pd

_WORDS = {int: "whole numbers", float: "numbers", str: "names"}


def write_csv(table: pd.DataFrame, path: str | None) -> None:
    """``--csv PATH``: the printed table as CSV too."""
    if not path:
        return
    try:
        table.to_csv(path, index=False)
    except OSError as exc:
        raise StoreError(f"cannot write --csv {path} ({exc}); give a writable path") from None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_value(text: str, tp: Any, flag: str) -> Any:
    """The value of ``flag`` from its text, for a setting of type ``tp`` (``int``,
    ``float``, ``str``, ``bool`` or a tuple of one of them, given comma-separated).

    >>> parse_value("0,100,500", tuple[int, ...], "--levels")
    (0, 100, 500)
    """
    if typing.get_origin(tp) is tuple:
        (item, *_) = typing.get_args(tp)
        try:
            return tuple(item(v.strip()) for v in text.split(",") if v.strip())
        except ValueError:
            example = {int: "0,100,500", float: "0.5,1.5"}.get(item, "a,b")
            raise ConfigError(f"{flag} = {text!r}; give {_WORDS.get(item, 'values')} "
                              f"separated by commas, e.g. {example}") from None
    if tp is bool:
        if text.lower() not in ("true", "false"):
            raise ConfigError(f"{flag} = {text!r}; give true or false")
        return text.lower() == "true"
    try:
        return tp(text)
    except (TypeError, ValueError):
        what = {int: "a whole number", float: "a number"}.get(tp, f"a {tp}")
        raise ConfigError(f"{flag} = {text!r}; give {what}") from None


def settings_of(study: Any, args: argparse.Namespace) -> Any:
    """The study's settings from the flags given (the fields' defaults for the others);
    a :class:`~lth.errors.ConfigError` names every bad value."""
    cls = study.settings
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        text = getattr(args, f"study_{f.name}", None)
        if text is not None:
            values[f.name] = parse_value(text, hints[f.name], _flag(f.name))
    return cls(**values)


def add_study_commands(sub: Any) -> None:
    """Add a verb for every registered study to the ``lth`` command's subparsers."""
    from ..studies import STUDIES

    for name, study in STUDIES.items():
        if name in sub.choices:
            raise ConfigError(f"study {name!r} has the name of an lth command; register it "
                              "under another name")
        p = sub.add_parser(name, help=study.help or f"the {name} study")
        p.add_argument("config", help="experiment TOML file")
        for f in dataclasses.fields(study.settings):
            shown = f" (default: {_shown(f.default)})" \
                if f.default is not dataclasses.MISSING else ""
            p.add_argument(_flag(f.name), dest=f"study_{f.name}",
                           metavar=f.metadata.get("metavar") or f.name.upper(),
                           help=f"{f.metadata.get('help', f.name)}{shown}")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a setting (repeatable)")
        p.add_argument("--store", default="runs", help="directory of runs (default: runs)")
        p.add_argument("--csv", help="also write the table to this CSV file")
        p.set_defaults(func=partial(run_study, study))


def run_study(study: Any, args: argparse.Namespace) -> int:
    """Run the study over each experiment of its sweep; print (and write) the table."""
    from ..config import load_config
    from ..experiment import LotteryModel

    settings = settings_of(study, args)
    tables = []
    for overrides in study.sweep(settings):
        cfg = load_config(args.config, [*args.set, *overrides])
        tables.append(study.run(LotteryModel.from_config(cfg), args.store, settings))
    import pandas as pd

    out = pd.concat(tables, ignore_index=True)
    print(study.shown(out).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    write_csv(out, args.csv)
    return 0
