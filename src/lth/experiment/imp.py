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
from ..pruning.criteria import CRITERIA, reads_trained
from ..seeding import generator
from ..state import get_state, set_state
from ..store import Damaged, RunDir
from ..store.layout import HISTORY
from ..train import Callback, Job, OnEval, Span, train_stack
from .hooks import level_hooks
from .plan import Plan
from .progress import Progress
from .result import levels_frame, summarize

log = logging.getLogger("lth")
State = dict[str, Any]


Jobs = Generator[Job, "list[dict] | BaseException", Any]


def level_jobs(plan: Plan, run: RunDir, model: nn.Module, data: Data, *, through: int,
               report: Progress | None, on_level: Callable[[int], None]) -> Jobs:
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
                    report(level, plan.total_steps, plan.total_steps)
                continue
            if not (level == 0 and _reuse_level0(plan, run)):
                yield from _train(plan, run, model, data, level, report)
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
        own = _steps_to_mask(plan, {0: summary}, 0)
        if summary.get("steps_to_mask") != own:  # a property of this run, not the training
            summary["steps_to_mask"] = own
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


def _steps_to_mask(plan: Plan, done: dict[int, dict], level: int) -> int | None:
    return _mask_cost(plan, done, level, "train_steps", "steps_to_mask")


def _mask_cost(plan: Plan, done: dict[int, dict], level: int, spent: str, so_far: str
               ) -> Any:
    """What finding ``level``'s mask cost in ``spent`` (``train_steps``, ``train_flops``):
    the training of the levels whose weights chose it, and its own when the mask came out
    of it. ``so_far``: the summaries' field of that cost, the one being computed."""
    if plan.source is not None:
        return None  # the mask is another run's; its cost is that run's
    if level == 0:
        return 0  # the dense mask
    if any(done[s].get(spent) is None for s in [*plan.schedule.mask_sources(level), level]):
        return None  # not counted (FLOPs of a model whose layers lth cannot count)
    own = done[level][spent]
    if plan.learns_mask(level):
        return own  # the level's own training learned it
    src = plan.schedule.source_level(level)
    prior = done[src].get(so_far) if src > 0 else 0  # what the source's own mask cost
    if prior is None:
        return None  # a level written before costs were counted
    if plan.updates_mask(level) and not plan.mask_method.prunes_before_training:
        return prior + own  # it starts from the source's mask
    if not reads_trained(CRITERIA[plan.prune.criterion]):
        # Scored at the start: chosen among the source's survivors; from the dense level,
        # θk's k steps when it rewinds late.
        before = prior if src > 0 or plan.rewind_step == 0 else (
            done[0][spent] * plan.rewind_step / max(1, done[0]["train_steps"]))
    else:
        before = sum(done[s][spent] for s in plan.schedule.mask_sources(level))
    return before + (own if plan.updates_mask(level) else 0)


def _costs(plan: Plan, done: dict[int, dict], level: int, enforced: Mask, begin: int
           ) -> None:
    """The summary's costs: FLOPs of the level's training (at its fixed mask unless a hook
    counted them), of finding its mask, and each in all for the level's final network."""
    summary = done[level]
    summary.setdefault("mask_updates", 0)
    summary.setdefault("mask_turnover", 0.0)
    if plan.costs is not None and "train_flops" not in summary:
        summary["train_flops"] = plan.costs.training(
            [(begin, plan.costs.forward(enforced.kept()))], begin + summary["train_steps"],
            plan.train.batch_size)
    summary.setdefault("train_flops", None)
    summary["flops_to_mask"] = _mask_cost(plan, done, level, "train_flops", "flops_to_mask")
    own_counted = plan.learns_mask(level) or plan.updates_mask(level)
    for total, to_mask, own in (("budget_steps", "steps_to_mask", "train_steps"),
                                ("budget_flops", "flops_to_mask", "train_flops")):
        cost = summary[to_mask]
        summary[total] = None if cost is None or summary[own] is None else (
            cost if own_counted else cost + summary[own])


def _train(plan: Plan, run: RunDir, model: nn.Module, data: Data, level: int,
           report: Progress | None) -> Jobs:
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
    callbacks: list[Callback] = [] if report is None else [
        OnEval(lambda s: report(level, s, span.end))]
    callbacks += [c for hook in hooks for c in hook.callbacks()]
    updates = next((u for hook in hooks if (u := hook.mask_updates()) is not None), None)
    job = Job(trained, data, cfg, enforced, span, seed=plan.seed, level=level,
              checkpoints=lv.checkpoint(), callbacks=callbacks, fixed_lr=fixed_lr,
              task=plan.task, output=plan.task_config.output, mask_updates=updates)
    history = yield job
    if report is not None and any(h.stopped_early() for h in hooks):
        report(level, span.end, span.end)  # stopped early: the level is complete
    for hook in hooks:
        mask = hook.finish(job, model, mask, lv)
    mask.check(model)
    lv.save("final", get_state(model))
    files = {**lv.tensor_digests("mask", "start", "final"), HISTORY: lv.write_history(history)}
    summary = summarize(level, mask, history, begin, time.perf_counter() - t0, plan.task,
                        plan.task_config.early_stop)
    if updates is not None:
        summary["mask_updates"] = int(history[-1]["mask_updates"])
    done = {**run.summaries(), level: summary}
    summary["steps_to_mask"] = _steps_to_mask(plan, done, level)
    for hook in hooks:
        hook.record(lv, files, summary)
    _costs(plan, done, level, enforced, begin)
    summary["finished_at"] = time.time()
    lv.commit(summary, files)  # last: marks the level done
