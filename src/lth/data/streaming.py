"""User ``torch.utils.data.Dataset`` objects: materialised into tensors when they fit in
memory, streamed item by item otherwise (a :class:`~lth.data.split.StreamedSplit`, defined
in :mod:`lth.data.split` and importable from here as before).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .core import Data, from_arrays
from .split import StreamedSplit, label_tensor, read_item


def _materialise(dataset: Any, split: str, sample: tuple[torch.Tensor, torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every item of one split, stacked; one error naming the split and item whose input
    or label differs in shape or kind from the train dataset's first."""
    xs, ys = [], []
    for i in range(len(dataset)):
        x, y = read_item(dataset, i, split)
        for what, got, first in (("input", x, sample[0]), ("label", y, sample[1])):
            if got.shape != first.shape or got.dtype != first.dtype:
                raise DataError(
                    f"the {what} of item {i} of the {split} dataset is "
                    f"{str(got.dtype).replace('torch.', '')} {tuple(got.shape)} but that of "
                    f"item 0 of the train dataset is {str(first.dtype).replace('torch.', '')} "
                    f"{tuple(first.shape)}; every {what} must have one shape and kind")
        xs.append(x)
        ys.append(y)
    if not xs:
        return (torch.empty(0, *sample[0].shape, dtype=sample[0].dtype),
                torch.empty(0, *sample[1].shape, dtype=sample[1].dtype))
    return torch.stack(xs), torch.stack(ys)


def _labels(dataset: Any) -> torch.Tensor:
    targets = getattr(dataset, "targets", None)
    # ``targets`` skips loading every item, unless a target_transform would change labels.
    if (targets is not None and len(targets) == len(dataset)
            and getattr(dataset, "target_transform", None) is None):
        return label_tensor(targets, f"the targets of {type(dataset).__name__}")
    return torch.stack([read_item(dataset, i)[1] for i in range(len(dataset))])


def _memory_budget() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def from_dataset(train: Any, test: Any, *, val: Any = None, val_size: float = 0.1,
                 split_seed: int = 0, num_classes: int | None = None, name: str | None = None,
                 stream: bool | None = None, max_bytes: int | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 augment: str = "none") -> Data:
    """:class:`Data` from map-style datasets of ``(input, label)`` items.

    ``stream=None`` materialises every split into tensors when the estimated size is at
    most ``max_bytes`` (default: a quarter of physical memory) and streams otherwise.
    """
    splits = {"train": train, "test": test, **({"val": val} if val is not None else {})}
    for key, ds in splits.items():
        if not hasattr(ds, "__getitem__") or not hasattr(ds, "__len__"):
            raise DataError(f"the {key} dataset ({type(ds).__name__}) is not map-style "
                            "(needs __len__ and __getitem__)")
        if len(ds) == 0 and key != "val":
            raise DataError(f"the {key} dataset is empty")
    sample = read_item(train, 0)
    est = sum(len(ds) for ds in splits.values()) * sample[0].numel() * sample[0].element_size()
    if stream is None:
        stream = est > (max_bytes if max_bytes is not None else _memory_budget())
    kwargs = {"val_size": val_size, "split_seed": split_seed, "num_classes": num_classes,
              "name": name or type(train).__name__,
              "mean": None if mean is None else tuple(np.ravel(mean)),
              "std": None if std is None else tuple(np.ravel(std)), "augment": augment}
    if not stream:
        pairs = {k: _materialise(ds, k, sample) for k, ds in splits.items()}
        xs = {k: v[0] for k, v in pairs.items()}
        ys = {k: v[1] for k, v in pairs.items()}
        return from_arrays(xs["train"], ys["train"], xs["test"], ys["test"],
                           x_val=xs.get("val"), y_val=ys.get("val"), **kwargs)
    xs = {k: StreamedSplit(ds) for k, ds in splits.items()}
    ys = {k: _labels(ds) for k, ds in splits.items()}
    return from_arrays(xs["train"], ys["train"], xs["test"], ys["test"],
                       x_val=xs.get("val"), y_val=ys.get("val"), **kwargs)


__all__ = ["StreamedSplit", "from_dataset"]
