"""The one training loop: in-memory batches, masks enforced at every step, resumable, and
able to train K trials at once.

Data order is a pure function of (seed, epoch), the learning rate of the step, and the
dropout RNG lives in a forked generator saved with each checkpoint, so a level resumed
from a checkpoint continues bit-identically on CPU.

The state a step touches is plain tensors addressed by parameter name: parameters, masks,
the optimizer's moments (:class:`~lth.train.optim.Optimizer`) and the step. One trial
trains its own module; K compatible trials (:func:`stack_key`) train *stacked*: their
parameters, masks and optimizer state on a leading axis of size K, one batch per trial, the
forward and backward passes vectorised with ``torch.func.vmap`` (:class:`Stacked`). Both
are a :class:`~lth.train.steppers.Stepper`, so the loop below reads the same for either.
Each trial keeps its own data order, augmentation, evaluations, checkpoints, divergence
check, callbacks and mask updates (:class:`~lth.train.MaskUpdates`, a job with them
stacks like any other); one that stops early or diverges leaves the stack without
disturbing the others. Stacked results equal one-at-a-time results up to floating-point
reassociation of the batched matrix products (masks are exact either way).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig
from ..data import Data
from ..data.augment import crop_flip
from ..mask_updates import MaskUpdates
from ..masks import Mask
from ..seeding import derive_seed, generator
from ..tasks import CLASSIFICATION, Task
from .callbacks import Callback, OnEval, Snapshot
from .job import Checkpoints, Job, Span, sparse_layers, stack_key
from .optim import lr_function
from .slot import Slot
from .sparse import SparseSingle
from .stacked import Stacked
from .steppers import Single, Stepper

__all__ = ["Callback", "Checkpoints", "Job", "MaskUpdates", "OnEval", "Snapshot", "Span",
           "batch_order", "sparse_layers", "stack_key", "torch_threads", "train_level",
           "train_stack"]


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads (0: torch's setting), then restore."""
    before = torch.get_num_threads()
    try:
        if n:
            torch.set_num_threads(n)
        yield
    finally:
        torch.set_num_threads(before)


def batch_order(seed: int, epoch: int, n: int, device: torch.device) -> torch.Tensor:
    """The example order of ``epoch``: same for every level, so rewinding replays it."""
    g = torch.Generator().manual_seed(derive_seed(seed, "data", epoch))
    return torch.randperm(n, generator=g).to(device)


def train_level(model: nn.Module, data: Data, cfg: TrainConfig, mask: Mask, span: Span, *,
                seed: int, level: int, checkpoints: Checkpoints | None = None,
                callbacks: Sequence[Callback] = (), fixed_lr: float | None = None,
                task: Task = CLASSIFICATION, output: int | str | None = None,
                mask_updates: MaskUpdates | None = None) -> list[dict[str, float]]:
    """Train ``model`` (on ``data``'s device) from ``span.start`` to ``span.end``.

    Returns the evaluation history: one row per evaluation with step, lr, the task's
    running training loss and metrics since the previous evaluation, and its validation
    and test loss and metrics. A callback that asks to stop ends training at that step,
    with an evaluation there. Raises :class:`~lth.errors.TrainingError` when the loss
    stops being finite. ``mask_updates``: the mask changes at its steps (see
    :class:`~lth.train.MaskUpdates`); the history's rows then count the updates, and the
    last mask is the one it returned last (a :class:`Job` trained by :func:`train_stack`
    holds it as its ``mask``).

    >>> import lth
    >>> from lth.masks import Mask, prunable_names
    >>> data = lth.load_digits()
    >>> model = lth.create_model("mlp", input_shape=data.input_shape, num_classes=10)
    >>> cfg = TrainConfig(batch_size=64)
    >>> span = Span(start=0, end=20, steps_per_epoch=20, eval_every=10, checkpoint_every=10**6)
    >>> hist = train_level(model, data, cfg, Mask.ones(model, prunable_names(model)), span,
    ...                    seed=0, level=0)
    >>> [row["step"] for row in hist]
    [0, 10, 20]
    """
    job = Job(model, data, cfg, mask, span, seed, level, checkpoints, callbacks, fixed_lr,
              task, output, mask_updates)
    (result,) = train_stack([job])
    if isinstance(result, BaseException):
        raise result
    return result


def train_stack(jobs: Sequence[Job]) -> list[list[dict[str, float]] | BaseException]:
    """Train every job; compatible jobs (equal :func:`stack_key`, same resumed step) train
    stacked. Returns each job's history, or the exception that ended it (divergence) —
    the other jobs train on."""
    slots = [Slot(job) for job in jobs]
    groups: dict[tuple, list[Slot]] = {}
    for s in slots:
        groups.setdefault((stack_key(s.job), s.step), []).append(s)
    for members in groups.values():
        _train_together(members)
    return [s.result for s in slots]


# -- the step loop ---------------------------------------------------------------------------
def _train_together(slots: list[Slot]) -> None:
    """Train ``slots`` (compatible, at the same step) to the end of their span."""
    first = slots[0]
    span, lr_at, batches = first.job.span, _lr_at(first.job), Batches(slots)
    with _noise(slots):
        step = first.step
        stepper: Stepper | None = _stepper(slots)
        first_stepper = stepper
        try:
            stepper.begin(step)
            if not first.history:
                stepper.record(step, lr_at(step), check=False)
            while stepper is not None and step < span.end:
                lr = lr_at(step)
                x, y = stepper.arrange(*batches.at(step, stepper.slots))
                stepper.train_step(x, y, step=step, lr=lr)
                step += 1
                stepper.update_masks(step)
                stops = stepper.after_step(step)
                if step % span.eval_every == 0 or step == span.end:
                    gone = stepper.record(step, lr)
                    gone += [k for k in stops if k not in gone]
                else:
                    stepper.record_alone(stops, step, lr)
                    gone = stops
                stepper = stepper.without(gone)  # those that stopped or diverged leave
                if stepper is not None and step < span.end:
                    stepper.checkpoint(step, span.checkpoint_every)
            if stepper is not None:
                stepper.without(range(len(stepper.slots)))
        finally:  # an interrupted level leaves its modules as they were
            first_stepper.release()


def _stepper(slots: list[Slot]) -> Stepper:
    if len(slots) > 1:
        return Stacked(slots)
    layers = sparse_layers(slots[0].job)
    return SparseSingle(slots, layers) if layers else Single(slots)


def _lr_at(job: Job) -> Callable[[int], float]:
    if job.fixed_lr is not None:
        fixed = job.fixed_lr
        return lambda step: fixed
    return lr_function(job.cfg, job.span.end, job.span.steps_per_epoch)


@contextlib.contextmanager
def _noise(slots: list[Slot]) -> Iterator[None]:
    """The block with the global RNG (dropout) of these trials, the caller's restored
    after: a stack's own stream, or where the same stack's checkpoint left it."""
    device = slots[0].device
    seeds = [s.job.seed for s in slots]
    if len(slots) == 1:
        seed = derive_seed(seeds[0], "noise", slots[0].job.level)
    else:
        seed = derive_seed(*seeds, "noise-stack", slots[0].job.level)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        first = slots[0]
        if first.rng is not None and first.stack_seeds == (seeds if len(slots) > 1 else None):
            torch.set_rng_state(first.rng)  # the same stack resumes: the same noise
        yield


class Batches:
    """The training batches of ``slots``: each trial its own example order (a function of
    seed and epoch) and augmentation, the active trials' batches one after another."""

    def __init__(self, slots: list[Slot]):
        self.slots, self.job, self.device = slots, slots[0].job, slots[0].device
        self.position = {id(s): i for i, s in enumerate(slots)}
        self.epoch, self.orders = -1, torch.empty(0)

    def at(self, step: int, active: list[Slot]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (prepared) and targets of step ``step`` for the trials ``active``."""
        data, bs, spe = self.job.data, self.job.cfg.batch_size, self.job.span.steps_per_epoch
        e, off = divmod(step, spe)
        if e != self.epoch:
            self.epoch = e
            self.orders = torch.stack([batch_order(s.job.seed, e, len(data.y_train),
                                                   self.device) for s in self.slots])
        batch = self.orders[:, off * bs:(off + 1) * bs]
        if len(active) < len(self.slots):  # some left the stack: their rows go
            batch = batch[torch.tensor([self.position[id(s)] for s in active],
                                       device=self.device)]
        flat = batch.flatten()  # datasets index by one list of examples
        x, y = _rows(data.x_train, flat), _rows(data.y_train, flat)
        if data.augment == "crop_flip":
            x = torch.cat([crop_flip(x[k * bs:(k + 1) * bs], generator(s.job.seed, "augment", step))
                           for k, s in enumerate(active)])
        return data.prepare(x), y


def _rows(split: Any, index: torch.Tensor) -> Any:
    """``split[index]``; for a tensor by ``index_select``, several times faster than
    advanced indexing on a batch of images (same values)."""
    return split.index_select(0, index) if isinstance(split, torch.Tensor) else split[index]
