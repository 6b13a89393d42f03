"""Datasets: the embedded digits, user arrays, and a registry by name."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError, unknown_name
from .core import Data, from_arrays, split_validation
from .digits import load_digits

DATASETS: dict[str, Callable[..., Data]] = {"digits": load_digits}


def load_dataset(name: str, *, val_size: float = 0.1, split_seed: int = 0,
                 root: str | None = None) -> Data:
    """A registered dataset by name (see :data:`DATASETS`)."""
    if name not in DATASETS:
        raise ConfigError(unknown_name("dataset", name, DATASETS))
    kwargs = {"val_size": val_size, "split_seed": split_seed}
    if root is not None:
        kwargs["root"] = root
    return DATASETS[name](**kwargs)


__all__ = ["DATASETS", "Data", "from_arrays", "load_dataset", "load_digits",
           "split_validation"]
