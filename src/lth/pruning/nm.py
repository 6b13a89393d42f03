"""N:M masks (``prune.structure = "nm"``, ``prune.nm = [N, M]``): every group of M
consecutive weights along a layer's input dimension keeps the same number of weights.

A Linear weight ``[out, in]`` is grouped as ``weight[o, j*M:(j+1)*M]``; a conv weight
``[out, in, kh, kw]`` in M consecutive input channels at each ``(o, kh, kw)`` (NVIDIA
ASP's convention). Level ℓ keeps ``k_ℓ = max(N, round_half_up(M · d_ℓ))`` weights in every
group, ``d_ℓ`` the schedule's density for the layer's rate: IMP at rate 0.2 goes 4:4, 3:4,
3:4, 2:4 and stays 2:4; one shot at rate 0.5 gives 2:4 at once. Within a group the
criterion's ``k_ℓ`` best survivors are kept (ties: seeded). Layers whose input dimension is
not a multiple of M (a first conv on 1 or 3 channels), 1-D weights and layers of rate 0
stay dense; the run's record says which and why.

>>> from torch import nn
>>> from lth.config import PruneConfig
>>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 4))
>>> layout = NMMasks().layout(PruneConfig(structure="nm", rate=0.5), model,
...                           ["0.weight", "2.weight"], None, ["2.weight"], {}, n_levels=1)
>>> layout.info()["structure"]["kept_dense"]
{'0.weight': 'its input dimension (3) is not a multiple of M = 4'}
>>> layout.group_ids("2.weight")[0]
tensor([0, 0, 0, 0, 1, 1, 1, 1])
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..config_schema import Problem
from ..errors import ConfigError, ModelError
from ..masks import Mask
from .criteria import scores_network, scoring_rounds
from .layout import MaskLayout, MaskStructure, allocation_refused, unit_score_unused
from .network import ScoringNetwork
from .plan import (
    Group,
    fill_default_rate,
    network_scores,
    own_rates,
    round_goal,
    scoring_criterion,
    weight_scores,
)
from .schedules import SCHEDULES, Schedule
from .selection import kept_count

if TYPE_CHECKING:
    from ..config import PruneConfig

log = logging.getLogger("lth")
Tensors = dict[str, torch.Tensor]
MAX_M = 64


@dataclass(frozen=True)
class NMGroup(Group):
    """One N:M layer: ``size // m`` groups of ``m``, each keeping :meth:`per_group`."""

    n: int
    m: int

    def per_group(self, schedule: Schedule, level: int) -> int:
        """k_ℓ: the weights every group of M keeps at ``level``."""
        return max(self.n, kept_count(self.m, self.density(schedule, level)))

    def kept(self, schedule: Schedule, level: int) -> int:
        return self.size // self.m * self.per_group(schedule, level)


@dataclass
class NMLayout(MaskLayout):
    """N:M groups bound to a model. ``shapes``: the N:M layers' weight shapes; ``dense``:
    the layers kept dense, and why."""

    n: int
    m: int
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dense: dict[str, str] = field(default_factory=dict)

    def group_ids(self, name: str) -> torch.Tensor | None:
        """For each weight of parameter ``name``, the id (0, 1, ...) of its N:M group, in
        a LongTensor of the weight's shape; ``None`` for a layer kept dense."""
        shape = self.shapes.get(name)
        if shape is None:
            return None
        moved = (shape[0], *shape[2:], shape[1])  # the grouped (input) dimension last
        ids = torch.arange(math.prod(shape) // self.m).repeat_interleave(self.m)
        return ids.view(moved).movedim(-1, 1).contiguous()

    def next_mask(self, cfg: PruneConfig, level: int, mask: Mask, init: Tensors,
                  final: Tensors, generator: torch.Generator,
                  network: ScoringNetwork | None = None) -> Mask:
        return next_nm_mask(cfg, self, level, mask, init, final, generator, network)

    def info(self) -> dict[str, Any]:
        return {"structure": {"nm": [self.n, self.m], "layers": list(self.shapes),
                              "kept_dense": dict(self.dense)}}


class NMMasks(MaskStructure):
    of_single_weights = False  # a random or learned subset of weights is not N:M
    weight_groups = True  # a count per group: SET and RigL regrow within the groups

    def problems(self, cfg: PruneConfig) -> list[Problem]:
        p = unit_score_unused(cfg) + allocation_refused(cfg)
        n, m = cfg.nm
        if not 0 < n < m <= MAX_M:
            p.append(("nm", f"got {list(cfg.nm)}; needs [N, M] with 0 < N < M <= {MAX_M} "
                            "(N kept of every M consecutive weights), e.g. [2, 4]"))
        if cfg.scope != "layer":
            p.append(("scope", f"got {cfg.scope!r}; N:M groups are per layer: use "
                               "scope = 'layer' with structure = 'nm'"))
        return p

    def layout(self, cfg: PruneConfig, model: nn.Module, names: list[str],
               example: torch.Tensor | None, output: list[str], kinds: dict[str, str], *,
               n_levels: int, check_counts: bool = True) -> NMLayout:
        """One :class:`NMGroup` per layer that can be grouped; the others stay dense (rate
        0, so that ``schedule = 'target'`` solves the default rate over the rest)."""
        n, m = cfg.nm
        shapes = {name: tuple(model.get_parameter(name).shape) for name in names}
        sizes = {name: math.prod(s) for name, s in shapes.items()}
        dense = {name: _not_groupable(s, m) for name, s in shapes.items()}
        dense = {name: why for name, why in dense.items() if why}
        own = own_rates(cfg, names, kinds, output)
        own.update(dict.fromkeys(dense, 0.0))
        if len(dense) < len(names):
            rates = fill_default_rate(cfg, own, n_levels, sizes)
            dense.update({name: "its rate is 0" for name, r in rates.items()
                          if r == 0 and name not in dense})
        if len(dense) == len(names):
            why = "\n".join(f"  {name}: {reason}" for name, reason in dense.items())
            raise ModelError(f"structure = 'nm' found no layer to group in {m}s:\n{why}\n"
                             f"use an M that divides the layers' inputs, or structure = "
                             "'weight'")
        groups = [Group((name,), 0.0, sizes[name]) if name in dense else
                  NMGroup((name,), rates[name], sizes[name], n=n, m=m) for name in names]
        layout = NMLayout({name: 0.0 if name in dense else rates[name] for name in names},
                          groups, n, m, {k: s for k, s in shapes.items() if k not in dense},
                          dense)
        log.info("N:M masks on %s: every %d consecutive inputs keep max(%d, round(%d · the "
                 "level's density)), so %d:%d at any density below %.3g%s",
                 ", ".join(layout.shapes), m, n, m, n, m, (n + 0.5) / m,
                 "".join(f"; {k} kept dense: {why}" for k, why in dense.items()))
        return layout

    def check_source(self, source: Path) -> None:
        name = self.foreign_source(source)
        if name is not None:
            raise ConfigError(f"structure = 'nm' with masks_from = {str(source)!r}, whose "
                              f"masks are not N:M (structure {name!r}); use the source's "
                              "structure or a source run pruned with structure = 'nm'")


def _not_groupable(shape: tuple[int, ...], m: int) -> str:
    if len(shape) < 2:
        return "a 1-D weight has no input dimension to group"
    if shape[1] % m:
        return f"its input dimension ({shape[1]}) is not a multiple of M = {m}"
    return ""


def next_nm_mask(cfg: PruneConfig, layout: NMLayout, level: int, mask: Mask, init: Tensors,
                 final: Tensors, generator: torch.Generator,
                 network: ScoringNetwork | None = None) -> Mask:
    """Every N:M group keeps its ``k_ℓ`` best survivors by the criterion (scored as
    :func:`lth.pruning.next_mask` scores: single weights, or the network, in its rounds)."""
    criterion = scoring_criterion(cfg, network)
    schedule = SCHEDULES[cfg.schedule]
    out = {n: t.cpu() for n, t in mask.items()}
    targets = {g.names[0]: g.per_group(schedule, level) for g in layout.groups
               if isinstance(g, NMGroup)}
    # the most survivors any group of a layer has: where the rounds start from
    alive0 = {n: int(_grouped(out[n], layout.m).sum(1).max()) for n in targets}
    now = dict(alive0)
    whole_network, rounds = scores_network(criterion), scoring_rounds(criterion)
    for r in range(1, rounds + 1):
        goals = {n: round_goal(alive0[n], k, r, rounds) for n, k in targets.items()}
        pruning = [n for n, k in goals.items() if k < now[n]]
        if not pruning:
            continue
        if whole_network:
            scores = network_scores(criterion, network, init, out, mask.names())
        for n in pruning:
            if not whole_network:
                scores = weight_scores(criterion, (n,), out,
                                       out[n].numel() // layout.m * goals[n], init, final,
                                       generator)
            out[n] = nm_select(scores[n].cpu(), out[n], goals[n], layout.m, generator)
            now[n] = goals[n]
    return Mask(out)


def _grouped(t: torch.Tensor, m: int) -> torch.Tensor:
    return t.movedim(1, -1).reshape(-1, m)


def nm_select(scores: torch.Tensor, alive: torch.Tensor, k: int, m: int,
              generator: torch.Generator) -> torch.Tensor:
    """The mask keeping, in every group of ``m`` consecutive weights along dimension 1,
    the ``k`` highest-scoring survivors of ``alive`` (all of them where fewer survive);
    pruned weights never win, ties go to the earliest in a seeded shuffle.

    >>> g = torch.Generator().manual_seed(0)
    >>> s = torch.tensor([[4., 3, 2, 1, 1, 2, 3, 4]])
    >>> nm_select(s, torch.ones(1, 8, dtype=torch.bool), 2, 4, g).int()
    tensor([[1, 1, 0, 0, 0, 0, 1, 1]], dtype=torch.int32)
    """
    if not scores.is_floating_point() or scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    s = torch.nan_to_num(_grouped(scores, m), nan=-math.inf)
    a = _grouped(alive, m)
    shuffle = torch.randperm(s.numel(), generator=generator).view_as(s).argsort(1)
    s, alive_shuffled = s.gather(1, shuffle), a.gather(1, shuffle)
    # Stable sorts, least significant key first: shuffle order, then score, then alive.
    order = s.argsort(dim=1, descending=True, stable=True)
    order = order.gather(1, alive_shuffled.gather(1, order).to(torch.int8)
                         .argsort(dim=1, descending=True, stable=True))
    keep = torch.zeros_like(a).scatter_(1, shuffle.gather(1, order[:, :k]), True) & a
    moved = alive.movedim(1, -1).shape
    return keep.view(moved).movedim(-1, 1).contiguous()


__all__ = ["MAX_M", "NMGroup", "NMLayout", "NMMasks", "next_nm_mask", "nm_select"]
