"""What a run derives before training (its plan), and small helpers of ``LotteryModel``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import UNIT_SCORES, PruneConfig
from ..errors import ConfigError, ModelError
from ..pruning import Group, Structure, check_final_counts, make_groups, resolve_rates
from ..state import tensor_bytes


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
    rates = resolve_rates(prune, structure.producers, kinds, [], n_levels, units)
    groups = make_groups(prune.scope, rates, units)
    check_final_counts(groups, prune.schedule, n_levels)
    if prune.unit_score == "bn_gamma":
        structure.scores({k: v for k, v in model.state_dict().items()}, "bn_gamma")  # checks
    return structure, rates, groups
