"""Per-purpose random streams derived from one experiment seed.

Library code never touches torch's global RNG state: each purpose (initial weights, data
order, pruning ties, reinitialisation noise, dropout) gets its own seed, derived by hashing
so that changing how much one stream is used never shifts another.
"""

from __future__ import annotations

import hashlib

import torch

PURPOSES = ("init", "data", "prune", "reinit", "noise")


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed derived from ``seed`` and a path of names/numbers.

    >>> derive_seed(0, "prune", 3) == derive_seed(0, "prune", 3)
    True
    """
    key = ":".join([str(int(seed)), *map(str, parts)]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def generator(seed: int, *parts: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` seeded with ``derive_seed(seed, *parts)``."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *parts))
    return g


def sample(n: int, k: int, seed: int, *parts: object) -> torch.Tensor:
    """``k`` distinct indices of ``range(n)`` (all of them if ``k >= n``), in an order fixed
    by ``derive_seed(seed, *parts)``: the training examples an analysis reads."""
    return torch.randperm(n, generator=generator(seed, *parts))[:k]
