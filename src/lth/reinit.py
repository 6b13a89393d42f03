"""Reinitialisation of the surviving weights before a pruned level trains.

Modes (each optionally ``same_sign``: the result takes θ0's sign wherever θ0 is non-zero):

- ``rewind``: the rewind-point value (θ0, or θk for late rewinding), bit for bit;
- ``jitter``: rewind + N(0, sd²), sd absolute or relative to the layer's θ0 std;
- ``random``: a fresh draw from the model's own initialiser;
- ``reshuffle``: the kept rewind-point values permuted among the kept positions of the
  layer (with ``same_sign``: within the positive and within the negative slots of θ0);
- ``constant``: ±c with c the layer's own θ0 std (or a given value), sign from θ0 with
  ``same_sign``, else a seeded random sign;
- ``lr_rewind`` / ``finetune`` (Renda et al. 2020): not a reinitialisation — the pruned
  network keeps the previous level's trained weights (see :data:`KEEP_TRAINED`).

Every parameter and buffer that is not masked (biases, BatchNorm statistics) goes back
to its rewind-point value; pruned weights are exactly zero.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .config import ReinitConfig
from .masks import Mask

REINIT_MODES = ("rewind", "jitter", "random", "reshuffle", "constant", "lr_rewind",
                "finetune")
# Retraining variants (Renda et al. 2020): keep the previous level's trained weights.
# ``lr_rewind`` replays the learning-rate schedule from ``rewind_step``; ``finetune``
# trains the same number of steps at the schedule's final learning rate.
KEEP_TRAINED = ("lr_rewind", "finetune")

State = dict[str, torch.Tensor]


def _shuffle_within(values: torch.Tensor, slots: torch.Tensor, g: torch.Generator) -> None:
    """Permute ``values`` in place among the positions where ``slots`` is True."""
    picked = values[slots]
    values[slots] = picked[torch.randperm(picked.numel(), generator=g)]


def _with_sign_of(w: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    # Flip rather than |w|*sign(ref): leaves already-agreeing values bit-identical.
    return torch.where((torch.sign(w) != torch.sign(ref)) & (ref != 0), -w, w)


def reinitialize(cfg: ReinitConfig, mask: Mask, rewind: State, theta0: State, *,
                 fresh: Callable[[], State], rng: Callable[[str], torch.Generator]) -> State:
    """Full model state for a pruned level (CPU tensors, same keys as ``rewind``).

    ``rng(name)`` gives the generator for one layer's noise: one stream per layer keeps
    each layer's draw independent of the order layers are visited in.
    """
    state = {k: v.clone() for k, v in rewind.items()}
    if cfg.mode in KEEP_TRAINED:  # ``rewind`` holds the previous level's final weights
        for name, keep in mask.items():
            state[name] = torch.where(keep.cpu(), state[name], torch.zeros((), dtype=
                                      state[name].dtype))
        return state
    drawn: State | None = None
    for name, keep_mask in mask.items():
        keep = keep_mask.cpu()
        generator = rng(name)
        base, w0 = rewind[name], theta0[name]
        if cfg.mode == "rewind":
            w = base.clone()
        elif cfg.mode == "jitter":
            sd = cfg.jitter_sd * (float(w0.float().std()) if cfg.jitter_relative else 1.0)
            w = base + sd * torch.randn(base.shape, generator=generator, dtype=base.dtype)
        elif cfg.mode == "random":
            drawn = drawn if drawn is not None else fresh()
            w = drawn[name].clone()
        elif cfg.mode == "reshuffle":
            w = base.clone()
            if cfg.same_sign:
                _shuffle_within(w, keep & (w0 > 0), generator)
                _shuffle_within(w, keep & (w0 <= 0), generator)
            else:
                _shuffle_within(w, keep, generator)
        elif cfg.mode == "constant":
            c = cfg.constant if cfg.constant is not None else float(w0.float().std())
            sign = (torch.randint(0, 2, base.shape, generator=generator) * 2 - 1).to(base.dtype)
            w = c * sign
        else:  # guarded by ReinitConfig
            raise ValueError(f"unknown reinit mode {cfg.mode!r}")
        if cfg.same_sign:
            w = _with_sign_of(w, w0)
        state[name] = torch.where(keep, w, torch.zeros((), dtype=w.dtype))
    return state
