"""What one trial's level is to train (:class:`Job`, its :class:`Span` of steps) and which
jobs can train stacked (:func:`stack_key`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from ..config import TrainConfig
from ..data import Data
from ..durations import to_steps
from ..errors import ConfigError
from ..mask_updates import MaskUpdates
from ..masks import Mask
from ..tasks import CLASSIFICATION, Task
from .callbacks import Callback

Tensors = dict[str, torch.Tensor]


class Checkpoints(Protocol):
    """Where a level's mid-training checkpoint is kept (see :mod:`lth.store`)."""

    def load(self) -> tuple[Tensors, dict[str, Any]] | None: ...
    def save(self, tensors: Tensors, meta: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Span:
    """Which steps a level trains, and how often it evaluates and checkpoints."""

    start: int
    end: int
    steps_per_epoch: int
    eval_every: int
    checkpoint_every: int

    @classmethod
    def of(cls, cfg: TrainConfig, n_train: int, start: int = 0) -> Span:
        """The steps ``cfg`` trains on ``n_train`` examples, from ``start`` to the end."""
        spe = n_train // cfg.batch_size
        if spe < 1:
            raise ConfigError(f"train.batch_size = {cfg.batch_size} is larger than the "
                              f"training set ({n_train} examples); use a smaller batch")
        return cls(start=start, end=to_steps(cfg.duration, spe), steps_per_epoch=spe,
                   eval_every=to_steps(cfg.eval_every, spe),
                   checkpoint_every=to_steps(cfg.checkpoint_every, spe))


@dataclass
class Job:
    """One trial's level to train: ``model`` (on ``data``'s device) from ``span.start`` to
    ``span.end`` under ``mask``. ``fixed_lr`` replaces the schedule (fine-tuning);
    ``output`` selects from a tuple/dict model output.

    ``mask_updates`` changes the mask at given steps (see :class:`MaskUpdates`): training
    then leaves the last mask in ``mask`` and counts the updates applied in every history
    row (``mask_updates``). Without it (IMP) the mask holds for the whole level.
    """

    model: nn.Module
    data: Data
    cfg: TrainConfig
    mask: Mask
    span: Span
    seed: int
    level: int
    checkpoints: Checkpoints | None = None
    callbacks: Sequence[Callback] = ()
    fixed_lr: float | None = None
    task: Task = CLASSIFICATION
    output: int | str | None = None
    mask_updates: MaskUpdates | None = None


AUTO_DENSITY = 0.5
AUTO_MIN_WEIGHTS = 1000
"""``train.kernels = "auto"`` trains a ``Linear`` layer sparse when it keeps less than
``AUTO_DENSITY`` of its weights and has at least ``AUTO_MIN_WEIGHTS`` of them: where the
training step measured faster than dense-masked (``bench/sparse_speed.py``, one thread
on a 2-core Zen 5: LeNet-300-100's step is 1.15x faster at 50% of weights and slower
above about 70%; its 1,000-weight output layer at 4% is faster sparse than dense)."""


def sparse_layers(job: Job) -> dict[str, nn.Linear]:
    """The layers ``job`` trains with sparse kernels (parameter name → ``Linear``): under
    ``train.kernels`` ``"sparse"`` every pruned ``Linear`` weight, under ``"auto"`` those
    :data:`AUTO_DENSITY` and :data:`AUTO_MIN_WEIGHTS` select, and none under ``"dense"``.
    Only a fixed mask, in fp32 on the CPU, of a trainable plain ``nn.Linear`` weight
    qualifies; everything else (convolutions included) trains dense-masked."""
    cfg, model = job.cfg, job.model
    if (cfg.kernels == "dense" or cfg.precision != "fp32" or job.mask_updates is not None
            or not getattr(model, "stackable", True)):
        return {}
    auto = cfg.kernels == "auto"
    out = {}
    for name, keep in job.mask.items():
        owner, _, attr = name.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        if (attr != "weight" or type(module) is not nn.Linear or keep.device.type != "cpu"
                or module.weight.device.type != "cpu" or module.weight.dtype != torch.float32
                or not module.weight.requires_grad or (auto and keep.numel() < AUTO_MIN_WEIGHTS)):
            continue
        if keep.float().mean().item() < (AUTO_DENSITY if auto else 1.0):
            out[name] = module
    return out


def stack_key(job: Job) -> tuple:
    """Jobs with equal keys can train stacked: same architecture, data, training settings,
    steps, learning rates and task."""
    shapes = tuple((n, tuple(t.shape), t.dtype, t.requires_grad)
                   for n, t in [*job.model.named_parameters(), *job.model.named_buffers()])
    data = job.data
    splits = tuple(_memory(getattr(data, f"{a}_{s}")) for s in ("train", "val", "test")
                   for a in "xy")
    # fp16 loss scaling skips updates trial by trial: such a trial trains on its own, as
    # does a model that says it cannot be vmapped (a learned supermask).
    # Sparse kernels train each trial's own pattern: such a trial trains on its own too.
    alone = (job.cfg.precision == "fp16" or not getattr(job.model, "stackable", True)
             or bool(sparse_layers(job)))
    only_itself = id(job) if alone else None
    return (type(job.model), shapes, splits, data.mean, data.std, data.augment, job.cfg, job.span,
            job.fixed_lr, id(job.task), job.output, only_itself)


def _memory(t: Any) -> tuple:
    """Where a live tensor's elements are: equal for two views of the same memory (a Data
    copied by ``replace``, a tensor received twice through shared memory)."""
    if not isinstance(t, torch.Tensor):  # a streamed split: the object itself
        return (id(t),)
    return (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
            t.stride(), t.dtype)
