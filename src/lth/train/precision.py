"""Mixed precision (``train.precision``): the forward pass in bfloat16 or float16 under
``torch.autocast``, the weights, masks, gradients and optimizer state in float32.

Masks stay exact: they multiply the float32 weights and gradients, and a pruned weight (0)
is 0 in any precision. float16 needs loss scaling so small gradients do not flush to zero:
:class:`Precision` scales the loss, unscales the gradients and skips the update of a step
whose gradients overflowed, with the same kernels and defaults as
``torch.amp.GradScaler`` (initial scale 2**16, doubled after 2,000 finite steps, halved on
an overflow). Its scale is part of a level's checkpoint, so a resumed level continues
exactly. bfloat16 has float32's range and needs no scaling.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # fp32: no autocast

INIT_SCALE, GROWTH, BACKOFF, GROWTH_INTERVAL = 2.0**16, 2.0, 0.5, 2000


class Precision:
    """One trial's precision on ``device``; for ``fp16`` also its loss scale."""

    def __init__(self, name: str, device: torch.device):
        self.name, self.device = name, device
        self.dtype = _DTYPES.get(name)
        self.scaled = name == "fp16"
        self.scale = torch.full((1,), INIT_SCALE, device=device)
        self.growth = torch.zeros(1, dtype=torch.int32, device=device)  # finite steps in a row

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The forward pass (and loss) in this precision."""
        if self.dtype is None:
            yield
            return
        with torch.autocast(self.device.type, dtype=self.dtype):
            yield

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale if self.scaled else loss

    def unscale(self, grads: list[torch.Tensor]) -> bool:
        """Divide ``grads`` (in place) by the loss scale and update the scale; False when a
        gradient overflowed (the step's update must be skipped). Without scaling: True."""
        if not self.scaled:
            return True
        found_inf = torch.zeros(1, device=self.device)
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf,
                                                          self.scale.reciprocal())
        torch._amp_update_scale_(self.scale, self.growth, found_inf, GROWTH, BACKOFF,
                                 GROWTH_INTERVAL)
        return not bool(found_inf.item())

    def state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint keeps (nothing unless the loss is scaled)."""
        if not self.scaled:
            return {}
        return {"scale": self.scale.cpu(), "growth": self.growth.cpu()}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.scaled and tensors:
            self.scale = tensors["scale"].to(self.device)
            self.growth = tensors["growth"].to(self.device)
