"""The configuration reference of the docs is generated from the schema: every key of every
section has its one-line meaning in ``lth.config_schema.KEY_DOCS``, and the generated
tables show each key with its type, default and allowed values (docs/hooks.py)."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import lth.config as C
from lth.config_schema import KEY_DOCS

HOOKS = Path(__file__).resolve().parents[1] / "docs" / "hooks.py"


def schema_keys() -> set[str]:
    keys = set()
    for f in dataclasses.fields(C.ExperimentConfig):
        if f.type.endswith("Config"):
            keys |= {f"{f.name}.{g.name}" for g in dataclasses.fields(getattr(C, f.type))}
        else:
            keys.add(f.name)
    return keys


def hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", HOOKS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_key_has_a_meaning_and_none_is_stale():
    keys = schema_keys()
    assert keys - set(KEY_DOCS) == set(), "write these keys' meanings in KEY_DOCS"
    assert set(KEY_DOCS) - keys == set(), "these KEY_DOCS entries name no key"
    assert all(text.strip() for text in KEY_DOCS.values())


def test_the_reference_lists_every_key_with_its_allowed_values():
    text = hooks().config_reference()
    for key in schema_keys():
        section, _, name = key.rpartition(".")
        assert f"| `{name}` |" in text, key
    optimizer = next(line for line in text.splitlines() if line.startswith("| `optimizer`"))
    assert "`sgd`, `adam`, `adamw`" in optimizer and '`"adam"`' in optimizer
    threads = next(line for line in text.splitlines() if line.startswith("| `threads`"))
    assert "Speed only" in threads  # lth.experiment.spec.SPEED_ONLY


def test_the_cli_reference_has_every_command():
    text = hooks().cli_reference()
    for command in ("run", "session", "robust", "status", "export", "report", "compare"):
        assert f"## `lth {command}`" in text
