"""On-disk dataset formats, parsed strictly and without executing anything.

- IDX (MNIST, Fashion-MNIST): magic ``00 00 <type> <ndim>``, big-endian uint32 sizes,
  then the data; optionally gzipped.
- CIFAR-10/100 "python version": a tar.gz of pickled dicts holding a uint8 ``data`` array
  (N, 3072) and ``labels`` / ``fine_labels``. The pickles are read by an unpickler that
  can only rebuild numpy arrays: any other object in the stream is an error.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _fix(path: Path, problem: str) -> DataError:
    return DataError(f"{path} {problem}; delete it so that it is downloaded again, or put an "
                     "intact copy in its place")


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (``.gz`` or raw) into a numpy array of its declared shape."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise _fix(path, f"cannot be read or decompressed ({exc})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_TYPES:
        raise _fix(path, f"is not an IDX file (starts with {raw[:4].hex() or 'nothing'})")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise _fix(path, "is truncated inside its header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    need = math.prod(dims) * dtype.itemsize  # Python ints: no 64-bit wrap-around
    if len(raw) - start != need:
        raise _fix(path, f"holds {len(raw) - start} data bytes but its header {dims} needs "
                         f"{need} (truncated or corrupt)")
    return np.frombuffer(raw, dtype, offset=start).reshape(dims).astype(dtype.newbyteorder("="))


class _ArraysOnly(pickle.Unpickler):
    """Rebuilds numpy arrays and plain containers; refuses every other global."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray",
               "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("_codecs", "encode")}  # protocol-2 pickles spell bytes via codecs.encode

    def find_class(self, module: str, name: str):  # noqa: D401
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def load_pickle_batch(raw: bytes, where: str) -> dict:
    """One CIFAR batch: a dict with str keys (the files' byte keys decoded)."""
    try:
        obj = _ArraysOnly(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # anything malformed or disallowed in the stream
        raise DataError(f"{where} is not a valid CIFAR batch ({exc}); delete it so that it is "
                        "downloaded again") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where} does not hold a dict of arrays; is it a CIFAR batch?")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _batch_arrays(batch: dict, label_key: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except KeyError as exc:
        raise DataError(f"{where} lacks the key {exc}; is it the right CIFAR version?") from None
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where} holds data that are not uint8 pixels and integer labels "
                        f"({exc}); delete it so that it is downloaded again") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(f"{where}: data shape {data.shape} with {len(labels)} labels; expected "
                        "(N, 3072) with N labels")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar(archive_or_dir: str | Path, members: dict[str, list[str]], label_key: str
               ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read the listed batches per split from the tar.gz (in memory) or an extracted folder.

    ``members``: split -> batch paths inside the archive, e.g.
    ``{"train": ["cifar-10-batches-py/data_batch_1", ...], "test": [...]}``.
    """
    source = Path(archive_or_dir)
    raws: dict[str, bytes] = {}
    wanted = [m for ms in members.values() for m in ms]
    if source.is_dir():
        for m in wanted:
            for candidate in (source / m, source / Path(m).name):
                if candidate.is_file():
                    raws[m] = candidate.read_bytes()
                    break
    else:
        try:
            with tarfile.open(source, "r:gz") as tar:
                for m in wanted:
                    try:
                        f = tar.extractfile(m)
                    except KeyError:
                        continue
                    if f is not None:
                        raws[m] = f.read()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise _fix(source, f"is not a readable tar.gz ({exc})") from None
    missing = [m for m in wanted if m not in raws]
    if missing:
        raise _fix(source, f"lacks {', '.join(missing)}")
    out = {}
    for split, ms in members.items():
        parts = [_batch_arrays(load_pickle_batch(raws[m], f"{source}:{m}"), label_key,
                               f"{source}:{m}") for m in ms]
        out[split] = (np.concatenate([p[0] for p in parts]),
                      np.concatenate([p[1] for p in parts]))
    return out
