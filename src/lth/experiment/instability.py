"""Linear mode connectivity and instability (Frankle et al. 2020, "Linear Mode Connectivity
and the Lottery Ticket Hypothesis").

From a level's starting point — θk, the weights at the rewind step k, masked by the level's
mask (level 0: the dense net) — two copies train to the end with different data orders
(and augmentation and dropout draws). Along the straight line between their final weights,
``points`` evenly spaced networks are evaluated on the test split and on as many training
examples; when the model has BatchNorm each point's running statistics are recomputed on
training batches first (the averaged statistics of two nets describe neither). The
*instability* is the error barrier: the largest error along the path minus the mean of
the two ends' errors (for tasks without accuracy, the same on the loss). With BatchNorm
the ends too are evaluated with re-estimated statistics, like every point.

Stored beside the run's levels as the analysis of study ``instability``
(:class:`lth.store.Analysis`, one per level): each copy's final weights, the path and a
summary written last, so an interrupted analysis resumes (each copy's training from its
checkpoint) and a finished one is read back. The study's command, table and figures are
:mod:`lth.studies.instability`.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ..data import Data
from ..errors import ConfigError, explained_os_errors
from ..masks import Mask
from ..seeding import derive_seed, sample
from ..state import get_state, set_state
from ..store import Analysis, Damaged, RunDir
from ..tasks import Task
from ..train import Job, Span, evaluate, torch_threads, train_stack
from .imp import rewind_point
from .lottery_model import LotteryModel
from .plan import Plan
from .result import Result
from .spec import level_count_matters

State = dict[str, torch.Tensor]
NAME = "instability"  # the study (lth.studies) and its directory in a run
COPIES = 2
BN_BATCHES = 50  # training batches that re-estimate BatchNorm statistics at a point


def interpolate(a: State, b: State, alpha: float) -> State:
    """(1 − α)·a + α·b for floating tensors (exactly a at α = 0 and b at α = 1); others
    (BatchNorm's batch counter) from ``a``."""
    return {k: (1 - alpha) * a[k] + alpha * b[k] if a[k].is_floating_point() else a[k]
            for k in a}


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, data: Data, batch_size: int, seed: int,
                        batches: int = BN_BATCHES) -> None:
    """Replace every BatchNorm's running statistics by their average over ``batches``
    seeded training batches (the model's weights fixed)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    was_training = model.training
    model.train()
    order = sample(len(data.y_train), batch_size * batches, seed, "bn-batches")
    with torch.random.fork_rng(devices=[]):  # dropout's draws: not the caller's stream
        torch.manual_seed(seed)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size].to(data.x_train.device)
            model(data.prepare(data.x_train[idx]))
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.train(was_training)


def linear_path(model: nn.Module, a: State, b: State, data: Data, *, points: int,
                task: Task, output: int | str | None, eval_batch_size: int,
                batch_size: int, seed: int) -> list[dict[str, float]]:
    """The task's loss and metrics on the test split and on a fixed training subset of the
    same size, at ``points`` evenly spaced α from 0 (``a``) to 1 (``b``)."""
    if points < 2:
        raise ConfigError(f"points = {points}; the path needs at least its two ends")
    net = copy.deepcopy(model)
    subset = sample(len(data.y_train), max(len(data.y_test), 1), seed, "path-train-subset")
    subset = subset.to(data.x_train.device)
    x_train, y_train = data.x_train[subset], data.y_train[subset]
    bn = has_batchnorm(net)
    rows = []
    for i in range(points):
        alpha = i / (points - 1)
        set_state(net, interpolate(a, b, alpha))
        if bn:
            recompute_batchnorm(net, data, batch_size, seed)
        row: dict[str, float] = {"alpha": alpha}
        for split, (x, y) in (("train", (x_train, y_train)), ("test", (data.x_test, data.y_test))):
            scores = evaluate(net, x, y, eval_batch_size, data.prepare, task=task, output=output)
            row.update({f"{split}_{k}": v for k, v in scores.items()})
        rows.append(row)
    return rows


def barrier(rows: list[dict[str, float]], split: str = "test") -> dict[str, float]:
    """Error barrier (when the task reports ``acc``) and loss barrier of a path: the worst
    value along it minus the mean of its two ends."""
    out = {}
    losses = [r[f"{split}_loss"] for r in rows]
    out[f"{split}_loss_barrier"] = max(losses) - (losses[0] + losses[-1]) / 2
    if f"{split}_acc" in rows[0]:
        errors = [1 - r[f"{split}_acc"] for r in rows]
        out[f"{split}_error_barrier"] = max(errors) - (errors[0] + errors[-1]) / 2
    return out


def finished_analysis(analysis: Analysis) -> dict[str, Any] | None:
    """The summary of a finished analysis (its files checked), or None."""
    try:
        return analysis.summary()
    except Damaged:
        return None


def _start(plan: Plan, run: RunDir, level: int) -> State:
    """Where the copies start: the level's own start (θk masked, after pruning), or for
    the dense level the rewind point θk."""
    return run.level(level).tensors("start") if level > 0 else rewind_point(plan, run)


@explained_os_errors
def instability(experiment: LotteryModel, store: str | Path, levels: list[int], *,
                points: int = 11) -> pd.DataFrame:
    """Run the experiment's IMP levels (as :meth:`LotteryModel.run`, resuming what is there)
    through ``max(levels)``, then each level's two-copy analysis; one row per level: the
    rewind step k, % of weights left, each copy's test error (or loss), the barriers."""
    if not levels or min(levels) < 0:
        raise ConfigError(f"levels = {levels}; give one or more levels >= 0")
    if max(levels) > experiment.config.n_levels:
        c = experiment.config
        # The spec's own rule: when the level count shapes the densities, it names the run.
        if level_count_matters({"prune": c.prune.to_dict(), "earlybird": c.earlybird.to_dict()}):
            raise ConfigError(f"levels up to {max(levels)} but the run has n_levels = "
                              f"{c.n_levels}, and with schedule = 'target' or early-bird "
                              "more levels make another run (other densities); set n_levels "
                              f">= {max(levels)} in the config")
        experiment = experiment.replace(levels=max(levels))
    result: Result = experiment.run(store, through=max(levels))
    plan = experiment.check()
    run = RunDir(result.path)
    rows = []
    for level in levels:
        analysis = Analysis.of(run, NAME, level=level)
        summary = finished_analysis(analysis)
        if summary is None or summary.get("points") != points:  # the copies are reused
            with torch_threads(plan.train.threads):
                summary = _analyse(experiment, plan, run, level, analysis, points)
        rows.append({k: v for k, v in summary.items() if k != "files"})
    return pd.DataFrame(rows)


def _analyse(experiment: LotteryModel, plan: Plan, run: RunDir, level: int,
             analysis: Analysis, points: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    mask = Mask(run.level(level).tensors("mask"), order=plan.names)
    start = _start(plan, run, level)
    device = plan.device
    data = experiment.data.to(device)
    span = Span(start=plan.rewind_step, end=plan.total_steps, **plan.span)
    finals: list[State] = []
    for i in range(COPIES):
        final = analysis.reuse(f"copy_{i}")
        if final is None:  # train this copy (resuming from its checkpoint)
            model = copy.deepcopy(experiment.model).to(device)
            set_state(model, start)
            checkpoint = analysis.checkpoint(f"copy_{i}")
            job = Job(model, data, plan.train, mask, span,
                      seed=derive_seed(plan.seed, "instability", level, i), level=level,
                      checkpoints=checkpoint, task=plan.task, output=plan.task_config.output)
            (outcome,) = train_stack([job])
            if isinstance(outcome, BaseException):
                raise outcome
            final = get_state(model)
            analysis.save(f"copy_{i}", final)
            checkpoint.clear()
        finals.append(final)
    model = copy.deepcopy(experiment.model).to(device)
    path = linear_path(model, finals[0], finals[1], data, points=points, task=plan.task,
                       output=plan.task_config.output,
                       eval_batch_size=plan.train.eval_batch_size,
                       batch_size=plan.train.batch_size, seed=plan.seed)
    analysis.write("path", {"rows": path})
    summary = {"level": level, "rewind_step": plan.rewind_step,
               "pct_remaining": 100.0 * mask.density(), "points": points,
               **{f"copy_{i}_test_{m}": end[f"test_{m}"]
                  for i, end in enumerate((path[0], path[-1]))
                  for m in ("loss", "acc") if f"test_{m}" in end},
               **barrier(path, "test"), **barrier(path, "train"),
               "batchnorm_recomputed": has_batchnorm(model),
               "wall_time_s": time.perf_counter() - t0}
    summary = {k: (None if isinstance(v, float) and math.isnan(v) else v)
               for k, v in summary.items()}
    return analysis.commit(summary)  # last: marks the analysis done
