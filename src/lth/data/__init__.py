"""Datasets: the embedded digits, MNIST, Fashion-MNIST, CIFAR-10/100, user arrays."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ..errors import ConfigError, explained_os_errors
from ..registry import Registry
from .core import AUGMENTATIONS, Data, from_arrays, split_validation
from .digits import load_digits
from .split import StreamedSplit
from .streaming import from_dataset
from .vision import load_cifar10, load_cifar100, load_fashion_mnist, load_mnist

Loader = Callable[..., Data]
DATASETS: Registry[Loader] = Registry("dataset")


def register_dataset(fn: Loader, *, name: str | None = None, replace: bool = False) -> Loader:
    """Add a loader to :data:`DATASETS` under ``name`` (default: its own name).

    A loader takes any of ``val_size``, ``split_seed``, ``root``, ``download`` and
    ``augment`` as keywords and returns a :class:`Data`; see :func:`load_dataset`.
    """
    return DATASETS.register(fn, name=name, replace=replace)


for _name, _loader in {"digits": load_digits, "mnist": load_mnist,
                       "fashion_mnist": load_fashion_mnist, "cifar10": load_cifar10,
                       "cifar100": load_cifar100}.items():
    register_dataset(_loader, name=_name)
DATASETS.mark_builtin()


@explained_os_errors
def load_dataset(name: str, *, val_size: float | None = None, split_seed: int = 0,
                 root: str | Path | None = None, download: bool = True,
                 augment: str = "auto") -> Data:
    """A registered dataset by name (see :data:`DATASETS`).

    ``val_size=None`` keeps the dataset's own default. Settings a loader does not take
    (``root`` for the embedded digits) are errors.
    """
    loader = DATASETS[name]  # an unknown name: ConfigError with a did-you-mean
    accepted = inspect.signature(loader).parameters
    given = {"val_size": val_size, "split_seed": split_seed, "root": root,
             "download": download, "augment": augment}
    defaults = {"root": None, "download": True, "augment": "auto"}
    unused = [k for k, v in given.items() if k not in accepted and defaults.get(k, v) != v]
    if unused:
        raise ConfigError(f"dataset {name!r} does not use data.{', data.'.join(unused)}; "
                          "remove it")
    kwargs = {k: v for k, v in given.items()
              if k in accepted and not (k == "val_size" and v is None)}
    if not _KEEPING:
        return loader(**kwargs)
    # Inside kept_datasets() (a group's worker), the datasets loaded stay: the next trial
    # (another seed, a control) reuses the tensors instead of reading and decoding the
    # files again, and trials sharing them can train stacked (lth.train.stack_key).
    key = (name, loader, repr(sorted(kwargs.items())))
    if key not in _LOADED:
        while len(_LOADED) >= _KEEP:
            del _LOADED[next(iter(_LOADED))]
        shipped = _SHIPPED.pop((name, _reference(loader), key[2]), None)
        _LOADED[key] = shipped if shipped is not None else loader(**kwargs)
    return _LOADED[key]


@contextlib.contextmanager
def kept_datasets() -> Iterator[None]:
    """Within the block, :func:`load_dataset` reuses what it loaded before in this process
    (the last two datasets), also from earlier blocks: a warm worker's cache. Outside it
    always reads the files (they may have changed)."""
    global _KEEPING
    before, _KEEPING = _KEEPING, True
    try:
        yield
    finally:
        _KEEPING = before


def shared_datasets() -> list[tuple[str, str, str, Data]]:
    """The datasets kept in this process (see :func:`kept_datasets`), for worker processes
    on this machine (:func:`keep_shared`): ``(name, loader, settings, data)`` each. Sent
    through a ``multiprocessing`` pipe, their tensors move to shared memory (torch's
    pickling), so every worker maps the parent's copy instead of decoding the files again.
    Their per-device caches stay here."""
    return [(name, _reference(loader), settings, dataclasses.replace(data, _stats={}))
            for (name, loader, settings), data in _LOADED.items()
            if all(isinstance(getattr(data, k), torch.Tensor) for k in _SPLITS)]


def keep_shared(entries: list[tuple[str, str, str, Data]]) -> None:
    """In a worker: :func:`load_dataset` inside :func:`kept_datasets` takes these (from
    :func:`shared_datasets` in the parent) for the same name, loader and settings."""
    _SHIPPED.update({(name, loader, settings): data for name, loader, settings, data in entries})


def _reference(loader: Loader) -> str:
    # By name, not object: a user's loader is registered in a worker only when a trial
    # restores it, after the datasets arrived.
    return f"{getattr(loader, '__module__', '')}:{getattr(loader, '__qualname__', loader)}"


_KEEP = 2  # datasets kept per process
_KEEPING = False
_LOADED: dict[tuple, Data] = {}
_SHIPPED: dict[tuple[str, str, str], Data] = {}
_SPLITS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


__all__ = ["AUGMENTATIONS", "DATASETS", "Data", "StreamedSplit", "from_arrays", "kept_datasets",
           "from_dataset", "keep_shared", "shared_datasets", "load_cifar10",
           "load_cifar100", "load_dataset", "load_digits", "load_fashion_mnist", "load_mnist",
           "register_dataset", "split_validation"]
