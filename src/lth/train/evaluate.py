"""Loss and accuracy of a model on an in-memory split."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
             prepare: Callable[[torch.Tensor], torch.Tensor] | None = None
             ) -> tuple[float, float]:
    """Mean cross-entropy and accuracy; ``(nan, nan)`` for an empty split.

    ``prepare`` turns a stored batch into model input (e.g. :meth:`lth.data.Data.prepare`).
    """
    n = len(y)
    if n == 0:
        return float("nan"), float("nan")
    was_training = model.training
    model.eval()
    loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for i in range(0, n, batch_size):
        xb = x[i:i + batch_size]
        out = model(prepare(xb) if prepare is not None else xb)
        loss += F.cross_entropy(out, y[i:i + batch_size], reduction="sum")
        correct += (out.argmax(1) == y[i:i + batch_size]).sum()
    model.train(was_training)
    return float(loss) / n, float(correct) / n
