"""Early-bird search inside an IMP run: which levels search, the candidate mask, the record.

A *searching* level is one whose final weights give another level its mask: every level
but the last for iterative schedules, level 0 alone for ``one_shot``. With
``earlybird.enabled`` such a level stops training at the check where its mask has settled
(see :class:`lth.earlybird.Search`); the next level prunes those early weights and is
retrained as ``reinit`` says (``rewind`` to θ0/θk, or ``lr_rewind``/``finetune`` to
continue from the early-bird weights). The last level, the ticket, trains in full.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..config import EarlyBirdConfig, PruneConfig
from ..durations import to_steps
from ..earlybird import Search
from ..errors import ConfigError
from ..masks import Mask
from ..pruning import CRITERIA, MaskLayout, scores_network
from ..seeding import generator

Tensors = dict[str, torch.Tensor]


def check(eb: EarlyBirdConfig, masks_from: str | None, spe: int, total: int,
          rewind_step: int, model: nn.Module, n_levels: int, criterion: str) -> None:
    """Refuse early-bird settings that cannot work, before any training."""
    if not eb.enabled:
        return
    if n_levels < 1:
        raise ConfigError("earlybird.enabled with n_levels = 0: there is no pruned level to "
                          "draw a ticket for; set n_levels >= 1 or disable the search")
    if masks_from is not None:
        raise ConfigError("earlybird.enabled with masks_from: the masks come from another "
                          "run, so there is nothing to search for; drop one of the two")
    if scores_network(CRITERIA[criterion]):
        raise ConfigError(f"earlybird.enabled with prune.criterion = {criterion!r}, which "
                          "scores the network (gradients over batches, rounds): the search "
                          "scores candidates every few steps by single weights; use "
                          "large_final or another single-weight criterion")
    every = to_steps(eb.every, spe)
    if rewind_step + every * eb.queue > total:
        raise ConfigError(f"earlybird: {eb.queue} checks every {every} steps (after step "
                          f"{rewind_step}) do not fit in {total} training steps; check more "
                          "often (earlybird.every) or use a shorter queue")
    if eb.bn_l1 and not bn_scales(model):
        raise ConfigError("earlybird.bn_l1 = true but the model has no BatchNorm with a "
                          "learnable scale; set bn_l1 = false")


def bn_scales(model: nn.Module) -> list[str]:
    """The names of the model's BatchNorm scales (γ)."""
    return [f"{name}.weight" if name else "weight" for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None]


def make_search(eb: EarlyBirdConfig, prune: PruneConfig, layout: MaskLayout, target: int,
                mask: Mask, init: Callable[[], Tensors], seed: int,
                *, spe: int, after: int, model: nn.Module) -> Search:
    """The monitor of a level whose weights give ``target`` its mask: its candidate is
    exactly the mask ``target`` would get if training stopped now (same criterion, counts
    and tie-breaking generator), compared as the layout compares masks (unit masks for
    structured pruning)."""
    start: list[Tensors] = []  # read at the first check: after a late-rewind snapshot exists

    def candidate(state: Tensors) -> Mask:
        if not start:
            start.append(init())
        new = layout.next_mask(prune, target, mask, start[0], state,
                               generator(seed, "prune", target))
        return layout.compared(new)

    return Search(candidate, every=to_steps(eb.every, spe), queue=eb.queue,
                  epsilon=eb.epsilon, after=after,
                  gammas=bn_scales(model) if eb.bn_l1 else None,
                  l1=eb.bn_l1_strength if eb.bn_l1 else 0.0)
