"""What training a level costs in floating-point operations, counted as RigL's paper does.

A weight layer (``Linear``, ``Conv1d/2d/3d``) does one multiply-add per kept weight each
time its weight is applied: once per example for a ``Linear`` on a vector, once per output
position for a convolution. :func:`costs_of` measures those uses on an example batch, and a
:class:`Costs` turns a mask's kept counts into the forward pass's multiply-adds per
example, ``f(mask)`` (weight layers outside the mask counted dense; biases, activations
and normalisation left out, as the paper does).

A training step costs 3·f (the forward pass, and a backward pass twice as costly: the
gradients of the activations and of the weights), 2 FLOPs per multiply-add, per example.
A RigL update step computes the dense gradient of the weights: 2·f + f(dense) there.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
>>> costs = costs_of(model, ["0.weight", "2.weight"], torch.zeros(2, 1, 8, 8))
>>> costs.uses
{'0.weight': 36, '2.weight': 1}
>>> costs.forward({"0.weight": 36, "2.weight": 1440}) == 36 * 36 + 1440
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

FLOPS_PER_MAC = 2
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class Costs:
    """Uses per example of each masked weight, and the dense rest of the weight layers."""

    uses: dict[str, int]
    sizes: dict[str, int]
    unmasked: int  # multiply-adds per example of weight layers the mask does not cover

    def forward(self, kept: dict[str, int]) -> int:
        """Multiply-adds of one example's forward pass with ``kept`` weights per masked
        parameter (a parameter not in ``kept`` counts dense)."""
        return self.unmasked + sum(u * kept.get(n, self.sizes[n]) for n, u in self.uses.items())

    def dense(self) -> int:
        return self.forward({})

    def training(self, timeline: Sequence[tuple[int, int]], end: int, batch_size: int,
                 dense_gradient_steps: int = 0) -> int:
        """FLOPs of training to step ``end``: ``timeline`` lists (first step, forward
        multiply-adds) of each mask in force, in order; ``dense_gradient_steps``: steps
        that computed the dense weight gradient (RigL's updates), counted at the last
        mask's density (RigL's is constant)."""
        macs = 0
        for (begin, f), nxt in zip(timeline, [*timeline[1:], (end, 0)], strict=True):
            macs += 3 * f * (nxt[0] - begin)
        if dense_gradient_steps:
            macs += dense_gradient_steps * (self.dense() - timeline[-1][1])
        return FLOPS_PER_MAC * batch_size * macs


def costs_of(model: nn.Module, names: Sequence[str], example: torch.Tensor) -> Costs | None:
    """The :class:`Costs` of ``model``'s weight layers, measured on ``example`` (a batch);
    None when a masked parameter is not the weight of a known weight layer (its use per
    example is unknown, so no count would be right)."""
    owners = {f"{m}.weight" if m else "weight": mod for m, mod in model.named_modules()
              if isinstance(mod, WEIGHT_LAYERS)}
    if any(n not in owners for n in names):
        return None
    positions: dict[str, int] = {}
    handles = []
    for name, mod in owners.items():
        def hook(module: nn.Module, args: object, out: torch.Tensor, name: str = name) -> None:
            channels = out.shape[-1] if isinstance(module, nn.Linear) else out.shape[1]
            # a layer applied twice in one forward (shared weights) counts twice
            positions[name] = positions.get(name, 0) + out.numel() // (len(example) * channels)
        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            was = model.training
            model.eval()(example)
            model.train(was)
    finally:
        for h in handles:
            h.remove()
    per_weight = {n: positions.get(n, 0) for n in owners}  # a layer never run costs nothing
    sizes = {n: mod.weight.numel() for n, mod in owners.items()}
    unmasked = sum(per_weight[n] * sizes[n] for n in owners if n not in names)
    return Costs({n: per_weight[n] for n in names}, {n: sizes[n] for n in names}, unmasked)

