"""A group's directory (session / robust): its identity and ``trials.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import StoreError
from .files import Damaged, is_temporary, read_record, write_record
from .layout import TRIALS
from .run import RunDir, store_entries


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

    def problem(self) -> Damaged | None:
        """What is wrong with ``trials.json`` (None: it reads as the driver wrote it)."""
        try:
            entries = read_record(self.path).get("trials")
        except Damaged as exc:
            return exc
        if not isinstance(entries, dict) or not all(
                isinstance(v, dict) and isinstance(v.get("status"), str)
                and isinstance(v.get("run_dir", ""), str) for v in entries.values()):
            return Damaged(self.path, "has fields of the wrong type")
        return None

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


def tidy_group(gdir: Path) -> list[Path]:
    """Remove what interrupted writers left in a group: its own temporary files, and those
    and the stale checkpoints of every trial nobody is running (a trial that runs again
    tidies itself; this covers a group where none does). Call while holding the group's
    lock."""
    trials = Path(gdir) / "trials"
    removed = [p for p in Path(gdir).rglob("*.tmp")
               if is_temporary(p) and trials not in p.parents]
    for p in removed:
        p.unlink(missing_ok=True)
    for d in store_entries(trials) if trials.is_dir() else []:
        run = RunDir(d)
        try:
            with run.lock():
                removed += run.tidy()
        except StoreError:
            continue  # a trial still running (a worker of another driver): its own business
    return removed
