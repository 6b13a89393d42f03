"""Early-bird ticket detection (You et al., ICLR 2020): the rule, apart from training.

While the dense network trains, the mask that pruning would give *now* is computed every
epoch (or every N steps). The last ``queue`` masks are kept; the early-bird ticket is drawn
when the normalised Hamming distance between the newest mask and each of the others is at
most ``epsilon`` (paper: 5 masks, ε = 0.1).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch

from .errors import ConfigError
from .masks import Mask


def mask_distance(a: Mask, b: Mask) -> float:
    """Normalised Hamming distance: the fraction of prunable weights whose keep/prune
    decision differs (1 − equal entries / N).

    >>> m1 = Mask({"w": torch.tensor([1, 1, 0, 0], dtype=torch.bool)})
    >>> m2 = Mask({"w": torch.tensor([1, 0, 0, 1], dtype=torch.bool)})
    >>> mask_distance(m1, m2)
    0.5
    """
    if set(a) != set(b) or any(a[n].shape != b[n].shape for n in a):
        raise ConfigError("masks over different parameters or shapes cannot be compared")
    total = sum(a[n].numel() for n in a)
    differ = sum(int((a[n] != b[n].to(a[n].device)).sum()) for n in a)
    return differ / total if total else 0.0


@dataclass
class EarlyBird:
    """Feed it one mask per check; :meth:`update` returns True when the ticket is drawn."""

    queue: int = 5
    epsilon: float = 0.1
    masks: deque = field(default_factory=deque, repr=False)
    distances: list[list[float]] = field(default_factory=list)  # newest vs others, per check
    drawn_at: int | None = None  # index of the check at which the ticket was drawn

    def __post_init__(self) -> None:
        if self.queue < 2:
            raise ConfigError(f"early-bird queue = {self.queue}; needs at least 2 masks")
        if not 0 <= self.epsilon <= 1:
            raise ConfigError(f"early-bird epsilon = {self.epsilon}; a fraction in [0, 1]")
        self.masks = deque(maxlen=self.queue)

    def update(self, mask: Mask) -> bool:
        self.masks.append(mask)
        others = list(self.masks)[:-1]
        row = [mask_distance(mask, m) for m in others]
        self.distances.append(row)
        if self.drawn_at is None and len(self.masks) == self.queue and max(row) <= self.epsilon:
            self.drawn_at = len(self.distances) - 1
        return self.drawn_at is not None


def distance_matrix(masks: list[Mask]) -> torch.Tensor:
    """Pairwise mask distances between checks (the paper's figure of mask convergence)."""
    n = len(masks)
    out = torch.zeros(n, n)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = mask_distance(masks[i], masks[j])
    return out
