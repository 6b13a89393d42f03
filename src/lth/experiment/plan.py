"""What a run derives before training (its plan), and small helpers of ``LotteryModel``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError
from ..pruning import Group
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
