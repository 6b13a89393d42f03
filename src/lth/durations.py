"""Training durations written as iterations or epochs: ``"50000it"``, ``"20ep"`` or an int."""

from __future__ import annotations

import re

_PATTERN = re.compile(r"^\s*(\d+)\s*(it|ep)\s*$")

Duration = str | int


def check_duration(value: object) -> str | None:
    """Return a problem description, or None when ``value`` is a valid duration."""
    if isinstance(value, bool):
        return "must be an iteration count or a string like '500it' or '3ep'"
    if isinstance(value, int):
        return None if value >= 0 else "must be >= 0"
    if isinstance(value, str) and _PATTERN.match(value):
        return None
    return "must be an iteration count (int >= 0) or a string like '500it' or '3ep'"


def to_steps(value: Duration, steps_per_epoch: int) -> int:
    """Convert a duration to a number of optimizer steps.

    >>> to_steps("3ep", 100), to_steps("250it", 100), to_steps(7, 100)
    (300, 250, 7)
    """
    problem = check_duration(value)
    if problem:
        raise ValueError(f"bad duration {value!r}: {problem}")
    if isinstance(value, int):
        return value
    amount, unit = _PATTERN.match(value).groups()  # type: ignore[union-attr]
    return int(amount) * (steps_per_epoch if unit == "ep" else 1)
