"""Checks and identity of ``masks_from``: another run whose masks a run reuses."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..store import Damaged, RunDir, legacy_format


def check_masks_source(source: Path, names: list[str], sizes: dict[str, int],
                       n_levels: int) -> RunDir:
    """Refuse a source that is not a run, has other parameters, or lacks a level's mask."""
    src = RunDir(source)
    if not src.has_config():
        raise ConfigError(f"masks_from = {str(source)!r} is not a run directory (no "
                          "config.json); give the directory printed by `lth run`")
    if legacy_format(source):
        raise ConfigError(f"masks_from = {str(source)!r} was made by lth 0.1 (store format 1);"
                          f" run `lth migrate {source.parent}` first")
    try:
        cfg = src.config()
    except Damaged as exc:
        raise ConfigError(f"masks_from = {str(source)!r} is not a usable run directory "
                          f"({exc.problem}); give the directory printed by `lth run`") from None
    theirs = cfg.get("prunable", {})
    if list(theirs) != names or any(theirs[n] != sizes[n] for n in names):
        raise ConfigError(f"masks_from = {str(source)!r} was made with other prunable "
                          f"parameters ({list(theirs)[:4]}...) than this model "
                          f"({names[:4]}...); use a run of the same architecture")
    missing = [lv for lv in range(1, n_levels + 1) if not src.level(lv).finished()]
    if missing:
        raise ConfigError(f"masks_from = {str(source)!r} has no finished levels {missing}; "
                          "finish (or repair) that run first, or lower n_levels")
    return src


def source_ids(src: RunDir) -> dict[str, str]:
    """What a reusing run's identity holds of its source: the source's own identities
    (its masks are a function of them), not its path."""
    cfg = src.config()
    return {"run_id": cfg["run_id"], "experiment_id": cfg["experiment_id"]}
