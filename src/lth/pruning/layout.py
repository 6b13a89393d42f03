"""The mask structure's interface, and its single-weight case.

A :class:`MaskStructure` (registered in :data:`lth.pruning.STRUCTURES`) says what one
decision of the pruning stands for; bound to a model (:meth:`MaskStructure.layout`) it
gives a :class:`MaskLayout`, which holds the run's rates and groups and answers the
engine's questions. :mod:`lth.pruning.structures` has the registry and the unit structure,
:mod:`lth.pruning.nm` the N:M one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..config_schema import Problem
from ..errors import LTHError
from ..masks import Mask
from ..store import RunDir
from .allocation import ALLOCATIONS, UNIFORM
from .network import ScoringNetwork
from .plan import Group, check_final_counts, fill_default_rate, make_groups, next_mask, own_rates

if TYPE_CHECKING:
    from ..config import PruneConfig

Tensors = dict[str, torch.Tensor]


@dataclass
class MaskLayout:
    """A structure bound to one model: the rates and groups of a run, and its selection."""

    rates: dict[str, float]
    groups: list[Group]

    def next_mask(self, cfg: PruneConfig, level: int, mask: Mask, init: Tensors,
                  final: Tensors, generator: torch.Generator,
                  network: ScoringNetwork | None = None) -> Mask:
        """The mask of ``level`` from the survivors of ``mask``, scored on the weights the
        source level started from (``init``) and ended with (``final``, a full state)."""
        raise NotImplementedError

    def compared(self, mask: Mask) -> Mask:
        """What an early-bird search compares of a candidate mask."""
        return mask

    def finish_start_(self, model: nn.Module, mask: Mask) -> None:
        """After reinitialisation: zero what the mask removes besides its own weights."""

    def info(self) -> dict[str, Any]:
        """What a run's record says about its structure (nothing for single weights)."""
        return {}

    def group_ids(self, name: str) -> torch.Tensor | None:
        """For a structure that keeps a count per fixed group of weights (N:M), each weight's
        group (shaped like the parameter); None where weights are kept one by one."""
        return None


class WeightLayout(MaskLayout):
    def next_mask(self, cfg: PruneConfig, level: int, mask: Mask, init: Tensors,
                  final: Tensors, generator: torch.Generator,
                  network: ScoringNetwork | None = None) -> Mask:
        return next_mask(cfg, self.groups, level, mask, init, final, generator, network)


class MaskStructure:
    """What a mask entry stands for. ``of_single_weights``: any subset of weights is a
    valid mask (random masks of a count, learned supermasks)."""

    of_single_weights = True
    weight_groups = False  # keeps a count in fixed groups of weights (MaskLayout.group_ids)

    def problems(self, cfg: PruneConfig) -> list[Problem]:
        return unit_score_unused(cfg) + nm_unused(cfg)

    def layout(self, cfg: PruneConfig, model: nn.Module, names: list[str],
               example: torch.Tensor | None, output: list[str], kinds: dict[str, str], *,
               n_levels: int, check_counts: bool = True) -> MaskLayout:
        """Rates and groups over ``model``'s prunable ``names``, the layers on the default
        rate counted by ``prune.allocation``; ``check_counts``: refuse a schedule that
        leaves a group empty (off for masks copied from another run, and for a single step,
        which may prune past the planned levels). Unit masks always check: a layer without
        units would cut the network in two."""
        sizes = {n: model.get_parameter(n).numel() for n in names}
        own = own_rates(cfg, names, kinds, output)
        rates = fill_default_rate(cfg, own, n_levels, sizes)
        groups = ALLOCATIONS[cfg.allocation].allocate(
            make_groups(cfg.scope, rates, sizes),
            {n: tuple(model.get_parameter(n).shape) for n, r in own.items() if r is None})
        if check_counts:
            check_final_counts(groups, cfg.schedule, n_levels)
        return WeightLayout(rates, groups)

    def check_source(self, source: Path) -> None:
        """Refuse a run to copy masks from whose masks this structure cannot use."""

    def foreign_source(self, source: Path) -> str | None:
        """The structure of the run ``source`` when its masks are not of this structure's
        kind; None when they are, or when the run is unreadable (the masks source check
        reports that)."""
        try:
            settings = RunDir(source).config()["identity"]["settings"]["prune"]
        except (LTHError, KeyError, OSError):
            return None
        from .structures import STRUCTURES  # the registry imports this module

        name = settings.get("structure", "weight")
        return None if name in STRUCTURES and isinstance(STRUCTURES[name], type(self)) else name


def unit_score_unused(cfg: PruneConfig) -> list[Problem]:
    if cfg.unit_score != type(cfg).unit_score:
        return [("unit_score", "only used with structure = 'unit' (single weights are "
                               "scored by criterion)")]
    return []


def nm_unused(cfg: PruneConfig) -> list[Problem]:
    if tuple(cfg.nm) != type(cfg).nm:
        return [("nm", f"got {list(cfg.nm)}; only used with structure = 'nm' (N of every M "
                       f"consecutive weights), not {cfg.structure!r}: set structure = 'nm' "
                       "or remove nm")]
    return []


def allocation_refused(cfg: PruneConfig) -> list[Problem]:
    """For structures whose groups are not layers of weights (units, N:M groups)."""
    if not ALLOCATIONS.get(cfg.allocation, default=UNIFORM).uniform:
        return [("allocation", f"{cfg.allocation!r} gives layers densities of their own; "
                               f"with structure = {cfg.structure!r} every layer keeps its "
                               "scheduled density: use allocation = 'uniform' or structure "
                               "= 'weight'")]
    return []


__all__ = ["MaskLayout", "MaskStructure", "WeightLayout", "allocation_refused", "nm_unused",
           "unit_score_unused"]
