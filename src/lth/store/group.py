"""A group's directory (session / robust): its identity and ``trials.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import StoreError
from .files import Damaged, atomic_write_bytes, is_temporary, read_record, write_record
from .layout import FAILURES, RUNNING, TRIAL_RUNS, TRIALS
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
        self.runs_dir = self.gdir / TRIAL_RUNS  # a store of the trials' run directories
        self.running_dir = self.gdir / RUNNING  # <key>.pid of every live trial

    def exists(self) -> bool:
        """The driver has written ``trials.json`` (a worker that cannot see it runs on a
        node without the shared store)."""
        return self.path.is_file()

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

    def failure(self, key: str) -> Path:
        """Where the traceback of failed trial ``key`` is kept."""
        return self.gdir / FAILURES / f"{key}.txt"

    def record_failure(self, key: str, text: str) -> None:
        atomic_write_bytes(self.failure(key), text.encode())

    def write_table(self, name: str, csv_text: str) -> None:
        """One of the group's tables (``trials``, ``stats``...), as ``<name>.csv``."""
        atomic_write_bytes(self.gdir / f"{name}.csv", csv_text.encode())

    def running(self) -> dict[str, int]:
        """Trials whose worker left a pid marker (may be stale: check the pid)."""
        out = {}
        for p in self.running_dir.glob("*.pid"):
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
    trials = Trials(gdir).runs_dir
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


def pid_marker(running_dir: str | Path, key: str) -> Path:
    """The file holding the pid of the worker that runs trial ``key``
    (in :attr:`Trials.running_dir`)."""
    return Path(running_dir) / f"{key}.pid"
