"""Mask structures: what one decision of the pruning stands for, and how it is selected.

``prune.structure`` names a :class:`MaskStructure` in :data:`STRUCTURES`:

- ``weight``: every weight is kept or pruned alone, by the criterion's scores
  (:func:`lth.pruning.next_mask`);
- ``unit``: whole neurons / channels of the layers whose units can be removed alone,
  scored by ``prune.unit_score`` (:class:`lth.pruning.Structure` finds them);
- ``nm``: N of every M consecutive weights along each layer's input dimension
  (``prune.nm = [N, M]``, :mod:`lth.pruning.nm`).

Planning binds the structure to a model (:meth:`MaskStructure.layout`): the result, a
:class:`MaskLayout`, holds the run's rates and groups (counted in weights or in units) and
answers the engine's questions: the next mask of a level, what an early-bird search
compares, what a reinitialised start must zero besides the pruned weights, and what the
run records about it.

>>> import torch
>>> from torch import nn
>>> from lth.config import PruneConfig
>>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
>>> layout = STRUCTURES["unit"].layout(PruneConfig(structure="unit", rate=0.5), model,
...                                    ["0.weight", "2.weight"], torch.zeros(2, 4),
...                                    ["2.weight"], {}, n_levels=1)
>>> [(g.names, g.size) for g in layout.groups]
[(('0.weight',), 3)]
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..config_schema import Problem
from ..errors import ConfigError, ModelError
from ..masks import Mask
from ..registry import Registry, instances_of
from .layout import MaskLayout, MaskStructure, WeightLayout, allocation_refused, nm_unused
from .network import ScoringNetwork
from .nm import NMLayout, NMMasks, nm_select
from .plan import Group, check_final_counts, make_groups, resolve_rates
from .schedules import SCHEDULES
from .selection import select
from .structured import Structure

if TYPE_CHECKING:
    from ..config import PruneConfig

Tensors = dict[str, torch.Tensor]
UNIT_SCORES = ("l1", "l2", "bn_gamma")


@dataclass
class UnitLayout(MaskLayout):
    structure: Structure

    def next_mask(self, cfg: PruneConfig, level: int, mask: Mask, init: Tensors,
                  final: Tensors, generator: torch.Generator,
                  network: ScoringNetwork | None = None) -> Mask:
        return next_unit_mask(cfg, self.structure, self.groups, level, mask, final, generator)

    def compared(self, mask: Mask) -> Mask:
        return self.structure.unit_mask(mask)

    def finish_start_(self, model: nn.Module, mask: Mask) -> None:
        # Bias and BatchNorm of removed units: zero, as the units are gone.
        self.structure.zero_dead_(model, self.structure.unit_mask(mask))

    def info(self) -> dict[str, Any]:
        return {"structure": {"units": self.structure.describe(),
                              "kept_whole": self.structure.refused}}


class UnitMasks(MaskStructure):
    of_single_weights = False

    def problems(self, cfg: PruneConfig) -> list[Problem]:
        p: list[Problem] = nm_unused(cfg) + allocation_refused(cfg)
        if cfg.output_rate is not None:
            p.append(("output_rate", "does not apply with structure = 'unit': the output "
                                     "layer's units are the classes; its inputs shrink with "
                                     "the layer before it. Remove output_rate"))
        if cfg.criterion != type(cfg).criterion:
            p.append(("criterion", f"{cfg.criterion!r} scores weights, not units; with "
                                   "structure = 'unit' units are scored by prune.unit_score "
                                   f"({', '.join(UNIT_SCORES)}); remove criterion"))
        return p

    def layout(self, cfg: PruneConfig, model: nn.Module, names: list[str],
               example: torch.Tensor | None, output: list[str], kinds: dict[str, str], *,
               n_levels: int, check_counts: bool = True) -> MaskLayout:
        """Rates and groups over the model's producers, sized in units. Layers whose units
        cannot be removed alone (their output reaches a residual addition, a concatenation,
        the model output...) keep their units whole and are still masked where they read
        removed units; which and why is recorded."""
        if example is None:
            raise ConfigError("structure = 'unit' finds the model's units by tracing it: "
                              "give an input batch (lth.prune(..., example=x))")
        structure = Structure.discover(model, names, example, output, strict=False)
        if not structure.producers:
            why = "\n".join(f"  {n}: {r}" for n, r in structure.refused.items())
            raise ModelError("structure = 'unit' found no layer whose units can be removed:\n"
                             f"{why}\nuse structure = 'weight'")
        for pattern in cfg.layer_rates:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in structure.producers):
                raise ConfigError(
                    f"prune.layer_rates pattern {pattern!r} matches no layer whose units can "
                    "be removed; with structure = 'unit' rates apply to "
                    f"{', '.join(structure.producers)} (the output layer and layers kept "
                    "whole have no units to prune)")
        rates = resolve_rates(cfg, structure.producers, kinds, [], n_levels, structure.units)
        groups = make_groups(cfg.scope, rates, structure.units)
        check_final_counts(groups, cfg.schedule, n_levels)
        for g in groups:  # global scope keeps at least one unit of each layer
            last = g.kept(SCHEDULES[cfg.schedule], n_levels)
            if g.rate > 0 and last < len(g.names):
                raise ConfigError(f"by level {n_levels} the {len(g.names)} layers pruned "
                                  f"together ({', '.join(g.names)}) would keep {last} units "
                                  "in all, fewer than one per layer; use fewer levels or a "
                                  "lower rate")
        if cfg.unit_score == "bn_gamma":
            structure.scores(dict(model.state_dict()), "bn_gamma")  # checks
        return UnitLayout(rates, groups, structure)

    def check_source(self, source: Path) -> None:
        if self.foreign_source(source) is not None:
            raise ConfigError(f"structure = 'unit' with masks_from = {str(source)!r}, whose "
                              "masks remove single weights, not units; use structure = "
                              "'weight' or a source run pruned with structure = 'unit'")


STRUCTURES: Registry[MaskStructure] = Registry("mask structure",
                                                entry=instances_of(MaskStructure))
STRUCTURES.register(MaskStructure(), name="weight")
STRUCTURES.register(UnitMasks(), name="unit")
STRUCTURES.register(NMMasks(), name="nm")
STRUCTURES.mark_builtin()


def next_unit_mask(cfg: PruneConfig, structure: Structure, groups: Sequence[Group], level: int,
                   mask: Mask, final: Tensors, generator: torch.Generator) -> Mask:
    """Structured pruning: groups count *units* (neurons / channels of the producers of
    ``structure``); each keeps ``kept_count(units, scheduled density)`` of them, scored by
    ``cfg.unit_score`` on ``final`` (a state dict: BatchNorm scales for ``bn_gamma``).
    The weight mask removes the dead units' rows and the consumer columns that read them."""
    units = {n: t.cpu() for n, t in structure.unit_mask(mask).items()}
    scores: Tensors | None = None
    for group in groups:
        keep = group.kept(SCHEDULES[cfg.schedule], level)
        if keep >= sum(int(units[n].sum()) for n in group.names):
            continue
        if scores is None:
            scores = structure.scores(final, cfg.unit_score)
        units.update(_select_units({n: scores[n] for n in group.names},
                                   {n: units[n] for n in group.names}, keep, generator))
    out = structure.expand(Mask(units, order=structure.producers), mask.names(),
                           {n: t.shape for n, t in mask.items()})
    return Mask({n: t & mask[n].cpu() for n, t in out.items()}, order=mask.names())


def _select_units(scores: Tensors, alive: Tensors, keep: int,
                  generator: torch.Generator) -> Tensors:
    """The ``keep`` best units of a group, but never all units of one layer: in global scope
    each layer first keeps its best surviving unit (a layer without units would cut the
    network in two), then the rest compete for the remaining places."""
    if len(scores) == 1 or keep < len(scores):
        return select(scores, alive, keep, generator)
    reserved = {}
    for n, s in scores.items():
        best = torch.where(alive[n], s.float(), torch.tensor(-math.inf)).argmax()
        reserved[n] = torch.zeros_like(alive[n]).index_fill_(0, best.view(1), True)
    rest = select(scores, {n: alive[n] & ~reserved[n] for n in scores}, keep - len(scores),
                  generator)
    return {n: rest[n] | reserved[n] for n in scores}


__all__ = ["STRUCTURES", "UNIT_SCORES", "MaskLayout", "MaskStructure", "NMLayout", "NMMasks",
           "UnitLayout", "UnitMasks", "WeightLayout", "next_unit_mask", "nm_select"]
