"""A group's directory (session / robust): its identity and ``trials.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .files import Damaged, read_record, write_record
from .layout import TRIALS
from .run import RunDir


def group_dir(store: str | Path, name: str, kind: str, identity: dict[str, Any],
              info: dict[str, Any]) -> Path:
    """A session's or robust run's directory (created if new; checked if it exists)."""
    return RunDir.open(store, f"{name}-{kind}", identity, {"kind": kind, **info}).path


class Trials:
    """A group's ``trials.json``: the status of every trial. Run directories are stored
    relative to the group directory; write it only while holding the group's lock."""

    def __init__(self, gdir: Path):
        self.gdir = Path(gdir)
        self.path = self.gdir / TRIALS

    def read(self) -> dict[str, dict[str, Any]]:
        """The trials' entries; a missing or damaged file reads as none (the driver
        rebuilds it from the trials' run directories)."""
        try:
            entries = read_record(self.path).get("trials")
        except Damaged:
            return {}
        if not isinstance(entries, dict):
            return {}
        return {k: v for k, v in entries.items() if isinstance(v, dict)}

    def write(self, entries: dict[str, dict[str, Any]]) -> None:
        write_record(self.path, {"trials": entries})

    def run_path(self, entry: dict[str, Any]) -> Path | None:
        rel = entry.get("run_dir")
        return self.gdir / rel if isinstance(rel, str) and rel else None

    def relative(self, run_dir: str | Path) -> str:
        return str(Path(run_dir).resolve().relative_to(self.gdir.resolve()))

    def running(self) -> dict[str, int]:
        """Trials whose worker left a pid marker (may be stale: check the pid)."""
        out = {}
        for p in (self.gdir / "running").glob("*.pid"):
            try:
                out[p.stem] = int(p.read_text() or 0)
            except (OSError, ValueError):
                continue
        return out
