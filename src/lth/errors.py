"""Exceptions raised for anything a user can cause.

Every message says what was received, what is allowed, and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LTHError(Exception):
    """Base class of every error ``lth`` raises on purpose."""


class ConfigError(LTHError, ValueError):
    """A configuration key or value is wrong."""


class ModelError(LTHError, ValueError):
    """The model cannot be handled (nothing prunable, unknown name, ...)."""


class DataError(LTHError, ValueError):
    """The data is missing, malformed or inconsistent."""


class TrainingError(LTHError):
    """Training went wrong in a way the configuration must fix (e.g. the loss diverged)."""


class StoreError(LTHError):
    """A run directory cannot be used (conflicting config, corrupt file, ...)."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest known name, or ``""``."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def unknown_name(kind: str, name: object, known: Iterable[str]) -> str:
    """Message for an unknown registry/choice name, listing what exists."""
    known = sorted(known)
    return f"unknown {kind} {name!r}{did_you_mean(str(name), known)} Known: {', '.join(known)}"
