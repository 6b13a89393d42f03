"""Fully connected networks: a ReLU MLP of any widths, and LeNet-300-100."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from ..errors import ConfigError
from .registry import register_model


@register_model
def mlp(*, input_shape: Sequence[int], num_classes: int,
        hidden: Sequence[int] = (300, 100)) -> nn.Module:
    """Fully connected ReLU network on flattened inputs."""
    if isinstance(hidden, int | str) or not all(
            isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden):
        raise ConfigError(f"model.hidden = {hidden!r}; expected a list of positive layer "
                          "widths, e.g. hidden = [300, 100]")
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU()]
        width = int(h)
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@register_model
def lenet_300_100(*, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """LeNet-300-100 of Frankle & Carbin (2019): fc 300, 100, classes."""
    return mlp(input_shape=input_shape, num_classes=num_classes, hidden=(300, 100))

__all__ = ["lenet_300_100", "mlp"]
