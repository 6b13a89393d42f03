"""Run store: atomic files, safetensors tensors, run directories named by a config hash.

Layout of one run (``<store>/<name>-<hash12>/``)::

    config.json              identity (hashed) + resolved settings (informational)
    theta0.safetensors       initial weights; rewind.safetensors: θk for late rewinding
    level_000/ ...           mask, start and final weights, history.json,
                             summary.json (written last: its presence = level finished),
                             checkpoint.safetensors while the level is training
    levels.csv               one row per finished level
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import StoreError

Tensors = dict[str, torch.Tensor]


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise StoreError(f"{path} is not valid JSON ({exc}); delete it and re-run "
                         "to recompute it") from None


def save_tensors(path: str | Path, tensors: Tensors, meta: dict[str, Any] | None = None
                 ) -> None:
    """Save tensors with safetensors (loading never executes code), atomically."""
    flat = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    metadata = {"json": json.dumps(meta)} if meta is not None else None
    atomic_write_bytes(path, st_save(flat, metadata=metadata))


def load_tensors(path: str | Path) -> tuple[Tensors, dict[str, Any] | None]:
    """Load what :func:`save_tensors` wrote: ``(tensors, meta)``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + header_len])
    except FileNotFoundError:
        raise StoreError(f"{path} is missing; re-run the experiment to recompute it") from None
    except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path} is corrupt or truncated ({exc}); delete it and re-run "
                         "to recompute it") from None
    meta = header.get("__metadata__", {}).get("json")
    return tensors, (json.loads(meta) if meta is not None else None)


def run_hash(identity: dict[str, Any]) -> str:
    """12 hex digits of SHA-256 over the canonical JSON of ``identity``."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


class LevelCheckpoints:
    """The mid-level checkpoint of one level (see :class:`lth.train.loop.Checkpoints`)."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> tuple[Tensors, dict[str, Any]] | None:
        if not self.path.exists():
            return None
        tensors, meta = load_tensors(self.path)
        return tensors, meta or {}

    def save(self, tensors: Tensors, meta: dict[str, Any]) -> None:
        save_tensors(self.path, tensors, meta)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


class RunDir:
    """Paths and file access of one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def open(cls, store: str | Path, name: str, identity: dict[str, Any],
             info: dict[str, Any]) -> RunDir:
        """The run directory for ``identity`` (created if new; verified if it exists)."""
        run = cls(Path(store) / f"{name}-{run_hash(identity)}")
        cfg = run.path / "config.json"
        if cfg.exists():
            saved = read_json(cfg).get("identity")
            if saved != identity:
                raise StoreError(f"{run.path} holds a different experiment than this config "
                                 "(hash collision or edited config.json); use another --store "
                                 "or name")
        else:
            write_json(cfg, {"identity": identity, **info})
        return run

    def config(self) -> dict[str, Any]:
        return read_json(self.path / "config.json")

    def level_dir(self, level: int) -> Path:
        return self.path / f"level_{level:03d}"

    def is_done(self, level: int) -> bool:
        return (self.level_dir(level) / "summary.json").exists()

    def finished_levels(self) -> list[int]:
        return sorted(int(p.parent.name[6:]) for p in self.path.glob("level_*/summary.json"))

    def checkpoints(self, level: int) -> LevelCheckpoints:
        return LevelCheckpoints(self.level_dir(level) / "checkpoint.safetensors")

    def file(self, name: str, level: int | None = None) -> Path:
        return (self.level_dir(level) if level is not None else self.path) / name


__all__ = ["LevelCheckpoints", "RunDir", "atomic_write_bytes", "load_tensors", "read_json",
           "run_hash", "save_tensors", "write_json"]
