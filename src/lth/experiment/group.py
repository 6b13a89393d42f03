"""A group of trials in one directory: the engine under sessions and robust runs.

Layout of ``<store>/<name>-<kind>-<hash12>/``: ``config.json`` (identity), ``trials.json``
(status of every trial, written only by the driver), ``trials/`` (each trial's run
directory), ``failures/<key>.txt`` (tracebacks), ``running/<key>.pid`` (live trials), and
the tables ``table.csv``, ``stats.csv``, ``curve_stats.csv``, ``trials.csv``.

A trial that finished is never run again; one that was interrupted resumes from its last
checkpoint; one that failed is skipped (and counted) unless ``retry_failed``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..config_schema import name_problem
from ..data import kept_datasets
from ..devices import choose_device
from ..errors import ConfigError, explained_os_errors
from ..execution import WorkerLost, make_executor
from ..store import (
    RunDir,
    Trials,
    exclusive,
    group_dir,
    short_hash,
    tidy_group,
)
from .group_result import GroupResult
from .progress import GroupConsole
from .trials import Outcome, Trial, run_trials

log = logging.getLogger("lth")
__all__ = ["GroupResult", "TrialGroup", "auto_stack"]


class TrialGroup:
    """Trials run together and stored in one directory (see the module docstring)."""

    kind = "group"

    def __init__(self, name: str, trials: Sequence[Trial], info: dict[str, Any] | None = None):
        problem = name_problem(name)
        if problem:
            raise ConfigError(f"{self.kind} name {name!r} {problem}")
        keys = [t.key for t in trials]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"trial keys repeat: {keys}")
        by_key = {t.key: t for t in trials}
        for t in trials:
            if t.masks_of is None:
                continue
            if t.masks_of not in keys:
                raise ConfigError(f"trial {t.key!r} reuses the masks of {t.masks_of!r}, which "
                                  f"is not in this {self.kind}; known: {', '.join(keys)}")
            if t.n_levels > by_key[t.masks_of].n_levels:
                raise ConfigError(f"variant {t.variant!r} has {t.n_levels} levels but reuses "
                                  f"the masks of {by_key[t.masks_of].variant!r}, which has "
                                  f"{by_key[t.masks_of].n_levels}; give it at most as many")
        self.name, self.trials = name, list(trials)
        self.info = info or {}

    def check(self) -> dict[str, Any]:
        """Check every variant against its model and data before any trial trains; returns
        the group's identity (each variant's recipe, however the group was given)."""
        variants: dict[str, Any] = {}
        self._level0: dict[str, str] = {}
        self._stack = 0
        for t in self.trials:
            if t.variant in variants:
                continue
            with kept_datasets():  # the trials of this process (or its workers) reuse it
                exp = t.build(None)
            variants[t.variant] = {"experiment": short_hash(exp.recipe()),
                                   "masks_of": t.masks_of and t.masks_of.rsplit("-s", 1)[0]}
            if t.masks_of is not None:  # its masks come later; check everything else
                exp = exp.replace(masks_from_mode="same")
            plan = exp.check()
            self._level0[t.variant] = plan.level0_class()
            stack = exp.train.stack or auto_stack(plan.device, exp.train.precision)
            self._stack = min(self._stack or stack, stack)
        return {"kind": self.kind, "variants": variants}

    def _wants_gpu(self) -> bool:
        """Whether the trials train on CUDA, from their settings alone: the executor is made
        before :meth:`check`, which refuses a device this machine lacks."""
        for t in self.trials:
            cfg = t.config if t.config is not None else t.experiment.config  # type: ignore[union-attr]
            try:
                if choose_device(cfg.train.device).type == "cuda":
                    return True
            except ConfigError:
                continue  # check() says so, with the run's context
        return False

    @explained_os_errors
    def run(self, store: str | Path | None = "runs", *, executor: str = "sequential",
            workers: int | None = None, retry_failed: bool = False,
            progress: bool | GroupConsole = False, stack: int | None = None) -> GroupResult:
        """Run every trial that is not finished; returns the group's results.

        ``store=None`` uses a temporary directory that lives as long as the result.
        ``stack``: at most this many trials that train alike (the seeds of a variant, or
        variants with the same model, data and training) train stacked in one step, in
        one worker (default: each variant's ``train.stack``; its 0 means
        :func:`auto_stack`). ``progress``: ``True`` (or a
        :class:`~lth.experiment.progress.GroupConsole`) says on stderr what is skipped and
        resumed, and shows a bar of the trials' levels.
        """
        if stack is not None and stack < 1:
            raise ConfigError(f"stack = {stack}; give 1 or more (1: one trial at a time)")
        keepalive = None
        if store is None:
            keepalive = tempfile.TemporaryDirectory(prefix="lth-")
            store = keepalive.name
        pool = make_executor(executor, workers, gpu=self._wants_gpu())
        with contextlib.ExitStack() as stop:
            stop.callback(pool.shutdown)  # also when the checks fail: workers started early
            if hasattr(pool, "start"):  # its workers start (import torch) while we check
                pool.start(len(self.trials))
            identity = self.check()
            gdir = group_dir(store, self.name, self.kind, identity,
                             {"name": self.name, **self.info})
            with exclusive(gdir, f"{gdir} is being run by another process; wait for it to "
                                 "finish (`lth status` shows its trials) or stop it"):
                trials = Trials(gdir)
                status = _reconcile(trials, self.trials, retry_failed)
                try:
                    _Driver(self.trials, trials, status, pool, progress, self._level0,
                            stack or self._stack).loop()
                finally:
                    stop.close()  # shut down within the lock
                result = GroupResult(gdir, _keepalive=keepalive)
                result.write_tables()
        return result


def auto_stack(device: torch.device, precision: str = "fp32") -> int:
    """How many trials train stacked when ``train.stack = 0``: on a GPU 8 (small nets use
    a sliver of it); on CPU 1, where ``bench/stack_speed.py`` measured stacking no faster
    than one trial at a time for LeNet-300-100 (the matrix products are compute-bound).
    fp16 trials never stack (their loss scales skip steps trial by trial)."""
    return 8 if device.type == "cuda" and precision != "fp16" else 1


def _reconcile(trials: Trials, wanted: list[Trial], retry_failed: bool) -> dict[str, dict]:
    """The status of every trial, checked against the store: a trial recorded done whose
    run is damaged, or has fewer levels than now asked for, runs again (and resumes)."""
    status = trials.read()
    for t in wanted:
        entry = status.setdefault(t.key, {"status": "pending"})
        entry.update(variant=t.variant, seed=t.seed)
        if entry.get("status") == "failed" and retry_failed:
            entry["status"] = "pending"
        if entry.get("status") == "done":
            run = trials.run_path(entry)
            if run is None or RunDir(run).verify(t.n_levels):
                entry["status"] = "pending"
        elif entry.get("status") not in ("pending", "failed"):
            entry["status"] = "pending"
    trials.write(status)
    for path in tidy_group(trials.gdir):
        log.info("removed leftover %s", path)
    return status


class _Driver:
    """Submits ready trials (dependencies finished), collects outcomes, retries lost ones.

    Trials that train the same dense level 0 (variants and controls at one seed) wait for
    one of them to train it: its level 0 runs first as a task of its own, and the others
    copy it from the store."""

    def __init__(self, trials: list[Trial], store: Trials, status: dict, pool: Any,
                 progress: bool | GroupConsole, level0: dict[str, str], stack: int):
        self.trials = {t.key: t for t in trials}
        self.level0, self.stack = level0, stack
        self.store, self.status, self.pool = store, status, pool
        self.running: dict[Any, list[str]] = {}  # handle -> its trials (key or key#level0)
        self.lost: dict[str, int] = {}
        self.bar = GroupConsole() if progress is True else (progress or None)
        if self.bar is not None:
            self.bar.start(store.runs_dir, {t.key: t.n_levels for t in trials}, status)
        self.leader: dict[str, str] = {}  # trial key -> the key whose level-0 task it awaits
        classes: dict[tuple[str, int], list[str]] = {}
        for t in trials:
            if status[t.key]["status"] == "pending":
                classes.setdefault((level0[t.variant], t.seed), []).append(t.key)
        for members in classes.values():
            if len(members) > 1:
                for key in members:
                    self.leader[key] = members[0]
        self.level0_done: set[str] = set()
        self.level0_running: set[str] = set()

    def record(self, key: str, **entry: Any) -> None:
        self.status[key].update(entry)
        self.store.write(self.status)

    def ready(self) -> list[tuple[Trial, int | None]]:
        out: list[tuple[Trial, int | None]] = []
        busy = {task for tasks in self.running.values() for task in tasks}
        for key, t in self.trials.items():
            if self.status[key]["status"] != "pending" or key in busy:
                continue
            dep = self.status.get(t.masks_of, {}) if t.masks_of else {"status": "done"}
            if dep["status"] == "failed":
                error = f"needs the masks of {t.masks_of}, which failed"
                self.store.record_failure(key, error)
                self.record(key, status="failed", error=error)
                continue
            if dep["status"] != "done":
                continue
            leader = self.leader.get(key)
            if leader is None or leader in self.level0_done:
                out.append((t, None))
            elif leader == key and key not in self.level0_running:
                out.append((t, 0))  # the shared level 0 first, as a task of its own
        return out

    def stacks(self, ready: list[tuple[Trial, int | None]], free: int
               ) -> list[tuple[int | None, list[Trial]]]:
        """Up to ``free`` tasks from the ready trials: those that train alike (same level-0
        class: architecture, data, training) share a task of at most ``self.stack``
        trials, spread so that every free worker gets one."""
        classes: dict[tuple[int | None, str], list[Trial]] = {}
        for t, through in ready:
            classes.setdefault((through, self.level0[t.variant]), []).append(t)
        tasks: list[tuple[int | None, list[Trial]]] = []
        for (through, _), members in classes.items():
            n = len(members)
            count = max(math.ceil(n / self.stack), min(free - len(tasks), n), 1)
            size = math.ceil(n / count)
            tasks += [(through, members[i:i + size]) for i in range(0, n, size)]
        return tasks[:max(0, free)]

    def loop(self) -> None:
        try:
            self._loop()
        finally:  # also when interrupted: what follows is not written into the bar
            if self.bar:
                self.bar.close(self.status)

    def _loop(self) -> None:
        while True:
            free = self.pool.capacity - len(self.running)
            for through, members in self.stacks(self.ready(), free):
                items = [(t, self.status[t.masks_of]["run_dir"] if t.masks_of else None)
                         for t in members]
                for t in members:  # before submitting: the sequential executor runs it now
                    self.record(t.key, status="pending", started=time.time())
                handle = self.pool.submit(
                    run_trials, [(t, m and str(self.store.gdir / m)) for t, m in items],
                    str(self.store.runs_dir), str(self.store.running_dir), through)
                self.running[handle] = [t.key if through is None else f"{t.key}#level0"
                                        for t in members]
                if through is not None:
                    self.level0_running.update(t.key for t in members)
            if not self.running:
                break
            for handle in self.pool.wait(list(self.running), timeout=0.5):
                tasks = self.running.pop(handle)
                try:
                    outcomes: list[Outcome | WorkerLost] = list(self.pool.result(handle))
                except WorkerLost as exc:
                    outcomes = [exc] * len(tasks)
                for task, out in zip(tasks, outcomes, strict=True):
                    self.collect(task, out)
            if self.bar:
                self.bar.update(self.status, sum(map(len, self.running.values())))

    def collect(self, task: str, out: Outcome | WorkerLost) -> None:
        key, _, part = task.partition("#")
        if isinstance(out, WorkerLost):
            self.lost[task] = self.lost.get(task, 0) + 1
            if self.lost[task] < 2:  # resubmit once: it resumes from its checkpoint
                self.level0_running.discard(key)
                return
            out = Outcome(key, "failed", error=f"{out}; twice")
        if part:  # the shared level-0 task: its followers may start (or fail alike)
            self.level0_running.discard(key)
            if out.status == "done":
                self.level0_done.add(key)
                return
        if out.status == "failed":
            self.store.record_failure(key, out.traceback or out.error or "")
            self.record(key, status="failed", error=out.error, finished=time.time())
            if part:
                for follower in [f for f, lead in self.leader.items() if lead == key]:
                    del self.leader[follower]  # each trains its own level 0
        else:
            self.record(key, status="done", run_dir=self.store.relative(out.run_dir),
                        wall_time_s=round(out.wall_time_s, 3), finished=time.time())
