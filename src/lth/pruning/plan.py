"""Per-layer rates and pruning groups of an IMP run, and the next mask of a level.

Densities per level come from the run's schedule (:mod:`lth.pruning.schedules`); which
tensors share one keep-count from its scope (:func:`make_groups`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..errors import ConfigError
from ..masks import Mask
from .criteria import CRITERIA, Criterion, ScoreInputs, scores_network, scoring_rounds
from .network import ScoringNetwork
from .schedules import SCHEDULES, Schedule
from .selection import kept_count, select

if TYPE_CHECKING:
    from ..config import PruneConfig

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Group:
    """Tensors that share one keep-count: one layer, or all layers of a rate (global)."""

    names: tuple[str, ...]
    rate: float
    size: int

    def density(self, schedule: Schedule, level: int) -> float:
        """The fraction of the group's weights (or units) ``level`` keeps under ``schedule``
        (a layer allocation gives each layer its own: :mod:`lth.pruning.allocation`)."""
        return schedule.density(self.rate, level)

    def kept(self, schedule: Schedule, level: int) -> int:
        """How many of the group's weights (or units) ``level`` keeps under ``schedule``."""
        return kept_count(self.size, self.density(schedule, level))


def resolve_rates(cfg: PruneConfig, names: Sequence[str], kinds: dict[str, str],
                  output: Sequence[str], n_levels: int,
                  sizes: dict[str, int] | None = None) -> dict[str, float]:
    """Per-parameter pruning rate after output/pattern/type/default precedence.

    With ``schedule = 'target'`` the default rate is solved so that, with every other layer
    on its own rate, all prunable weights together reach ``target_sparsity`` after
    ``n_levels`` levels (up to each group's rounding).
    """
    return fill_default_rate(cfg, own_rates(cfg, names, kinds, output), n_levels, sizes)


def own_rates(cfg: PruneConfig, names: Sequence[str], kinds: dict[str, str],
              output: Sequence[str]) -> dict[str, float | None]:
    """Each parameter's own rate (``output_rate``, then ``layer_rates``, then
    ``conv_rate`` / ``linear_rate``), ``None`` for those on the default rate."""
    for pattern in cfg.layer_rates:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise ConfigError(f"prune.layer_rates pattern {pattern!r} matches no prunable "
                              f"parameter; prunable: {', '.join(names)}")
    rates: dict[str, float | None] = {}
    for name in names:
        pattern = next((p for p in cfg.layer_rates if fnmatch.fnmatchcase(name, p)), None)
        if name in output and cfg.output_rate is not None:
            rates[name] = cfg.output_rate
        elif pattern is not None:
            rates[name] = cfg.layer_rates[pattern]
        elif kinds.get(name) == "conv" and cfg.conv_rate is not None:
            rates[name] = cfg.conv_rate
        elif kinds.get(name) == "linear" and cfg.linear_rate is not None:
            rates[name] = cfg.linear_rate
        else:
            rates[name] = None  # the default rate
    return rates


def fill_default_rate(cfg: PruneConfig, rates: dict[str, float | None], n_levels: int,
                      sizes: dict[str, int] | None = None) -> dict[str, float]:
    """``rates`` (from :func:`own_rates`) with the default rate, which the schedule gives,
    in place of ``None``."""
    default = SCHEDULES[cfg.schedule].default_rate(cfg, rates, sizes or {n: 1 for n in rates},
                                                   n_levels)
    return {n: default if r is None else r for n, r in rates.items()}


def round_goal(start: int, target: int, r: int, rounds: int) -> int:
    """The count a group reaches after scoring round ``r`` of ``rounds`` on the way from
    ``start`` survivors to ``target``: exponential steps, the last exact."""
    return target if r == rounds else round(start * (target / start) ** (r / rounds))


def check_final_counts(groups: Sequence[Group], schedule: str, n_levels: int) -> None:
    """Refuse a schedule under which some group keeps no weight at the last level."""
    dead = [g for g in groups
            if g.rate > 0 and g.kept(SCHEDULES[schedule], n_levels) < 1]
    if dead:
        names = ", ".join(n for g in dead for n in g.names)
        raise ConfigError(f"pruning would remove every weight of {names} by level {n_levels} "
                          f"(schedule {schedule!r}, rate {dead[0].rate}); use fewer levels or "
                          "a lower rate for those layers")


def make_groups(scope: str, rates: dict[str, float], sizes: dict[str, int]) -> list[Group]:
    """Layer scope: one group per tensor. Global scope: one group per distinct rate."""
    if scope == "layer":
        return [Group((n,), r, sizes[n]) for n, r in rates.items()]
    by_rate: dict[float, list[str]] = {}
    for n, r in rates.items():
        by_rate.setdefault(r, []).append(n)
    return [Group(tuple(ns), r, sum(sizes[n] for n in ns)) for r, ns in by_rate.items()]


def next_mask(cfg: PruneConfig, groups: Sequence[Group], level: int, mask: Mask,
              init: dict[str, torch.Tensor], final: dict[str, torch.Tensor],
              generator: torch.Generator, network: ScoringNetwork | None = None) -> Mask:
    """Mask for ``level`` from the previous mask and that level's start/final weights.

    Every group keeps exactly ``group.kept(schedule, level)`` weights (``kept_count`` of its
    size at the scheduled density), chosen among the survivors of ``mask`` by the configured
    criterion. A criterion that scores the network (:mod:`lth.pruning.network`) needs
    ``network``, and with ``rounds`` > 1 reaches those counts in that many rounds, rescoring
    the survivors before each.
    """
    criterion = scoring_criterion(cfg, network)
    whole_network = scores_network(criterion)
    out = {n: t.cpu() for n, t in mask.items()}
    schedule = SCHEDULES[cfg.schedule]
    targets = {g: g.kept(schedule, level) for g in groups}
    alive0 = {g: sum(int(out[n].sum()) for n in g.names) for g in groups}
    rounds = scoring_rounds(criterion)
    for r in range(1, rounds + 1):
        # Exponential steps from the survivors to the target; the last round is exact.
        goals = {g: round_goal(alive0[g], targets[g], r, rounds)
                 for g in groups if targets[g] < alive0[g]}
        pruning = [g for g, goal in goals.items()
                   if goal < sum(int(out[n].sum()) for n in g.names)]
        if not pruning:
            continue
        if whole_network:
            scores = network_scores(criterion, network, init, out, mask.names())
        for g in pruning:
            if not whole_network:
                scores = weight_scores(criterion, g.names, out, goals[g], init, final,
                                       generator)
            out.update(select({n: scores[n] for n in g.names},
                              {n: out[n] for n in g.names}, goals[g], generator))
    return Mask(out)


def scoring_criterion(cfg: PruneConfig, network: ScoringNetwork | None) -> Criterion:
    """``cfg``'s criterion; one that scores the network is refused without ``network``."""
    criterion = CRITERIA[cfg.criterion]
    if scores_network(criterion) and network is None:
        raise ConfigError(f"prune.criterion = {cfg.criterion!r} scores the network: it needs "
                          "the model and training data (lth.prune(..., data=...)); or use a "
                          "criterion that scores single weights")
    return criterion


def weight_scores(criterion: Criterion, names: Sequence[str], alive: Tensors, kept: int,
                  init: Tensors, final: Tensors, generator: torch.Generator) -> Tensors:
    """A single-weight criterion's scores of ``names``, whose survivors ``alive`` are about
    to be pruned to ``kept`` in all."""
    fraction = 1.0 - kept / sum(int(alive[n].sum()) for n in names)
    return {n: criterion(ScoreInputs(init[n].detach().cpu().float(),
                                     final[n].detach().cpu().float(), alive[n], fraction,
                                     generator))
            for n in names}


def network_scores(criterion: Criterion, network: ScoringNetwork | None, init: Tensors,
                   alive: Tensors, order: Sequence[str]) -> Tensors:
    """A network criterion's scores of every weight, the network at ``init`` masked by
    ``alive`` (the network comes from :func:`scoring_criterion`'s check)."""
    assert network is not None
    return criterion(network.inputs(init, Mask(alive, order=list(order))))
