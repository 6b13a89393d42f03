"""Optimizers over named state, and the learning rate as a pure function of the step.

:class:`Optimizer` keeps its state as plain tensors keyed by parameter name (``exp_avg``,
``exp_avg_sq``, ``step`` for Adam/AdamW; ``momentum_buffer`` for SGD) and steps through
PyTorch's functional optimizers with the fused kernels, so its results are those of
``torch.optim`` with ``fused=True`` (see ``tests/test_train.py``). The same step works on
parameters stacked on a leading axis: every update is elementwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch.optim.adam import adam
from torch.optim.adamw import adamw
from torch.optim.sgd import sgd

from ..config import TrainConfig
from ..durations import to_steps

Tensors = dict[str, torch.Tensor]


def _fusable(t: torch.Tensor) -> bool:
    # The fused kernels exist for floating tensors on CPU and on the accelerators.
    return t.is_floating_point() and t.device.type in ("cpu", "cuda", "mps", "xpu")


class Optimizer:
    """The configured SGD (momentum, Nesterov, weight decay), Adam or AdamW, as a step over
    lists of parameters and gradients in the order of ``names``.

    Fused kernels: pruned weights leave Adam's second moment exactly 0, and the unfused
    sqrt over zeros is several times slower on CPU (see bench/train_speed.py).

    Masks rely on this: a weight that is 0, with a zero gradient at every step since its
    state was fresh, stays exactly 0 — its momentum or moments stay 0, weight decay scales
    0, and Adam's update is 0 / (0 + eps). So the trainer masks gradients only, not the
    weights again after each step; an update rule added here must keep that property
    (``tests/test_train.py`` checks pruned weights under every optimizer setting).
    """

    def __init__(self, cfg: TrainConfig, params: dict[str, torch.Tensor]):
        self.cfg, self.names = cfg, list(params)
        self.state: dict[str, Tensors] = {n: {} for n in self.names}
        self.fused = all(_fusable(p) for p in params.values())

    def step(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None],
             lr: float) -> None:
        """One update of ``params`` (in place) at learning rate ``lr``; a parameter whose
        gradient is None is left alone, as ``torch.optim`` does."""
        cfg = self.cfg
        live = [(n, p, g) for n, p, g in zip(self.names, params, grads, strict=True)
                if g is not None]
        if not live:
            return
        ps, gs = [p for _, p, _ in live], [g for _, _, g in live]
        states = [self.state[n] for n, _, _ in live]
        kernel = {"fused": True} if self.fused else {}
        with torch.no_grad():
            if cfg.optimizer == "sgd":
                bufs: list[torch.Tensor | None] = [s.get("momentum_buffer") for s in states]
                sgd(ps, gs, bufs, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                    lr=lr, dampening=0.0, nesterov=cfg.nesterov, maximize=False, **kernel)
                if cfg.momentum:
                    for s, b in zip(states, bufs, strict=True):
                        s["momentum_buffer"] = b  # type: ignore[assignment]
                return
            for s, p in zip(states, ps, strict=True):
                if not s:
                    s["step"] = torch.zeros((), dtype=torch.float32, device=p.device
                                            if self.fused else "cpu")
                    s["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    s["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            rule = adam if cfg.optimizer == "adam" else adamw
            rule(ps, gs, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                 [], [s["step"] for s in states], amsgrad=False, beta1=cfg.betas[0],
                 beta2=cfg.betas[1], lr=lr, weight_decay=cfg.weight_decay, eps=1e-8,
                 maximize=False, **kernel)

    def tensors(self, index: int | None = None) -> Tensors:
        """The state as ``{"<key>.<name>": tensor}`` (CPU copies); ``index`` takes one
        trial's slice of stacked state (the shared step counter as it is)."""
        out = {}
        for n, s in self.state.items():
            for k, v in s.items():
                if index is not None and k != "step":
                    v = v[index]
                out[f"{k}.{n}"] = v.detach().to("cpu", copy=True)
        return out

    def load(self, tensors: Tensors, device: torch.device) -> None:
        """Restore state saved by :meth:`tensors` (one trial's, unstacked)."""
        self.state = {n: {} for n in self.names}
        for key, v in tensors.items():
            k, n = key.split(".", 1)
            if n not in self.state:
                raise KeyError(f"optimizer state for unknown parameter {n!r}")
            self.state[n][k] = v.to(device if (k != "step" or self.fused) else "cpu")

    @torch.no_grad()
    def reset_(self, name: str, where: torch.Tensor, index: int | None = None) -> None:
        """Zero the state of parameter ``name`` at positions ``where`` (bool, the
        parameter's shape): a weight dropped or regrown by a mask update starts afresh.
        ``index``: that trial's slice of stacked state. The step counter is shared by the
        whole tensor and kept (Adam's bias correction goes on as for its neighbours)."""
        for k, v in self.state[name].items():
            if k != "step":
                (v if index is None else v[index]).masked_fill_(where.to(v.device), 0)

    @classmethod
    def stack(cls, parts: Sequence[Optimizer], params: dict[str, torch.Tensor]) -> Optimizer:
        """One optimizer over stacked ``params`` whose state stacks that of ``parts``
        (which must all be at the same step)."""
        out = cls(parts[0].cfg, params)
        for n in out.names:
            for k in parts[0].state[n]:
                vals = [p.state[n][k] for p in parts]
                out.state[n][k] = (vals[0].clone() if k == "step"
                                   else torch.stack(vals).to(params[n].device))
        return out

    def select(self, keep: torch.Tensor, params: dict[str, torch.Tensor]) -> Optimizer:
        """The state of the stacked trials ``keep`` (indices), for ``params`` of those."""
        out = Optimizer(self.cfg, params)
        out.state = {n: {k: (v if k == "step" else v[keep]) for k, v in s.items()}
                     for n, s in self.state.items()}
        return out


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
