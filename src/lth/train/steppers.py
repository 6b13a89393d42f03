"""The step over the trials that train together: one interface, :class:`Stepper`, for one
trial's own module (:class:`Single`) and for K trials stacked on a leading axis
(:class:`~lth.train.stacked.Stacked`).

What differs between the two is a handful of small methods (the batch's shape, forward and
backward, a trial's slice of a stacked tensor, evaluation, moving state between the stack
and each trial's module); what they share is written once here: the masked optimizer step,
mask updates, callbacks, evaluation rows and checkpoints.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch

from ..mask_updates import checked
from ..masks import Mask
from ..state import get_state
from ..tasks import select_output
from .evaluate import evaluate
from .optim import Optimizer
from .slot import Slot

Tensors = dict[str, torch.Tensor]
SPLITS = ("val", "test")


class Stepper(ABC):
    """A step over ``slots``: their trainable ``params`` (by name), ``masks`` (float, only
    the layers in which some weight is pruned) and optimizer ``opt``; stacked, every tensor
    has the trials on a leading axis."""

    slots: list[Slot]
    params: Tensors
    masks: Tensors
    opt: Optimizer

    # -- what differs between one trial and a stack -----------------------------------------
    @abstractmethod
    def arrange(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch (the trials' batches one after another) in the shape of the step."""

    @abstractmethod
    def forward_backward(self, x: torch.Tensor, y: torch.Tensor
                         ) -> tuple[Sequence[torch.Tensor], Sequence[torch.Tensor], Tensors]:
        """Per trial the loss and output, and the gradients by parameter name."""

    @abstractmethod
    def targets(self, y: torch.Tensor) -> Sequence[torch.Tensor]:
        """Per trial its targets in ``y`` (as :meth:`arrange` shaped it)."""

    @abstractmethod
    def unscale(self, grads: Tensors) -> bool:
        """Undo the loss scale (fp16); False: a gradient overflowed, skip this update."""

    @abstractmethod
    def index(self, k: int) -> int | None:
        """Trial ``k``'s index on the leading axis (None: tensors are the trial's own)."""

    @abstractmethod
    def state(self, k: int) -> Callable[[], Tensors]:
        """Trial ``k``'s parameters and buffers by name (views), when called."""

    @abstractmethod
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, bs: int) -> list[dict[str, float]]:
        """Per trial the task's loss and metrics on (x, y)."""

    @abstractmethod
    def checkpoint_state(self, k: int) -> tuple[Tensors, Tensors]:
        """Trial ``k``'s parameters and buffers, and optimizer state (CPU copies)."""

    @abstractmethod
    def write_back(self, k: int) -> None:
        """Put trial ``k``'s state into its own module."""

    @abstractmethod
    def rest(self, keep: list[int]) -> Stepper:
        """A stepper over the trials ``keep`` (indices, not empty) alone."""

    @abstractmethod
    def _put_mask(self, k: int, name: str, keep: torch.Tensor) -> None:
        """Trial ``k``'s mask of layer ``name`` from now on (in :attr:`masks`)."""

    # -- written once ---------------------------------------------------------------------
    def of(self, k: int, tensors: Tensors) -> Tensors:
        """Trial ``k``'s slice of ``tensors`` (views)."""
        i = self.index(k)
        return dict(tensors) if i is None else {n: t[i] for n, t in tensors.items()}

    def begin(self, step: int) -> None:
        for k, s in enumerate(self.slots):
            for cb in s.job.callbacks:
                cb.begin(step, self.state(k))

    def train_step(self, x: torch.Tensor, y: torch.Tensor, *, step: int, lr: float) -> None:
        """Train step ``step`` (0-based) on the batch (x, y) at learning rate ``lr``."""
        losses, outs, grads = self.forward_backward(x, y)
        self._dense = {}
        if self.unscale(grads):  # else fp16 overflowed: skip the update (GradScaler)
            for k, s in enumerate(self.slots):
                if s.job.callbacks:
                    params_k, grads_k = self.of(k, self.params), self.of(k, grads)
                    for cb in s.job.callbacks:
                        cb.after_backward(params_k, grads_k)
            self._dense = self._dense_grads(step + 1, grads)
            # Masked gradients keep pruned weights at exactly 0 (see Optimizer).
            mask_(list(self.masks), grads, self.masks)
            self.opt.step(list(self.params.values()), [grads[n] for n in self.params], lr)
        targets = self.targets(y)
        for k, s in enumerate(self.slots):
            s.sums.add(losses[k], outs[k], targets[k])  # on the device: no host sync

    def _dense_grads(self, step: int, grads: Tensors) -> dict[int, Tensors]:
        """What a mask update due once ``step`` steps are done ranks, for the trials whose
        update asks for it: the masked layers' gradients before masking (copies)."""
        out = {}
        for k, s in enumerate(self.slots):
            updates = s.job.mask_updates
            if updates is not None and updates.gradients and updates.due(step):
                mine = self.of(k, grads)
                out[k] = {n: mine[n].clone() for n in s.mask if mine.get(n) is not None}
        return out

    def update_masks(self, step: int) -> None:
        """Apply the mask updates due once ``step`` steps are done."""
        for k, s in enumerate(self.slots):
            updates = s.job.mask_updates
            if updates is None or not updates.due(step):
                continue
            weights = {n: p.detach() for n, p in self.of(k, self.params).items() if n in s.mask}
            new = checked(updates.update(step, weights, s.mask, self._dense.get(k)), s.mask,
                          step)
            self.set_mask(k, new)

    @torch.no_grad()
    def set_mask(self, k: int, new: Mask) -> None:
        """Trial ``k`` trains under ``new`` from now on: its pruned weights are 0, and the
        weights and optimizer state of every position that changed start from 0."""
        s, params = self.slots[k], self.of(k, self.params)
        for n, keep in new.items():
            p = params[n]
            keep = keep.to(p.device)
            changed = keep != s.mask[n].to(p.device)
            p.masked_fill_(~keep | changed, 0)
            self.opt.reset_(n, changed, self.index(k))
            self._put_mask(k, n, keep)
        s.mask, s.updates = new, s.updates + 1

    def after_step(self, step: int) -> list[int]:
        """Tell every trial's callbacks that ``step`` is done; the trials that stop here."""
        for s in self.slots:
            s.step = step
        return [k for k, s in enumerate(self.slots)
                if any([cb.after_step(step, self.state(k)) for cb in s.job.callbacks])]

    def record(self, step: int, lr: float, *, check: bool = True) -> list[int]:
        """Evaluate every trial and add its row; the trials that diverged (``check``)."""
        data, bs = self.slots[0].job.data, self.slots[0].job.cfg.eval_batch_size
        scores = {sp: self.evaluate(getattr(data, f"x_{sp}"), getattr(data, f"y_{sp}"), bs)
                  for sp in SPLITS}
        return [k for k, s in enumerate(self.slots)
                if not s.record(step, lr, {sp: scores[sp][k] for sp in SPLITS}, check=check)]

    def record_alone(self, ks: list[int], step: int, lr: float) -> None:
        """Evaluate the trials ``ks`` only, each on its own module (the others' histories
        keep their usual steps)."""
        for k in ks:
            self.write_back(k)
            Single([self.slots[k]]).record(step, lr)

    def checkpoint(self, step: int, every: int) -> None:
        """Save the checkpoint of each trial whose last one is ``every`` steps old."""
        seeds = [s.job.seed for s in self.slots] if len(self.slots) > 1 else None
        for k, s in enumerate(self.slots):
            if s.job.checkpoints is not None and step - s.last_ckpt >= every:
                s.save(*self.checkpoint_state(k), stack_seeds=seeds)

    def release(self) -> None:
        """Training ended, finished or interrupted: leave no trace in the trials' modules
        (nothing to do but for :class:`~lth.train.sparse.SparseSingle`)."""
        return

    def without(self, gone: Sequence[int]) -> Stepper | None:
        """Finish the trials ``gone``; the stepper of the others (None: nobody is left)."""
        if not gone:
            return self
        for k in gone:
            self.write_back(k)
            self.slots[k].finish()
        keep = [k for k in range(len(self.slots)) if k not in gone]
        return self.rest(keep) if keep else None


class Single(Stepper):
    """One trial: its own module, autograd, the optimizer's state as is."""

    def __init__(self, slots: list[Slot]):
        self.slots = slots
        (self.slot,) = slots
        self.model, self.job = self.slot.job.model, self.slot.job
        self.params, self.opt = self.slot.params, self.slot.opt
        self.precision = self.slot.precision
        self.masks = {}
        for n, keep in self.slot.mask.items():
            self._put_mask(0, n, keep)
        self._dense: dict[int, Tensors] = {}

    def arrange(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor
                         ) -> tuple[list[torch.Tensor], list[torch.Tensor], Tensors]:
        with self.precision.autocast():
            out = select_output(self.model(x), self.job.output)
            loss = self.job.task.loss(out, y)
        for p in self.params.values():
            p.grad = None
        self.precision.scale_loss(loss).backward()
        return [loss], [out], {n: p.grad for n, p in self.params.items()}  # type: ignore[misc]

    def targets(self, y: torch.Tensor) -> Sequence[torch.Tensor]:
        return [y]

    def unscale(self, grads: Tensors) -> bool:
        if not self.precision.scaled:
            return True
        return self.precision.unscale([g for g in grads.values() if g is not None])

    def index(self, k: int) -> int | None:
        return None

    def state(self, k: int) -> Callable[[], Tensors]:
        model = self.model
        return lambda: {**{n: p.detach() for n, p in model.named_parameters()},
                        **{n: b for n, b in model.named_buffers()}}

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, bs: int) -> list[dict[str, float]]:
        j = self.job
        with self.precision.autocast():
            return [evaluate(self.model, x, y, bs, j.data.prepare, task=j.task,
                             output=j.output)]

    def checkpoint_state(self, k: int) -> tuple[Tensors, Tensors]:
        return get_state(self.model), self.opt.tensors()

    def write_back(self, k: int) -> None:
        pass  # the module trained in place

    def rest(self, keep: list[int]) -> Stepper:
        return self

    def _put_mask(self, k: int, name: str, keep: torch.Tensor) -> None:
        if keep.all():  # a layer kept whole needs no masking
            self.masks.pop(name, None)
        else:
            self.masks[name] = keep.to(self.slot.device, self.params[name].dtype)


def mask_(names: list[str], tensors: Tensors, masks: Tensors) -> None:
    """``tensors[n] *= masks[n]`` for every masked name: one fused foreach kernel."""
    targets = [tensors[n] for n in names]
    if not targets:
        return
    if all(t is not None for t in targets):
        torch._foreach_mul_(targets, [masks[n] for n in names])
    else:
        for t, n in zip(targets, names, strict=True):
            if t is not None:
                t.mul_(masks[n])
