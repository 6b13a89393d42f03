"""The validation machinery under :mod:`lth.config`: typed coercion of settings and one
error that lists every problem, each naming the key, the value and what is allowed."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any, ClassVar

from .errors import ConfigError, did_you_mean

Problem = tuple[str, str]  # (dotted key, what is wrong and what is allowed)


def raise_problems(problems: list[Problem]) -> None:
    if problems:
        lines = "\n".join(f"  - {key}: {msg}" for key, msg in problems)
        err = ConfigError(f"invalid configuration ({len(problems)} problem(s)):\n{lines}")
        err.problems = problems  # type: ignore[attr-defined]
        raise err


def check_choice(problems: list[Problem], key: str, value: str,
                 allowed: typing.Iterable[str]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        problems.append((key, f"got {value!r}" + did_you_mean(
            value, allowed, then=f"allowed: {', '.join(allowed)}")))


MAX_NAME_BYTES = 200  # a directory name is the name plus an id: within 255 bytes


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name directories and files (None if it can): empty, a path
    separator, a control character, a leading dot ("..", hidden files) or too long."""
    if not name:
        return "must not be empty"
    if any(c in name for c in "/\\") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "must not hold slashes or control characters"
    if name.startswith("."):
        return "must not start with a dot (., .. and hidden names)"
    if len(name.encode()) > MAX_NAME_BYTES:
        return f"is {len(name.encode())} bytes; at most {MAX_NAME_BYTES} (it names directories)"
    return None


def check_fraction(problems: list[Problem], key: str, value: float | None, *,
                   open_hi=False) -> None:
    if value is None:
        return
    ok = 0.0 <= value < 1.0 if open_hi else 0.0 <= value <= 1.0
    if not ok:
        hi = "1)" if open_hi else "1]"
        problems.append((key, f"got {value!r}; must be a fraction in [0, {hi}"))


class _BadValue(TypeError):
    """The right type, an impossible value (NaN, an integer past 64 bits)."""


def _coerce(value: Any, tp: Any) -> Any:
    """Coerce ``value`` to the annotated type ``tp`` or raise TypeError with what's expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option)
            except _BadValue:
                raise
            except TypeError:
                pass
        names = " or ".join(_type_name(o) for o in options if o is not type(None))
        raise TypeError(f"expected {names}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError("expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) >= 2**63:  # seeds, counts and sizes are 64-bit in torch
                raise _BadValue("expected an integer of magnitude below 2^63")
            return value
        raise TypeError("expected an integer")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):
                raise _BadValue("expected a finite number")
            return number
        raise TypeError("expected a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError("expected a string")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise TypeError("expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(value) != len(args):
            raise TypeError(f"expected a list of {len(args)} items")
        return tuple(_coerce(v, a) for v, a in zip(value, args, strict=True))
    if origin is dict:
        kt, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise TypeError("expected a table/dict")
        return {_coerce(k, kt): _coerce(v, vt) for k, v in value.items()}
    if tp is Any:
        return value
    if isinstance(tp, type) and issubclass(tp, Section):
        if isinstance(value, tp):
            return value
        raise TypeError(f"expected a [{tp.__name__}] table")
    raise TypeError(f"unsupported type {tp}")


def _type_name(tp: Any) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, "a list" if typing.get_origin(tp) is tuple else str(tp))


class Section:
    """Mixin: build from a dict with unknown-key and type checks; dump to JSON-able dicts."""

    _free_keys: ClassVar[bool] = False  # when True, unknown keys go to ``options``

    def __post_init__(self) -> None:
        # Types first (also for the Python API: TrainConfig(lr="x") is a ConfigError),
        # then value checks, which may assume well-typed fields.
        hints = typing.get_type_hints(type(self))
        problems: list[Problem] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            try:
                object.__setattr__(self, f.name, _coerce(value, hints[f.name]))
            except TypeError as exc:
                problems.append((f.name, f"got {value!r}; {exc}"))
        raise_problems(problems or self.problems())

    def problems(self) -> list[Problem]:  # overridden by sections with value checks
        return []

    @classmethod
    def parse(cls, data: dict, prefix: str) -> tuple[Any, list[Problem]]:
        """Return (instance or None, problems), keys in problems prefixed with ``prefix``."""
        problems: list[Problem] = []
        if not isinstance(data, dict):
            return None, [(prefix.rstrip("."), "expected a table/dict of settings")]
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls) if f.init]
        kwargs: dict[str, Any] = {}
        options: dict[str, Any] = {}
        for key, value in data.items():
            if key not in names or (cls._free_keys and key == "options"):
                if cls._free_keys:
                    options[key] = value
                    continue
                problems.append((prefix + key, "unknown key" + did_you_mean(
                    key, names, then=f"known keys: {', '.join(names)}")))
                continue
            try:
                kwargs[key] = _coerce(value, hints[key])
            except TypeError as exc:
                problems.append((prefix + key, f"got {value!r}; {exc}"))
        if options:
            kwargs["options"] = options
        try:
            return cls(**kwargs), problems
        except ConfigError as exc:
            got = [(prefix + k, m) for k, m in getattr(exc, "problems", [("", str(exc))])]
            return None, problems + got

    @classmethod
    def parse_nested(cls, data: Any, prefix: str,
                     sections: dict[str, type[Section]]) -> tuple[Any, list[Problem]]:
        """:meth:`parse` for a config whose keys in ``sections`` are tables of their own
        (``[train]``, ``[prune]``...): every problem of every section, gathered."""
        if not isinstance(data, dict):
            return None, [(prefix.rstrip(".") or "config", "expected a table of settings")]
        problems: list[Problem] = []
        top: dict[str, Any] = {}
        parsed: dict[str, Any] = {}
        for key, value in data.items():
            if key in sections:
                section, got = sections[key].parse(value, f"{prefix}{key}.")
                problems += got
                if section is not None:
                    parsed[key] = section
            else:
                top[key] = value
        instance, got = Section.parse.__func__(cls, top, prefix)  # type: ignore[attr-defined]
        problems += got
        if problems or instance is None:
            return None, problems
        try:
            return dataclasses.replace(instance, **parsed), problems
        except ConfigError as exc:  # checks across sections run again on the whole config
            return None, getattr(exc, "problems", [("", str(exc))])

    @classmethod
    def from_dict(cls, data: dict) -> Any:
        instance, problems = cls.parse(data, "")
        raise_problems(problems)
        return instance

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples -> lists


def as_section(cls: type[Section], value: Any, key: str) -> Any:
    """``value`` as a ``cls`` settings section: ``None`` gives the defaults, a dict is
    validated (every problem in one error, keys prefixed ``key.``), an instance passes.

    >>> from lth.config import TrainConfig
    >>> as_section(TrainConfig, {"lr": 0.1}, "train").lr
    0.1
    """
    (section,) = as_sections((cls, value, key))
    return section


def as_sections(*sections: tuple[type[Section], Any, str]) -> list[Any]:
    """Each ``(cls, value, key)`` as :func:`as_section` makes it, with the problems of all
    sections in one error."""
    out, problems = [], []
    for cls, value, key in sections:
        if value is None:
            out.append(cls())
        elif isinstance(value, cls):
            out.append(value)
        elif isinstance(value, dict):
            instance, found = cls.parse(value, f"{key}.")
            out.append(instance)
            problems += found
        else:
            problems.append((key, f"expected a {cls.__name__} or a dict, "
                                  f"got {type(value).__name__}"))
    raise_problems(problems)
    return out


KEY_DOCS: dict[str, str] = {
    # The one-line meaning of every key of an experiment configuration (sections of
    # lth.config.ExperimentConfig), keyed "section.key"; the docs' configuration reference
    # is generated from these, the types, the defaults and the checks (docs/hooks.py).
    "name": "The run's name: its directory is `<name>-<run_id>` in the store.",
    "seed": "One seed for θ0, the data order, pruning ties, reinit noise and dropout.",
    "n_levels": "Pruning levels after the dense level 0; more levels continue a run.",
    "masks_from": "A finished run directory whose masks are used level by level.",
    "masks_from_mode": "How `masks_from` masks are used: `same`, or random masks with its "
                       "counts per layer (`random_layer`) or in total (`random_global`).",
    "model.name": "A registered model; other keys of `[model]` are its builder's options.",
    "model.initializer": "The θ0 scheme for weights (`default`: the module's own).",
    "model.bias_init": "Biases: the module's own (`default`) or `zeros`.",
    "model.options": "Not written as a key: the other keys of `[model]` (e.g. `hidden`).",
    "data.name": "A registered dataset.",
    "data.val_size": "Validation examples held out of the training set: a fraction or a "
                     "count (unset: the dataset's own, 5,000 for MNIST/CIFAR, 10% digits).",
    "data.split_seed": "The seed of the validation split's permutation.",
    "data.root": "A directory holding the dataset's files (looked in first).",
    "data.download": "Download missing files into the cache.",
    "data.augment": "Training augmentation: `auto` (crops and flips for CIFAR only), "
                    "`none` or `crop_flip`.",
    "train.optimizer": "The optimizer.",
    "train.lr": "The learning rate (> 0).",
    "train.momentum": "SGD momentum, in [0, 1).",
    "train.nesterov": "Nesterov momentum (needs `sgd` and momentum > 0).",
    "train.weight_decay": "L2 weight decay (>= 0).",
    "train.betas": "Adam/AdamW betas, each in [0, 1).",
    "train.batch_size": "Training batch size; an epoch is `len(train) // batch_size` batches.",
    "train.duration": "How long each level trains: iterations (`500`, `\"500it\"`) or "
                      "epochs (`\"3ep\"`).",
    "train.lr_schedule": "`constant`, `step` (× `gamma` at each milestone) or `cosine`.",
    "train.milestones": "Durations at which a `step` schedule multiplies the lr by `gamma`.",
    "train.gamma": "The `step` schedule's factor, in (0, 1].",
    "train.warmup": "A linear warmup of the lr over this duration.",
    "train.eval_every": "How often validation and test sets are evaluated.",
    "train.eval_batch_size": "Batch size of evaluation.",
    "train.checkpoint_every": "How often an interrupted level's checkpoint is written.",
    "train.device": "`cpu`, `cuda` (a pool worker's own GPU), `cuda:N`, `mps` or `auto`.",
    "train.precision": "The forward pass's dtype, weights kept in float32 (fp16 with loss "
                       "scaling).",
    "train.threads": "Torch intra-op threads per trial (0 keeps torch's setting).",
    "train.stack": "Alike trials trained stacked in one step per worker (0: 8 on a GPU, "
                   "1 on CPU and with fp16).",
    "train.kernels": "`auto`: sparse kernels for `Linear` layers of >= 1,000 weights keeping "
                     "under half; `dense`; `sparse` (every pruned `Linear`).",
    "prune.criterion": "What scores a weight (Zhou et al.'s names, their short forms such as "
                       "`lf`, or `snip`/`grasp`/`synflow` at the level's start).",
    "prune.scope": "`layer` (each layer its own fraction) or `global` (layers sharing a "
                   "rate ranked together).",
    "prune.rate": "The fraction pruned per level (of the survivors, for `geometric`).",
    "prune.conv_rate": "The rate of convolution layers (unset: `rate`).",
    "prune.linear_rate": "The rate of `Linear` layers (unset: `rate`).",
    "prune.output_rate": "The rate of the output layer (unset: by type, then `rate`).",
    "prune.layer_rates": "Rates by `fnmatch` pattern of parameter names (first match wins).",
    "prune.schedule": "`geometric`, `target` (reach `target_sparsity` in `n_levels`), "
                      "`linear` (rate of the original) or `one_shot` (each level from dense).",
    "prune.target_sparsity": "The final sparsity of the `target` schedule.",
    "prune.include": "`fnmatch` patterns of parameter names added to the prunable weights.",
    "prune.exclude": "`fnmatch` patterns of parameter names removed from them.",
    "prune.structure": "`weight` (single weights), `unit` (whole neurons and channels) or "
                       "`nm` (N of every M consecutive weights).",
    "prune.unit_score": "With `structure = \"unit\"`: a unit's score, `l1`, `l2` or "
                        "`bn_gamma` (|γ| of its BatchNorm).",
    "prune.score_batches": "Training batches SNIP and GraSP average their scores over.",
    "prune.supermask": "`none`, or learn each level's mask over frozen weights "
                       "(`edge_popup`, `bernoulli`).",
    "prune.supermask_lr": "The learning rate of a learned supermask's scores (unset: "
                          "`train.lr`).",
    "prune.allocation": "How layers on `rate` share its density: `uniform`, `er` or `erk`.",
    "prune.nm": "With `structure = \"nm\"`: `[N, M]`, N kept of every M inputs.",
    "reinit.mode": "How survivors are reset before a pruned level trains.",
    "reinit.rewind_step": "Rewind to the weights at this step of level 0 (late rewinding).",
    "reinit.same_sign": "Give the reset weights θ0's sign wherever θ0 is non-zero.",
    "reinit.jitter_sd": "The sd of `jitter`'s noise.",
    "reinit.jitter_relative": "`jitter_sd` as a multiple of each layer's θ0 sd.",
    "reinit.constant": "`constant` mode's magnitude (unset: the layer's θ0 sd).",
    "earlybird.enabled": "Stop a level's training once its next mask has settled, and prune "
                         "there (every level but the last).",
    "earlybird.every": "How often the mask pruning would give now is computed.",
    "earlybird.queue": "Masks compared: the newest against the `queue - 1` before it.",
    "earlybird.epsilon": "The normalised Hamming distance under which masks count as settled.",
    "earlybird.bn_l1": "Add the network-slimming L1 penalty on BatchNorm γ while searching.",
    "earlybird.bn_l1_strength": "The penalty's factor on Σ|γ|.",
    "task.name": "A registered task: its loss, metrics and output.",
    "task.output": "The part of a tuple (index) or dict/dataclass (key) output the loss reads.",
    "task.early_stop": "The validation metric whose best value marks the early-stop step.",
    "mask_updates.method": "How a pruned level's mask changes while it trains: `none` (IMP), "
                           "`gmp`, `set` or `rigl`.",
    "mask_updates.every": "A mask update every this many steps.",
    "mask_updates.begin": "The first update, as a fraction of the level's training.",
    "mask_updates.end": "The last update, as a fraction of the level's training.",
    "mask_updates.fraction": "SET/RigL: the share of each layer's alive weights dropped per "
                             "update.",
    "mask_updates.decay": "SET/RigL: how `fraction` decays, `cosine` (to 0 at `end`) or "
                          "`constant`.",
}
