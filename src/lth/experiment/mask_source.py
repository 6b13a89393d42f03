"""Checks and identity of ``masks_from``: another run whose masks a run reuses."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import ConfigError
from ..store import RunDir


def check_masks_source(source: Path, names: list[str], sizes: dict[str, int],
                       n_levels: int) -> None:
    """Refuse a source that is not a run, has other parameters, or lacks a level's mask."""
    if not (source / "config.json").is_file():
        raise ConfigError(f"masks_from = {str(source)!r} is not a run directory (no "
                          "config.json); give the directory printed by `lth run`")
    src = RunDir(source)
    theirs = src.config().get("prunable", {})
    if list(theirs) != names or any(theirs[n] != sizes[n] for n in names):
        raise ConfigError(f"masks_from = {str(source)!r} was made with other prunable "
                          f"parameters ({list(theirs)[:4]}...) than this model "
                          f"({names[:4]}...); use a run of the same architecture")
    missing = [lv for lv in range(1, n_levels + 1)
               if not src.file("mask.safetensors", lv).exists()]
    if missing:
        raise ConfigError(f"masks_from = {str(source)!r} has no masks for levels {missing}; "
                          "finish that run first or lower n_levels")


def masks_identity(source: Path, n_levels: int) -> dict[str, str]:
    """SHA-256 of each level's mask file: the source's content, not its path, names a run."""
    src = RunDir(source)
    return {str(lv): hashlib.sha256(src.file("mask.safetensors", lv).read_bytes()).hexdigest()
            for lv in range(1, n_levels + 1)}
