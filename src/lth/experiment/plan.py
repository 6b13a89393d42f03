"""What a run derives before training (its plan), and small helpers of ``LotteryModel``."""

from __future__ import annotations

import copy
import fnmatch
import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import UNIT_SCORES, PruneConfig
from ..errors import ConfigError, ModelError
from ..init import initialize
from ..pruning import (
    Group,
    Structure,
    check_final_counts,
    kept_count,
    make_groups,
    resolve_rates,
    scheduled_density,
)
from ..state import get_state, tensor_bytes


def as_section(cls: type, value: Any, key: str) -> Any:
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        instance, problems = cls.parse(value, f"{key}.")
        if problems:
            from ..config import _raise
            _raise(problems)
        return instance
    raise ConfigError(f"{key}: expected a {cls.__name__} or a dict, got {type(value).__name__}")


def fresh_draw(model: nn.Module, initializer: str, seed: int) -> dict[str, torch.Tensor]:
    """A new draw of every weight from the model's initialiser (for ``random`` reinit)."""
    scheme = "default" if initializer == "keep" else initializer
    return get_state(initialize(copy.deepcopy(model).cpu(), scheme, seed))


def check_random_draw(model: nn.Module, initializer: str, names: list[str]) -> None:
    """Refuse ``random`` reinit for parameters that no initialiser draws afresh."""
    a, b = fresh_draw(model, initializer, 1), fresh_draw(model, initializer, 2)
    stuck = [n for n in names if torch.equal(a[n], b[n])]
    if stuck:
        raise ConfigError(
            f"reinit.mode = 'random' needs a fresh draw of {', '.join(stuck)}, but no "
            "initializer re-draws it (its module has no reset_parameters); give the "
            "module a reset_parameters method, exclude it with prune.exclude, or use "
            "another reinit mode")


def choose_device(want: str) -> torch.device:
    """``train.device`` as a torch device, refusing one this machine does not have."""
    if want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device = {want!r} but CUDA is not available here; "
                          "use device = 'cpu' (or 'auto')")
    if want == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device = 'mps' but MPS is not available; use 'cpu'")
    return torch.device(want)


def prune_settings(prune: PruneConfig) -> dict[str, Any]:
    """``prune`` for a run's identity, without the keys added after runs were stored when
    they are at their defaults: a new setting must not rename the runs made before it."""
    out = prune.to_dict()
    for key in ("structure", "unit_score"):
        if getattr(prune, key) == getattr(PruneConfig(), key):
            out.pop(key)
    return out


def state_sha(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k]
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(tensor_bytes(t))
    return h.hexdigest()


@dataclass
class Plan:
    """Everything a run needs that is derived, before any training starts."""

    device: torch.device
    names: list[str]
    output: list[str]
    groups: list[Group]
    rates: dict[str, float]
    total_steps: int
    rewind_step: int
    span: dict[str, int]
    theta0: dict[str, torch.Tensor]
    structure: Structure | None = None


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
        raise ConfigError(f"prune.criterion = {prune.criterion!r} scores single weights; with "
                          "structure = 'unit' units are scored by prune.unit_score "
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
