"""Pruning criteria of Zhou et al. (2019): a score per weight, higher = keep.

A criterion sees the weights the level started training from (``init``, w_i: θ0 or the
rewind point), the weights after training (``final``, w_f), the current mask and the
fraction of survivors about to be pruned. Selection (exact counts, seeded ties) lives in
:mod:`lth.pruning.selection`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..registry import Registry


@dataclass(frozen=True)
class ScoreInputs:
    init: torch.Tensor
    final: torch.Tensor
    mask: torch.Tensor
    fraction: float
    generator: torch.Generator


Criterion = Callable[[ScoreInputs], torch.Tensor]
CRITERIA: Registry[Criterion] = Registry("criterion")


# The reference Keras LTH API's short names, accepted wherever a criterion is named (a
# config stores the full name, so both spellings are one experiment).
CRITERION_ALIASES = {"lf": "large_final", "lilf": "large_init_large_final",
                     "mi": "magnitude_increase", "mov": "movement",
                     "lfss": "large_final_same_sign"}


def scores_network(criterion: object) -> bool:
    """Whether a registered criterion scores the whole network at once (SNIP, GraSP,
    SynFlow: a :class:`~lth.pruning.network.NetworkCriterion`, whose ``scores_network`` is
    true) rather than each weight from its own values (a function of :class:`ScoreInputs`).

    >>> scores_network(CRITERIA["large_final"]), scores_network(CRITERIA["snip"])
    (False, True)
    """
    return bool(getattr(criterion, "scores_network", False))


def reads_trained(criterion: object) -> bool:
    """Whether a registered criterion reads trained weights (``final``), so that a mask it
    chooses costs the training of the level it is chosen from; False for those that score
    the start alone (``large_init``, ``random``, SNIP, GraSP, SynFlow)."""
    return getattr(criterion, "reads_trained", True)


def scoring_rounds(criterion: object) -> int:
    """In how many rounds a criterion reaches a level's counts, rescoring the survivors
    before each (SynFlow: 100); single-weight criteria score once."""
    return int(getattr(criterion, "rounds", 1))


def register_criterion(fn: Criterion, *, name: str | None = None,
                       replace: bool = False) -> Criterion:
    """Add ``fn`` to :data:`CRITERIA` under its own name (or ``name``); use as a decorator.

    To run in worker processes (``executor='local'`` or ``'ray'``) it must be defined at
    the top level of a module they can import, not in ``__main__`` or a notebook.
    """
    return CRITERIA.register(fn, name=name, replace=replace)


@register_criterion
def large_final(s: ScoreInputs) -> torch.Tensor:
    """|w_f|: the largest trained weights survive (IMP's criterion)."""
    return s.final.abs()


@register_criterion
def small_final(s: ScoreInputs) -> torch.Tensor:
    """-|w_f|: the smallest trained weights survive (a control)."""
    return -s.final.abs()


@register_criterion
def large_init(s: ScoreInputs) -> torch.Tensor:
    """|w_i|: the weights largest at the start of training survive."""
    return s.init.abs()


@register_criterion
def small_init(s: ScoreInputs) -> torch.Tensor:
    """-|w_i|: the weights smallest at the start of training survive."""
    return -s.init.abs()


def pruned_count(fraction: float, alive: int) -> int:
    """How many of ``alive`` weights a ``fraction`` prunes: ``fraction`` is ``1 - keep /
    alive`` in floating point, so a product within 1e-6 of a whole number is that number
    (``ceil`` alone would take 0.2 · 1000 = 200.00000000000003 as 201).

    >>> pruned_count(1 - 800 / 1000, 1000), pruned_count(0.25, 10)
    (200, 3)
    """
    x = fraction * alive
    return round(x) if abs(x - round(x)) < 1e-6 else math.ceil(x)


QUANTILE_CRITERIA = ("large_init_large_final", "small_init_small_final")  # use the ratio


def _quantile_ratio(s: ScoreInputs) -> float:
    """α = q(|w_i|) / q(|w_f|) over the survivors, q at the fraction being pruned.

    Scaling |w_f| by α puts both magnitudes on one scale, so that min/max of the two
    compares like with like (the reference API's formulation).
    """
    wi, wf = s.init.abs()[s.mask], s.final.abs()[s.mask]
    if wi.numel() == 0:
        return 1.0
    k = min(max(1, pruned_count(s.fraction, wi.numel())), wi.numel())
    qi, qf = float(wi.kthvalue(k).values), float(wf.kthvalue(k).values)
    return qi / qf if qf > 0 else 1.0


@register_criterion
def large_init_large_final(s: ScoreInputs) -> torch.Tensor:
    """min(α|w_f|, |w_i|): weights large before and after training survive."""
    return torch.minimum(_quantile_ratio(s) * s.final.abs(), s.init.abs())


@register_criterion
def small_init_small_final(s: ScoreInputs) -> torch.Tensor:
    """-max(α|w_f|, |w_i|): weights small before and after training survive."""
    return -torch.maximum(_quantile_ratio(s) * s.final.abs(), s.init.abs())


@register_criterion
def magnitude_increase(s: ScoreInputs) -> torch.Tensor:
    """|w_f| - |w_i|: the weights whose magnitude grew most in training survive."""
    return s.final.abs() - s.init.abs()


@register_criterion
def movement(s: ScoreInputs) -> torch.Tensor:
    """|w_f - w_i|: the weights that moved furthest in training survive."""
    return (s.final - s.init).abs()


@register_criterion
def large_final_same_sign(s: ScoreInputs) -> torch.Tensor:
    """|w_f| where w_f has the sign of w_i, else 0: large weights that kept their sign."""
    # Weights that flipped sign score 0: kept only when too few kept their sign (ties -> seeded).
    return torch.where(torch.sign(s.final) == torch.sign(s.init), s.final.abs(), 0.0)


@register_criterion
def large_final_diff_sign(s: ScoreInputs) -> torch.Tensor:
    """|w_f| where the sign of w_i flipped, else 0: large weights that changed sign."""
    return torch.where(torch.sign(s.final) != torch.sign(s.init), s.final.abs(), 0.0)


@register_criterion
def random(s: ScoreInputs) -> torch.Tensor:
    """Uniform random scores: a random mask of the same density (a control)."""
    return torch.rand(s.final.shape, generator=s.generator)


for _at_start in (large_init, small_init, random):
    _at_start.reads_trained = False  # type: ignore[attr-defined]


def _register_network_criteria() -> None:
    from .network import NETWORK_CRITERIA  # SNIP, GraSP, SynFlow: they score the network

    for name, criterion in NETWORK_CRITERIA.items():
        CRITERIA.register(criterion, name=name)  # type: ignore[arg-type]


_register_network_criteria()
CRITERIA.mark_builtin()
