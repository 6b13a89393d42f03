"""Checks and identity of ``masks_from``: another run whose masks a run reuses.

A run cannot repair another run: when the source is damaged, the message names the file and
the command that repairs the source (``lth run SOURCE``, which also restores a lost config
from the copy every reusing run keeps)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, LTHError
from ..store import Damaged, RunDir, legacy_format


def repair_hint(run: RunDir) -> str:
    """How to recompute a run's damaged files: ``lth run RUN_DIR`` for a run made from a
    config file (or whose config a reusing run keeps); the script that made it otherwise."""
    try:
        made_from_config = "experiment" in run.config()
    except LTHError:
        made_from_config = "experiment" in (run.kept_config() or {})
    if made_from_config:
        return f"`lth run {run.path}`"
    return f"re-run the script that made {run.path} (same store)"


def check_masks_source(source: Path, names: list[str], sizes: dict[str, int],
                       n_levels: int) -> RunDir:
    """Refuse a source that is not a run, has other parameters, or lacks a level's mask."""
    src = RunDir(source)
    if legacy_format(source):
        raise ConfigError(f"masks_from = {str(source)!r} was made by lth 0.1 (store format 1);"
                          f" run `lth migrate {source.parent}` first")
    try:
        cfg = src.config()
    except Damaged as exc:
        if src.kept_config() is not None:
            raise ConfigError(f"the run whose masks this one reuses is damaged: {exc}; repair "
                              f"it first ({repair_hint(src)}, which restores the config from "
                              "the copy this store keeps), then run this again") from None
        if not src.path.is_dir() or exc.problem == "is missing":
            raise ConfigError(f"masks_from = {str(source)!r} is not a run directory (no "
                              "config.json); give the directory `lth run FILE` printed") \
                from None
        raise ConfigError(f"masks_from = {str(source)!r} is not a usable run directory "
                          f"({exc}); give another run, or re-run the command that made it") \
            from None
    theirs = cfg.get("prunable", {})
    if list(theirs) != names or any(theirs[n] != sizes[n] for n in names):
        raise ConfigError(f"masks_from = {str(source)!r} was made with other prunable "
                          f"parameters ({list(theirs)[:4]}...) than this model "
                          f"({names[:4]}...); use a run of the same architecture")
    theirs_levels = cfg.get("n_levels", n_levels)
    if theirs_levels < n_levels:
        extend = (f"`lth run {source} --set n_levels={n_levels}`" if "experiment" in cfg else
                  f"re-run the script that made {source} with {n_levels} levels")
        raise ConfigError(f"masks_from = {str(source)!r} has {theirs_levels} levels, this run "
                          f"asks for {n_levels}; lower n_levels, or extend that run first "
                          f"({extend})")
    for level in range(1, n_levels + 1):
        try:
            src.level(level).summary()
        except Damaged as exc:
            unfinished = exc.problem == "is missing" and not src.verify(deep=False)
            raise ConfigError(
                f"the run whose masks this one reuses has not finished level {level} "
                f"({exc.path} {exc.problem}); finish it first ({repair_hint(src)}), then run "
                "this again" if unfinished else
                f"the run whose masks this one reuses is damaged: {exc}; repair it first "
                f"({repair_hint(src)}), then run this again") from None
    return src


def source_ids(src: RunDir) -> dict[str, str]:
    """What a reusing run's identity holds of its source: the source's own identities
    (its masks are a function of them), not its path."""
    cfg = src.config()
    return {"run_id": cfg["run_id"], "experiment_id": cfg["experiment_id"]}
