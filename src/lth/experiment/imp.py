"""The IMP loop over a plan, a run directory and the trainer.

For each level: if its files verify, skip it; else get its mask (pruned from the level it
derives from, or reused), its start (reinitialised survivors), train, and commit. A level
found damaged is recomputed from the last good state; the numbers are those of an
uninterrupted run because every step is a pure function of the plan and earlier levels.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from typing import Any

import torch
from torch import nn

from .. import steps
from ..data import Data
from ..errors import StoreError
from ..masks import Mask
from ..seeding import generator
from ..state import get_state, set_state
from ..store import Damaged, RunDir
from ..store.layout import HISTORY
from ..train import Callback, Job, Span, sparse_layers, train_stack
from .costs import CostTimeline, level_costs, training_flops
from .hooks import level_hooks
from .plan import Plan
from .progress import Reporter
from .result import levels_frame, summarize

log = logging.getLogger("lth")
State = dict[str, Any]


Jobs = Generator[Job, "list[dict] | BaseException", Any]


def level_jobs(plan: Plan, run: RunDir, model: nn.Module, data: Data, *, through: int,
               report: Reporter | None, on_level: Callable[[int], None]) -> Jobs:
    """Levels 0..``through`` of ``run``: verified if done, (re)computed if not.

    A generator: it yields each level's training :class:`~lth.train.Job` and expects its
    history back (or the exception that ended it, which it raises); :func:`drive` trains
    one trial's jobs, :func:`drive_together` those of several trials at once."""
    with run.lock():
        for path in run.tidy():
            log.info("removed leftover %s", path)
        _ensure_theta0(plan, run)
        for level in range(through + 1):
            if _intact(plan, run, level):
                if report is not None:
                    report.skipped(level)
                continue
            if level == 0 and _reuse_level0(plan, run):
                if report is not None:
                    report.skipped(level, copied=True)
            else:
                yield from _train(plan, run, model, data, level, report)
                if report is not None:
                    report.finished(level)
            on_level(level)
        summaries = run.summaries()
        run.write_levels_csv(levels_frame([summaries[lv] for lv in sorted(summaries)])
                             .to_csv(index=False))


def drive(jobs: Jobs) -> Any:
    """Train the jobs of one generator one after another; returns its return value."""
    try:
        job = next(jobs)
        while True:
            (outcome,) = train_stack([job])
            job = (jobs.throw(outcome) if isinstance(outcome, BaseException)
                   else jobs.send(outcome))
    except StopIteration as stop:
        return stop.value
    finally:  # now, not when the traceback is freed: its bar closes, its lock is released
        jobs.close()


def drive_together(generators: list[Jobs]) -> list[Any]:
    """Advance several trials' generators in lockstep, training the jobs they have waiting
    at the same time together (stacked where compatible, see :func:`lth.train.train_stack`).
    Returns each generator's return value, or the exception that ended it."""
    results: list[Any] = [None] * len(generators)
    waiting: dict[int, Job] = {}

    def advance(i: int, outcome: Any = None) -> None:
        gen = generators[i]
        try:
            if isinstance(outcome, BaseException):
                waiting[i] = gen.throw(outcome)
            else:
                waiting[i] = next(gen) if outcome is None else gen.send(outcome)
        except StopIteration as stop:
            results[i] = stop.value
        except Exception as exc:  # noqa: BLE001 - this trial's failure, not the others'
            results[i] = exc

    for i in range(len(generators)):
        advance(i)
    while waiting:
        batch = sorted(waiting.items())
        waiting.clear()
        for (i, _), outcome in zip(batch, train_stack([job for _, job in batch]), strict=True):
            advance(i, outcome)
    return results


def _ensure_theta0(plan: Plan, run: RunDir) -> None:
    try:
        stored = run.theta0()
    except Damaged as exc:
        if exc.problem != "is missing":
            log.warning("%s; rewritten from the initialiser", exc)
        stored = None
    if stored is None or not _equal(stored, plan.theta0):
        run.save_theta0(plan.theta0)


def _equal(a: State, b: State) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _intact(plan: Plan, run: RunDir, level: int) -> bool:
    lv = run.level(level)
    if not lv.has_summary() and not lv.path.is_file():
        return False
    try:
        lv.verify()
        if level == 0 and plan.rewind_step > 0:
            run.rewind_point()
    except Damaged as exc:
        log.warning("%s; level %d is recomputed", exc, level)
        lv.discard()
        return False
    return True


# -- the dense level, trained once per store ----------------------------------------------
def _reuse_level0(plan: Plan, run: RunDir) -> bool:
    """Copy level 0 from a run of this store that trained the identical dense level
    (same ``level0_key``: seed, θ0, data, training), byte for byte."""
    for other in _level0_twins(plan, run):
        try:
            other.level(0).verify()
            if plan.rewind_step > 0:
                other.rewind_point()
        except Damaged:
            continue
        if plan.rewind_step > 0:
            run.copy_rewind_point_from(other)
        run.copy_level_from(other, 0)
        summary = run.level(0).summary()
        files = summary.pop("files")
        own = _costs(plan, {0: summary}, 0, Mask({}), 0, None)  # dense
        if any(summary.get(k) != v for k, v in own.items()):  # this run's, not the training's
            summary.update(own)
            run.level(0).commit(summary, files)
        log.info("level 0 shared with %s", other.path.name)
        return True
    return False


def _level0_twins(plan: Plan, run: RunDir) -> list[RunDir]:
    out = []
    for d in sorted(run.path.parent.iterdir()):
        if d == run.path or not RunDir(d).level(0).has_summary():
            continue
        try:
            if RunDir(d).config().get("level0_key") == plan.level0_key:
                out.append(RunDir(d))
        except Damaged:
            continue
    return out


# -- one level -------------------------------------------------------------------------------
def rewind_point(plan: Plan, run: RunDir) -> State:
    """θk: where the run's pruned levels rewind to (θ0 when k = 0)."""
    return plan.theta0 if plan.rewind_step == 0 else run.rewind_point()


def _criterion_init(plan: Plan, run: RunDir, level: int) -> State:
    # "init" for the criteria = where the level's training effectively began:
    # the rewind point for the dense level, the reinitialised weights afterwards.
    return rewind_point(plan, run) if level == 0 else run.level(level).tensors("start")


def _source_mask(plan: Plan, level: int) -> Mask:
    src = plan.source
    assert src is not None
    try:
        tensors = src.level(level).tensors("mask")
    except Damaged as exc:
        raise StoreError(f"the run whose masks this one reuses is damaged: {exc}; repair it "
                         f"first ({plan.repair_hint}), then run this again") from None
    return Mask(tensors, order=plan.names)


def _fits(saved: State | None, reference: State) -> bool:
    """A file written before a crash is reused only if it has the expected tensors."""
    return saved is not None and saved.keys() == reference.keys() and all(
        saved[k].shape == reference[k].shape and saved[k].dtype == reference[k].dtype
        for k in saved)


def _mask(plan: Plan, run: RunDir, model: nn.Module, data: Data, level: int,
          stem: str = "mask") -> Mask:
    """The mask ``level`` trains under (from the start, when it changes while training:
    kept as ``stem``)."""
    lv = run.level(level)
    saved = lv.tensors_if_intact(stem)
    if _fits(saved, Mask.ones(model, plan.names).tensors()):
        return Mask(saved, order=plan.names)
    if level == 0:
        mask = Mask.ones(model, plan.names)
    elif plan.source is not None:
        copy = plan.mask_copy
        prev = _mask(plan, run, model, data, level - 1) if copy.draws_at_random else None
        mask = copy.mask(_source_mask(plan, level), prev,
                         generator(plan.seed, "random-prune", level))
    else:
        src = plan.schedule.source_level(level)
        prev = (Mask.ones(model, plan.names) if src == 0
                else Mask(run.level(src).tensors("mask"), order=plan.names))
        mask = prev if not plan.mask_method.prunes_before_training else steps.prune(
                           model, prev, init=_criterion_init(plan, run, src),
                           final=run.level(src).tensors("final"), level=level,
                           prune=plan.prune, seed=plan.seed, layout=plan.layout, data=data,
                           batch_size=plan.train.batch_size, task=plan.task,
                           output=plan.task_config.output)
    lv.save(stem, mask.tensors())
    return mask


def _start(plan: Plan, run: RunDir, model: nn.Module, level: int, mask: Mask) -> State:
    lv = run.level(level)
    saved = lv.tensors_if_intact("start")
    if _fits(saved, plan.theta0):
        return saved
    if level == 0:
        start = plan.theta0
    else:
        if plan.reinit_mode.keeps_trained:
            set_state(model, run.level(plan.schedule.source_level(level)).tensors("final"))
        start = steps.reinit(model, mask, theta0=plan.theta0, level=level,
                             reinit=plan.reinit, seed=plan.seed,
                             rewind=rewind_point(plan, run), initializer=plan.initializer,
                             layout=plan.layout)
    lv.save("start", start)
    return start


def _costs(plan: Plan, done: dict[int, dict], level: int, enforced: Mask, begin: int,
           updates: CostTimeline | None) -> dict[str, Any]:
    """The level's training FLOPs and what its mask and final network cost."""
    flops = training_flops(plan, enforced, begin, int(done[level]["train_steps"]),
                           None if updates is None else updates.timeline,
                           0 if updates is None else updates.dense_gradient_steps)
    counted = {**done, level: {**done[level], "train_flops": flops}}
    return {"train_flops": flops, **level_costs(plan, counted, level)}


class _Reported(Callback):
    """Tells a :class:`Reporter` where a level's training (re)starts and how far it is."""

    def __init__(self, report: Reporter, level: int, span: Span):
        self.report, self.level, self.span = report, level, span

    def begin(self, step: int, state: Callable[[], Any]) -> None:
        self.report.begin(self.level, step, first=self.span.start, end=self.span.end)

    def after_eval(self, row: dict[str, float]) -> None:
        self.report.step(self.level, int(row["step"]), self.span.end)


def _train(plan: Plan, run: RunDir, model: nn.Module, data: Data, level: int,
           report: Reporter | None) -> Jobs:
    t0, lv = time.perf_counter(), run.level(level)
    mask = (Mask.ones(model, plan.names) if plan.learns_mask(level)
            else _mask(plan, run, model, data, level,
                       "mask_start" if plan.updates_mask(level) else "mask"))
    set_state(model, _start(plan, run, model, level, mask))
    hooks = level_hooks(plan, level, mask=mask, model=model,
                        criterion_init=lambda: _criterion_init(plan, run, level),
                        save_rewind_point=run.save_rewind_point)
    begin = 0 if level == 0 or any(h.begins_at_step_zero for h in hooks) else plan.rewind_step
    trained, enforced, cfg = model, mask, plan.train
    fixed_lr = next((lr for hook in hooks if (lr := hook.fixed_lr()) is not None), None)
    for hook in hooks:
        trained, enforced = hook.trained(trained, enforced)
        cfg = hook.train_config(cfg)
    span = Span(start=begin, end=plan.total_steps, **plan.span)
    callbacks: list[Callback] = [] if report is None else [_Reported(report, level, span)]
    callbacks += [c for hook in hooks for c in hook.callbacks()]
    method = next((u for hook in hooks if (u := hook.mask_updates()) is not None), None)
    updates = None if method is None else CostTimeline(method, plan.costs, begin, enforced)
    job = Job(trained, data, cfg, enforced, span, seed=plan.seed, level=level,
              checkpoints=lv.checkpoint(), callbacks=callbacks, fixed_lr=fixed_lr,
              task=plan.task, output=plan.task_config.output, mask_updates=updates)
    history = yield job
    if report is not None and any(h.stopped_early() for h in hooks):
        report.stopped_early(level, span.end)  # the level is complete
    for hook in hooks:
        mask = hook.finish(job, model, mask, lv)
    mask.check(model)
    lv.save("final", get_state(model))
    files = {**lv.tensor_digests("mask", "start", "final"), HISTORY: lv.write_history(history)}
    summary = summarize(level, mask, history, begin, time.perf_counter() - t0, plan.task,
                        plan.task_config.early_stop)
    summary["mask_updates"] = 0 if updates is None else int(history[-1]["mask_updates"])
    summary["mask_turnover"] = 0.0
    summary["sparse_kernels"] = list(sparse_layers(job))  # what trained sparse (train.kernels)
    for hook in hooks:
        hook.record(lv, files, summary)
    summary.update(_costs(plan, {**run.summaries(), level: summary}, level, enforced, begin,
                          updates))
    summary["finished_at"] = time.time()
    lv.commit(summary, files)  # last: marks the level done
