"""How a run uses the masks of the run it copies them from (``masks_from_mode``).

- ``same``: the source's masks as they are (the paper's controls: the ticket's masks with
  other weights);
- ``random_layer`` / ``random_global``: random masks keeping as many weights as the
  source's, per layer / in total, drawn among the previous level's survivors (the
  random-pruning control: masks still only shrink).

>>> MASK_COPIES["same"].draws_at_random, MASK_COPIES["random_layer"].draws_at_random
(False, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..masks import Mask
from ..registry import Registry, instances_of
from .selection import random_like


@dataclass(frozen=True)
class MaskCopy:
    """``draws_at_random``: the copy keeps the source's counts, not its weights (so a
    structure whose masks are not sets of single weights cannot use it)."""

    draws_at_random: bool = False
    per_layer: bool = False

    def mask(self, source: Mask, previous: Mask | None,
             generator: torch.Generator) -> Mask:
        """This run's mask for a level whose source mask is ``source``; ``previous``: this
        run's mask of the level before (needed when the copy draws at random)."""
        if not self.draws_at_random:
            return source
        assert previous is not None
        return random_like(source, previous, per_layer=self.per_layer, generator=generator)


MASK_COPIES: Registry[MaskCopy] = Registry("masks_from mode", entry=instances_of(MaskCopy))
MASK_COPIES.register(MaskCopy(), name="same")
MASK_COPIES.register(MaskCopy(draws_at_random=True, per_layer=True), name="random_layer")
MASK_COPIES.register(MaskCopy(draws_at_random=True), name="random_global")
MASK_COPIES.mark_builtin()
