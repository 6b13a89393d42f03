"""What a level adds to plain training, chosen when planning: each a :class:`LevelHook`.

A level is the public steps (:func:`lth.prune`, :func:`lth.reinit`, the trainer of
:func:`lth.fit`) plus the hooks :func:`level_hooks` picks for it from the plan:

- :class:`LateRewinding`: the dense level saves θk at the rewind step;
- :class:`EarlyBirdSearch`: a searching level stops once its mask has settled, and keeps
  the search's record;
- :class:`FineTuning`: a ``final_lr`` reinit mode trains at the schedule's last lr;
- :class:`LearnedSupermask`: a pruned level trains scores over its frozen start, and its
  mask is the learned one;
- :class:`UpdatingMask`: a pruned level's mask changes while it trains (gradual pruning,
  SET, RigL: :mod:`lth.sparse`); its mask is the last one, the first kept beside it.

A hook may change what is trained (:meth:`LevelHook.trained`), its settings, the
learning rate, the callbacks, the mask's updates, and, after training, the level's mask
and record.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig
from ..earlybird import Search
from ..mask_updates import MaskUpdates
from ..masks import Mask
from ..pruning.supermask import Supermask
from ..sparse.methods import LevelMask
from ..state import get_state, set_state
from ..store import Level
from ..train import Callback, Job, Snapshot, lr_function
from . import early
from .plan import Plan

Tensors = dict[str, torch.Tensor]


class LevelHook:
    """Does nothing; subclasses override what they change."""

    begins_at_step_zero = False  # trains from step 0 even when the run rewinds to step k

    def trained(self, model: nn.Module, mask: Mask) -> tuple[nn.Module, Mask]:
        """The module the trainer trains, and the mask it enforces."""
        return model, mask

    def train_config(self, cfg: TrainConfig) -> TrainConfig:
        return cfg

    def fixed_lr(self) -> float | None:
        return None

    def callbacks(self) -> list[Callback]:
        return []

    def mask_updates(self) -> MaskUpdates | None:
        return None

    def finish(self, job: Job, model: nn.Module, mask: Mask, lv: Level) -> Mask:
        """After training ``job``: put the level's final state in ``model``; returns its
        mask."""
        return mask

    def record(self, lv: Level, files: dict[str, str], summary: dict[str, Any]) -> None:
        """Add the hook's files and summary fields to the level's commit."""

    def stopped_early(self) -> bool:
        return False


class LateRewinding(LevelHook):
    def __init__(self, step: int, save: Callable[[Tensors], None]):
        self.step, self.save = step, save

    def callbacks(self) -> list[Callback]:
        return [Snapshot(self.step, self.save)]


class EarlyBirdSearch(LevelHook):
    def __init__(self, search: Search):
        self.search = search

    def callbacks(self) -> list[Callback]:
        return [self.search]

    def record(self, lv: Level, files: dict[str, str], summary: dict[str, Any]) -> None:
        name, digest = lv.write_earlybird(self.search.record())
        files[name] = digest
        summary["earlybird_step"] = self.search.drawn_step

    def stopped_early(self) -> bool:
        return self.search.drawn_step is not None


class FineTuning(LevelHook):
    def __init__(self, lr: float):
        self.lr = lr

    def fixed_lr(self) -> float | None:
        return self.lr


class LearnedSupermask(LevelHook):
    begins_at_step_zero = True  # the scores train from step 0 over the start's frozen weights

    def __init__(self, method: Supermask, groups: list[tuple[tuple[str, ...], int]], *,
                 names: list[str], seed: int, level: int, lr: float | None):
        self.method, self.groups, self.names = method, groups, names
        self.seed, self.level, self.lr = seed, level, lr

    def trained(self, model: nn.Module, mask: Mask) -> tuple[nn.Module, Mask]:
        net = self.method.network(copy.deepcopy(model), self.groups, seed=self.seed,
                                  level=self.level)
        return net, Mask({})

    def train_config(self, cfg: TrainConfig) -> TrainConfig:
        return cfg if self.lr is None else dataclasses.replace(cfg, lr=self.lr)

    def finish(self, job: Job, model: nn.Module, mask: Mask, lv: Level) -> Mask:
        mask = Mask(job.model.mask().tensors(), order=self.names)  # type: ignore[operator]
        # The start's weights, and the BatchNorm statistics the scores trained with.
        set_state(model, get_state(job.model.base))  # type: ignore[arg-type]
        mask.apply_(model)
        lv.save("mask", mask.tensors())
        return mask


class UpdatingMask(LevelHook):
    """The level's mask changes at the steps its method says; the mask the level began
    with is its ``mask_start``, the last one its ``mask``."""

    def __init__(self, updates: MaskUpdates, start: Mask):
        self.updates, self.start, self.final = updates, start, start

    def mask_updates(self) -> MaskUpdates:
        return self.updates

    def finish(self, job: Job, model: nn.Module, mask: Mask, lv: Level) -> Mask:
        self.final = Mask({n: t.cpu() for n, t in job.mask.items()}, order=mask.names())
        lv.save("mask", self.final.tensors())
        return self.final

    def record(self, lv: Level, files: dict[str, str], summary: dict[str, Any]) -> None:
        files.update(lv.tensor_digests("mask_start"))
        summary["mask_turnover"] = turnover(self.start, self.final)


def turnover(start: Mask, final: Mask) -> float:
    """The fraction of ``final``'s kept weights that ``start`` did not keep."""
    new = sum(int((final[n] & ~start[n].to(final[n].device)).sum()) for n in final)
    kept = sum(final.kept().values())
    return new / kept if kept else 0.0


def level_hooks(plan: Plan, level: int, *, mask: Mask, model: nn.Module,
                criterion_init: Callable[[], Tensors],
                save_rewind_point: Callable[[Tensors], None]) -> list[LevelHook]:
    """The hooks of ``level`` under ``plan``."""
    hooks: list[LevelHook] = []
    if level == 0 and plan.rewind_step > 0:
        hooks.append(LateRewinding(plan.rewind_step, save_rewind_point))
    if plan.learns_mask(level):
        groups = [(g.names, g.kept(plan.schedule, level)) for g in plan.groups]
        hooks.append(LearnedSupermask(plan.supermask, groups, names=plan.names,
                                      seed=plan.seed, level=level, lr=plan.prune.supermask_lr))
    if plan.searches(level):
        target = plan.schedule.pruned_from(level, plan.n_levels)
        assert target is not None  # a searching level gives a later level its mask
        hooks.append(EarlyBirdSearch(early.make_search(
            plan.earlybird, plan.prune, plan.layout, target, mask, criterion_init, plan.seed,
            spe=plan.span["steps_per_epoch"], after=plan.rewind_step, model=model)))
    if plan.updates_mask(level):
        updates = plan.mask_method.updates(LevelMask(
            plan.config.mask_updates, plan.mask_window, level, plan.seed, mask, plan.groups,
            plan.schedule, plan.layout, plan.prune.criterion, criterion_init))
        assert updates is not None  # a method that changes masks makes updates
        hooks.append(UpdatingMask(updates, mask))
    if level > 0 and plan.reinit_mode.final_lr:
        last = lr_function(plan.train, plan.total_steps, plan.span["steps_per_epoch"])
        hooks.append(FineTuning(last(plan.total_steps - 1)))
    return hooks
