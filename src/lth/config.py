"""Validated, frozen experiment configuration: TOML (or dicts) in, JSON out.

Every problem found (unknown key, wrong type, impossible value) is gathered into one
:class:`~lth.errors.ConfigError` that names the key, the value received, what is allowed
and, for names, the closest known one.

>>> TrainConfig(lr=3e-4, duration="20ep").lr
0.0003
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .config_schema import (  # noqa: F401
    Problem,
    Section,
    check_choice,
    check_fraction,
    name_problem,
    raise_problems,
)
from .config_text import parse_override, read_toml, set_dotted
from .data import AUGMENTATIONS, DATASETS
from .durations import Duration, check_duration, to_steps
from .init import BIAS_INITS
from .models import MODELS, check_options
from .pruning.allocation import ALLOCATIONS, UNIFORM
from .pruning.copies import MASK_COPIES
from .pruning.criteria import CRITERIA, CRITERION_ALIASES
from .pruning.schedules import SCHEDULES, Schedule
from .pruning.structures import STRUCTURES, UNIT_SCORES
from .pruning.supermask import SUPERMASKS, Learned
from .reinitialization import REINIT_MODES
from .sparse.methods import METHODS, method_of, method_problems
from .tasks import TASKS

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("constant", "step", "cosine")
PRECISIONS = ("fp32", "bf16", "fp16")  # the forward pass's dtype (lth.train.precision)
KERNELS = ("auto", "dense", "sparse")  # lth.train.sparse
SCOPES = ("layer", "global")
MAX_THREADS = 1024  # intra-op threads; torch fails with MemoryError or overflow far above
INITIALIZERS = ("default", "keep", "xavier_normal", "xavier_uniform", "kaiming_normal",
                "kaiming_uniform")


@dataclass(frozen=True)
class TrainConfig(Section):
    """How each level is trained. Durations are ints (iterations) or ``"Nit"``/``"Nep"``."""

    optimizer: str = "adam"
    lr: float = 1.2e-3
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int = 60
    duration: Duration = "2000it"
    lr_schedule: str = "constant"
    milestones: tuple[Duration, ...] = ()
    gamma: float = 0.1
    warmup: Duration = 0
    eval_every: Duration = "100it"
    eval_batch_size: int = 2048
    checkpoint_every: Duration = "1000it"
    device: str = "cpu"
    precision: str = "fp32"  # the forward pass in fp32, bf16 or fp16 (lth.train.precision)
    threads: int = 1
    stack: int = 0  # trials trained stacked in one step; 0: automatic (lth.experiment.group)
    kernels: str = "auto"  # sparse kernels for sparse Linear layers (lth.train.sparse)

    def problems(self) -> list[Problem]:
        p: list[Problem] = []
        for key, allowed in (("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES),
                             ("precision", PRECISIONS), ("kernels", KERNELS)):
            check_choice(p, key, getattr(self, key), allowed)
        if not self.lr > 0:
            p.append(("lr", f"got {self.lr!r}; must be > 0"))
        if not 0 <= self.momentum < 1:
            p.append(("momentum", f"got {self.momentum!r}; must be in [0, 1)"))
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            p.append(("nesterov", "needs optimizer = 'sgd' and momentum > 0"))
        if self.weight_decay < 0:
            p.append(("weight_decay", f"got {self.weight_decay!r}; must be >= 0"))
        if not all(0 <= b < 1 for b in self.betas):
            p.append(("betas", f"got {list(self.betas)}; both must be in [0, 1)"))
        for key in ("batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                p.append((key, f"got {getattr(self, key)!r}; must be >= 1"))
        if not 0 <= self.threads <= MAX_THREADS:
            p.append(("threads", f"got {self.threads!r}; must be from 1 to {MAX_THREADS} (0 "
                                 "keeps torch's setting)"))
        if self.stack < 0:
            p.append(("stack", f"got {self.stack!r}; must be >= 1 (0: automatic)"))
        named = {"duration": self.duration, "warmup": self.warmup, "eval_every": self.eval_every,
                 "checkpoint_every": self.checkpoint_every,
                 **{f"milestones[{i}]": m for i, m in enumerate(self.milestones)}}
        for key, value in named.items():
            if problem := check_duration(value):
                p.append((key, f"got {value!r}; {problem}"))
        for key in ("duration", "eval_every", "checkpoint_every"):
            if getattr(self, key) in (0, "0it", "0ep"):
                p.append((key, "must be longer than 0"))
        if self.milestones and self.lr_schedule != "step":
            p.append(("milestones", "only used with lr_schedule = 'step'"))
        if not 0 < self.gamma <= 1:
            p.append(("gamma", f"got {self.gamma!r}; must be in (0, 1]"))
        dev = self.device
        if not (dev in ("cpu", "cuda", "mps", "auto") or re.fullmatch(r"cuda:\d+", dev)):
            p.append(("device", f"got {dev!r}; allowed: cpu, cuda, cuda:N, mps, auto"))
        if self.kernels == "sparse" and (dev != "cpu" or self.precision != "fp32"):
            p.append(("kernels", "needs device = 'cpu' and precision = 'fp32' (or 'auto')"))
        return p


@dataclass(frozen=True)
class PruneConfig(Section):
    """What is pruned, by which criterion, how much per level.

    Rates are fractions removed per level. A layer's rate is the first that applies of:
    ``output_rate`` (the output layer), ``layer_rates`` (first matching name pattern),
    ``conv_rate``/``linear_rate`` (by layer type), then ``rate``. ``allocation``: how the
    layers on ``rate`` share its density (``uniform``, ``er``, ``erk``:
    :mod:`lth.pruning.allocation`); ``nm``: N kept of every M with ``structure = "nm"``.
    """

    criterion: str = "large_final"
    scope: str = "layer"
    rate: float = 0.2
    conv_rate: float | None = None
    linear_rate: float | None = None
    output_rate: float | None = None
    layer_rates: dict[str, float] = field(default_factory=dict)
    schedule: str = "geometric"
    target_sparsity: float | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    structure: str = "weight"
    unit_score: str = "l1"
    score_batches: int = 1  # training batches a data-dependent criterion (snip, grasp) reads
    supermask: str = "none"  # learn each level's mask over frozen weights (lth.pruning.supermask)
    supermask_lr: float | None = None  # the scores' learning rate (None: train.lr)
    allocation: str = "uniform"
    nm: tuple[int, int] = (2, 4)

    def __post_init__(self) -> None:
        if isinstance(self.criterion, str):
            object.__setattr__(self, "criterion",
                               CRITERION_ALIASES.get(self.criterion, self.criterion))
        super().__post_init__()

    def problems(self) -> list[Problem]:
        p: list[Problem] = []
        for key, allowed in (("criterion", CRITERIA), ("structure", STRUCTURES),
                             ("unit_score", UNIT_SCORES), ("scope", SCOPES),
                             ("allocation", ALLOCATIONS), ("schedule", SCHEDULES),
                             ("supermask", SUPERMASKS)):
            check_choice(p, key, getattr(self, key), allowed)
        if self.structure in STRUCTURES:
            p.extend(STRUCTURES[self.structure].problems(self))
        p.extend(ALLOCATIONS.get(self.allocation, default=UNIFORM).problems(self))
        if self.score_batches < 1:
            p.append(("score_batches", f"got {self.score_batches!r}; must be >= 1"))
        # An unknown name (reported above) is checked as the most likely kind of entry.
        p.extend(SUPERMASKS.get(self.supermask, default=Learned(self.supermask))
                 .problems(self))
        for key in ("rate", "conv_rate", "linear_rate", "output_rate"):
            check_fraction(p, key, getattr(self, key))
        for pattern, r in self.layer_rates.items():
            check_fraction(p, f"layer_rates.{pattern}", r)
        p.extend(SCHEDULES.get(self.schedule, default=Schedule()).problems(self))
        return p


@dataclass(frozen=True)
class ReinitConfig(Section):
    """How surviving weights are reset before a pruned level trains."""

    mode: str = "rewind"
    rewind_step: Duration = 0
    same_sign: bool = False
    jitter_sd: float = 0.01
    jitter_relative: bool = False
    constant: float | None = None

    def problems(self) -> list[Problem]:
        p: list[Problem] = []
        check_choice(p, "mode", self.mode, REINIT_MODES)
        if problem := check_duration(self.rewind_step):
            p.append(("rewind_step", f"got {self.rewind_step!r}; {problem}"))
        if self.jitter_sd < 0:
            p.append(("jitter_sd", f"got {self.jitter_sd!r}; must be >= 0"))
        if self.constant is not None and self.constant <= 0:
            p.append(("constant", f"got {self.constant!r}; must be > 0 (signs come from "
                                  "same_sign or a seeded draw)"))
        return p


@dataclass(frozen=True)
class EarlyBirdConfig(Section):
    """Early-bird tickets (You et al., 2020): stop a level's training once its pruning mask
    has settled, and prune there instead of after full training.

    Every ``every`` steps the mask that pruning would give now is computed; the ticket is
    drawn when the newest mask is within normalised Hamming distance ``epsilon`` of each of
    the ``queue - 1`` masks before it. ``bn_l1`` adds the network-slimming L1 penalty
    (``bn_l1_strength`` · Σ|γ|) on BatchNorm scales while searching.
    """

    enabled: bool = False
    every: Duration = "1ep"
    queue: int = 5
    epsilon: float = 0.1
    bn_l1: bool = False
    bn_l1_strength: float = 1e-4

    def problems(self) -> list[Problem]:
        p: list[Problem] = []
        if problem := check_duration(self.every):
            p.append(("every", f"got {self.every!r}; {problem}"))
        elif self.every in (0, "0it", "0ep"):
            p.append(("every", "must be longer than 0"))
        if self.queue < 2:
            p.append(("queue", f"got {self.queue!r}; needs at least 2 masks to compare"))
        check_fraction(p, "epsilon", self.epsilon)
        if not 0 <= self.bn_l1_strength < float("inf"):  # NaN fails this too
            p.append(("bn_l1_strength", f"got {self.bn_l1_strength!r}; a number >= 0"))
        return p


@dataclass(frozen=True)
class MaskUpdatesConfig(Section):
    """How a pruned level's mask changes while it trains (:mod:`lth.sparse.methods`):
    ``none`` (fixed: IMP), ``gmp``, ``set`` or ``rigl``, every ``every`` steps from ``begin``
    to ``end`` (fractions of the level's training); SET and RigL drop ``fraction`` of each
    layer's alive weights, decayed by a cosine to 0 at ``end`` (or ``constant``)."""

    method: str = "none"
    every: Duration = "100it"
    begin: float = 0.0
    end: float = 0.75
    fraction: float = 0.3
    decay: str = "cosine"

    def problems(self) -> list[Problem]:
        p: list[Problem] = []
        check_choice(p, "method", self.method, METHODS)
        if problem := check_duration(self.every):
            p.append(("every", f"got {self.every!r}; {problem}"))
        elif to_steps(self.every, 1) < 1:
            p.append(("every", f"got {self.every!r}; must be longer than 0"))
        p.extend(method_of(self.method).problems(self))
        return p


@dataclass(frozen=True)
class ModelConfig(Section):
    """A registered model by name; keys other than these are passed to its builder."""

    _free_keys: ClassVar[bool] = True
    name: str = "mlp"
    initializer: str = "default"
    bias_init: str = "default"
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # Flat, like the TOML table: model options sit beside name and initializer.
        return json.loads(json.dumps({"name": self.name, "initializer": self.initializer,
                                      **({"bias_init": self.bias_init}
                                         if self.bias_init != "default" else {}),
                                      **self.options}))

    def problems(self) -> list[Problem]:
        p: list[Problem] = []
        check_choice(p, "initializer", self.initializer, INITIALIZERS)
        check_choice(p, "bias_init", self.bias_init, BIAS_INITS)
        check_choice(p, "name", self.name, MODELS)
        if self.name in MODELS:
            p.extend(check_options(self.name, self.options))
        return p


@dataclass(frozen=True)
class DataConfig(Section):
    """A registered dataset by name, with the validation split held out of training data."""

    name: str = "digits"
    val_size: float | None = None  # None: the dataset's own (5,000 for MNIST/CIFAR, 10% digits)
    split_seed: int = 0
    root: str | None = None
    download: bool = True
    augment: str = "auto"

    def problems(self) -> list[Problem]:
        p: list[Problem] = []
        check_choice(p, "name", self.name, DATASETS)
        check_choice(p, "augment", self.augment, ("auto", *AUGMENTATIONS))
        if self.val_size is not None and not (
                0 <= self.val_size < 1 or (self.val_size >= 1 and self.val_size.is_integer())):
            p.append(("val_size", f"got {self.val_size!r}; a fraction in [0, 1) or a whole "
                                  "number of examples"))
        if self.root is not None and self.name in DATASETS and "root" not in \
                inspect.signature(DATASETS[self.name]).parameters:
            p.append(("root", f"dataset {self.name!r} is built in and reads no files; "
                              "remove data.root"))
        return p


@dataclass(frozen=True)
class TaskConfig(Section):
    """What the model is trained to do (:mod:`lth.tasks`): a registered task by ``name``;
    ``output``: which part of the model's output the loss reads when it returns a tuple
    (an index) or a dict / dataclass (a key or field); ``early_stop``: the metric whose best
    validation value marks the early-stop iteration (``loss``, or one of the task's)."""

    name: str = "classification"
    output: int | str | None = None
    early_stop: str = "loss"

    def problems(self) -> list[Problem]:
        p: list[Problem] = []
        check_choice(p, "name", self.name, TASKS)
        if self.name in TASKS:
            check_choice(p, "early_stop", self.early_stop, ["loss", *TASKS[self.name].scores])
        return p


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig,
             "prune": PruneConfig, "reinit": ReinitConfig, "earlybird": EarlyBirdConfig,
             "task": TaskConfig, "mask_updates": MaskUpdatesConfig}


@dataclass(frozen=True)
class ExperimentConfig(Section):
    """One IMP experiment: levels 0 (dense) .. ``n_levels``.

    ``masks_from``: a finished run directory whose masks are used level by level instead
    of pruning (e.g. the paper's control: the ticket's masks with ``reinit.mode='random'``).
    ``masks_from_mode``: ``same`` (its masks as they are), ``random_layer`` / ``random_global``
    (random masks keeping as many weights per layer / in total as it does: the
    random-pruning control; each level prunes at random among the previous survivors).
    """

    name: str = "experiment"
    seed: int = 0
    n_levels: int = 5
    masks_from: str | None = None
    masks_from_mode: str = "same"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    reinit: ReinitConfig = field(default_factory=ReinitConfig)
    earlybird: EarlyBirdConfig = field(default_factory=EarlyBirdConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    mask_updates: MaskUpdatesConfig = field(default_factory=MaskUpdatesConfig)

    def to_dict(self) -> dict[str, Any]:
        top = {"name": self.name, "seed": self.seed, "n_levels": self.n_levels,
               "masks_from": self.masks_from, "masks_from_mode": self.masks_from_mode}
        return {**top, **{key: getattr(self, key).to_dict() for key in _SECTIONS}}

    def problems(self) -> list[Problem]:
        p: list[Problem] = []
        check_choice(p, "masks_from_mode", self.masks_from_mode, MASK_COPIES)
        if self.n_levels < 0:
            p.append(("n_levels", f"got {self.n_levels!r}; must be >= 0"))
        if self.seed < 0:
            p.append(("seed", f"got {self.seed!r}; must be >= 0"))
        supermask = self.prune.supermask
        p.extend(SUPERMASKS.get(supermask, default=Learned(supermask)).experiment_problems(self))
        p.extend(method_problems(self))
        problem = name_problem(self.name)
        if problem:
            p.append(("name", f"got {self.name!r}; {problem}"))
        return p

    @classmethod
    def parse(cls, data: dict, prefix: str = "") -> tuple[Any, list[Problem]]:
        return cls.parse_nested(data, prefix, _SECTIONS)


def load_config(path: str | Path, overrides: typing.Sequence[str] = (), *,
                kind: type[Section] = ExperimentConfig, what: str = "config file") -> Any:
    """Read a TOML file, apply ``key=value`` overrides, validate everything into ``kind``
    (an :class:`ExperimentConfig` unless told otherwise)."""
    data = read_toml(path, what)
    for text in overrides:
        set_dotted(data, *parse_override(text))
    return kind.from_dict(data)
