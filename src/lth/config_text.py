"""Configuration as text: TOML files (UTF-8, a byte-order mark allowed) and ``--set
KEY=VALUE`` overrides, read into plain dicts for :mod:`lth.config` to validate."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from .errors import ConfigError


def set_dotted(tree: dict, key: str | tuple[str, ...], value: Any) -> None:
    """Set ``value`` at ``key``: a tuple of names, or a dotted string (split on dots)."""
    parts = tuple(key.split(".")) if isinstance(key, str) else key
    *parents, leaf = parts
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(parts)}: '{part}' is a value, not a section")
        node = child
    node[leaf] = value


def _split_assignment(text: str) -> tuple[str, str] | None:
    """``KEY=VALUE`` split at the first ``=`` outside a quoted part of the key."""
    quote = None
    for i, c in enumerate(text):
        if quote:
            quote = None if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c == "=":
            return text[:i], text[i + 1:]
    return None


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """Parse ``KEY=VALUE`` from the command line. The key is a TOML key (dotted, parts
    quoted where they hold dots: ``prune.layer_rates."1.weight"``); the value is read as
    TOML, else taken as a string.

    >>> parse_override("train.lr=3e-4"), parse_override("name=run a")
    ((('train', 'lr'), 0.0003), (('name',), 'run a'))
    """
    split = _split_assignment(text)
    example = "e.g. --set train.lr=0.001 or --set 'prune.layer_rates.\"fc.weight\"=0.5'"
    if split is None:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, {example}")
    key, raw = split[0].strip(), split[1].strip()
    try:
        if any(c in key for c in "\n\r[]#"):
            raise tomllib.TOMLDecodeError("not a key")
        node: Any = tomllib.loads(f"{key} = 0")
    except tomllib.TOMLDecodeError:
        raise ConfigError(f"--set {text!r}: {key!r} is not a valid key; {example}") from None
    parts = []
    while isinstance(node, dict) and len(node) == 1:
        (part, node), = node.items()
        parts.append(part)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return tuple(parts), value


def read_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Parse a TOML file (UTF-8, a byte-order mark allowed); a missing, unreadable or
    malformed file is a :class:`ConfigError`."""
    where = f"{what} {str(path)!r}"
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{where} not found; check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"{where} is a directory, not a config file; give the path of the "
                          ".toml file") from None
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read ({exc.strerror or exc}); check its "
                          "permissions") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where} is not UTF-8 text (byte {exc.start} is "
                          f"{raw[exc.start]:#04x}); save it as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{where} is nested too deeply for a config (arrays or tables "
                          "inside each other thousands of times); check the file") from None
