"""Model registry: ``@register_model`` functions; the function's name is the model's name.

Builders take ``input_shape`` and ``num_classes`` (filled from the data) plus options.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ..errors import ConfigError, did_you_mean, unknown_name
from ..registry import Registry

ModelBuilder = Callable[..., nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model")
_FILLED = ("input_shape", "num_classes")


def register_model(fn: ModelBuilder, *, name: str | None = None,
                   replace: bool = False) -> ModelBuilder:
    """Add ``fn`` to :data:`MODELS` under its own name (or ``name``); use as a decorator."""
    return MODELS.register(fn, name=name, replace=replace)


def check_options(name: str, options: dict[str, Any]) -> list[tuple[str, str]]:
    """Problems with ``options`` for model ``name`` (unknown option names)."""
    params = [p for p in inspect.signature(MODELS[name]).parameters if p not in _FILLED]
    return [(f"{key}", f"unknown option for model {name!r}{did_you_mean(key, params)}; "
                       f"options: {', '.join(params) or '(none)'}")
            for key in options if key not in params]


def create_model(name: str, *, input_shape: Sequence[int], num_classes: int,
                 **options: Any) -> nn.Module:
    """Build a registered model.

    >>> create_model("lenet_300_100", input_shape=(1, 28, 28), num_classes=10)[1]
    Linear(in_features=784, out_features=300, bias=True)
    """
    builder = MODELS[name]  # an unknown name: ConfigError with a did-you-mean
    problems = check_options(name, options)
    if problems:
        raise ConfigError("; ".join(f"model.{k}: {m}" for k, m in problems))
    try:
        return builder(input_shape=tuple(input_shape), num_classes=num_classes, **options)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of the builder with these options
        raise ConfigError(f"model {name!r} could not be built with options {options}: {exc}; "
                          f"see help(lth.models.{name})") from None


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


__all__ = ["MODELS", "check_options", "create_model", "register_model", "unknown_name"]

from . import paper  # noqa: E402,F401

MODELS.mark_builtin()
