"""What a run tells the person running it: the levels verified and skipped, where an
interrupted level resumes, and progress — a bar on a terminal, one line per level on a pipe
or in a file (no ``\\r`` redraws there). Notes go through :func:`lth.console.write`, so
they never land in the middle of a bar.

``progress`` of :meth:`~lth.experiment.LotteryModel.run` is ``True`` (a :class:`Console`),
a :class:`Reporter`, or a plain function ``(level, step, end_step)`` called after every
evaluation (and once with ``step = end_step`` for each level verified and skipped).

>>> levels_text([0, 1, 2, 3, 5])
'levels 0–3, 5'
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..console import is_terminal, write

Progress = Callable[[int, int, int], None]  # (level, step, end_step)


def levels_text(levels: Sequence[int]) -> str:
    """``level 2``, ``levels 0–3`` or ``levels 0–2, 5``: contiguous runs as ranges."""
    runs: list[list[int]] = []
    for lv in sorted(levels):
        if runs and lv == runs[-1][-1] + 1:
            runs[-1].append(lv)
        else:
            runs.append([lv])
    parts = [str(r[0]) if len(r) == 1 else f"{r[0]}–{r[-1]}" for r in runs]
    return f"level{'s' if len(levels) > 1 else ''} {', '.join(parts)}"


class Reporter:
    """Told what a run does, level by level; does nothing itself (subclass it)."""

    def start(self, *, last: int, total: int, rewind: int) -> None:
        """The run goes through levels 0..``last`` of ``total`` steps, the pruned ones
        usually from ``rewind``."""

    def skipped(self, level: int, *, copied: bool = False) -> None:
        """``level`` is finished (its files verified), or ``copied`` from a run that
        trained the same dense level 0: not trained again."""

    def begin(self, level: int, step: int, *, first: int, end: int) -> None:
        """``level`` trains from ``step`` (``first`` unless resumed from a checkpoint) to
        ``end``."""

    def step(self, level: int, step: int, end: int) -> None:
        """``level`` has trained to ``step`` (after an evaluation)."""

    def stopped_early(self, level: int, end: int) -> None:
        """``level`` stopped before ``end`` (early stopping): it is complete."""
        self.step(level, end, end)

    def finished(self, level: int) -> None:
        """``level`` is trained and stored."""

    def close(self) -> None:
        """The run ended (finished, failed or interrupted)."""


class _Calls(Reporter):
    """A plain ``progress(level, step, end_step)`` function as a :class:`Reporter`."""

    def __init__(self, fn: Progress):
        self.fn, self.total = fn, 0

    def start(self, *, last: int, total: int, rewind: int) -> None:
        self.total = total

    def skipped(self, level: int, *, copied: bool = False) -> None:
        self.fn(level, self.total, self.total)

    def step(self, level: int, step: int, end: int) -> None:
        self.fn(level, step, end)


def reporter(progress: bool | Progress | Reporter | None) -> Reporter | None:
    """The :class:`Reporter` that ``progress`` asks for (``None``: silent)."""
    if isinstance(progress, Reporter):
        return progress
    if progress is True:
        return Console()
    if callable(progress):
        return _Calls(progress)
    return None


class Console(Reporter):
    """Notes on stderr (levels skipped, a level resumed) and, with ``bars``, progress: a
    tqdm bar over the steps left when stderr is a terminal, else one line per level."""

    def __init__(self, *, bars: bool = True):
        self.bars = bars
        self.last = self.total = self.rewind = 0
        self._skipped: list[int] = []
        self._copied: list[int] = []
        self._bar: Any = None
        self._done: dict[int, int] = {}  # level -> the step its bar has reached
        self._began: dict[int, tuple[int, float]] = {}  # level -> (first step, time)

    def start(self, *, last: int, total: int, rewind: int) -> None:
        self.last, self.total, self.rewind = last, total, rewind

    def skipped(self, level: int, *, copied: bool = False) -> None:
        (self._copied if copied else self._skipped).append(level)

    def _notes(self) -> None:
        if self._skipped:
            write(f"{levels_text(self._skipped)} verified, skipped")
        if self._copied:
            write(f"{levels_text(self._copied)} copied from a run that trained the same "
                  "dense network")
        self._skipped, self._copied = [], []

    def begin(self, level: int, step: int, *, first: int, end: int) -> None:
        self._notes()
        if step > first:
            write(f"resuming level {level} at step {step} of {end}")
        self._began[level] = (step, time.perf_counter())
        self._done[level] = step
        if self.bars and self._bar is None and is_terminal():
            from tqdm.auto import tqdm

            later = (self.last - level) * (self.total - self.rewind)
            self._bar = tqdm(total=end - step + later, unit="it", dynamic_ncols=True,
                             desc=f"level {level}/{self.last}")
        elif self._bar is not None:
            self._bar.set_description(f"level {level}/{self.last}")

    def step(self, level: int, step: int, end: int) -> None:
        if self._bar is not None:
            self._bar.update(max(0, step - self._done.get(level, step)))
        self._done[level] = max(step, self._done.get(level, step))

    def stopped_early(self, level: int, end: int) -> None:
        if self._bar is not None:  # the steps it will not train leave the bar's total
            self._bar.total -= end - self._done.get(level, end)
            self._bar.refresh()

    def finished(self, level: int) -> None:
        if level not in self._began:  # copied, not trained
            return
        if self.bars and self._bar is None:  # not a terminal: one line per level
            first, t0 = self._began[level]
            write(f"level {level}/{self.last}: trained steps {first}–{self._done[level]} in "
                  f"{time.perf_counter() - t0:.1f} s")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._notes()


class GroupConsole:
    """Progress of a session or robust run: what it skips and resumes, then a bar over
    the trials' levels on a terminal, else a line each time a level finishes."""

    def __init__(self, *, bars: bool = True):
        self.bars = bars
        self._bar: Any = None
        self._count = self._total = self._base = 0
        self._runs: Path | None = None

    def start(self, runs: Path, n_levels: dict[str, int], status: dict[str, dict]) -> None:
        """``runs``: the trials' run directories; ``n_levels``: each trial's levels;
        ``status``: each trial's entry, checked against the store."""
        from ..store import count_finished_levels

        states = {key: status[key]["status"] for key in n_levels}
        done = [k for k, s in states.items() if s == "done"]
        failed = [k for k, s in states.items() if s == "failed"]
        retried = [k for k, s in states.items() if s == "pending" and "error" in status[k]]
        resumed = [k for k, s in states.items() if s == "pending" and "started" in status[k]
                   and k not in retried]
        if done:
            write(f"{_trials(done)} finished before: verified, skipped")
        if failed:
            write(f"{_trials(failed)} failed before, skipped (--retry-failed runs "
                  f"{'it' if len(failed) == 1 else 'them'} again)")
        if retried:
            write(f"retrying {_trials(retried)} that failed before (--retry-failed)")
        if resumed:
            one = len(resumed) == 1
            write(f"resuming {_trials(resumed)} interrupted before, from "
                  f"{'its last checkpoint' if one else 'their last checkpoints'}")
        pending = [k for k, s in states.items() if s == "pending"]
        self._runs, self._base = runs, count_finished_levels(runs)
        self._count = self._base
        self._total = sum(n_levels[k] + 1 for k in pending + done)
        if self.bars and pending and is_terminal():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=max(1, self._total - self._base), unit="level",
                             dynamic_ncols=True)

    def update(self, status: dict[str, dict], running: int) -> None:
        if self._runs is None or not self.bars:
            return
        from ..store import count_finished_levels

        levels = count_finished_levels(self._runs)
        counts = {s: sum(1 for e in status.values() if e["status"] == s)
                  for s in ("done", "failed")}
        if self._bar is not None:
            self._bar.n = min(levels - self._base, self._bar.total)
            self._bar.set_postfix(done=counts["done"], running=running,
                                  failed=counts["failed"], refresh=False)
            self._bar.refresh()
        elif levels > self._count:
            busy = f", {running} running" if running else ""
            write(f"levels {min(levels, self._total)}/{self._total} finished; trials: "
                  f"{counts['done']} done{busy}, {counts['failed']} failed")
        self._count = levels

    def close(self, status: dict[str, dict]) -> None:
        self.update(status, 0)
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _trials(keys: Sequence[str]) -> str:
    return f"{len(keys)} trial{'s' if len(keys) != 1 else ''}"
