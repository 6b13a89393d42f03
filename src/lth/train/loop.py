"""The one training loop: in-memory batches, masks enforced at every step, resumable, and
able to train K trials at once.

Data order is a pure function of (seed, epoch), the learning rate of the step, and the
dropout RNG lives in a forked generator saved with each checkpoint, so a level resumed
from a checkpoint continues bit-identically on CPU.

The state a step touches is plain tensors addressed by parameter name: parameters, masks,
the optimizer's moments (:class:`~lth.train.optim.Optimizer`) and the step. One trial
trains its own module; K compatible trials (:func:`stack_key`) train *stacked*: their
parameters, masks and optimizer state on a leading axis of size K, one batch per trial, the
forward and backward passes vectorised with ``torch.func.vmap`` (:class:`Stacked`). Each
trial keeps its own data order, augmentation, evaluations, checkpoints, divergence check
and callbacks; one that stops early or diverges leaves the stack without disturbing the
others. Stacked results equal one-at-a-time results up to floating-point reassociation of
the batched matrix products (masks are exact either way).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig
from ..data import Data
from ..data.augment import crop_flip
from ..errors import TrainingError
from ..masks import Mask
from ..seeding import derive_seed, generator
from ..state import set_state
from ..tasks import CLASSIFICATION, Task
from .callbacks import Callback, OnEval, Snapshot
from .evaluate import Sums
from .job import Checkpoints, Job, Span, stack_key
from .optim import Optimizer, lr_function
from .precision import Precision
from .steppers import Single, Stacked, mask_

Tensors = dict[str, torch.Tensor]

__all__ = ["Callback", "Checkpoints", "Job", "OnEval", "Snapshot", "Span", "batch_order",
           "stack_key", "torch_threads", "train_level", "train_stack"]


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
                task: Task = CLASSIFICATION,
                output: int | str | None = None) -> list[dict[str, float]]:
    """Train ``model`` (on ``data``'s device) from ``span.start`` to ``span.end``.

    Returns the evaluation history: one row per evaluation with step, lr, the task's
    running training loss and metrics since the previous evaluation, and its validation
    and test loss and metrics. A callback that asks to stop ends training at that step,
    with an evaluation there. Raises :class:`~lth.errors.TrainingError` when the loss
    stops being finite.
    """
    job = Job(model, data, cfg, mask, span, seed, level, checkpoints, callbacks, fixed_lr,
              task, output)
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


# -- one trial's bookkeeping ----------------------------------------------------------------
@dataclass
class Slot:
    job: Job
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    rng: torch.Tensor | None = None
    stack_seeds: list[int] | None = None
    result: Any = None

    def __post_init__(self) -> None:
        job = self.job
        self.device = job.data.x_train.device
        self.params = {n: p for n, p in job.model.named_parameters() if p.requires_grad}
        self.opt = Optimizer(job.cfg, self.params)
        self.precision = Precision(job.cfg.precision, self.device)
        self.sums = self.fresh_sums()
        resumed = job.checkpoints.load() if job.checkpoints else None
        if resumed and not isinstance(resumed[1].get("sums"), dict):
            resumed = None  # a checkpoint of lth 0.2 (other running sums): restart the level
        if resumed:
            self._unpack(*resumed)
        else:
            self.step = job.span.start
        Mask.apply_(job.mask, job.model)
        job.model.train()
        self.last_ckpt = self.step

    def fresh_sums(self) -> Sums:
        return Sums(self.job.task, self.device, equal_batches=True)

    def _unpack(self, tensors: Tensors, meta: dict[str, Any]) -> None:
        set_state(self.job.model, {k[6:]: v for k, v in tensors.items()
                                   if k.startswith("model.")})
        names = list(self.params)
        opt: Tensors = {}
        for key, v in tensors.items():
            if key.startswith("optim."):
                opt[key[6:]] = v
            elif key.startswith("opt."):  # lth <= 0.4: by the parameter's index
                _, i, k = key.split(".", 2)
                opt[f"{k}.{names[int(i)]}"] = v
        self.opt.load(opt, self.device)
        self.precision.load({k[4:]: v for k, v in tensors.items() if k.startswith("amp.")})
        self.rng = tensors["rng.cpu"]
        self.stack_seeds = meta.get("stack")
        self.sums.load({k[5:]: v for k, v in tensors.items() if k.startswith("sums.")},
                       meta["sums"])
        for cb in self.job.callbacks:
            if cb.key is not None:
                prefix = f"{cb.key}."
                cb.load({k[len(prefix):]: v for k, v in tensors.items()
                         if k.startswith(prefix)}, meta.get(cb.key, {}))
        self.step, self.history = int(meta["step"]), list(meta["history"])

    def save(self, state: Tensors, opt: Tensors, stack_seeds: list[int] | None) -> None:
        tensors = {f"model.{k}": v for k, v in state.items()}
        tensors.update({f"optim.{k}": v for k, v in opt.items()})
        tensors.update({f"amp.{k}": v for k, v in self.precision.state().items()})
        tensors["rng.cpu"] = torch.get_rng_state()
        sum_tensors, counts = self.sums.state()
        tensors.update({f"sums.{k}": v for k, v in sum_tensors.items()})
        meta: dict[str, Any] = {"step": self.step, "history": self.history, "sums": counts}
        if stack_seeds is not None:
            meta["stack"] = stack_seeds
        for cb in self.job.callbacks:
            if cb.key is not None:
                extra, meta[cb.key] = cb.state()
                tensors.update({f"{cb.key}.{k}": v for k, v in extra.items()})
        assert self.job.checkpoints is not None
        self.job.checkpoints.save(tensors, meta)
        self.last_ckpt = self.step

    def eval_row(self, step: int, lr: float, scores: dict[str, dict[str, float]]
                 ) -> dict[str, float]:
        row: dict[str, float] = {"step": step, "epoch": step / self.job.span.steps_per_epoch,
                                 "lr": lr, **self.sums.means("train_")}
        for split, values in scores.items():
            row.update({f"{split}_{k}": v for k, v in values.items()})
        self.sums = self.fresh_sums()
        return row

    def check_finite(self, row: dict[str, float]) -> None:
        job = self.job
        watched = [row["train_loss"]] + ([row["test_loss"]] if len(job.data.y_test) else [])
        if not all(math.isfinite(v) for v in watched):
            raise TrainingError(
                f"training diverged at level {job.level} by step {row['step']} (train loss "
                f"{row['train_loss']}, test loss {row['test_loss']}); lower train.lr "
                f"(now {job.cfg.lr}) or add warmup. Finished levels are kept; a changed "
                "config is a new run")


# -- the step over one module or a stack ----------------------------------------------------
def _stack_seeds(slots: list[Slot]) -> list[int] | None:
    """What a checkpoint records of the stack it was trained in (None: alone)."""
    return [s.job.seed for s in slots] if len(slots) > 1 else None


def _noise_seed(slots: list[Slot]) -> int:
    if len(slots) == 1:
        return derive_seed(slots[0].job.seed, "noise", slots[0].job.level)
    return derive_seed(*[s.job.seed for s in slots], "noise-stack", slots[0].job.level)


def _train_together(slots: list[Slot]) -> None:
    """Train ``slots`` (compatible, at the same step) to the end of their span."""
    job = slots[0].job
    device, span, cfg, data = slots[0].device, job.span, job.cfg, job.data
    schedule = lr_function(cfg, span.end, span.steps_per_epoch)
    lr_at = schedule if job.fixed_lr is None else (lambda step: job.fixed_lr)
    bs, n = cfg.batch_size, len(data.y_train)
    augment = data.augment == "crop_flip"
    ebs = cfg.eval_batch_size
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        noise_seed = _noise_seed(slots)
        torch.default_generator.manual_seed(noise_seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(noise_seed)
        first = slots[0]
        if first.rng is not None and first.stack_seeds == _stack_seeds(slots):
            torch.set_rng_state(first.rng)  # the same stack resumes: the same noise
        step = first.step
        stepper: Any = Single(slots) if len(slots) == 1 else Stacked(slots)

        def evaluate_all(active: list[int], lr: float, check: bool = True) -> list[int]:
            """Evaluation rows for the trials ``active`` (indices); returns those that
            diverged (``check``: after training steps, not before the first)."""
            scores = {split: stepper.evaluate(getattr(data, f"x_{split}"),
                                              getattr(data, f"y_{split}"), ebs)
                      for split in ("val", "test")}
            return [k for k in active
                    if not record(stepper.slots[k], {sp: scores[sp][k] for sp in scores}, lr,
                                  check)]

        def record(s: Slot, scores: dict[str, dict[str, float]], lr: float,
                   check: bool = True) -> bool:
            """Add ``s``'s evaluation row; False (and its error kept) if it diverged."""
            row = s.eval_row(step, lr, scores)
            try:
                if check:
                    s.check_finite(row)
            except TrainingError as exc:
                s.result = exc
                return False
            s.history.append(row)
            for cb in s.job.callbacks:
                cb.after_eval(row)
            return True

        for k, s in enumerate(stepper.slots):
            for cb in s.job.callbacks:
                cb.begin(step, stepper.state(k))
        if not first.history:
            evaluate_all(list(range(len(slots))), lr_at(step), check=False)
        epoch, orders = -1, None
        while step < span.end and stepper is not None:
            current = stepper.slots
            e, off = divmod(step, span.steps_per_epoch)
            if e != epoch:
                epoch = e
                orders = torch.stack([batch_order(s.job.seed, e, n, device) for s in slots])
            batch = orders[:, off * bs:(off + 1) * bs]  # type: ignore[index]
            if len(current) < len(slots):  # some left the stack: their rows go
                batch = batch[torch.tensor([slots.index(s) for s in current], device=device)]
            idx = batch
            flat = idx.flatten()  # datasets index by one list of examples
            x, y = data.x_train[flat], data.y_train[flat]
            if augment:
                x = torch.cat([crop_flip(x[k * bs:(k + 1) * bs],
                                         generator(s.job.seed, "augment", step))
                               for k, s in enumerate(current)])
            x = data.prepare(x)
            if isinstance(stepper, Stacked):  # one batch per trial on a leading axis
                x, y = x.unflatten(0, idx.shape), y.unflatten(0, idx.shape)
            lr = lr_at(step)
            losses, outs, grads = stepper.forward_backward(x, y)
            if stepper.unscale(grads):  # else fp16 overflowed: skip the update (GradScaler)
                for k, s in enumerate(current):
                    if s.job.callbacks:
                        params_k = stepper.params_of(k)
                        grads_k = {nm: g if isinstance(stepper, Single) else g[k]
                                   for nm, g in grads.items()}
                        for cb in s.job.callbacks:
                            cb.after_backward(params_k, grads_k)
                # Masked gradients keep pruned weights at exactly 0 (see Optimizer).
                mask_(list(stepper.masks), grads, stepper.masks)
                stepper.opt.step(list(stepper.params.values()),
                                 [grads[nm] for nm in stepper.params], lr)
            ys = [y] if isinstance(stepper, Single) else y
            for k, s in enumerate(current):
                s.sums.add(losses[k], outs[k], ys[k])  # on the device: no host sync
            step += 1
            for s in current:
                s.step = step
            stops = [k for k, s in enumerate(current)
                     if any([cb.after_step(step, stepper.state(k)) for cb in s.job.callbacks])]
            gone: list[int] = []
            if step % span.eval_every == 0 or step == span.end:
                gone = evaluate_all(list(range(len(current))), lr)
                gone += [k for k in stops if k not in gone]
            elif stops:
                # Only the stopping trials evaluate now (the others' histories keep their
                # usual steps): evaluate each on its own module.
                for k in stops:
                    stepper.write_back(k)
                    single = Single([current[k]])
                    record(current[k], {sp: single.evaluate(getattr(data, f"x_{sp}"),
                                                            getattr(data, f"y_{sp}"), ebs)[0]
                                        for sp in ("val", "test")}, lr)
                gone = list(stops)
            for k in gone:
                stepper.write_back(k)
                if current[k].result is None:
                    current[k].result = current[k].history
            if gone:
                stepper = stepper.without(gone)
                if stepper is None:
                    break
                current = stepper.slots
            if step < span.end:
                for k, s in enumerate(current):
                    if (s.job.checkpoints is not None
                            and step - s.last_ckpt >= span.checkpoint_every):
                        s.save(*stepper.checkpoint_state(k), stack_seeds=_stack_seeds(current))
        if stepper is not None:
            for k, s in enumerate(stepper.slots):
                stepper.write_back(k)
                if s.result is None:
                    s.result = s.history
