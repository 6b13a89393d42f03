"""Reading what lth 0.1 wrote (store format 1: plain JSON, tensor files without digests) and
rewriting it in this store's format, for :mod:`lth.experiment.migrate`, which works out
the runs' new identities. The bytes of the tensors do not change."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .layout import CHECKPOINT, CONFIG, EARLYBIRD, HISTORY, REWIND, SUMMARY, THETA0, TRIALS
from .run import RunDir

_LEVEL_TENSORS = ("mask", "start", "final")


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def read_config(directory: Path) -> dict[str, Any]:
    """The plain-JSON config of a format-1 run or group."""
    return _json(Path(directory) / CONFIG)


def read_trials(gdir: Path) -> dict[str, Any]:
    """The plain-JSON ``trials.json`` of a format-1 group."""
    return _json(Path(gdir) / TRIALS)


def _tensors(path: Path) -> tuple[dict, dict | None]:
    from safetensors.torch import load

    raw = path.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    meta = header.get("__metadata__", {}).get("json")
    return load(raw), (json.loads(meta) if meta else None)


def mask_digests(run: Path) -> dict[str, str]:
    """``level_NNN`` -> SHA-256 of that level's mask file: what matches a run that reused
    another's masks to its source."""
    return {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in Path(run).glob(f"level_*/{_LEVEL_TENSORS[0]}.safetensors")}


def rewrite_files(directory: Path) -> list[dict[str, Any]]:
    """Rewrite every file of a format-1 run with its digest, each finished level with a
    summary that lists them (written last); returns the levels' summaries (for the run's
    ``levels.csv``). The config is left to the caller (it carries the new identity)."""
    run = RunDir(directory)
    if run.file(THETA0).exists():
        run.save_theta0(_tensors(run.file(THETA0))[0])
    if run.file(REWIND).exists():
        run.save_rewind_point(_tensors(run.file(REWIND))[0])
    summaries = []
    for lv in run.level_numbers():
        level = run.level(lv)
        if level.file(CHECKPOINT).exists():
            tensors, meta = _tensors(level.file(CHECKPOINT))
            level.checkpoint().save(tensors, meta or {})
        files = {}
        for stem in _LEVEL_TENSORS:
            name = f"{stem}.safetensors"
            if level.file(name).exists():
                files[name] = level.save(stem, _tensors(level.file(name))[0])
        if level.file(HISTORY).exists():
            files[HISTORY] = level.write_history(_json(level.file(HISTORY)))
        if level.file(EARLYBIRD).exists():
            files[EARLYBIRD] = level.write(EARLYBIRD, _json(level.file(EARLYBIRD)))
        if level.file(SUMMARY).exists():
            summary = _json(level.file(SUMMARY))
            level.commit(summary, files)
            summaries.append(summary)
    return summaries
