"""The one training loop: in-memory batches, masks enforced at every step, resumable.

Data order is a pure function of (seed, epoch), the learning rate of the step, and the
dropout RNG lives in a forked generator saved with each checkpoint, so a level resumed
from a checkpoint continues bit-identically on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from ..config import TrainConfig
from ..data import Data
from ..data.augment import crop_flip
from ..durations import to_steps
from ..errors import ConfigError, TrainingError
from ..masks import Mask
from ..seeding import derive_seed, generator
from ..state import get_state, set_state
from ..tasks import CLASSIFICATION, Task, select_output
from .evaluate import Sums, evaluate
from .optim import lr_function, make_optimizer

Tensors = dict[str, torch.Tensor]


class Monitor(Protocol):
    """Watches a level's training (e.g. the early-bird search): may add to gradients, may
    stop training, and keeps its own state in the level's checkpoints."""

    def after_backward(self, model: nn.Module) -> None: ...
    def after_step(self, step: int, model: nn.Module) -> bool: ...  # True: stop now
    def state(self) -> tuple[Tensors, dict[str, Any]]: ...
    def load(self, tensors: Tensors, meta: dict[str, Any]) -> None: ...


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


def batch_order(seed: int, epoch: int, n: int, device: torch.device) -> torch.Tensor:
    """The example order of ``epoch``: same for every level, so rewinding replays it."""
    g = torch.Generator().manual_seed(derive_seed(seed, "data", epoch))
    return torch.randperm(n, generator=g).to(device)


def _eval_row(model: nn.Module, data: Data, step: int, span: Span, lr: float,
              bs: int, sums: Sums, output: int | str | None) -> dict[str, float]:
    """One evaluation: the training loss and metrics since the last one, then those of
    the validation and test splits."""
    row: dict[str, float] = {"step": step, "epoch": step / span.steps_per_epoch, "lr": lr,
                             **sums.means("train_")}
    for split in ("val", "test"):
        scores = evaluate(model, getattr(data, f"x_{split}"), getattr(data, f"y_{split}"), bs,
                          data.prepare, task=sums.task, output=output)
        row.update({f"{split}_{k}": v for k, v in scores.items()})
    return row


def _check_finite(row: dict[str, float], level: int, cfg: TrainConfig, data: Data) -> None:
    watched = [row["train_loss"]] + ([row["test_loss"]] if len(data.y_test) else [])
    if not all(math.isfinite(v) for v in watched):
        raise TrainingError(
            f"training diverged at level {level} by step {row['step']} (train loss "
            f"{row['train_loss']}, test loss {row['test_loss']}); lower train.lr "
            f"(now {cfg.lr}) or add warmup. Finished levels are kept; a changed config "
            "is a new run")


def _pack(model: nn.Module, opt: torch.optim.Optimizer, step: int, history: list[dict],
          sums: Sums, device: torch.device) -> tuple[Tensors, dict[str, Any]]:
    tensors = {f"model.{k}": v for k, v in get_state(model).items()}
    scalars: dict[str, Any] = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{i}.{k}"] = v.detach().cpu()
            else:
                scalars[f"{i}.{k}"] = v
    tensors["rng.cpu"] = torch.get_rng_state()
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    sum_tensors, counts = sums.state()
    tensors.update({f"sums.{k}": v for k, v in sum_tensors.items()})
    meta = {"step": step, "history": history, "opt_scalars": scalars, "sums": counts}
    return tensors, meta


def _unpack(model: nn.Module, opt: torch.optim.Optimizer, tensors: Tensors,
            meta: dict[str, Any], device: torch.device, sums: Sums) -> tuple[int, list[dict]]:
    set_state(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, k = key.split(".", 2)
            state.setdefault(int(i), {})[k] = v
    for key, v in meta.get("opt_scalars", {}).items():
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    torch.set_rng_state(tensors["rng.cpu"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    sums.load({k[5:]: v for k, v in tensors.items() if k.startswith("sums.")}, meta["sums"])
    return int(meta["step"]), list(meta["history"])


def train_level(model: nn.Module, data: Data, cfg: TrainConfig, mask: Mask, span: Span, *,
                seed: int, level: int, checkpoints: Checkpoints | None = None,
                snapshot_step: int | None = None,
                on_snapshot: Callable[[Tensors], None] | None = None,
                progress: Callable[[int], None] | None = None,
                fixed_lr: float | None = None,
                monitor: Monitor | None = None, task: Task = CLASSIFICATION,
                output: int | str | None = None) -> list[dict[str, float]]:
    """Train ``model`` (on ``data``'s device) from ``span.start`` to ``span.end``.

    Returns the evaluation history: one row per evaluation with step, lr, the task's
    running training loss and metrics since the previous evaluation, and its validation
    and test loss and metrics. ``output`` selects from a tuple/dict model output. A
    ``monitor`` that asks to stop ends training at that step, with an evaluation there. Raises
    :class:`~lth.errors.TrainingError` when the loss stops being finite.
    """
    device = data.x_train.device
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(cfg, params)
    schedule = lr_function(cfg, span.end, span.steps_per_epoch)
    # Fine-tuning trains at one learning rate (the schedule's last) instead of the schedule.
    lr_at = schedule if fixed_lr is None else (lambda step: fixed_lr)
    masked = [(model.get_parameter(n), keep.to(device)) for n, keep in mask.items()]
    mparams = [p for p, _ in masked]
    # Multiplying by a float mask in the parameter's dtype is one fused foreach kernel.
    mfloats = [keep.to(p.dtype) for p, keep in masked]
    bs, n = cfg.batch_size, len(data.y_train)
    augment = data.augment == "crop_flip"
    ebs = cfg.eval_batch_size

    def fresh_sums() -> Sums:
        return Sums(task, device, equal_batches=True)

    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        noise_seed = derive_seed(seed, "noise", level)
        torch.default_generator.manual_seed(noise_seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(noise_seed)
        resumed = checkpoints.load() if checkpoints else None
        if resumed and not isinstance(resumed[1].get("sums"), dict):
            resumed = None  # a checkpoint of lth 0.2 (other running sums): restart the level
        sums = fresh_sums()
        if resumed:
            step, history = _unpack(model, opt, *resumed, device, sums)
            if monitor is not None:
                tensors, meta = resumed
                monitor.load({k[8:]: v for k, v in tensors.items() if k.startswith("monitor.")},
                             meta.get("monitor", {}))
        else:
            step, history = span.start, []
        Mask.apply_(mask, model)
        model.train()
        last_ckpt = step
        if not history:
            history.append(_eval_row(model, data, step, span, lr_at(step), ebs, sums, output))
        epoch, order = -1, None
        while step < span.end:
            if step == snapshot_step and on_snapshot is not None:
                on_snapshot(get_state(model))
            e, off = divmod(step, span.steps_per_epoch)
            if e != epoch:
                epoch, order = e, batch_order(seed, e, n, device)
            idx = order[off * bs:(off + 1) * bs]  # type: ignore[index]
            x, y = data.x_train[idx], data.y_train[idx]
            if augment:
                x = crop_flip(x, generator(seed, "augment", step))
            x = data.prepare(x)
            lr = lr_at(step)
            for group in opt.param_groups:
                group["lr"] = lr
            out = select_output(model(x), output)
            loss = task.loss(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if monitor is not None:
                monitor.after_backward(model)
            grads = [p.grad for p in mparams]
            if all(g is not None for g in grads):
                torch._foreach_mul_(grads, mfloats)
            else:
                for g, m in zip(grads, mfloats, strict=True):
                    if g is not None:
                        g.mul_(m)
            opt.step()
            # Masked gradients already keep pruned weights at 0 for SGD/Adam/AdamW;
            # re-masking guards against any update rule that moves zero-gradient weights.
            with torch.no_grad():
                torch._foreach_mul_(mparams, mfloats)
            sums.add(loss, out, y)  # on the device: no host sync per step
            step += 1
            stop = monitor is not None and monitor.after_step(step, model)
            if step % span.eval_every == 0 or step == span.end or stop:
                row = _eval_row(model, data, step, span, lr, ebs, sums, output)
                _check_finite(row, level, cfg, data)
                history.append(row)
                sums = fresh_sums()
                if progress is not None:
                    progress(step)
            if stop:
                break
            if (checkpoints is not None and step < span.end
                    and step - last_ckpt >= span.checkpoint_every):
                tensors, meta = _pack(model, opt, step, history, sums, device)
                if monitor is not None:
                    extra, meta["monitor"] = monitor.state()
                    tensors.update({f"monitor.{k}": v for k, v in extra.items()})
                checkpoints.save(tensors, meta)
                last_ckpt = step
        if snapshot_step == step and on_snapshot is not None:
            on_snapshot(get_state(model))
    return history
