"""A trial — one experiment at one seed — the unit every executor schedules."""

from __future__ import annotations

import dataclasses
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ExperimentConfig
from ..data import kept_datasets
from ..errors import LTHError, StoreError, explain_os_error, is_filesystem_error
from ..store import Trials
from ..store.group import pid_marker
from ..train import torch_threads
from .imp import drive_together
from .lottery_model import LotteryModel


@dataclass(frozen=True)
class Trial:
    """``variant`` at ``seed``; built in the worker from a config (cheap to ship) or from a
    ready :class:`LotteryModel` (the Python API). ``masks_of`` names the trial whose masks
    this one reuses (a control), which must finish first."""

    key: str
    variant: str
    seed: int
    config: ExperimentConfig | None = None
    experiment: LotteryModel | None = None
    masks_of: str | None = None

    @property
    def n_levels(self) -> int:
        if self.config is not None:
            return self.config.n_levels
        assert self.experiment is not None
        return self.experiment.config.n_levels

    def build(self, masks_from: str | None) -> LotteryModel:
        changes = {"seed": self.seed}
        if masks_from is not None:
            changes["masks_from"] = masks_from
        if self.config is not None:
            return LotteryModel.from_config(dataclasses.replace(self.config, **changes))
        assert self.experiment is not None
        return self.experiment.replace(**changes)


@dataclass(frozen=True)
class Outcome:
    key: str
    status: str  # "done" or "failed"
    run_dir: str | None = None
    error: str | None = None
    traceback: str | None = None
    wall_time_s: float = 0.0
    pid: int = 0


def check_store_visible(group_dir: Path) -> None:
    """Refuse to run where the group's directory (written by the driver before it submits)
    cannot be seen: a cluster node without the shared store would train into a local
    folder of the same name, lost to the driver."""
    if not Trials(group_dir).exists():
        import socket

        raise StoreError(
            f"this worker (host {socket.gethostname()}, pid {os.getpid()}) cannot see the "
            f"store at {group_dir}: on a cluster the store must be on a filesystem every "
            "node mounts at the same path (NFS, a shared volume); mount it there, or run "
            "with --store on such a filesystem")


def run_trials(trials: list[tuple[Trial, str | None]], store: str, running_dir: str,
               through: int | None = None) -> list[Outcome]:
    """Run (or resume) trials — each ``(trial, masks_from)``, up to level ``through`` if
    given — trained together: their levels advance in lockstep and compatible ones train
    stacked in one step (:func:`lth.train.train_stack`). An exception ends only its own
    trial, as a ``failed`` outcome.

    While they run, ``running_dir/<key>.pid`` holds the worker's pid for ``lth status``.
    """
    check_store_visible(Path(running_dir).parent)
    t0 = time.perf_counter()
    markers = [pid_marker(running_dir, t.key) for t, _ in trials]
    generators: list[Any] = []
    threads = 0
    built: list[BaseException | None] = []  # a trial that cannot even be built: its error
    try:
        for marker in markers:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(os.getpid()))
        for trial, masks_from in trials:
            try:
                with kept_datasets():
                    exp = trial.build(masks_from)
                generators.append(exp.levels(Path(store), through=through))
                threads = threads or exp.train.threads
                built.append(None)
            except (Exception, LTHError) as exc:
                built.append(exc)
        with torch_threads(threads), kept_datasets():
            results = iter(drive_together(generators))
        outcomes = []
        for (trial, _), error in zip(trials, built, strict=True):
            result = error if error is not None else next(results)
            elapsed = time.perf_counter() - t0
            if isinstance(result, OSError) and is_filesystem_error(result):
                # The disk, not the trial: stop the run (the trial stays pending and
                # resumes once the cause is gone), with the one message that says so.
                raise explain_os_error(result) from result
            if isinstance(result, BaseException):
                outcomes.append(Outcome(
                    trial.key, "failed", error=f"{type(result).__name__}: {result}",
                    traceback="".join(traceback.format_exception(result)),
                    wall_time_s=elapsed, pid=os.getpid()))
            else:
                outcomes.append(Outcome(trial.key, "done", run_dir=str(result.path),
                                        wall_time_s=elapsed, pid=os.getpid()))
        return outcomes
    finally:
        for marker in markers:
            marker.unlink(missing_ok=True)
