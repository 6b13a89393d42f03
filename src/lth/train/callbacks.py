"""Hooks into a level's training: :class:`Callback` and the two every run uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Tensors = dict[str, torch.Tensor]


class Callback:
    """Hooks into a level's training. ``state`` arguments are callables returning the
    trial's current parameters and buffers by name (views: copy what you keep). A
    callback with a ``key`` keeps :meth:`state` in the level's checkpoints under it."""

    key: str | None = None

    def begin(self, step: int, state: Callable[[], Tensors]) -> None:
        """Training (re)starts at ``step``."""

    def after_backward(self, params: Tensors, grads: Tensors) -> None:
        """The step's gradients are computed (and may be changed in place)."""

    def after_step(self, step: int, state: Callable[[], Tensors]) -> bool:
        """Step ``step`` is done; True stops the trial's training here."""
        return False

    def after_eval(self, row: dict[str, float]) -> None:
        """An evaluation row was added to the history."""

    def state(self) -> tuple[Tensors, dict[str, Any]]:
        return {}, {}

    def load(self, tensors: Tensors, meta: dict[str, Any]) -> None:
        pass


class Snapshot(Callback):
    """Hands the weights at ``step`` (CPU copies) to ``save``."""

    def __init__(self, step: int, save: Callable[[Tensors], None]):
        self.step, self.save = step, save

    def begin(self, step: int, state: Callable[[], Tensors]) -> None:
        self.after_step(step, state)

    def after_step(self, step: int, state: Callable[[], Tensors]) -> bool:
        if step == self.step:
            self.save({k: v.detach().to("cpu", copy=True) for k, v in state().items()})
        return False


class OnEval(Callback):
    """Calls ``report(step)`` after every evaluation (progress bars)."""

    def __init__(self, report: Callable[[int], None]):
        self.report = report

    def after_eval(self, row: dict[str, float]) -> None:
        self.report(int(row["step"]))
