"""scikit-learn's handwritten digits (1,797 8×8 images, 10 classes): the embedded default."""

from __future__ import annotations

import torch

from .core import Data, from_arrays

# Fixed test split so every run on "digits" sees the same test set.
_TEST_SIZE = 360
_TEST_SEED = 1234


def load_digits(*, val_size: float = 0.1, split_seed: int = 0, augment: str = "auto") -> Data:
    """Digits as (N, 1, 8, 8) float images, standardised by the training set's mean/std."""
    from sklearn.datasets import load_digits as sk_load

    bunch = sk_load()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(_TEST_SEED))
    test, train = perm[:_TEST_SIZE].sort().values, perm[_TEST_SIZE:].sort().values
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    return from_arrays(x[train], y[train], x[test], y[test], val_size=val_size,
                       split_seed=split_seed, num_classes=10, name="digits",
                       augment="none" if augment == "auto" else augment)
