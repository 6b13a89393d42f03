"""Optimizers and the learning rate as a pure function of the step."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from ..config import TrainConfig
from ..durations import to_steps


def make_optimizer(cfg: TrainConfig, params: Iterable[torch.nn.Parameter]
                   ) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov, weight decay), Adam or AdamW from the config."""
    params = list(params)
    if cfg.optimizer == "sgd":
        cls, kwargs = torch.optim.SGD, {"momentum": cfg.momentum, "nesterov": cfg.nesterov}
    else:
        cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        kwargs = {"betas": cfg.betas}
    kwargs.update(lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Fused kernels: pruned weights leave Adam's second moment exactly 0, and the unfused
    # sqrt over zeros is several times slower on CPU (see bench/train_speed.py).
    try:
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # old torch or unsupported device/dtype
        return cls(params, **kwargs)


def lr_function(cfg: TrainConfig, total_steps: int, steps_per_epoch: int
                ) -> Callable[[int], float]:
    """``lr(step)`` for the configured schedule with optional linear warmup.

    No scheduler object holds state, so resuming needs only the step.

    >>> from lth.config import TrainConfig
    >>> f = lr_function(TrainConfig(lr=0.1, lr_schedule="step", milestones=(10,), warmup=5),
    ...                 20, 100)
    >>> [round(f(s), 4) for s in (0, 4, 5, 9, 10, 19)]
    [0.02, 0.1, 0.1, 0.1, 0.01, 0.01]
    """
    base = cfg.lr
    warmup = to_steps(cfg.warmup, steps_per_epoch)
    drops = sorted(to_steps(m, steps_per_epoch) for m in cfg.milestones)

    def lr(step: int) -> float:
        factor = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        if cfg.lr_schedule == "step":
            factor *= cfg.gamma ** sum(step >= d for d in drops)
        elif cfg.lr_schedule == "cosine":
            factor *= 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
        return base * factor

    return lr
