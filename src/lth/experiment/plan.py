"""What a run derives before training (its plan), and small helpers of ``LotteryModel``."""

from __future__ import annotations

import fnmatch
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import UNIT_SCORES, PruneConfig, TaskConfig
from ..durations import to_steps
from ..errors import ConfigError, LTHError, ModelError
from ..init import initialize, same_for_every_seed
from ..masks import layer_kinds, output_layer, prunable_names
from ..pruning import (
    Group,
    Structure,
    check_final_counts,
    kept_count,
    make_groups,
    resolve_rates,
    scheduled_density,
)
from ..seeding import derive_seed
from ..state import get_state, tensor_bytes
from ..store import RunDir
from ..tasks import Task, select_output
from ..train import Span
from . import early
from .mask_source import check_masks_source, repair_hint, source_ids
from .spec import experiment_id, level0_key, run_id, spec


def as_section(cls: type, value: Any, key: str) -> Any:
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        instance, problems = cls.parse(value, f"{key}.")
        if problems:
            from ..config import raise_problems
            raise_problems(problems)
        return instance
    raise ConfigError(f"{key}: expected a {cls.__name__} or a dict, got {type(value).__name__}")


def check_random_draw(model: nn.Module, initializer: str, names: list[str]) -> None:
    """Refuse ``random`` reinit for parameters that no initialiser draws afresh."""
    stuck = same_for_every_seed(model, names, initializer)
    if stuck:
        raise ConfigError(
            f"reinit.mode = 'random' needs a fresh draw of {', '.join(stuck)}, but no "
            "initializer re-draws it (its module has no reset_parameters); give the "
            "module a reset_parameters method, exclude it with prune.exclude, or use "
            "another reinit mode")


MAX_STEPS = 10**9  # per level: over 11 days at a millisecond a step

WORKER_ORDINAL: list[int] = []  # in a local pool's worker: its number (lth.execution.Local)


def set_worker_ordinal(ordinal: int) -> None:
    """This process is the local pool's worker ``ordinal``: ``device = "cuda"`` (or
    ``"auto"``) means GPU ``ordinal`` modulo the GPUs here, so workers spread over the GPUs
    (an explicit ``cuda:N`` still wins)."""
    WORKER_ORDINAL[:] = [ordinal]


def choose_device(want: str) -> torch.device:
    """``train.device`` as a torch device, refusing one this machine does not have.
    ``cuda`` (and ``auto`` with a GPU) is this worker's GPU, else the current one."""
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device = {want!r} but CUDA is not available here; "
                              "use device = 'cpu' (or 'auto')")
        count = torch.cuda.device_count()
        if want == "cuda":
            return torch.device("cuda", WORKER_ORDINAL[0] % count if WORKER_ORDINAL else
                                torch.cuda.current_device())
        index = int(want.split(":", 1)[1])
        if index >= count:
            raise ConfigError(f"train.device = {want!r} but this machine (or this Ray task) "
                              f"sees {count} GPU(s), cuda:0 to cuda:{count - 1}; use "
                              "device = 'cuda' to let each worker take its own")
    if want == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device = 'mps' but MPS is not available; use 'cpu'")
    return torch.device(want)


def state_sha(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k]
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(tensor_bytes(t))
    return h.hexdigest()


@dataclass
class Plan:
    """Everything a run needs that is derived, before any training starts: settings,
    identities, prunable groups and rates, step counts, θ0, the masks source."""

    exp: Any  # the LotteryModel (settings, model, data)
    device: torch.device
    names: list[str]
    output: list[str]
    groups: list[Group]
    rates: dict[str, float]
    total_steps: int
    rewind_step: int
    span: dict[str, int]
    theta0: dict[str, torch.Tensor]
    structure: Structure | None
    source: RunDir | None  # the run whose masks this one reuses
    spec: dict[str, Any]

    # settings, read where the loop needs them
    @property
    def model(self) -> nn.Module:
        return self.exp.model

    @property
    def initializer(self) -> str:
        return self.exp.initializer

    @property
    def seed(self) -> int:
        return self.exp.config.seed

    @property
    def n_levels(self) -> int:
        return self.exp.config.n_levels

    @property
    def masks_from_mode(self) -> str:
        return self.exp.config.masks_from_mode

    @property
    def train(self) -> Any:
        return self.exp.train

    @property
    def task(self) -> Task:
        return self.exp.task

    @property
    def task_config(self) -> TaskConfig:
        return self.exp.config.task

    @property
    def prune(self) -> PruneConfig:
        return self.exp.prune

    @property
    def reinit(self) -> Any:
        return self.exp.reinit

    @property
    def earlybird(self) -> Any:
        return self.exp.earlybird

    @property
    def run_id(self) -> str:
        return run_id(self.spec)

    @property
    def experiment_id(self) -> str:
        return experiment_id(self.spec)

    @property
    def level0_key(self) -> str:
        """What the dense level 0 depends on: runs with equal keys share it."""
        return level0_key(self.spec, self.rewind_step, self._searches_level0())

    def level0_class(self) -> str:
        """The level-0 key without seed and θ0: the trials of a group whose classes and
        seeds are equal train one level 0 (the key, θ0 included, decides in the store)."""
        blank = {**self.spec, "seed": None, "theta0_sha256": None}
        return level0_key(blank, self.rewind_step, self._searches_level0())

    def _searches_level0(self) -> bool:
        return early.searching(self.earlybird, self.prune, self.n_levels, 0)

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
    structure = None
    if prune.structure == "unit":
        structure, rates, groups = structured_plan(prune, model, names, example, out,
                                                   layer_kinds(model), cfg.n_levels)
        if cfg.masks_from_mode != "same":
            raise ConfigError(f"masks_from_mode = {cfg.masks_from_mode!r} draws single "
                              "weights at random; with structure = 'unit' use 'same'")
        if cfg.masks_from is not None:
            early.check_unit_source(Path(cfg.masks_from))
    else:
        rates = resolve_rates(prune, names, layer_kinds(model), out, cfg.n_levels, sizes)
        groups = make_groups(prune.scope, rates, sizes)
    source = None
    if cfg.masks_from is None:
        if cfg.masks_from_mode != "same":
            raise ConfigError(f"masks_from_mode = {cfg.masks_from_mode!r} needs masks_from "
                              "(the run whose mask counts to copy)")
        check_final_counts(groups, prune.schedule, cfg.n_levels)
    else:
        source = check_masks_source(Path(cfg.masks_from), names, sizes, cfg.n_levels)
    if exp.reinit.mode == "random":
        check_random_draw(exp.model, exp.initializer, names)
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
    return Plan(exp, choose_device(tr.device), names, out, groups, rates, total, k, span,
                theta0, structure, source, spec_)


def structured_plan(prune: PruneConfig, model: nn.Module, names: list[str],
                    example: torch.Tensor, output: list[str], kinds: dict[str, str],
                    n_levels: int) -> tuple[Structure, dict[str, float], list[Group]]:
    """For ``structure = 'unit'``: the model's unit structure, and rates and groups over its
    producers, sized in units. Layers whose units cannot be removed alone (their output
    reaches a residual addition, a concatenation, the model output...) keep their units
    whole and are still masked where they read removed units; which and why is recorded."""
    if prune.output_rate is not None:
        raise ConfigError("prune.output_rate does not apply with structure = 'unit': the "
                          "output layer's units are the classes; its inputs shrink with the "
                          "layer before it. Remove output_rate")
    if prune.criterion != "large_final":
        raise ConfigError(f"prune.criterion = {prune.criterion!r} scores weights, not units; "
                          "with structure = 'unit' units are scored by prune.unit_score "
                          f"({', '.join(UNIT_SCORES)}); remove criterion")
    structure = Structure.discover(model, names, example, output, strict=False)
    if not structure.producers:
        why = "\n".join(f"  {n}: {r}" for n, r in structure.refused.items())
        raise ModelError("structure = 'unit' found no layer whose units can be removed:\n"
                         f"{why}\nuse structure = 'weight'")
    units = structure.units
    for pattern in prune.layer_rates:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in structure.producers):
            raise ConfigError(f"prune.layer_rates pattern {pattern!r} matches no layer whose "
                              "units can be removed; with structure = 'unit' rates apply to "
                              f"{', '.join(structure.producers)} (the output layer and layers "
                              "kept whole have no units to prune)")
    rates = resolve_rates(prune, structure.producers, kinds, [], n_levels, units)
    groups = make_groups(prune.scope, rates, units)
    check_final_counts(groups, prune.schedule, n_levels)
    for g in groups:  # global scope keeps at least one unit of each layer
        last = kept_count(g.size, scheduled_density(prune.schedule, g.rate, n_levels))
        if g.rate > 0 and last < len(g.names):
            raise ConfigError(f"by level {n_levels} the {len(g.names)} layers pruned together "
                              f"({', '.join(g.names)}) would keep {last} units in all, fewer "
                              "than one per layer; use fewer levels or a lower rate")
    if prune.unit_score == "bn_gamma":
        structure.scores({k: v for k, v in model.state_dict().items()}, "bn_gamma")  # checks
    return structure, rates, groups
