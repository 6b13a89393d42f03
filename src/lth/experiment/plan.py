"""What a run derives before training (its plan), and small helpers of ``LotteryModel``."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import (
    EarlyBirdConfig,
    ExperimentConfig,
    PruneConfig,
    ReinitConfig,
    TaskConfig,
    TrainConfig,
)
from ..devices import choose_device
from ..durations import to_steps
from ..errors import ConfigError, LTHError, ModelError
from ..flops import Costs, costs_of
from ..init import initialize, same_for_every_seed
from ..masks import layer_kinds, output_layer, prunable_names
from ..pruning import SCHEDULES, STRUCTURES, Group, MaskLayout, Schedule
from ..pruning.copies import MASK_COPIES, MaskCopy
from ..pruning.supermask import SUPERMASKS, Supermask
from ..reinitialization import REINIT_MODES, ReinitMode
from ..seeding import derive_seed
from ..sparse.methods import METHODS, Method, Window
from ..state import get_state, tensor_bytes
from ..store import RunDir
from ..tasks import Task, select_output
from ..train import Span
from . import early
from .mask_source import check_masks_source, repair_hint, source_ids
from .spec import experiment_id, level0_key, run_id, spec


def check_random_draw(model: nn.Module, initializer: str, names: list[str], mode: str) -> None:
    """Refuse a reinit mode that draws afresh for parameters no initialiser redraws."""
    stuck = same_for_every_seed(model, names, initializer)
    if stuck:
        raise ConfigError(
            f"reinit.mode = {mode!r} needs a fresh draw of {', '.join(stuck)}, but no "
            "initializer re-draws it (its module has no reset_parameters); give the "
            "module a reset_parameters method, exclude it with prune.exclude, or use "
            "another reinit mode")


MAX_STEPS = 10**9  # per level: over 11 days at a millisecond a step

def state_sha(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k]
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(tensor_bytes(t))
    return h.hexdigest()


@dataclass
class Plan:
    """Everything a run needs that is derived, before any training starts: its settings and
    the mode objects they name, identities, the mask layout (groups and rates), step counts,
    θ0, the masks source."""

    config: ExperimentConfig
    initializer: str
    task: Task
    device: torch.device
    names: list[str]
    output: list[str]
    layout: MaskLayout
    total_steps: int
    rewind_step: int
    span: dict[str, int]
    theta0: dict[str, torch.Tensor]
    source: RunDir | None  # the run whose masks this one reuses
    spec: dict[str, Any]
    costs: Costs | None  # the FLOPs of the model's weight layers (None: not countable)

    # the settings' sections, and the mode objects they name
    @property
    def train(self) -> TrainConfig:
        return self.config.train

    @property
    def prune(self) -> PruneConfig:
        return self.config.prune

    @property
    def reinit(self) -> ReinitConfig:
        return self.config.reinit

    @property
    def earlybird(self) -> EarlyBirdConfig:
        return self.config.earlybird

    @property
    def task_config(self) -> TaskConfig:
        return self.config.task

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def n_levels(self) -> int:
        return self.config.n_levels

    @property
    def schedule(self) -> Schedule:
        return SCHEDULES[self.prune.schedule]

    @property
    def reinit_mode(self) -> ReinitMode:
        return REINIT_MODES[self.reinit.mode]

    @property
    def supermask(self) -> Supermask:
        return SUPERMASKS[self.prune.supermask]

    @property
    def mask_method(self) -> Method:
        return METHODS[self.config.mask_updates.method]

    @property
    def mask_copy(self) -> MaskCopy:
        return MASK_COPIES[self.config.masks_from_mode]

    @property
    def groups(self) -> list[Group]:
        return self.layout.groups

    @property
    def rates(self) -> dict[str, float]:
        return self.layout.rates

    @property
    def run_id(self) -> str:
        return run_id(self.spec)

    @property
    def experiment_id(self) -> str:
        return experiment_id(self.spec)

    def learns_mask(self, level: int) -> bool:
        """Whether ``level``'s mask comes out of its own training (a learned supermask of a
        pruned level) rather than from pruning before it."""
        return level > 0 and self.supermask.learns

    @property
    def mask_window(self) -> Window:
        """Where a pruned level's mask may change: its training from the rewind step."""
        return _mask_window(self.config, self.rewind_step, self.total_steps,
                            self.span["steps_per_epoch"])

    def updates_mask(self, level: int) -> bool:
        """Whether ``level``'s mask changes while it trains (a pruned level under gradual
        pruning or dynamic sparse training)."""
        return level > 0 and self.mask_method.changes_mask

    def searches(self, level: int) -> bool:
        """Whether an early-bird search runs in ``level``: its weights choose another level's
        mask under the schedule."""
        return (self.earlybird.enabled and self.n_levels >= 1
                and self.schedule.searches(level, self.n_levels))

    @property
    def level0_key(self) -> str:
        """What the dense level 0 depends on: runs with equal keys share it."""
        return level0_key(self.spec, self.rewind_step, self.searches(0))

    def level0_class(self) -> str:
        """The level-0 key without seed and θ0: the trials of a group whose classes and
        seeds are equal train one level 0 (the key, θ0 included, decides in the store)."""
        blank = {**self.spec, "seed": None, "theta0_sha256": None}
        return level0_key(blank, self.rewind_step, self.searches(0))

    @property
    def repair_hint(self) -> str:
        return repair_hint(self.source) if self.source is not None else ""


log = logging.getLogger("lth")
_FIXED_DRAWS: dict[tuple[str, str], list[str]] = {}  # (structure, initializer) -> names


def _warn_fixed_draws(model: nn.Module, names: list[str], initializer: str) -> None:
    """Warn (once per model and initializer) about prunable parameters no initialiser
    redraws: their θ0 is the same for every seed."""
    if initializer == "keep":
        return
    key = (repr(model), initializer)
    if key not in _FIXED_DRAWS:
        _FIXED_DRAWS[key] = [n for n in same_for_every_seed(model, names, initializer)
                             if model.get_parameter(n).unique().numel() > 1]  # not constants
        if _FIXED_DRAWS[key]:
            log.warning("%s: no initialiser redraws %s (no reset_parameters or "
                        "_reset_parameters on their modules): their θ0 is the same for every "
                        "seed; give those modules a reset_parameters() or draw them yourself "
                        "and use initializer = 'keep'", type(model).__name__,
                        ", ".join(_FIXED_DRAWS[key]))


def _check_task(exp: Any, raw: Any) -> None:
    """The task fits the data's targets and the model's output: one clear error if not."""
    task, data = exp.task, exp.data
    for split in ("train", "val", "test"):
        task.check_targets(getattr(data, f"y_{split}"), split)
    pred = select_output(raw, exp.config.task.output)
    if not torch.is_tensor(pred):
        raise ModelError(f"task.output = {exp.config.task.output!r} selects a "
                         f"{type(pred).__name__} from the model's output, not a tensor")
    if task.labels == "class" and (pred.dim() != 2 or pred.shape[1] < data.num_classes):
        raise ModelError(f"model output has shape {tuple(pred.shape)}; expected "
                         f"(batch, {data.num_classes}) class scores for {data.num_classes} "
                         f"classes (labels 0..{data.num_classes - 1}; numbers to predict "
                         "instead? use task = 'regression')")
    target = data.y_train[:len(pred)]
    try:
        loss = task.loss(pred, target)
        task.metric_values(pred, target)
    except Exception as exc:  # the user's loss or metrics: say what they were given
        raise ModelError(f"task {task.name!r} failed on the model's output "
                         f"{tuple(pred.shape)} and targets {tuple(target.shape)} "
                         f"({type(exc).__name__}: {exc}); check the task, the model's "
                         "output and task.output") from exc
    if not torch.is_tensor(loss) or loss.numel() != 1:
        raise ModelError(f"the loss of task {task.name!r} returned "
                         f"{tuple(loss.shape) if torch.is_tensor(loss) else type(loss).__name__}"
                         "; it must be one number (a mean over the batch)")


def _mask_window(cfg: ExperimentConfig, start: int, end: int, spe: int) -> Window:
    return Window.of(cfg.mask_updates, start, end, to_steps(cfg.mask_updates.every, spe))


def make_plan(exp: Any, model: nn.Module) -> Plan:
    """Check ``exp`` against its model and data and derive its plan; initialises
    ``model`` (a copy) to θ0. Every check a run makes happens here, before training."""
    cfg, tr, prune = exp.config, exp.train, exp.prune
    if hasattr(model, "lth_layer_kinds") and (exp.initializer not in ("default", "keep")
                                              or exp.bias_init != "default"):
        raise ConfigError(f"initializer = {exp.initializer!r}, bias_init = {exp.bias_init!r}: "
                          f"{type(model).__name__} draws θ0 from its layers' own initializers; "
                          "set them on the layers (kernel_initializer=...) and use "
                          "initializer = 'default'")
    example = exp.data.prepare(exp.data.x_train[:2])
    try:
        if any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters()):
            with torch.no_grad():
                model.eval()(example)  # lazy modules take their shapes from the data
        initialize(model, exp.initializer, derive_seed(cfg.seed, "init"), bias=exp.bias_init)
        theta0 = get_state(model)
        names = prunable_names(model, prune.include, prune.exclude)
        _warn_fixed_draws(model, names, exp.initializer)
        out = output_layer(model, names, example)
        with torch.no_grad():
            raw = model.eval()(example)
    except LTHError:
        raise
    except Exception as exc:  # the user's forward: report what we fed it
        kind = str(example.dtype).replace("torch.", "")
        hint = (" (integer inputs are passed as they are, e.g. token ids for nn.Embedding; "
                "for numeric features give floats)" if not example.is_floating_point() else "")
        raise ModelError(f"{type(model).__name__} failed on a batch of {kind} inputs of shape "
                         f"{tuple(example.shape)} from the data ({type(exc).__name__}: "
                         f"{exc}); check the model's expected input shape and dtype{hint}") \
            from exc
    _check_task(exp, raw)
    sizes = {n: model.get_parameter(n).numel() for n in names}
    structure = STRUCTURES[prune.structure]
    copy = MASK_COPIES[cfg.masks_from_mode]
    if not structure.of_single_weights and copy.draws_at_random:
        raise ConfigError(f"masks_from_mode = {cfg.masks_from_mode!r} draws single weights at "
                          f"random; with structure = {prune.structure!r} use 'same'")
    layout = structure.layout(prune, model, names, example, out, layer_kinds(model),
                              n_levels=cfg.n_levels, check_counts=cfg.masks_from is None)
    source = None
    if cfg.masks_from is None:
        if copy.draws_at_random:
            raise ConfigError(f"masks_from_mode = {cfg.masks_from_mode!r} needs masks_from "
                              "(the run whose mask counts to copy)")
    else:
        structure.check_source(Path(cfg.masks_from))
        source = check_masks_source(Path(cfg.masks_from), names, sizes, cfg.n_levels)
    if REINIT_MODES[exp.reinit.mode].draws_afresh:
        check_random_draw(model, exp.initializer, names, exp.reinit.mode)
    n_train = len(exp.data.y_train)
    full = Span.of(tr, n_train)
    spe, total = full.steps_per_epoch, full.end
    if total > MAX_STEPS:
        raise ConfigError(f"train.duration = {tr.duration!r} is {total:,} steps per level "
                          f"({spe:,} per epoch); lth trains at most {MAX_STEPS:,} steps per "
                          "level, which no level could finish anyway; shorten it")
    k = to_steps(exp.reinit.rewind_step, spe)
    if k >= total:
        raise ConfigError(f"reinit.rewind_step = {exp.reinit.rewind_step!r} ({k} steps) "
                          f"must be before the end of training ({total} steps)")
    for key, value in [("milestones", m) for m in tr.milestones] + [("warmup", tr.warmup)]:
        if to_steps(value, spe) > total:
            raise ConfigError(f"train.{key}: {value!r} is after the end of training "
                              f"({total} steps)")
    early.check(exp.earlybird, cfg.masks_from, spe, total, k, model, cfg.n_levels,
                exp.prune.criterion)
    span = {"steps_per_epoch": spe, "eval_every": full.eval_every,
            "checkpoint_every": full.checkpoint_every}
    spec_ = spec(exp.recipe(), seed=cfg.seed, theta0_sha256=state_sha(theta0),
                 masks_from=None if source is None else source_ids(source))
    METHODS[cfg.mask_updates.method].steps(cfg.mask_updates, _mask_window(cfg, k, total, spe))
    return Plan(cfg, exp.initializer, exp.task, choose_device(tr.device), names,
                out, layout, total, k, span, theta0, source, spec_,
                costs_of(model, names, example))
