"""User ``torch.utils.data.Dataset`` objects: materialised into tensors when they fit in
memory, streamed item by item otherwise.

A :class:`StreamedSplit` stands in for an ``x`` tensor: indexing it with a batch of
indices (or a slice) loads and stacks just those items, so the trainer and evaluator
work unchanged; it is slower than in-memory tensors and meant for data that cannot fit.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..state import tensor_bytes
from .core import Data, as_input, from_arrays


def _to_tensor(x: Any, where: str) -> torch.Tensor:
    if torch.is_tensor(x):
        return as_input(x, where)
    arr = np.asarray(x)  # numpy arrays and PIL images
    if arr.dtype == object:
        raise DataError(f"{where} is a {type(x).__name__}, not an array; give the dataset a "
                        "transform that returns tensors")
    t = torch.from_numpy(arr.copy())
    if t.dtype == torch.uint8 and t.dim() == 3 and t.shape[-1] in (1, 3, 4):
        t = t.permute(2, 0, 1)  # HWC image -> CHW
    elif t.dtype == torch.uint8 and t.dim() == 2:
        t = t.unsqueeze(0)  # grey image -> 1×H×W
    return as_input(t, where)


def _label(value: Any, where: str) -> torch.Tensor:
    try:
        t = value if torch.is_tensor(value) else torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError):
        raise DataError(f"{where} is {value!r}, not a number or array") from None
    if t.dtype == torch.float64:
        t = t.float()
    return t


def _item(dataset: Any, i: int, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    item = dataset[i]
    where = f"item {i} of the {split} dataset ({type(dataset).__name__})"
    if not isinstance(item, tuple | list) or len(item) < 2:
        raise DataError(f"{where} is not an (input, label) pair")
    return _to_tensor(item[0], f"the input of {where}"), _label(item[1], f"the label of {where}")


def _materialise(dataset: Any, split: str, sample: tuple[torch.Tensor, torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every item of one split, stacked; one error naming the split and item whose input
    or label differs in shape or kind from the train dataset's first."""
    xs, ys = [], []
    for i in range(len(dataset)):
        x, y = _item(dataset, i, split)
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


class StreamedSplit:
    """Inputs of a dataset, loaded on demand; ``indices`` select a subset of its items."""

    def __init__(self, dataset: Any, indices: torch.Tensor | None = None,
                 device: torch.device | str = "cpu"):
        self.dataset = dataset
        self.indices = torch.arange(len(dataset)) if indices is None else indices
        self.device = torch.device(device)
        first = _item(dataset, int(self.indices[0]))[0] if len(self.indices) else None
        self.dtype = first.dtype if first is not None else torch.float32
        self.shape = torch.Size([len(self.indices), *(first.shape if first is not None else ())])

    def __len__(self) -> int:
        return len(self.indices)

    def take(self, indices: torch.Tensor) -> StreamedSplit:
        return StreamedSplit(self.dataset, self.indices[indices], self.device)

    def to(self, device: torch.device | str) -> StreamedSplit:
        return StreamedSplit(self.dataset, self.indices, device)

    def __getitem__(self, idx: torch.Tensor | slice) -> torch.Tensor:
        if torch.is_tensor(idx):
            idx = idx.cpu()  # batch indices may live on the training device
        chosen = self.indices[idx].tolist()
        return torch.stack([_item(self.dataset, i)[0] for i in chosen]).to(self.device)

    def fingerprint(self) -> bytes:
        """Bytes identifying the split: its size and up to 16 evenly spread items."""
        picks = np.linspace(0, len(self) - 1, num=min(16, len(self)), dtype=int)
        h = hashlib.sha256(f"{type(self.dataset).__qualname__}:{len(self)}".encode())
        for i in picks:
            h.update(tensor_bytes(self[torch.tensor([int(i)])]))
        return h.digest()


def _labels(dataset: Any) -> torch.Tensor:
    targets = getattr(dataset, "targets", None)
    # ``targets`` skips loading every item, unless a target_transform would change labels.
    if (targets is not None and len(targets) == len(dataset)
            and getattr(dataset, "target_transform", None) is None):
        return _label(targets, f"the targets of {type(dataset).__name__}")
    return torch.stack([_item(dataset, i)[1] for i in range(len(dataset))])


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
    sample = _item(train, 0)
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
