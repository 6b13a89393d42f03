"""A task's loss and metrics of a model on an in-memory split."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..tasks import CLASSIFICATION, Task, select_output


class Sums:
    """Running sums of the loss (weighted by batch size) and of every metric's values, kept
    on the device (no host sync per batch). ``equal_batches``: every batch has the same
    size (training), so batch means are summed as they are: one kernel less per step."""

    def __init__(self, task: Task, device: torch.device, *, equal_batches: bool = False):
        self.task, self.equal_batches = task, equal_batches
        self.loss = torch.zeros((), device=device)
        self.examples = self.batches = 0
        self.metrics = {m: torch.zeros((), device=device) for m in task.metrics}
        self.counts = dict.fromkeys(task.metrics, 0)

    def add(self, loss: torch.Tensor, output: torch.Tensor, target: torch.Tensor) -> None:
        n = len(target)
        self.loss += loss.detach() if self.equal_batches else loss.detach() * n
        self.examples += n
        self.batches += 1
        for name, values in self.task.metric_values(output.detach(), target).items():
            self.metrics[name] += values.sum()
            self.counts[name] += values.numel()

    def means(self, prefix: str) -> dict[str, float]:
        """``{prefix}loss`` and ``{prefix}<metric>``: NaN when nothing was added."""
        per = self.batches if self.equal_batches else self.examples
        row = {f"{prefix}loss": float(self.loss) / per if per else math.nan}
        row.update({f"{prefix}{m}": float(v) / self.counts[m] if self.counts[m] else math.nan
                    for m, v in self.metrics.items()})
        return self.task.with_loss_metrics(row, prefix)

    # Checkpoints keep the sums of a partly evaluated interval.
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        tensors = {"loss": self.loss.cpu(), **{f"m.{k}": v.cpu() for k, v in self.metrics.items()}}
        counts = {"examples": self.examples, "batches": self.batches,
                  **{f"m.{k}": c for k, c in self.counts.items()}}
        return tensors, counts

    def load(self, tensors: dict[str, torch.Tensor], counts: dict[str, int]) -> None:
        device = self.loss.device
        self.loss = tensors["loss"].to(device)
        self.examples, self.batches = int(counts["examples"]), int(counts["batches"])
        for k in self.metrics:
            self.metrics[k] = tensors[f"m.{k}"].to(device)
            self.counts[k] = int(counts[f"m.{k}"])


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
             prepare: Callable[[torch.Tensor], torch.Tensor] | None = None, *,
             task: Task = CLASSIFICATION, output: int | str | None = None
             ) -> dict[str, float]:
    """The task's mean loss and metrics on (x, y): ``{"loss": ..., "<metric>": ...}``, NaN
    for an empty split. ``prepare`` turns a stored batch into model input (e.g.
    :meth:`lth.data.Data.prepare`); ``output`` selects from a model's tuple/dict output."""
    sums = Sums(task, x.device)
    was_training = model.training
    model.eval()
    for i in range(0, len(y), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        out = select_output(model(prepare(xb) if prepare is not None else xb), output)
        sums.add(task.loss(out, yb), out, yb)
    model.train(was_training)
    return sums.means("")
