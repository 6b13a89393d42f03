"""Gradual magnitude pruning (Zhu & Gupta, 2017): the mask shrinks while the level trains.

Pruning happens every Δt steps from t0 to t0 + nΔt. At the j-th pruning step (j = 1..n)
each group keeps exactly the count on the cubic schedule between the count it started
with, K_i, and its scheduled count, K_f:

    K_j = round_half_up(K_f + (K_i - K_f) · (1 - j/n)³)

(the density form of s_t = s_f + (s_i - s_f)(1 - (t - t0)/(nΔt))³), chosen among the
survivors by the run's criterion, which scores the weights of now against those the level
started from (``init``). Pruned weights stay exactly zero: the trainer enforces the mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..mask_updates import MaskUpdates
from ..masks import Mask
from ..pruning.criteria import ScoreInputs
from ..pruning.plan import weight_scores
from ..pruning.selection import kept_count, select
from ..seeding import generator

Tensors = dict[str, torch.Tensor]
Criterion = Callable[[ScoreInputs], torch.Tensor]


def cubic_counts(size: int, start: int, final: int, n: int) -> list[int]:
    """The counts a group of ``size`` weights, ``start`` of them surviving, keeps after each
    of ``n`` pruning steps on the way to ``final`` (round half up, as every count in lth).

    >>> cubic_counts(1000, 1000, 100, 4)
    [480, 213, 114, 100]
    """
    d_i, d_f = start / size, final / size
    return [kept_count(size, d_f + (d_i - d_f) * (1 - j / n) ** 3) for j in range(1, n + 1)]


class GradualPruning(MaskUpdates):
    """Prunes each group to its next cubic count at each of ``steps`` (ascending).

    ``groups``: the names sharing one count, with their size and scheduled final count;
    the count each starts from is read from the first mask it is given (the level's), so
    an object made afresh after a restart computes the same counts from the saved mask."""

    def __init__(self, steps: Sequence[int], groups: Sequence[tuple[tuple[str, ...], int, int]],
                 start: Mask, criterion: Criterion, init: Tensors, *, seed: int, level: int):
        self.steps = list(steps)
        self.criterion, self.init, self.seed, self.level = criterion, init, seed, level
        kept = start.kept()
        self.counts = {names: cubic_counts(size, sum(kept[n] for n in names), final,
                                           len(self.steps))
                       for names, size, final in groups}
        self._index = {s: j for j, s in enumerate(self.steps)}

    def due(self, step: int) -> bool:
        return step in self._index

    def update(self, step: int, weights: Tensors, mask: Mask, gradients: Tensors | None
               ) -> Mask:
        j = self._index[step]
        out = {n: t.cpu() for n, t in mask.items()}
        g = generator(self.seed, "gradual", self.level, step)
        for names, counts in self.counts.items():
            alive = sum(int(out[n].sum()) for n in names)
            if counts[j] >= alive:
                continue
            scores = weight_scores(self.criterion, names, out, counts[j], self.init, weights, g)
            out.update(select(scores, {n: out[n] for n in names}, counts[j], g))
        return Mask(out, order=mask.names())
