"""Turn scores into masks that keep an exact number of weights.

Counting rule: a group (one layer in layer-wise scope; all layers sharing a rate in global
scope) of ``N`` prunable weights keeps exactly ``round_half_up(N * d)`` weights at a level
whose scheduled density is ``d``. Only current survivors compete; ties in score are broken
by a seeded random order, never by pruning every tied weight.
"""

from __future__ import annotations

import math

import torch

from ..masks import Mask


def kept_count(n: int, density: float) -> int:
    """Number of weights a group of ``n`` keeps at ``density`` (round half up).

    >>> kept_count(10, 0.25), kept_count(10, 0.35), kept_count(266200, 0.8)
    (3, 4, 212960)
    """
    return min(n, max(0, math.floor(n * density + 0.5 + 1e-9)))


def top_k_indices(scores: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of the ``k`` highest scores (NaN lowest); among scores equal to the k-th
    highest, those earliest in a seeded shuffle win. Returned in ascending index order.

    The set equals that of a stable descending sort of the shuffled scores, found in
    linear time: everything above the k-th highest value, then the first tied ones.
    """
    if not scores.is_floating_point() or scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()  # float64 stays: SynFlow's scores need its range
    scores = torch.nan_to_num(scores.flatten(), nan=-math.inf)
    n = scores.numel()
    perm = torch.randperm(n, generator=generator)  # drawn always: the stream stays the same
    if k <= 0:
        return torch.zeros(0, dtype=torch.long)
    if k >= n:
        return torch.arange(n)
    kth = torch.kthvalue(scores, n - k + 1).values
    above = scores > kth
    tied = (scores == kth).nonzero().squeeze(1)
    rank = torch.empty(n, dtype=torch.long)
    rank[perm] = torch.arange(n)  # position of each index in the shuffle
    wanted = k - int(above.sum())
    first_tied = tied[torch.argsort(rank[tied])[:wanted]]
    keep = above.clone()
    keep[first_tied] = True
    return keep.nonzero().squeeze(1)


def select(scores: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], keep: int,
           generator: torch.Generator) -> dict[str, torch.Tensor]:
    """New masks for one group: the ``keep`` best-scoring survivors across all its tensors."""
    names = list(scores)
    pools = [scores[n].flatten()[masks[n].flatten()] for n in names]
    positions = [masks[n].flatten().nonzero().squeeze(1) for n in names]
    chosen = top_k_indices(torch.cat(pools), keep, generator)
    out: dict[str, torch.Tensor] = {}
    start = 0
    for n, pos in zip(names, positions, strict=True):
        mine = chosen[(chosen >= start) & (chosen < start + pos.numel())] - start
        flat = torch.zeros(masks[n].numel(), dtype=torch.bool)
        flat[pos[mine]] = True
        out[n] = flat.view_as(masks[n])
        start += pos.numel()
    return out


def random_like(source: Mask, within: Mask, *, per_layer: bool,
                generator: torch.Generator) -> Mask:
    """A random mask keeping as many weights as ``source`` — per layer, or in total — chosen
    uniformly among the survivors of ``within`` (so masks still only shrink)."""
    alive = {n: t.cpu() for n, t in within.items()}
    kept = source.kept()
    groups = [[n] for n in alive] if per_layer else [list(alive)]
    out = dict(alive)
    for names in groups:
        scores = {n: torch.rand(alive[n].shape, generator=generator) for n in names}
        out.update(select(scores, {n: alive[n] for n in names},
                          min(sum(kept[n] for n in names),
                              sum(int(alive[n].sum()) for n in names)), generator))
    return Mask(out, order=list(alive))
