"""How a pruned level's mask changes while it trains: ``mask_updates.method``.

Each method is a frozen object in :data:`METHODS` that the engine asks, never a name it
compares:

- ``none``: the mask is fixed for the whole level (IMP, one-shot, SNIP, random masks);
- ``gmp``: gradual magnitude pruning (:mod:`lth.sparse.gradual`): the level starts from
  the mask of the level it derives from and prunes on a cubic schedule down to its
  scheduled density while it trains; levels after the first are cycles (prune gradually,
  rewind, repeat);
- ``set``, ``rigl``: dynamic sparse training (:mod:`lth.sparse.dropgrow`): the level's
  mask is pruned before training as any level's is (``prune.criterion = 'random'`` for
  the papers' random start, with ``prune.allocation`` for ER/ERK densities), then
  drops and regrows weights at constant density every ``every`` steps.

The update window is a fraction of the level's training: from ``begin`` to ``end``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..config_schema import Problem, check_choice
from ..errors import ConfigError
from ..mask_updates import MaskUpdates
from ..masks import Mask
from ..pruning.criteria import CRITERIA, scores_network
from ..pruning.structures import STRUCTURES, MaskStructure
from ..pruning.supermask import SUPERMASKS
from ..registry import Registry, instances_of
from .dropgrow import DropAndGrow, check_regrowth, update_fractions
from .gradual import GradualPruning

if TYPE_CHECKING:
    from ..config import ExperimentConfig, MaskUpdatesConfig
    from ..pruning.plan import Group
    from ..pruning.schedules import Schedule
    from ..pruning.structures import MaskLayout

DECAYS = ("cosine", "constant")


def _defaults(cfg: MaskUpdatesConfig) -> dict[str, object]:
    return {f.name: f.default for f in dataclasses.fields(cfg)}


@dataclass(frozen=True)
class Window:
    """Where a level's mask may change: its training runs from step ``start`` to ``end``;
    updates come every ``every`` steps after ``begin``, up to ``last`` (the settings'
    ``begin`` and ``end`` as steps)."""

    start: int
    end: int
    begin: int
    last: int
    every: int

    @classmethod
    def of(cls, cfg: MaskUpdatesConfig, start: int, end: int, every: int) -> Window:
        def at(fraction: float) -> int:  # round half up, as every count in lth
            return start + math.floor(fraction * (end - start) + 0.5)

        return cls(start, end, at(cfg.begin), at(cfg.end), every)


@dataclass(frozen=True)
class LevelMask:
    """What a method needs to update one level's mask."""

    cfg: MaskUpdatesConfig
    window: Window
    level: int
    seed: int
    start: Mask  # the mask the level begins with
    groups: list[Group]
    schedule: Schedule
    layout: MaskLayout
    criterion: str
    init: Callable[[], dict[str, torch.Tensor]]  # the weights the level starts from


@dataclass(frozen=True)
class Method:
    """The mask holds for the whole level."""

    changes_mask = False  # whether a pruned level's mask changes while it trains
    prunes_before_training = True  # False: the level starts from its source's mask

    def problems(self, cfg: MaskUpdatesConfig) -> list[Problem]:
        return [(key, f"only used with method = 'gmp', 'set' or 'rigl'; remove {key} (on the "
                      "command line: --set 'mask_updates={method=\"none\"}' replaces the "
                      "section)")
                for key in ("every", "begin", "end", "fraction", "decay")
                if getattr(cfg, key) != _defaults(cfg)[key]]

    def experiment_problems(self, exp: ExperimentConfig) -> list[Problem]:
        return []

    def steps(self, cfg: MaskUpdatesConfig, window: Window) -> list[int]:
        """The steps at which a level's mask changes (checked when planning)."""
        return []

    def updates(self, level: LevelMask) -> MaskUpdates | None:
        return None


class _Updating(Method):
    """What every method whose mask changes refuses."""

    changes_mask = True
    regrows_in_groups = False  # keeps the groups of an N:M structure full (group_ids)

    def problems(self, cfg: MaskUpdatesConfig) -> list[Problem]:
        p: list[Problem] = []
        if not 0 <= cfg.begin < cfg.end <= 1:
            p.append(("end", f"begin = {cfg.begin!r}, end = {cfg.end!r}: fractions of the "
                             "level's training with 0 <= begin < end <= 1"))
        return p

    def experiment_problems(self, exp: ExperimentConfig) -> list[Problem]:
        name = exp.mask_updates.method
        p: list[Problem] = []
        if exp.train.kernels == "sparse":
            p.append(("train.kernels", f"'sparse' trains a fixed mask; method {name!r} changes "
                      "it during training: use kernels = 'auto' (its levels train dense)"))
        supermask = SUPERMASKS.get(exp.prune.supermask, default=None)
        if supermask is not None and supermask.learns:
            p.append(("mask_updates.method", f"{name!r} changes a trained mask; a learned "
                      "supermask learns its own (prune.supermask): use one of them"))
        if exp.earlybird.enabled:
            p.append(("mask_updates.method", f"{name!r} with earlybird: an early-bird "
                      "search stops the training that the updates need; disable one"))
        structure = STRUCTURES.get(exp.prune.structure, default=MaskStructure())
        if not (structure.of_single_weights or (self.regrows_in_groups
                                                and structure.weight_groups)):
            p.append(("prune.structure", f"{exp.prune.structure!r} with method {name!r}: "
                      "its masks cannot change weight by weight; use structure = 'weight'"
                      + (" or 'nm'" if self.regrows_in_groups else "")))
        return p

    def steps(self, cfg: MaskUpdatesConfig, window: Window) -> list[int]:
        out = self._steps(cfg, window)
        if not out:
            raise ConfigError(
                f"mask_updates: no update fits between begin = {cfg.begin} and end = "
                f"{cfg.end} of a level's training (steps {window.begin} to {window.last}) "
                f"every {window.every} steps; use a shorter mask_updates.every or a wider "
                "window")
        return out

    def _steps(self, cfg: MaskUpdatesConfig, window: Window) -> list[int]:
        raise NotImplementedError


class Gradual(_Updating):
    """Gradual magnitude pruning from the source level's mask to the level's density."""

    prunes_before_training = False

    def problems(self, cfg: MaskUpdatesConfig) -> list[Problem]:
        p = super().problems(cfg)
        p += [(key, f"only used with method = 'set' or 'rigl'; remove {key}")
              for key in ("fraction", "decay") if getattr(cfg, key) != _defaults(cfg)[key]]
        return p

    def experiment_problems(self, exp: ExperimentConfig) -> list[Problem]:
        p = super().experiment_problems(exp)
        if exp.masks_from is not None:
            p.append(("masks_from", "method = 'gmp' prunes during training from the level "
                      "it derives from; masks_from gives fixed masks: use method = 'none'"))
        if exp.prune.criterion in CRITERIA and scores_network(CRITERIA[exp.prune.criterion]):
            p.append(("prune.criterion", f"{exp.prune.criterion!r} scores the whole network; "
                      "gradual pruning ranks weights by a criterion of single weights (e.g. "
                      "large_final, movement)"))
        return p

    def _steps(self, cfg: MaskUpdatesConfig, window: Window) -> list[int]:
        n = (window.last - window.begin) // window.every
        return [window.begin + j * window.every for j in range(1, n + 1)]

    def updates(self, level: LevelMask) -> MaskUpdates:
        groups = [(g.names, g.size, g.kept(level.schedule, level.level)) for g in level.groups]
        return GradualPruning(self.steps(level.cfg, level.window), groups, level.start,
                              CRITERIA[level.criterion], level.init(), seed=level.seed,
                              level=level.level)


@dataclass(frozen=True)
class DropGrow(_Updating):
    """Drop the smallest weights, regrow as many: at random (SET) or by gradient (RigL)."""

    regrow: str = "gradient"
    regrows_in_groups = True

    def __post_init__(self) -> None:
        check_regrowth(self.regrow)

    def problems(self, cfg: MaskUpdatesConfig) -> list[Problem]:
        p = super().problems(cfg)
        if not 0 < cfg.fraction <= 1:
            p.append(("fraction", f"got {cfg.fraction!r}; the fraction of a layer's alive "
                                  "weights dropped at an update, in (0, 1]"))
        check_choice(p, "decay", cfg.decay, DECAYS)
        return p

    def experiment_problems(self, exp: ExperimentConfig) -> list[Problem]:
        p = super().experiment_problems(exp)
        if exp.prune.scope != "layer":
            p.append(("prune.scope", f"{exp.mask_updates.method!r} drops and regrows within "
                      "each layer, keeping its count (as SET and RigL do); use scope = 'layer'"))
        return p

    def _steps(self, cfg: MaskUpdatesConfig, window: Window) -> list[int]:
        return sorted(self._fractions(cfg, window))

    def _fractions(self, cfg: MaskUpdatesConfig, window: Window) -> dict[int, float]:
        return update_fractions(window.begin, window.last, window.every, cfg.fraction,
                                cfg.decay)

    def updates(self, level: LevelMask) -> MaskUpdates:
        self.steps(level.cfg, level.window)  # refuses an empty window
        ids = {n: t for n in level.start if (t := level.layout.group_ids(n)) is not None}
        return DropAndGrow(self._fractions(level.cfg, level.window),
                           [g.names for g in level.groups], self.regrow, seed=level.seed,
                           level=level.level, group_ids=ids)


METHODS: Registry[Method] = Registry("mask update method", entry=instances_of(Method))
METHODS.register(Method(), name="none")
METHODS.register(Gradual(), name="gmp")
METHODS.register(DropGrow("random"), name="set")
METHODS.register(DropGrow("gradient"), name="rigl")
METHODS.mark_builtin()


def method_of(name: str) -> Method:
    """The method ``name``; an unknown one (already reported) is checked as a drop-and-grow
    method, whose settings are the most, so that its misspelling is the one problem."""
    return METHODS.get(name, default=DropGrow())


def method_problems(exp: ExperimentConfig) -> list[Problem]:
    """The problems of ``exp``'s method with the rest of the experiment."""
    return method_of(exp.mask_updates.method).experiment_problems(exp)


__all__ = ["METHODS", "LevelMask", "Method", "Window", "method_of", "method_problems"]
