"""In-memory datasets: one tensor per split, batches are index slices."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..state import tensor_bytes
from .split import StreamedSplit, as_input, as_labels

AUGMENTATIONS = ("none", "crop_flip")


@dataclass(frozen=True)
class Data:
    """Train/validation/test tensors and how a batch of them is prepared.

    ``x`` is float, or uint8 (images kept at a quarter of the memory): a uint8 batch is
    scaled to [0, 1] and normalised per channel by ``mean``/``std`` when it is used.
    ``augment = "crop_flip"`` applies seeded random crops (4-pixel padding) and horizontal
    flips to training batches. Other inputs keep their kind: integers (token ids for
    ``nn.Embedding``) stay int64, booleans bool, other floats become float32. ``y`` holds
    what the task needs: int64 class indices (``num_classes`` of them) or token ids, float32
    targets (``num_classes``: how many per example).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    name: str = "data"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    augment: str = "none"
    _stats: dict = field(default_factory=dict, compare=False, repr=False)
    _copies: dict = field(init=False, default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTATIONS:
            raise DataError(f"augment={self.augment!r}; allowed: {', '.join(AUGMENTATIONS)}")
        if self.augment == "crop_flip" and len(self.x_train.shape) != 4:
            raise DataError(f"augment='crop_flip' needs images (N, C, H, W); x_train has shape "
                            f"{tuple(self.x_train.shape)}")
        if (self.mean is None) != (self.std is None):
            raise DataError("give both mean and std for normalisation, or neither")
        if self.mean is not None:
            self._check_normalisation()

    def _check_normalisation(self) -> None:
        try:
            mean = tuple(float(v) for v in np.ravel(self.mean))
            std = tuple(float(v) for v in np.ravel(self.std))
        except (TypeError, ValueError):
            raise DataError(f"mean={self.mean!r}, std={self.std!r}: give sequences of "
                            "numbers, one per channel") from None
        if self.x_train.dtype != torch.uint8:
            raise DataError("mean/std normalise uint8 images (scaled to [0, 1] first); your "
                            f"x is {self.x_train.dtype}: normalise it yourself, or pass uint8")
        channels = self.x_train.shape[1] if len(self.x_train.shape) > 1 else 1
        if len(mean) != len(std) or len(mean) not in (1, channels):
            raise DataError(f"mean has {len(mean)} values and std {len(std)}; give 1 or one "
                            f"per channel ({channels})")
        if any(v <= 0 for v in std):
            raise DataError(f"std={std}: every value must be > 0")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device: str | torch.device) -> Data:
        """This data on ``device``. The copy is kept with this object, so trials of one
        process that move the same data to a GPU share one copy (and can train stacked)."""
        device = torch.empty(0, device=device).device  # resolved: "cuda" is "cuda:0" here
        if device not in self._copies:
            moved = replace(self, **{k: getattr(self, k).to(device) for k in _SPLITS})
            if all(getattr(moved, k) is getattr(self, k) for k in _SPLITS):
                return moved  # already there: nothing to keep
            self._copies[device] = moved
        return self._copies[device]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_copies": {}}  # device copies stay in their process

    def __repr__(self) -> str:  # sizes and kinds, not the tensors' values
        x, y = self.x_train, self.y_train
        kind = str(x.dtype).removeprefix("torch.")
        labels = f"{self.num_classes} classes" if not y.is_floating_point() else \
            f"{self.num_classes} targets"
        extra = f", augment={self.augment!r}" if self.augment != "none" else ""
        return (f"Data({self.name!r}: train {len(y)}, val {len(self.y_val)}, test "
                f"{len(self.y_test)}; inputs {tuple(x.shape[1:])} {kind}, {labels}{extra})")

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """A batch as the model sees it: uint8 scaled to [0, 1], then normalised."""
        if x.dtype != torch.uint8:
            return x
        x = x.float().div_(255.0)
        if self.mean is None:
            return x
        key = (x.device, x.dim(), self.mean, self.std)  # a replace() shares this cache
        if key not in self._stats:  # per-channel constants, cached per device
            shape = (-1,) + (1,) * (x.dim() - 2)
            self._stats[key] = (torch.tensor(self.mean, device=x.device).view(shape),
                                torch.tensor(self.std, device=x.device).view(shape))
        mean, std = self._stats[key]
        return x.sub_(mean).div_(std)

    def identity(self) -> str:
        """SHA-256 of every split's shape, dtype and bytes: what identifies the data in a run."""
        h = hashlib.sha256(f"{self.name}:{self.num_classes}:{self.mean}:{self.std}:"
                           f"{self.augment}".encode())
        for key in _SPLITS:
            t = getattr(self, key)
            h.update(f"{key}:{tuple(t.shape)}:{t.dtype}".encode())
            h.update(t.fingerprint() if isinstance(t, StreamedSplit) else tensor_bytes(t))
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "num_classes": self.num_classes,
                "input_shape": list(self.input_shape), "n_train": len(self.y_train),
                "n_val": len(self.y_val), "n_test": len(self.y_test),
                "dtype": str(self.x_train.dtype).replace("torch.", ""),
                "mean": self.mean, "std": self.std, "augment": self.augment}


_SPLITS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def _as_tensor(value: Any, key: str, *, labels: bool) -> torch.Tensor:
    if isinstance(value, StreamedSplit):
        return value
    try:
        t = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{key} cannot be turned into a tensor ({exc}); "
                        "pass a numpy array or torch tensor") from None
    return as_labels(t, key) if labels else as_input(t, key)


def split_validation(x: torch.Tensor, y: torch.Tensor, val_size: float, seed: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hold out ``val_size`` (a fraction < 1, or a count) of (x, y), chosen by ``seed``."""
    n = len(y)
    n_val = int(round(val_size * n)) if val_size < 1 else int(val_size)
    if not 0 <= n_val < n:
        raise DataError(f"val_size={val_size} leaves no training data out of {n} examples; "
                        "use a smaller fraction or count")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, train = perm[:n_val].sort().values, perm[n_val:].sort().values
    if isinstance(x, StreamedSplit):
        return x.take(train), y[train], x.take(val), y[val]
    return x[train], y[train], x[val], y[val]


def _one_hot(labels: torch.Tensor) -> bool:
    """Integer rows with a single 1 and 0 elsewhere: classes in the one-hot form that a
    classification task cannot read (token ids and float multilabel targets pass)."""
    return (labels.dim() == 2 and labels.shape[1] > 1 and not labels.is_floating_point()
            and len(labels) > 0 and bool(((labels == 0) | (labels == 1)).all())
            and bool((labels.sum(1) == 1).all()))


def from_arrays(x_train: Any, y_train: Any, x_test: Any, y_test: Any, *,
                x_val: Any = None, y_val: Any = None, val_size: float = 0.1,
                split_seed: int = 0, num_classes: int | None = None,
                name: str = "arrays", mean: tuple[float, ...] | None = None,
                std: tuple[float, ...] | None = None, augment: str = "none") -> Data:
    """Build :class:`Data` from arrays/tensors; a validation split is held out of training
    data unless ``x_val``/``y_val`` are given.

    >>> import numpy as np
    >>> d = from_arrays(np.zeros((10, 3)), np.arange(10) % 2, np.ones((4, 3)), [0, 1, 0, 1])
    >>> len(d.y_train), len(d.y_val), d.num_classes
    (9, 1, 2)
    """
    xs = {"x_train": x_train, "x_test": x_test}
    ys = {"y_train": y_train, "y_test": y_test}
    if (x_val is None) != (y_val is None):
        raise DataError("give both x_val and y_val, or neither")
    if x_val is not None:
        xs["x_val"], ys["y_val"] = x_val, y_val
    t = {k: _as_tensor(v, k, labels=False) for k, v in xs.items()}
    t.update({k: _as_tensor(v, k, labels=True) for k, v in ys.items()})
    for split in ("train", "test", "val"):
        if f"x_{split}" in t and len(t[f"x_{split}"]) != len(t[f"y_{split}"]):
            raise DataError(f"x_{split} has {len(t[f'x_{split}'])} examples but y_{split} has "
                            f"{len(t[f'y_{split}'])}; they must match")
    if len(t["y_train"]) == 0:
        raise DataError("y_train is empty; training needs at least one example")
    if t["x_train"].dtype != t["x_test"].dtype:
        raise DataError(f"x_train is {t['x_train'].dtype} but x_test is {t['x_test'].dtype}; "
                        "give every split the same dtype (uint8 images or floats)")
    if t["x_train"].shape[1:] != t["x_test"].shape[1:]:
        raise DataError(f"x_train examples have shape {tuple(t['x_train'].shape[1:])} but "
                        f"x_test examples {tuple(t['x_test'].shape[1:])}; they must match")
    if "x_val" in t and (t["x_val"].dtype != t["x_train"].dtype
                         or t["x_val"].shape[1:] != t["x_train"].shape[1:]):
        raise DataError(f"x_val is {t['x_val'].dtype} {tuple(t['x_val'].shape[1:])} per example "
                        f"but x_train is {t['x_train'].dtype} {tuple(t['x_train'].shape[1:])}; "
                        "they must match")
    if "x_val" not in t:
        t["x_train"], t["y_train"], t["x_val"], t["y_val"] = split_validation(
            t["x_train"], t["y_train"], val_size, split_seed)
    shapes = {k: tuple(t[k].shape[1:]) for k in ("y_train", "y_val", "y_test")}
    if len({shapes[k] for k in shapes if len(t[k])}) > 1 or len(
            {t[k].dtype for k in shapes}) > 1:
        raise DataError("the splits' labels differ in shape or kind: " + ", ".join(
            f"{k} {str(t[k].dtype).replace('torch.', '')} {tuple(t[k].shape)}" for k in shapes)
            + "; give every split the same kind of labels (one-hot rows for classes? pass "
            "class indices, y.argmax(1))")
    labels = torch.cat([t["y_train"], t["y_val"], t["y_test"]])
    if _one_hot(labels):
        raise DataError(f"y_train holds one-hot rows {tuple(t['y_train'].shape)}; pass class "
                        "indices (y.argmax(1)), or floats (y.float()) if these are 0/1 "
                        "targets of a multilabel task")
    if labels.is_floating_point():  # targets: as many outputs as values per example
        num_classes = num_classes or (int(labels[0].numel()) if labels.numel() else 1)
    else:
        seen = int(labels.max()) + 1 if labels.numel() else 0
        if num_classes is None:
            num_classes = seen
        if labels.numel() and (int(labels.min()) < 0 or seen > num_classes):
            raise DataError(f"labels range over [{int(labels.min())}, {seen - 1}] but "
                            f"num_classes={num_classes}; labels must be 0..num_classes-1")
    return Data(**t, num_classes=num_classes, name=name, mean=mean, std=std, augment=augment)
