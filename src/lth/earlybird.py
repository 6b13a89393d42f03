"""Early-bird ticket detection (You et al., ICLR 2020): mask distance, the rule, and the
search as a training monitor (:class:`Search`, used by ``[earlybird]`` in IMP runs).

While the dense network trains, the mask that pruning would give *now* is computed every
epoch (or every N steps). The last ``queue`` masks are kept; the early-bird ticket is drawn
when the normalised Hamming distance between the newest mask and each of the others is at
most ``epsilon`` (paper: 5 masks, ε = 0.1).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import ConfigError
from .masks import Mask
from .train.loop import Callback


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


def distance_matrix(masks: list[Mask]) -> torch.Tensor:
    """Pairwise mask distances between checks (the paper's figure of mask convergence)."""
    n = len(masks)
    out = torch.zeros(n, n)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = mask_distance(masks[i], masks[j])
    return out


_POPCOUNT = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int64)


def pack(mask: Mask) -> torch.Tensor:
    """A mask as one packed bit string (8 decisions a byte), for keeping many of them."""
    flat = torch.cat([mask[n].flatten().cpu() for n in mask]).to(torch.uint8)
    pad = (-flat.numel()) % 8
    flat = torch.cat([flat, torch.zeros(pad, dtype=torch.uint8)]).view(-1, 8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    return (flat * weights).sum(1, dtype=torch.int64).to(torch.uint8)


def packed_distance(a: torch.Tensor, b: torch.Tensor, n: int) -> float:
    """:func:`mask_distance` of two :func:`pack`-ed masks of ``n`` decisions."""
    return int(_POPCOUNT[torch.bitwise_xor(a, b).long()].sum()) / n if n else 0.0


class Search(Callback):
    """The early-bird search as a training monitor (see :mod:`lth.train.loop`).

    Every ``every`` steps after ``after`` it asks ``candidate(state)`` (the weights by
    name) for the mask that pruning would give now and applies the rule: the ticket is
    drawn (training stops) at the first check where the newest mask is within
    ``epsilon`` of each of the ``queue - 1`` masks before it. Masks are kept bit-packed
    for the pairwise distance matrix (the paper's figure) while they fit in
    ``keep_bytes``; beyond that the oldest are dropped (their matrix entries stay
    unknown, ``None``), never the queue's. ``gammas``: names of BatchNorm scales that get
    the network-slimming subgradient ``l1·sign(γ)``.
    """

    key = "monitor"  # its state's place in a level's checkpoints

    def __init__(self, candidate: Callable[[dict[str, torch.Tensor]], Mask], *, every: int,
                 queue: int, epsilon: float, after: int = 0, gammas: list[str] | None = None,
                 l1: float = 0.0, keep_bytes: int = 64 << 20):
        if queue < 2:
            raise ConfigError(f"early-bird queue = {queue}; needs at least 2 masks")
        self.candidate, self.every, self.after = candidate, every, after
        self.queue, self.epsilon, self.keep_bytes = queue, epsilon, keep_bytes
        self.gammas, self.l1 = gammas or [], l1
        self.steps: list[int] = []
        self.packed: dict[int, torch.Tensor] = {}  # check index -> packed mask
        self.matrix: list[list[float | None]] = []  # row i: distances to checks 0..i-1
        self.size = 0
        self.drawn_step: int | None = None

    def after_backward(self, params: dict[str, torch.Tensor],
                       grads: dict[str, torch.Tensor]) -> None:
        if self.l1:
            for n in self.gammas:
                if grads.get(n) is not None:
                    grads[n].add_(torch.sign(params[n].detach()), alpha=self.l1)

    def after_step(self, step: int, state: Callable[[], dict[str, torch.Tensor]]) -> bool:
        if step <= self.after or (step - self.after) % self.every:
            return False
        return self.update(self.candidate(state()), step)

    def update(self, mask: Mask, step: int) -> bool:
        """Add the mask of a check at ``step``; True when the ticket is drawn by it."""
        packed = pack(mask)
        self.size = sum(mask[n].numel() for n in mask)
        i = len(self.steps)
        self.matrix.append([packed_distance(packed, self.packed[j], self.size)
                            if j in self.packed else None for j in range(i)])
        self.steps.append(step)
        self.packed[i] = packed
        while (sum(p.numel() for p in self.packed.values()) > self.keep_bytes
               and min(self.packed) < i - self.queue + 2):
            del self.packed[min(self.packed)]
        recent = self.matrix[-1][-(self.queue - 1):]
        if self.drawn_step is None and i + 1 >= self.queue and max(recent) <= self.epsilon:
            self.drawn_step = step
        return self.drawn_step is not None

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors = {f"mask.{i}": p for i, p in self.packed.items()}
        return tensors, {"steps": self.steps, "matrix": self.matrix, "size": self.size}

    def load(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        self.steps, self.matrix = list(meta.get("steps", [])), list(meta.get("matrix", []))
        self.size = int(meta.get("size", 0))
        self.packed = {int(k.split(".")[1]): t for k, t in sorted(tensors.items())
                       if k.startswith("mask.")}

    def record(self) -> dict:
        """What the level keeps: check steps, the pairwise distance matrix, the draw."""
        n = len(self.steps)
        full: list[list[float | None]] = [[0.0] * n for _ in range(n)]
        for i, row in enumerate(self.matrix):
            for j, d in enumerate(row):
                full[i][j] = full[j][i] = d
        return {"every": self.every, "queue": self.queue, "epsilon": self.epsilon,
                "check_steps": self.steps, "distance_matrix": full,
                "drawn_step": self.drawn_step, "decisions": self.size}
