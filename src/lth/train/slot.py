"""One trial's bookkeeping while it trains (:class:`Slot`): its optimizer, precision,
running sums, current mask and history, and how they go into and come out of a level's
checkpoint."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import TrainingError
from ..masks import Mask
from ..state import set_state
from .evaluate import Sums
from .job import Job
from .optim import Optimizer
from .precision import Precision

Tensors = dict[str, torch.Tensor]


def _readable(tensors: Tensors, meta: dict[str, Any]) -> bool:
    """Whether a checkpoint is in this version's format. Older development checkpoints
    (other running sums, optimizer state by index) are not translated: the level
    restarts from its start, with the same numbers."""
    return isinstance(meta.get("sums"), dict) and not any(k.startswith("opt.") for k in tensors)


def _part(tensors: Tensors, prefix: str) -> Tensors:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


@dataclass
class Slot:
    """One job in training: where it stands (``step``, ``history``, ``mask`` and the
    number of mask ``updates`` so far) and, once it is done, its ``result`` (the history,
    or the exception that ended it)."""

    job: Job
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    rng: torch.Tensor | None = None
    stack_seeds: list[int] | None = None
    result: Any = None
    updates: int = 0

    def __post_init__(self) -> None:
        job = self.job
        self.device = job.data.x_train.device
        self.params = {n: p for n, p in job.model.named_parameters() if p.requires_grad}
        self.opt = Optimizer(job.cfg, self.params)
        self.precision = Precision(job.cfg.precision, self.device)
        self.sums = self.fresh_sums()
        self.mask = job.mask
        resumed = job.checkpoints.load() if job.checkpoints else None
        if resumed and _readable(*resumed):
            self._unpack(*resumed)
        else:
            self.step = job.span.start
        Mask.apply_(self.mask, job.model)
        job.model.train()
        self.last_ckpt = self.step

    def fresh_sums(self) -> Sums:
        return Sums(self.job.task, self.device, equal_batches=True)

    # -- checkpoints ----------------------------------------------------------------------
    def _unpack(self, tensors: Tensors, meta: dict[str, Any]) -> None:
        set_state(self.job.model, _part(tensors, "model."))
        self.opt.load(_part(tensors, "optim."), self.device)
        self.precision.load(_part(tensors, "amp."))
        self.rng = tensors["rng.cpu"]
        self.stack_seeds = meta.get("stack")
        self.sums.load(_part(tensors, "sums."), meta["sums"])
        for cb in self.job.callbacks:
            if cb.key is not None:
                cb.load(_part(tensors, f"{cb.key}."), meta.get(cb.key, {}))
        updates = self.job.mask_updates
        if updates is not None and "mask_updates" in meta:
            saved = meta["mask_updates"]
            self.mask = Mask(_part(tensors, "mask."), order=self.job.mask.names())
            self.updates = int(saved["count"])
            updates.load(_part(tensors, "mask_updates."), saved["state"])
        self.step, self.history = int(meta["step"]), list(meta["history"])

    def save(self, state: Tensors, opt: Tensors, stack_seeds: list[int] | None) -> None:
        """Checkpoint this trial: ``state`` (its parameters and buffers), ``opt`` (its
        optimizer state) and everything else it keeps to continue exactly."""
        tensors = {f"model.{k}": v for k, v in state.items()}
        tensors.update({f"optim.{k}": v for k, v in opt.items()})
        tensors.update({f"amp.{k}": v for k, v in self.precision.state().items()})
        tensors["rng.cpu"] = torch.get_rng_state()
        sum_tensors, counts = self.sums.state()
        tensors.update({f"sums.{k}": v for k, v in sum_tensors.items()})
        meta: dict[str, Any] = {"step": self.step, "history": self.history, "sums": counts}
        if stack_seeds is not None:
            meta["stack"] = stack_seeds
        for cb in self.job.callbacks:
            if cb.key is not None:
                extra, meta[cb.key] = cb.state()
                tensors.update({f"{cb.key}.{k}": v for k, v in extra.items()})
        updates = self.job.mask_updates
        if updates is not None:  # the mask of now, not the level's first one
            extra, values = updates.state()
            meta["mask_updates"] = {"count": self.updates, "state": values}
            tensors.update({f"mask_updates.{k}": v for k, v in extra.items()})
            tensors.update({f"mask.{n}": t.to("cpu", copy=True) for n, t in self.mask.items()})
        assert self.job.checkpoints is not None  # only jobs with checkpoints are saved
        self.job.checkpoints.save(tensors, meta)
        self.last_ckpt = self.step

    # -- evaluation rows ------------------------------------------------------------------
    def record(self, step: int, lr: float, scores: dict[str, dict[str, float]], *,
               check: bool = True) -> bool:
        """Add the evaluation row at ``step`` (``scores``: the val/test loss and metrics);
        False when the loss stopped being finite (``check``), the error kept as result."""
        row: dict[str, float] = {"step": step, "epoch": step / self.job.span.steps_per_epoch,
                                 "lr": lr, **self.sums.means("train_")}
        for split, values in scores.items():
            row.update({f"{split}_{k}": v for k, v in values.items()})
        if self.job.mask_updates is not None:
            row["mask_updates"] = self.updates
        self.sums = self.fresh_sums()
        try:
            if check:
                self._check_finite(row)
        except TrainingError as exc:
            self.result = exc
            return False
        self.history.append(row)
        for cb in self.job.callbacks:
            cb.after_eval(row)
        return True

    def _check_finite(self, row: dict[str, float]) -> None:
        job = self.job
        watched = [row["train_loss"]] + ([row["test_loss"]] if len(job.data.y_test) else [])
        if not all(math.isfinite(v) for v in watched):
            raise TrainingError(
                f"training diverged at level {job.level} by step {row['step']} (train loss "
                f"{row['train_loss']}, test loss {row['test_loss']}); lower train.lr "
                f"(now {job.cfg.lr}) or add warmup. Finished levels are kept; a changed "
                "config is a new run")

    def finish(self) -> None:
        """Training of this trial ended: its result is its history unless an error ended
        it; the job's mask is the one it ended with."""
        if self.result is None:
            self.result = self.history
        if self.mask is not self.job.mask:
            first = next(iter(self.job.mask.tensors().values()), None)
            self.job.mask = self.mask if first is None else self.mask.to(first.device)
