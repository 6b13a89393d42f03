"""A trial — one experiment at one seed — the unit every executor schedules."""

from __future__ import annotations

import dataclasses
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from ..config import ExperimentConfig
from ..errors import LTHError
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


def run_trial(trial: Trial, store: str, masks_from: str | None, running_dir: str,
              through: int | None = None) -> Outcome:
    """Run (or resume) one trial — up to level ``through`` if given; an exception becomes a
    ``failed`` outcome, not a crash.

    While it runs, ``running_dir/<key>.pid`` holds the worker's pid for ``lth status``.
    """
    t0 = time.perf_counter()
    marker = Path(running_dir) / f"{trial.key}.pid"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(os.getpid()))
    try:
        result = trial.build(masks_from).run(store=store, through=through)
        return Outcome(trial.key, "done", run_dir=str(result.path),
                       wall_time_s=time.perf_counter() - t0, pid=os.getpid())
    except (Exception, LTHError) as exc:
        return Outcome(trial.key, "failed", error=f"{type(exc).__name__}: {exc}",
                       traceback=traceback.format_exc(), wall_time_s=time.perf_counter() - t0,
                       pid=os.getpid())
    finally:
        marker.unlink(missing_ok=True)
