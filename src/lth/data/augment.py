"""Seeded augmentation of whole batches: no per-image Python on the hot path."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random ``pad``-pixel-padded crops and horizontal flips of a (B, C, H, W) batch.

    The padding is zeros in the stored pixel space (black for uint8 images), as in the
    standard CIFAR recipe. Offsets and flips come from ``generator`` (CPU), so a batch's
    augmentation depends only on the seed it was given.

    >>> x = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4)
    >>> crop_flip(x, torch.Generator().manual_seed(0), pad=1).shape
    torch.Size([2, 1, 4, 4])
    """
    b, _, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=generator).to(x.device)
    flips = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)  # a flip is reversed columns
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()
