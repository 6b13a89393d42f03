"""What a split stores: tensors of the kinds every split keeps (:func:`as_input`,
:func:`as_labels`), or a :class:`StreamedSplit` standing in for an ``x`` tensor.

A :class:`StreamedSplit` reads a user ``torch.utils.data.Dataset``: indexing it with a
batch of indices (or a slice) loads and stacks just those items, so the trainer and
evaluator work unchanged; it is slower than in-memory tensors and meant for data that
cannot fit. Both :mod:`lth.data.core` (``Data``) and :mod:`lth.data.streaming`
(``from_dataset``) build on this module.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..state import tensor_bytes


def as_input(t: torch.Tensor, where: str) -> torch.Tensor:
    """An input tensor as every split stores it, in memory or streamed: uint8 (images) and
    other integers (token ids, as int64) and bool kept, floats as float32."""
    if t.dtype == torch.uint8 or t.dtype == torch.bool:
        return t
    if t.is_complex():
        raise DataError(f"{where} is complex ({t.dtype}); give real numbers")
    if not t.is_floating_point():
        return t.long()
    t = t.float()
    if not bool(torch.isfinite(t).all()):
        raise DataError(f"{where} contains NaN or infinite values; clean or impute them first")
    return t


def as_labels(t: torch.Tensor, where: str) -> torch.Tensor:
    """Targets as every split stores them: integers, 1-D booleans and 1-D non-negative
    whole-number floats (class indices) as int64, other numbers and booleans as float32."""
    if t.is_complex():
        raise DataError(f"{where} is complex ({t.dtype}); give real numbers")
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()):
            raise DataError(f"{where} contains NaN or infinite values")
        if t.dim() == 1 and bool(((t == t.round()) & (t >= 0)).all()):
            return t.long()  # class indices given as floats
        return t.float()
    if t.dtype == torch.bool:
        return t.long() if t.dim() == 1 else t.float()  # a binary class, or 0/1 per label
    return t.long()


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


def label_tensor(value: Any, where: str) -> torch.Tensor:
    """A dataset's label (a number, an array, a tensor) as a tensor; float64 as float32."""
    try:
        t = value if torch.is_tensor(value) else torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError):
        raise DataError(f"{where} is {value!r}, not a number or array") from None
    if t.dtype == torch.float64:
        t = t.float()
    return t


def read_item(dataset: Any, i: int, split: str = "train"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Item ``i`` of a map-style ``dataset`` as ``(input, label)`` tensors; ``split`` names
    the dataset in errors."""
    item = dataset[i]
    where = f"item {i} of the {split} dataset ({type(dataset).__name__})"
    if not isinstance(item, tuple | list) or len(item) < 2:
        raise DataError(f"{where} is not an (input, label) pair")
    return (_to_tensor(item[0], f"the input of {where}"),
            label_tensor(item[1], f"the label of {where}"))


class StreamedSplit:
    """Inputs of a dataset, loaded on demand; ``indices`` select a subset of its items."""

    def __init__(self, dataset: Any, indices: torch.Tensor | None = None,
                 device: torch.device | str = "cpu"):
        self.dataset = dataset
        self.indices = torch.arange(len(dataset)) if indices is None else indices
        self.device = torch.device(device)
        first = read_item(dataset, int(self.indices[0]))[0] if len(self.indices) else None
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
        return torch.stack([read_item(self.dataset, i)[0] for i in chosen]).to(self.device)

    def fingerprint(self) -> bytes:
        """Bytes identifying the split: its size and up to 16 evenly spread items."""
        picks = np.linspace(0, len(self) - 1, num=min(16, len(self)), dtype=int)
        h = hashlib.sha256(f"{type(self.dataset).__qualname__}:{len(self)}".encode())
        for i in picks:
            h.update(tensor_bytes(self[torch.tensor([int(i)])]))
        return h.digest()


__all__ = ["StreamedSplit", "as_input", "as_labels", "label_tensor", "read_item"]
