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
  network keeps the previous level's trained weights (``keeps_trained``); ``lr_rewind``
  replays the learning-rate schedule from ``rewind_step``, ``finetune`` trains the same
  number of steps at the schedule's final learning rate (``final_lr``).

Each mode is a :class:`ReinitMode` in :data:`REINIT_MODES`: its values function and what
the engine asks of it. A new mode is a function of :class:`ReinitInputs` added with
:func:`register_reinit`:

>>> def negated(s):
...     return -s.rewind
>>> _ = register_reinit(negated)
>>> REINIT_MODES["negated"].keeps_trained, REINIT_MODES["lr_rewind"].keeps_trained
(False, True)
>>> del REINIT_MODES["negated"]

Every parameter and buffer that is not masked (biases, BatchNorm statistics) goes back
to its rewind-point value; pruned weights are exactly zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import torch

from .masks import Mask
from .registry import Registry, instances_of

if TYPE_CHECKING:
    from .config import ReinitConfig

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ReinitInputs:
    """What a mode sees for one masked tensor; it returns the tensor's new values (the
    caller zeroes pruned positions and applies ``same_sign``)."""

    cfg: ReinitConfig
    keep: torch.Tensor  # bool, True = survives
    rewind: torch.Tensor  # the rewind point (keeps_trained: the previous level's final)
    theta0: torch.Tensor
    generator: torch.Generator  # this tensor's own noise stream
    fresh: Callable[[], torch.Tensor]  # this tensor in a fresh draw of the initialiser


ReinitValues = Callable[[ReinitInputs], torch.Tensor]


@dataclass(frozen=True)
class ReinitMode:
    """A reinitialisation: ``values`` gives a masked tensor's new values; the flags answer
    what the engine asks. ``keeps_trained``: the level starts from the trained weights of
    the level it is pruned from (``rewind`` holds them), not from the rewind point;
    ``final_lr``: it trains at the learning-rate schedule's final value; ``draws_afresh``:
    it reads a fresh draw of the model's initialiser (``ReinitInputs.fresh``)."""

    values: ReinitValues
    keeps_trained: bool = False
    final_lr: bool = False
    draws_afresh: bool = False
    description: str = ""  # one line for `lth list reinit` (default: values' docstring)

    def __call__(self, inputs: ReinitInputs) -> torch.Tensor:
        return self.values(inputs)


REINIT_MODES: Registry[ReinitMode] = Registry("reinit mode", entry=instances_of(
    ReinitMode, wrap=ReinitMode, what=" or a function of ReinitInputs"))


def register_reinit(fn: ReinitValues | ReinitMode, *, name: str | None = None,
                    replace: bool = False, keeps_trained: bool = False,
                    final_lr: bool = False, draws_afresh: bool = False,
                    description: str = "") -> ReinitValues:
    """Add ``fn`` (a function of :class:`ReinitInputs`) to :data:`REINIT_MODES` under its own
    name (or ``name``), as a :class:`ReinitMode` with the given flags; returns ``fn``, so it
    works as a decorator. A :class:`ReinitMode` is registered as it is. ``description``:
    the line ``lth list reinit`` shows (default: the first sentence of ``fn``'s docstring)."""
    mode = fn if isinstance(fn, ReinitMode) else ReinitMode(fn, keeps_trained, final_lr,
                                                            draws_afresh, description)
    REINIT_MODES.register(mode, name=name or getattr(mode.values, "__name__", None),
                          replace=replace)
    return fn


def _shuffle_within(values: torch.Tensor, slots: torch.Tensor, g: torch.Generator) -> None:
    """Permute ``values`` in place among the positions where ``slots`` is True."""
    picked = values[slots]
    values[slots] = picked[torch.randperm(picked.numel(), generator=g)]


def _with_sign_of(w: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    # Flip rather than |w|*sign(ref): leaves already-agreeing values bit-identical.
    return torch.where((torch.sign(w) != torch.sign(ref)) & (ref != 0), -w, w)


@register_reinit
def rewind(s: ReinitInputs) -> torch.Tensor:
    """The rewind point's values (θ0, or θk for late rewinding), bit for bit: the ticket."""
    return s.rewind.clone()


@register_reinit
def jitter(s: ReinitInputs) -> torch.Tensor:
    """The rewind point plus Gaussian noise (sd absolute, or relative to the layer's θ0 sd)."""
    sd = s.cfg.jitter_sd * (float(s.theta0.float().std()) if s.cfg.jitter_relative else 1.0)
    return s.rewind + sd * torch.randn(s.rewind.shape, generator=s.generator,
                                       dtype=s.rewind.dtype)


def random(s: ReinitInputs) -> torch.Tensor:
    """A fresh draw of the model's own initialiser: the random-reinit control."""
    return s.fresh().clone()


register_reinit(random, draws_afresh=True)


@register_reinit
def reshuffle(s: ReinitInputs) -> torch.Tensor:
    """The kept rewind-point values permuted among the kept positions of the layer."""
    w = s.rewind.clone()
    if s.cfg.same_sign:
        _shuffle_within(w, s.keep & (s.theta0 > 0), s.generator)
        _shuffle_within(w, s.keep & (s.theta0 <= 0), s.generator)
    else:
        _shuffle_within(w, s.keep, s.generator)
    return w


@register_reinit
def constant(s: ReinitInputs) -> torch.Tensor:
    """±c, c the layer's θ0 sd (or a given value); the sign from θ0 or random."""
    c = s.cfg.constant if s.cfg.constant is not None else float(s.theta0.float().std())
    base = s.rewind
    return c * (torch.randint(0, 2, base.shape, generator=s.generator) * 2 - 1).to(base.dtype)


# Retraining variants (Renda et al. 2020): the trained weights as they are.
register_reinit(rewind, name="lr_rewind", keeps_trained=True,
                description="The trained weights, the lr schedule replayed from rewind_step "
                            "(Renda et al. 2020).")
register_reinit(rewind, name="finetune", keeps_trained=True, final_lr=True,
                description="The trained weights, trained on at the schedule's final lr "
                            "(Renda et al. 2020).")
REINIT_MODES.mark_builtin()


def reinitialize(cfg: ReinitConfig, mask: Mask, rewind: State, theta0: State, *,
                 fresh: Callable[[], State], rng: Callable[[str], torch.Generator]) -> State:
    """Full model state for a pruned level (CPU tensors, same keys as ``rewind``).

    ``rng(name)`` gives the generator for one layer's noise: one stream per layer keeps
    each layer's draw independent of the order layers are visited in.
    """
    mode = REINIT_MODES[cfg.mode]
    drawn = cache(fresh)  # one fresh draw for all layers, and only if a mode asks
    state = {k: v.clone() for k, v in rewind.items()}
    for name, keep_mask in mask.items():
        keep = keep_mask.cpu()
        w = mode(ReinitInputs(cfg, keep, rewind[name], theta0[name], rng(name),
                              lambda name=name: drawn()[name]))
        # Trained weights keep their signs: same_sign is about the rewind point.
        if cfg.same_sign and not mode.keeps_trained:
            w = _with_sign_of(w, theta0[name])
        state[name] = torch.where(keep, w, torch.zeros((), dtype=w.dtype))
    return state
