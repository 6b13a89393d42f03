"""What a report is made of: one section per (dataset, model) of what ``lth.load`` read,
the time the runs took (elapsed and compute), and what is left out of it."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..analysis import Results


def slug(name: Any) -> str:
    """A file-name-safe form of a user-given name (the page shows the escaped original),
    at most 120 characters: a longer one (a long name with its label) keeps its start and
    a digest of the whole, so that a file name with prefixes stays within 255 bytes."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._") or "x"
    if len(safe) <= 120:
        return safe
    return f"{safe[:111]}_{hashlib.sha256(str(name).encode()).hexdigest()[:8]}"


@dataclass
class Section:
    """The runs of one (dataset, model) pair, with their rows of every table."""

    dataset: str
    model: str
    results: Results
    slug: str

    @property
    def title(self) -> str:
        return f"{self.dataset} · {self.model}"


def _rows(frame: pd.DataFrame, run_dirs: set[str]) -> pd.DataFrame:
    if "run_dir" not in frame:  # an empty table
        return frame
    return frame[frame["run_dir"].isin(run_dirs)].reset_index(drop=True)


def split(res: Results) -> list[Section]:
    """One section per (dataset, model) that has a finished level, in order of the names.

    Runs of different datasets (or models) share no axis: their accuracies and training
    lengths are not comparable. Runs without a finished level stay in their section's
    ``runs`` (and in :func:`left_out`)."""
    runs = res.runs.copy()
    for column, unknown in (("dataset", "unknown data"), ("model", "unknown model")):
        values = runs[column] if column in runs else pd.Series(None, index=runs.index)
        runs[column] = [unknown if pd.isna(v) else str(v) for v in values]
    sections: list[Section] = []
    used: set[str] = set()
    for (dataset, model), part in runs.groupby(["dataset", "model"], sort=True):
        dirs = set(part["run_dir"])
        sub = Results(part.reset_index(drop=True), _rows(res.levels, dirs),
                      _rows(res.layers, dirs), _rows(res.curves, dirs),
                      studies={k: _rows(t, dirs) for k, t in res.studies.items()})
        if sub.levels.empty:
            continue
        name = slug(f"{dataset}_{model}")
        while name in used:  # two pairs with the same file-name form
            name += "_"
        used.add(name)
        sections.append(Section(dataset, model, sub, name))
    return sections


def wall_times(levels: pd.DataFrame) -> tuple[float, float, int]:
    """(elapsed, compute, untimed): seconds during which at least one level was training
    (the union of the intervals [finished_at - wall_time_s, finished_at]), the levels'
    training times added up, and how many levels lack ``finished_at`` (their time is
    added to both in full).

    A shared dense level 0 is one level copied into several runs (same times): it counts
    once.

    >>> t = pd.DataFrame({"wall_time_s": [10.0, 10.0, 4.0, 3.0],
    ...                   "finished_at": [110.0, 105.0, 200.0, None]})
    >>> wall_times(t)
    (22.0, 27.0, 1)
    """
    if "wall_time_s" not in levels:
        return 0.0, 0.0, 0
    finished = levels["finished_at"] if "finished_at" in levels \
        else pd.Series(float("nan"), index=levels.index)
    t = pd.DataFrame({"wall": pd.to_numeric(levels["wall_time_s"], errors="coerce"),
                      "end": pd.to_numeric(finished, errors="coerce")}).dropna(subset=["wall"])
    untimed = t[t["end"].isna()]
    timed = t.dropna(subset=["end"]).drop_duplicates()
    # A level's start is end - wall: rounded to the spacing of floats near the clock
    # (2.4e-7 s at today's epoch), so end - start is not wall and could exceed it. A level
    # that overlaps none before it counts its own wall time, one that overlaps counts the
    # part past the others (never more than its wall time), and both totals are exact sums
    # (math.fsum) of those numbers: elapsed <= compute, however the floats round.
    parts, reach = [], float("-inf")
    for start, end, wall in sorted(zip(timed["end"] - timed["wall"], timed["end"],
                                       timed["wall"], strict=True)):
        if start >= reach:
            parts.append(wall)
        elif end > reach:  # the part of [start, end] not yet covered
            parts.append(min(wall, end - reach))
        reach = max(reach, end)
    rest = list(untimed["wall"])
    return (math.fsum(parts + rest), math.fsum(list(timed["wall"]) + rest), len(untimed))


def duration(seconds: float) -> str:
    """``"985.0 s (16.4 min)"``: seconds, and minutes or hours where they read easier."""
    text = f"{seconds:,.1f} s"
    if seconds >= 3 * 3600:
        return f"{text} ({seconds / 3600:.1f} h)"
    return f"{text} ({seconds / 60:.1f} min)" if seconds >= 120 else text


def left_out(res: Results) -> list[str]:
    """What the report cannot show: what ``lth.load`` could not read, and runs without a
    finished level."""
    out = list(res.problems)
    done = set(res.levels["run_dir"]) if "run_dir" in res.levels else set()
    for row in res.runs.itertuples():
        if row.run_dir not in done:
            out.append(f"{Path(row.run_dir).name} ({row.experiment}, seed {row.seed}): no "
                       f"finished level yet (status {row.status}); running it again resumes "
                       "it")
    return out
