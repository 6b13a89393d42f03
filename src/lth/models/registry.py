"""The model registry: :data:`MODELS`, filled by ``@register_model`` in the modules that
define models, and :func:`create_model`, the one way to build one by name.

Builders take ``input_shape`` and ``num_classes`` (filled from the data) plus options.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ..errors import ConfigError, did_you_mean
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
    return [(f"{key}", f"unknown option for model {name!r}" + did_you_mean(
                key, params, then=f"options: {', '.join(params) or '(none)'}"))
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
                          f"see help(lth.models.MODELS[{name!r}])") from None


__all__ = ["MODELS", "ModelBuilder", "check_options", "create_model", "register_model"]
