"""Exceptions raised for anything a user can cause.

Every message says what was received, what is allowed, and how to fix it.
"""

from __future__ import annotations

import difflib
import os
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
    name = str(name)
    close = difflib.get_close_matches(name, list(known), n=5, cutoff=0.6)
    if not close:
        return ""
    # Equally similar names (resnet21 vs resnet20/resnet32): prefer the longest shared prefix.
    best = max(close, key=lambda k: (difflib.SequenceMatcher(None, name, k).ratio(),
                                     len(os.path.commonprefix([name, k]))))
    return f"; did you mean '{best}'?"


def unknown_name(kind: str, name: object, known: Iterable[str]) -> str:
    """Message for an unknown registry/choice name, listing what exists."""
    known = sorted(known)
    return f"unknown {kind} {name!r}{did_you_mean(str(name), known)} Known: {', '.join(known)}"
