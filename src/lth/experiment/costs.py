"""What a level's network cost to train, from the plan and the levels' summaries.

A level's final network depends on the training of other levels in shares: its mask on the
training that chose it, its start on the weights it was reset to (θk is k steps of level 0;
``lr_rewind`` and ``finetune`` start from the source level's trained network), and on its
own training. Dependencies are sets of (level, share of that level's training), joined by
taking the larger share, so no training counts twice:

- ``steps_to_mask`` / ``flops_to_mask``: what chose the level's mask;
- ``budget_steps`` / ``budget_flops``: everything its final network depends on.

A mask copied from another run (``masks_from``) costs what that run's level says it cost
(nothing for a random copy: only its counts come from there).
"""

from __future__ import annotations

from typing import Any

import torch

from ..flops import Costs
from ..mask_updates import MaskUpdates
from ..masks import Mask
from ..pruning.criteria import CRITERIA, reads_trained
from .plan import Plan

Shares = dict[int, float]  # level -> the share of its training depended on
Summaries = dict[int, dict[str, Any]]
SPENT = {"steps": "train_steps", "flops": "train_flops"}
Tensors = dict[str, torch.Tensor]


def _join(*parts: Shares) -> Shares:
    out: Shares = {}
    for part in parts:
        for level, share in part.items():
            out[level] = max(out.get(level, 0.0), share)
    return out


def start_shares(plan: Plan, done: Summaries, level: int) -> Shares:
    """The training the weights ``level`` starts from depend on."""
    if level == 0:
        return {}  # θ0
    if plan.reinit_mode.keeps_trained:
        return network_shares(plan, done, plan.schedule.source_level(level))
    return {} if plan.reinit_mode.draws_afresh else _rewind_point_shares(plan, done)


def _rewind_point_shares(plan: Plan, done: Summaries) -> Shares:
    k = plan.rewind_step
    return {0: k / max(1, int(done[0]["train_steps"]))} if k else {}


def mask_shares(plan: Plan, done: Summaries, level: int) -> Shares:
    """The training that chose ``level``'s mask (within this run: not for a copied mask)."""
    if level == 0 or plan.source is not None:
        return {}
    own: Shares = {level: 1.0}
    if plan.learns_mask(level):
        return _join(start_shares(plan, done, level), own)  # learned from its start
    src = plan.schedule.source_level(level)
    if plan.updates_mask(level):  # the mask it began with, changed by its training
        first = (mask_shares(plan, done, src) if not plan.mask_method.prunes_before_training
                 else _pruned_shares(plan, done, src))
        return _join(first, start_shares(plan, done, level), own)
    return _pruned_shares(plan, done, src)


def _pruned_shares(plan: Plan, done: Summaries, src: int) -> Shares:
    """A mask pruned from level ``src``: by its trained network, or (a criterion of the
    start: random, SNIP...) among its survivors, scored on where it started."""
    if reads_trained(CRITERIA[plan.prune.criterion]):
        return network_shares(plan, done, src)
    scored = _rewind_point_shares(plan, done) if src == 0 else start_shares(plan, done, src)
    return _join(mask_shares(plan, done, src), scored)


def network_shares(plan: Plan, done: Summaries, level: int) -> Shares:
    """Everything ``level``'s final network depends on, its own training included."""
    return _join(mask_shares(plan, done, level), start_shares(plan, done, level), {level: 1.0})


def _total(done: Summaries, shares: Shares, spent: str) -> float | None:
    values = [done[lv].get(spent) for lv in shares]
    if any(v is None for v in values):
        return None  # a level written before costs were counted, or FLOPs not countable
    return sum(share * v for share, v in zip(shares.values(), values, strict=True))


def _copied(plan: Plan, level: int, field: str) -> float | None:
    """What a mask copied from ``plan.source`` cost there (0 for a random copy)."""
    if plan.source is None or plan.mask_copy.draws_at_random:
        return 0
    return plan.source.level(level).summary().get(field)


def level_costs(plan: Plan, done: Summaries, level: int) -> dict[str, Any]:
    """The cost fields of ``level``'s summary (``done`` holds it and the levels before)."""
    out: dict[str, Any] = {}
    for unit, spent in SPENT.items():
        copied = _copied(plan, level, f"{unit}_to_mask")
        to_mask = _total(done, mask_shares(plan, done, level), spent)
        budget = _total(done, network_shares(plan, done, level), spent)
        out[f"{unit}_to_mask"] = None if copied is None or to_mask is None else round(
            copied + to_mask)
        out[f"budget_{unit}"] = None if copied is None or budget is None else round(
            copied + budget)
    return out


def training_flops(plan: Plan, mask: Mask, begin: int, steps: int,
                   timeline: list[tuple[int, int]] | None = None,
                   dense_gradient_steps: int = 0) -> int | None:
    """FLOPs of a level's training: ``steps`` from ``begin``, under ``mask`` throughout or
    the masks of ``timeline`` (see :meth:`lth.flops.Costs.training`)."""
    if plan.costs is None:
        return None
    timeline = timeline or [(begin, plan.costs.forward(mask.kept()))]
    return plan.costs.training(timeline, begin + steps, plan.train.batch_size,
                               dense_gradient_steps)


class CostTimeline(MaskUpdates):
    """``updates`` as they are, recording the forward cost of each mask they give
    (``timeline``: (first step, multiply-adds per example), from the mask at ``begin`` on)
    and how many of them read the dense gradients; both are in the level's checkpoints, so
    a resumed level counts what came before."""

    def __init__(self, updates: MaskUpdates, costs: Costs | None, begin: int, start: Mask):
        self.inner, self.costs = updates, costs
        self.timeline: list[tuple[int, int]] = [(begin, self._forward(start))]
        self.dense_gradient_steps = 0

    @property  # type: ignore[override]
    def gradients(self) -> bool:
        return self.inner.gradients

    def _forward(self, mask: Mask) -> int:
        return 0 if self.costs is None else self.costs.forward(mask.kept())

    def due(self, step: int) -> bool:
        return self.inner.due(step)

    def update(self, step: int, weights: Tensors, mask: Mask, gradients: Tensors | None
               ) -> Mask:
        new = self.inner.update(step, weights, mask, gradients)
        if isinstance(new, Mask):  # anything else: the trainer's error names it
            self.timeline.append((step, self._forward(new)))
            self.dense_gradient_steps += gradients is not None
        return new

    def state(self) -> tuple[Tensors, dict[str, Any]]:
        tensors, meta = self.inner.state()
        return tensors, {"inner": meta, "timeline": [list(t) for t in self.timeline],
                         "dense_gradient_steps": self.dense_gradient_steps}

    def load(self, tensors: Tensors, meta: dict[str, Any]) -> None:
        self.inner.load(tensors, meta["inner"])
        self.timeline = [(int(s), int(f)) for s, f in meta["timeline"]]
        self.dense_gradient_steps = int(meta["dense_gradient_steps"])
