"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 as in-memory uint8 tensors.

Images stay uint8 (a quarter of float32's memory) and are normalised per batch with each
dataset's standard per-channel mean/std of its training set. A validation split is held
out of the training set with a seeded permutation (the paper holds out 5,000 MNIST images:
``val_size = 5000``). ``augment = "auto"`` means random crop + flip for CIFAR, none else.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .core import Data, from_arrays
from .formats import read_cifar, read_idx
from .sources import RemoteFile, Source, locate

_IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _idx_files(table: str, kind: str) -> tuple[RemoteFile, ...]:
    """RemoteFiles from "name digest" lines; the un-gzipped name is accepted locally too."""
    pairs = dict(line.split() for line in table.strip().splitlines())
    return tuple(RemoteFile(n, **{kind: pairs[n]}, alternatives=(n[:-3],)) for n in _IDX_NAMES)


_MNIST_SHA256 = """
train-images-idx3-ubyte.gz 440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609
train-labels-idx1-ubyte.gz 3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c
t10k-images-idx3-ubyte.gz  8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6
t10k-labels-idx1-ubyte.gz  f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6
"""
# Zalando publishes MD5 digests only for Fashion-MNIST's files.
_FASHION_MD5 = """
train-images-idx3-ubyte.gz 8d4fb7e6c68d591d4c3dfef9ec88bf0d
train-labels-idx1-ubyte.gz 25c81989df183df01b3e8a0aad5dffbe
t10k-images-idx3-ubyte.gz  bef4ecab320f06d8554ea6380940ec79
t10k-labels-idx1-ubyte.gz  bb300cfdad3c16e7a12a480ee83cd310
"""

SOURCES: dict[str, Source] = {
    "mnist": Source("mnist", _idx_files(_MNIST_SHA256, "sha256"),
                    ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                     "https://storage.googleapis.com/cvdf-datasets/mnist/")),
    "fashion_mnist": Source("fashion_mnist", _idx_files(_FASHION_MD5, "md5"), (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        system_dirs=("/usr/share/datasets/fashion-mnist",)),
    "cifar10": Source("cifar10", (RemoteFile(
        "cifar-10-python.tar.gz",
        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        alternatives=("cifar-10-batches-py",)),), ("https://www.cs.toronto.edu/~kriz/",)),
    "cifar100": Source("cifar100", (RemoteFile(
        "cifar-100-python.tar.gz",
        sha256="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
        alternatives=("cifar-100-python",)),), ("https://www.cs.toronto.edu/~kriz/",)),
}

# Per-channel mean/std of each training set, on pixels scaled to [0, 1].
NORMALISATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _augment(value: str, default: str) -> str:
    return default if value == "auto" else value


def _idx_dataset(key: str, *, val_size: float, split_seed: int, root: str | Path | None,
                 download: bool, augment: str) -> Data:
    paths = locate(SOURCES[key], root, download_missing=download)
    x_tr, y_tr, x_te, y_te = (read_idx(paths[n]) for n in _IDX_NAMES)
    for x, y, split in ((x_tr, y_tr, "train"), (x_te, y_te, "t10k")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{key} {split} files disagree: images {x.shape}, labels {y.shape}; "
                            "delete them so that they are downloaded again")
    mean, std = NORMALISATION[key]
    return from_arrays(x_tr[:, None], y_tr, x_te[:, None], y_te, val_size=val_size,
                       split_seed=split_seed, num_classes=10, name=key, mean=mean, std=std,
                       augment=_augment(augment, "none"))


def load_mnist(*, val_size: float = 5000, split_seed: int = 0, root: str | Path | None = None,
               download: bool = True, augment: str = "auto") -> Data:
    """MNIST (60k/10k 28×28 digits)."""
    return _idx_dataset("mnist", val_size=val_size, split_seed=split_seed, root=root,
                        download=download, augment=augment)


def load_fashion_mnist(*, val_size: float = 5000, split_seed: int = 0,
                       root: str | Path | None = None, download: bool = True,
                       augment: str = "auto") -> Data:
    """Fashion-MNIST (60k/10k 28×28 clothing images); Debian's copy is found if installed."""
    return _idx_dataset("fashion_mnist", val_size=val_size, split_seed=split_seed, root=root,
                        download=download, augment=augment)


def _cifar(key: str, members: dict[str, list[str]], label_key: str, num_classes: int, *,
           val_size: float, split_seed: int, root: str | Path | None, download: bool,
           augment: str) -> Data:
    (path,) = locate(SOURCES[key], root, download_missing=download).values()
    splits = read_cifar(path, members, label_key)
    mean, std = NORMALISATION[key]
    return from_arrays(*splits["train"], *splits["test"], val_size=val_size,
                       split_seed=split_seed, num_classes=num_classes, name=key, mean=mean,
                       std=std, augment=_augment(augment, "crop_flip"))


def load_cifar10(*, val_size: float = 5000, split_seed: int = 0,
                 root: str | Path | None = None, download: bool = True,
                 augment: str = "auto") -> Data:
    """CIFAR-10 (50k/10k 32×32 colour images, 10 classes)."""
    folder = "cifar-10-batches-py"
    members = {"train": [f"{folder}/data_batch_{i}" for i in range(1, 6)],
               "test": [f"{folder}/test_batch"]}
    return _cifar("cifar10", members, "labels", 10, val_size=val_size, split_seed=split_seed,
                  root=root, download=download, augment=augment)


def load_cifar100(*, val_size: float = 5000, split_seed: int = 0,
                  root: str | Path | None = None, download: bool = True,
                  augment: str = "auto") -> Data:
    """CIFAR-100 (50k/10k 32×32 colour images, 100 fine classes)."""
    folder = "cifar-100-python"
    members = {"train": [f"{folder}/train"], "test": [f"{folder}/test"]}
    return _cifar("cifar100", members, "fine_labels", 100, val_size=val_size,
                  split_seed=split_seed, root=root, download=download, augment=augment)
