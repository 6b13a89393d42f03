"""Dynamic sparse training at constant density: drop weights, regrow as many elsewhere.

At each update step t, in every group (a layer in layer-wise scope), with K weights alive:

1. drop the d = round_half_up(α_t · K) alive weights of smallest magnitude;
2. regrow d positions: SET (Mocanu et al., 2018) draws them at random, RigL (Evci et al.,
   2020) takes those where the step's dense gradient is largest in magnitude. Candidates
   are the positions that were pruned before the update; a weight just dropped is taken
   back only when there are not enough of them (an N:M group with N > M - N). So every
   position that changes does change, and the trainer starts regrown weights at 0 with
   fresh optimizer state.

With an N:M layout each weight's group is known (``group_ids``): a group regrows exactly as
many as it lost, within itself, so every group keeps N. Ties in either ranking are broken
by a generator seeded by (seed, level, step): an update is a pure function of the step,
and a level resumed from a checkpoint makes the same ones.

α_t: ``fraction`` (α) at every update, or decayed by a cosine from α at t0 to 0 at the
last update window's end, as RigL does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import ModelError
from ..mask_updates import MaskUpdates
from ..masks import Mask
from ..pruning.selection import kept_count, top_k_indices
from ..seeding import generator

Tensors = dict[str, torch.Tensor]
REGROWTH = ("random", "gradient")


def check_regrowth(regrow: str) -> None:
    if regrow not in REGROWTH:
        raise ValueError(f"regrow = {regrow!r}; use one of {', '.join(REGROWTH)}")


def update_fractions(begin: int, last: int, every: int, fraction: float, decay: str
                     ) -> dict[int, float]:
    """α_t at each update step t = begin + j·every (j ≥ 1, t ≤ last); steps where the
    cosine has reached 0 (at ``last``) make no update.

    >>> update_fractions(0, 400, 100, 0.3, "cosine")
    {100: 0.2560660171779821, 200: 0.15, 300: 0.04393398282201788}
    >>> update_fractions(0, 250, 100, 0.3, "constant")
    {100: 0.3, 200: 0.3}
    """
    out = {}
    for t in range(begin + every, last + 1, every):
        a = (fraction if decay == "constant"
             else fraction / 2 * (1 + math.cos(math.pi * (t - begin) / (last - begin))))
        if a > 1e-12:
            out[t] = a
    return out


class DropAndGrow(MaskUpdates):
    """SET (``regrow = 'random'``) or RigL (``'gradient'``) updates of the groups' masks at
    the steps of ``fractions`` (step -> α_t). ``group_ids``: the N:M group of each weight
    of the layers that have them."""

    def __init__(self, fractions: dict[int, float], groups: Sequence[tuple[str, ...]],
                 regrow: str, *, seed: int, level: int,
                 group_ids: dict[str, torch.Tensor] | None = None):
        check_regrowth(regrow)
        self.fractions, self.groups, self.regrow = fractions, list(groups), regrow
        self.seed, self.level, self.group_ids = seed, level, group_ids or {}

    @property  # type: ignore[override]
    def gradients(self) -> bool:
        return self.regrow == "gradient"

    def due(self, step: int) -> bool:
        return step in self.fractions

    def update(self, step: int, weights: Tensors, mask: Mask, gradients: Tensors | None
               ) -> Mask:
        if self.gradients and gradients is None:
            return mask  # fp16 skipped this step's update: no gradient to rank by
        g = generator(self.seed, "drop-grow", self.level, step)
        out = {n: t.cpu() for n, t in mask.items()}
        unknown = [n for names in self.groups for n in names if n not in out]
        if unknown:
            raise ModelError(f"DropAndGrow groups name {unknown}, not parameters of the mask "
                             f"({', '.join(out)})")
        for names in self.groups:
            before = torch.cat([out[n].flatten() for n in names])
            magnitude = torch.cat([weights[n].detach().cpu().abs().flatten().float()
                                   for n in names])
            d = kept_count(int(before.sum()), self.fractions[step])
            alive = before.nonzero().squeeze(1)
            dropped = alive[top_k_indices(-magnitude[alive], d, g)]
            after = before.clone()
            after[dropped] = False
            grow = self._grow_scores(names, before, gradients, g)
            # taken back only when nothing else is left, the best of them first
            if len(dropped):
                grow[dropped] -= grow.max() - grow[dropped].min() + 1
            grow[after] = -math.inf
            after |= self._regrown(names, grow, dropped, d, g)
            start = 0
            for n in names:
                size = out[n].numel()
                out[n] = after[start:start + size].view_as(out[n])
                start += size
        return Mask(out, order=mask.names())

    def _grow_scores(self, names: tuple[str, ...], before: torch.Tensor,
                     gradients: Tensors | None, g: torch.Generator) -> torch.Tensor:
        if self.regrow == "random":
            return torch.rand(before.shape, generator=g)
        assert gradients is not None
        return torch.cat([gradients[n].detach().cpu().abs().flatten().float() for n in names])

    def _regrown(self, names: tuple[str, ...], grow: torch.Tensor, dropped: torch.Tensor,
                 d: int, g: torch.Generator) -> torch.Tensor:
        """The positions regrown: the ``d`` best ``grow`` scores, or, in N:M layers, in
        each group as many as it lost."""
        chosen = torch.zeros(grow.shape, dtype=torch.bool)
        if not any(n in self.group_ids for n in names):
            chosen[top_k_indices(grow, d, g)] = True
            return chosen
        (n,) = names  # N:M layers are pruned layer by layer
        ids = self.group_ids[n].flatten()
        order = torch.argsort(ids, stable=True)  # the weights of each group together
        m = ids.numel() // (int(ids.max()) + 1)
        lost = torch.zeros(grow.shape, dtype=torch.bool)
        lost[dropped] = True
        scores, quota = grow[order].view(-1, m), lost[order].view(-1, m).sum(1, keepdim=True)
        shuffle = torch.rand(scores.shape, generator=g).argsort(dim=1)  # ties: seeded order
        ranked = shuffle.gather(1, torch.sort(scores.gather(1, shuffle), dim=1,
                                              descending=True, stable=True).indices)
        take = torch.zeros_like(scores, dtype=torch.bool)
        take.scatter_(1, ranked, torch.arange(m).expand_as(ranked) < quota)
        chosen[order] = take.flatten()
        return chosen
