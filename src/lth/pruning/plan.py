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
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..config import PruneConfig
from ..masks import Mask
from .criteria import CRITERIA, ScoreInputs
from .selection import kept_count, select


@dataclass(frozen=True)
class Group:
    """Tensors that share one keep-count: one layer, or all layers of a rate (global)."""

    names: tuple[str, ...]
    rate: float
    size: int


def resolve_rates(cfg: PruneConfig, names: Sequence[str], kinds: dict[str, str],
                  output: Sequence[str], n_levels: int) -> dict[str, float]:
    """Per-parameter pruning rate after output/pattern/type/default precedence."""
    default = cfg.rate
    if cfg.schedule == "target":
        assert cfg.target_sparsity is not None  # checked by PruneConfig
        default = 1.0 - (1.0 - cfg.target_sparsity) ** (1.0 / max(n_levels, 1))
    rates: dict[str, float] = {}
    for name in names:
        if name in output and cfg.output_rate is not None:
            rates[name] = cfg.output_rate
            continue
        pattern = next((p for p in cfg.layer_rates if fnmatch.fnmatchcase(name, p)), None)
        if pattern is not None:
            rates[name] = cfg.layer_rates[pattern]
        elif kinds.get(name) == "conv" and cfg.conv_rate is not None:
            rates[name] = cfg.conv_rate
        elif kinds.get(name) == "linear" and cfg.linear_rate is not None:
            rates[name] = cfg.linear_rate
        else:
            rates[name] = default
    return rates


def make_groups(scope: str, rates: dict[str, float], sizes: dict[str, int]) -> list[Group]:
    """Layer scope: one group per tensor. Global scope: one group per distinct rate."""
    if scope == "layer":
        return [Group((n,), r, sizes[n]) for n, r in rates.items()]
    by_rate: dict[float, list[str]] = {}
    for n, r in rates.items():
        by_rate.setdefault(r, []).append(n)
    return [Group(tuple(ns), r, sum(sizes[n] for n in ns)) for r, ns in by_rate.items()]


def scheduled_density(schedule: str, rate: float, level: int) -> float:
    """Fraction of a group's original weights kept after ``level`` pruning rounds."""
    if schedule == "linear":
        return max(0.0, 1.0 - rate * level)
    return (1.0 - rate) ** level


def next_mask(cfg: PruneConfig, groups: Sequence[Group], level: int, mask: Mask,
              init: dict[str, torch.Tensor], final: dict[str, torch.Tensor],
              generator: torch.Generator) -> Mask:
    """Mask for ``level`` from the previous mask and that level's start/final weights.

    Every group keeps exactly ``kept_count(group.size, scheduled density)`` weights, chosen
    among the survivors of ``mask`` by the configured criterion.
    """
    criterion = CRITERIA[cfg.criterion]
    out = {n: t.cpu() for n, t in mask.items()}
    for group in groups:
        keep = kept_count(group.size, scheduled_density(cfg.schedule, group.rate, level))
        alive = sum(int(out[n].sum()) for n in group.names)
        if keep >= alive:
            continue
        fraction = 1.0 - keep / alive
        scores = {n: criterion(ScoreInputs(init[n].detach().cpu().float(),
                                           final[n].detach().cpu().float(), out[n],
                                           fraction, generator))
                  for n in group.names}
        out.update(select(scores, {n: out[n] for n in group.names}, keep, generator))
    return Mask(out)
