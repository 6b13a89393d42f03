"""Per-layer rates, pruning groups and the density schedule of an IMP run.

Schedules give a group's density (fraction of its original weights kept) at level ℓ:

- ``geometric``: prune ``rate`` of the *surviving* weights each level, d = (1 - rate)^ℓ
  (the paper's and OpenLTH's rule);
- ``target``: like geometric with rate = 1 - (1 - target_sparsity)^(1/n_levels) for the
  layers on the default ``rate``, so they reach the target at the last level exactly;
- ``linear``: prune ``rate`` of the *original* weights each level, d = 1 - ℓ·rate
  (the reference Keras API's rule);
- ``one_shot``: d as geometric, but every level prunes the dense (level-0) trained network
  at once, so each level is an independent one-shot ticket at its density.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..config import PruneConfig
from ..errors import ConfigError
from ..masks import Mask
from ..registry import Registry
from .criteria import CRITERIA, ScoreInputs
from .network import NetworkCriterion, ScoringNetwork
from .selection import kept_count, select
from .structured import Structure


@dataclass(frozen=True)
class Group:
    """Tensors that share one keep-count: one layer, or all layers of a rate (global)."""

    names: tuple[str, ...]
    rate: float
    size: int


def resolve_rates(cfg: PruneConfig, names: Sequence[str], kinds: dict[str, str],
                  output: Sequence[str], n_levels: int,
                  sizes: dict[str, int] | None = None) -> dict[str, float]:
    """Per-parameter pruning rate after output/pattern/type/default precedence.

    With ``schedule = 'target'`` the default rate is solved so that, with every other layer
    on its own rate, all prunable weights together reach ``target_sparsity`` after
    ``n_levels`` levels (up to each group's rounding).
    """
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
    default = cfg.rate
    if cfg.schedule == "target" and n_levels > 0:
        default = _target_rate(cfg, rates, sizes or {n: 1 for n in names}, n_levels)
    return {n: default if r is None else r for n, r in rates.items()}


def _target_rate(cfg: PruneConfig, rates: dict[str, float | None], sizes: dict[str, int],
                 n_levels: int) -> float:
    assert cfg.target_sparsity is not None  # checked by PruneConfig
    free = sum(sizes[n] for n, r in rates.items() if r is None)
    fixed = sum(sizes[n] * (1 - r) ** n_levels for n, r in rates.items() if r is not None)
    total = sum(sizes.values())
    if free == 0:
        raise ConfigError("prune.schedule = 'target' needs at least one layer on the default "
                          "rate; every layer has its own rate (output/layer/type rates)")
    density = ((1 - cfg.target_sparsity) * total - fixed) / free
    if not 0 < density <= 1:
        raise ConfigError(f"prune.target_sparsity = {cfg.target_sparsity} cannot be reached in "
                          f"{n_levels} levels while the layers with their own rates keep "
                          f"{fixed / total:.1%} of all weights; lower those rates or the target")
    return 1.0 - density ** (1.0 / n_levels)


def check_final_counts(groups: Sequence[Group], schedule: str, n_levels: int) -> None:
    """Refuse a schedule under which some group keeps no weight at the last level."""
    dead = [g for g in groups
            if g.rate > 0 and kept_count(g.size, scheduled_density(schedule, g.rate, n_levels)) < 1]
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


Schedule = Callable[[float, int], float]  # (rate, level) -> density
SCHEDULES: Registry[Schedule] = Registry("schedule")


def geometric(rate: float, level: int) -> float:
    return (1.0 - rate) ** level


def linear(rate: float, level: int) -> float:
    return max(0.0, 1.0 - rate * level)


# 'target' and 'one_shot' have geometric densities: 'target' differs in how the rate is
# solved (resolve_rates), 'one_shot' in which level's weights are pruned (the IMP loop).
for _name, _schedule in (("geometric", geometric), ("target", geometric), ("linear", linear),
                         ("one_shot", geometric)):
    SCHEDULES.register(_schedule, name=_name)
SCHEDULES.mark_builtin()


def scheduled_density(schedule: str, rate: float, level: int) -> float:
    """Fraction of a group's original weights kept after ``level`` pruning rounds.

    >>> scheduled_density("geometric", 0.5, 2), scheduled_density("linear", 0.25, 2)
    (0.25, 0.5)
    """
    return SCHEDULES[schedule](rate, level)


def next_mask(cfg: PruneConfig, groups: Sequence[Group], level: int, mask: Mask,
              init: dict[str, torch.Tensor], final: dict[str, torch.Tensor],
              generator: torch.Generator, network: ScoringNetwork | None = None) -> Mask:
    """Mask for ``level`` from the previous mask and that level's start/final weights.

    Every group keeps exactly ``kept_count(group.size, scheduled density)`` weights, chosen
    among the survivors of ``mask`` by the configured criterion. A criterion that scores
    the network (:mod:`lth.pruning.network`) needs ``network``, and with ``rounds`` > 1
    reaches those counts in that many rounds, rescoring the survivors before each.
    """
    criterion = CRITERIA[cfg.criterion]
    out = {n: t.cpu() for n, t in mask.items()}
    targets = {g: kept_count(g.size, scheduled_density(cfg.schedule, g.rate, level))
               for g in groups}
    alive0 = {g: sum(int(out[n].sum()) for n in g.names) for g in groups}
    rounds = criterion.rounds if isinstance(criterion, NetworkCriterion) else 1
    if isinstance(criterion, NetworkCriterion) and network is None:
        raise ConfigError(f"prune.criterion = {cfg.criterion!r} scores the network: it needs "
                          "the model and training data (lth.prune(..., data=...)); or use a "
                          "criterion that scores single weights")
    for r in range(1, rounds + 1):
        # Exponential steps from the survivors to the target; the last round is exact.
        goals = {g: targets[g] if r == rounds else
                 round(alive0[g] * (targets[g] / alive0[g]) ** (r / rounds))
                 for g in groups if targets[g] < alive0[g]}
        pruning = [g for g, goal in goals.items()
                   if goal < sum(int(out[n].sum()) for n in g.names)]
        if not pruning:
            continue
        if isinstance(criterion, NetworkCriterion):
            assert network is not None
            scores = criterion(network.inputs(init, Mask(out, order=mask.names())))
        for g in pruning:
            if not isinstance(criterion, NetworkCriterion):
                alive = sum(int(out[n].sum()) for n in g.names)
                fraction = 1.0 - goals[g] / alive
                scores = {n: criterion(ScoreInputs(init[n].detach().cpu().float(),
                                                   final[n].detach().cpu().float(), out[n],
                                                   fraction, generator))
                          for n in g.names}
            out.update(select({n: scores[n] for n in g.names},
                              {n: out[n] for n in g.names}, goals[g], generator))
    return Mask(out)


def next_unit_mask(cfg: PruneConfig, structure: Structure, groups: Sequence[Group], level: int,
                   mask: Mask, final: dict[str, torch.Tensor],
                   generator: torch.Generator) -> Mask:
    """Structured pruning: groups count *units* (neurons / channels of the producers of
    ``structure``); each keeps ``kept_count(units, scheduled density)`` of them, scored by
    ``cfg.unit_score`` on ``final`` (a state dict: BatchNorm scales for ``bn_gamma``).
    The weight mask removes the dead units' rows and the consumer columns that read them."""
    units = {n: t.cpu() for n, t in structure.unit_mask(mask).items()}
    scores: dict[str, torch.Tensor] | None = None
    for group in groups:
        keep = kept_count(group.size, scheduled_density(cfg.schedule, group.rate, level))
        if keep >= sum(int(units[n].sum()) for n in group.names):
            continue
        if scores is None:
            scores = structure.scores(final, cfg.unit_score)
        units.update(_select_units({n: scores[n] for n in group.names},
                                   {n: units[n] for n in group.names}, keep, generator))
    out = structure.expand(Mask(units, order=structure.producers), mask.names(),
                           {n: t.shape for n, t in mask.items()})
    return Mask({n: t & mask[n].cpu() for n, t in out.items()}, order=mask.names())


def _select_units(scores: dict[str, torch.Tensor], alive: dict[str, torch.Tensor], keep: int,
                  generator: torch.Generator) -> dict[str, torch.Tensor]:
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


def prune_step(cfg: PruneConfig, structure: Structure | None, groups: Sequence[Group],
               level: int, mask: Mask, init: dict[str, torch.Tensor],
               final: dict[str, torch.Tensor], generator: torch.Generator,
               network: ScoringNetwork | None = None) -> Mask:
    """The next mask, by single weights (:func:`next_mask`) or by units."""
    if structure is None:
        return next_mask(cfg, groups, level, mask, init, final, generator, network)
    return next_unit_mask(cfg, structure, groups, level, mask, final, generator)
