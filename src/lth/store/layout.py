"""The store's layout: every file name and format lives here; everything else reads
through these classes.

One run (``<store>/<name>-<run_id>/``)::

    config.json            record: store format, the run's specification (its identity),
                           run_id, experiment_id, and informational settings
    theta0.safetensors     initial weights; rewind.safetensors: θk for late rewinding
    level_000/             mask, start, final (.safetensors), history.json, earlybird.json,
                           summary.json (written last: the digests of the level's files;
                           a level is finished when its summary and files verify),
                           checkpoint.safetensors while the level trains
    levels.csv             one row per finished level, rebuilt from the summaries
    .lock                  held by the process running the run

A group (session / robust, ``<store>/<name>-<kind>-<group_id>/``): ``config.json``,
``trials.json`` (status of every trial; run directories relative to the group), ``trials/``
(a store of the trials' runs), ``failures/<key>.txt``, ``running/<key>.pid``, tables.

Paths stored inside a store are relative to it, so a store can be moved or copied.
Every JSON record and tensor file carries its own digest (:mod:`lth.store.files`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreError
from .files import (
    Damaged,
    atomic_write_bytes,
    is_temporary,
    load_tensors,
    read_record,
    save_tensors,
    verify_file,
    write_record,
)

FORMAT = 2  # the store format this lth writes; runs of format 1 (lth 0.1) are not resumed
LEVEL_TENSORS = ("mask", "start", "final")
CONFIG, TRIALS, SUMMARY, HISTORY, EARLYBIRD = ("config.json", "trials.json", "summary.json",
                                               "history.json", "earlybird.json")
CHECKPOINT, THETA0, REWIND = ("checkpoint.safetensors", "theta0.safetensors",
                              "rewind.safetensors")
GROUP_KINDS = ("session", "robust")


def short_hash(obj: Any) -> str:
    """12 hex digits of SHA-256 over the canonical JSON of ``obj``."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


@contextmanager
def exclusive(directory: Path, busy: str) -> Iterator[None]:
    """Hold ``directory/.lock`` (dropped by the kernel with the process, even on kill -9);
    :class:`StoreError` with ``busy`` if another process holds it."""
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / ".lock", "a")  # noqa: SIM115 - held for the block
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreError(busy) from None
    try:
        yield
    finally:
        handle.close()


def legacy_format(directory: Path) -> bool:
    """A run or group written by lth 0.1 (plain JSON config without a digest)."""
    try:
        obj = json.loads((directory / CONFIG).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(obj, dict) and "identity" in obj and "sha256" not in obj


class Level:
    """One level's directory."""

    def __init__(self, run: RunDir, level: int):
        self.run, self.level = run, level
        self.path = run.path / f"level_{level:03d}"

    def file(self, name: str) -> Path:
        return self.path / name

    # -- reading ------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The level's summary record (:class:`Damaged` if missing or damaged)."""
        s = read_record(self.file(SUMMARY))
        if s.get("level") != self.level or not isinstance(s.get("files"), dict):
            raise Damaged(self.file(SUMMARY), "is not this level's summary")
        return s

    def has_summary(self) -> bool:
        """A summary file is there (finished, or damaged: :meth:`verify` tells)."""
        return self.file(SUMMARY).is_file()

    def finished(self) -> bool:
        """The summary verifies (cheap; :meth:`verify` also checks the files)."""
        try:
            self.summary()
        except Damaged:
            return False
        return True

    def verify(self) -> None:
        """Check the summary and every file it lists; :class:`Damaged` names the first bad."""
        recorded = self.summary()["files"]
        for name, digest in recorded.items():
            verify_file(self.file(name), digest)

    def recorded(self, name: str) -> str | None:
        try:
            return self.summary()["files"].get(name)
        except Damaged:
            return None

    def tensors(self, stem: str) -> dict[str, Any]:
        """``mask``, ``start`` or ``final`` of this level, checked against its digests."""
        name = f"{stem}.safetensors"
        return load_tensors(self.file(name), self.recorded(name))[0]

    def tensors_if_intact(self, stem: str) -> dict[str, Any] | None:
        """A file this level wrote before it finished (reused on resume), or None."""
        try:
            return self.tensors(stem)
        except Damaged:
            return None

    def history(self) -> list[dict[str, float]]:
        rec = read_record(self.file(HISTORY))
        rows = rec.get("rows")
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            raise Damaged(self.file(HISTORY), "holds no evaluation rows")
        return rows

    def digest(self, stem: str) -> str:
        """The digest of a tensor file this level wrote (checked)."""
        return verify_file(self.file(f"{stem}.safetensors"))

    def in_progress(self) -> bool:
        """Training was interrupted: a checkpoint is there."""
        return self.file(CHECKPOINT).exists()

    def record(self, name: str) -> dict[str, Any]:
        """A JSON record of this level, checked against the digest its summary holds."""
        verify_file(self.file(name), self.recorded(name))
        return read_record(self.file(name))

    # -- writing ------------------------------------------------------------------------
    def save(self, stem: str, tensors: dict[str, Any]) -> str:
        return save_tensors(self.file(f"{stem}.safetensors"), tensors)

    def write(self, name: str, record: dict[str, Any]) -> str:
        return write_record(self.file(name), record)

    def write_history(self, rows: list[dict[str, float]]) -> str:
        return write_record(self.file(HISTORY), {"rows": rows})

    def commit(self, summary: dict[str, Any], files: dict[str, str]) -> None:
        """Write the summary last, with the digests of the level's files: the level is
        finished from this moment on."""
        write_record(self.file(SUMMARY), {**summary, "level": self.level, "files": files})
        self.checkpoint().clear()

    def discard(self) -> None:
        """Forget a damaged level's results (its checkpoint is kept if it verifies)."""
        if self.path.exists() and not self.path.is_dir():
            self.path.unlink()
        self.file(SUMMARY).unlink(missing_ok=True)

    def checkpoint(self) -> LevelCheckpoint:
        return LevelCheckpoint(self.file(CHECKPOINT))


class LevelCheckpoint:
    """The mid-level checkpoint of one level (see :class:`lth.train.loop.Checkpoints`).
    A damaged checkpoint is dropped: the level restarts from its start, same numbers."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        if not self.path.exists():
            return None
        try:
            tensors, meta = load_tensors(self.path)
        except Damaged:
            self.clear()
            return None
        if not isinstance(meta, dict):
            self.clear()
            return None
        return tensors, meta

    def save(self, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
        save_tensors(self.path, tensors, meta)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


class RunDir:
    """One run directory (see the module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def open(cls, store: str | Path, name: str, identity: dict[str, Any],
             info: dict[str, Any]) -> RunDir:
        """The run directory of ``identity`` in ``store``: created if new; its config is
        checked (and rewritten if damaged: the directory name is the identity's hash)."""
        run_id = short_hash(identity)
        run = cls(Path(store) / f"{name}-{run_id}")
        cfg = run.path / CONFIG
        try:
            saved = read_record(cfg)
        except Damaged:
            saved = None
        if saved is not None and saved.get("identity") != identity:
            raise StoreError(f"{run.path} holds a different experiment than this one (a hash "
                             "collision); use another --store or name")
        if saved is None or {k: saved.get(k) for k in info} != info:
            write_record(cfg, {"format": FORMAT, "identity": identity, "run_id": run_id,
                               **info})
        return run

    @property
    def name(self) -> str:
        return self.path.name

    def config(self) -> dict[str, Any]:
        if legacy_format(self.path):
            raise Damaged(self.path / CONFIG, f"was written by lth 0.1 (store format 1); "
                                              f"`lth migrate {self.path.parent}` upgrades it")
        cfg = read_record(self.path / CONFIG)
        if not isinstance(cfg.get("identity"), dict):
            raise Damaged(self.path / CONFIG, "has no run identity")
        return cfg

    def level(self, level: int) -> Level:
        return Level(self, level)

    def file(self, name: str) -> Path:
        return self.path / name

    def level_numbers(self) -> list[int]:
        out = []
        for p in self.path.glob("level_*"):
            suffix = p.name[6:]
            if suffix.isdigit():
                out.append(int(suffix))
        return sorted(out)

    def finished_levels(self) -> list[int]:
        """Levels whose summary verifies, in order (files are checked when read)."""
        return [lv for lv in self.level_numbers() if self.level(lv).finished()]

    def summaries(self) -> dict[int, dict[str, Any]]:
        out = {}
        for lv in self.level_numbers():
            try:
                out[lv] = self.level(lv).summary()
            except Damaged:
                continue
        return out

    def verify(self, n_levels: int | None = None) -> list[Damaged]:
        """Every problem with this run's files (empty: intact)."""
        problems: list[Damaged] = []
        for check in (self.config, lambda: verify_file(self.path / THETA0)):
            try:
                check()
            except Damaged as exc:
                problems.append(exc)
        if self.file(REWIND).exists():
            try:
                verify_file(self.file(REWIND))
            except Damaged as exc:
                problems.append(exc)
        levels = self.level_numbers()
        if n_levels is not None:
            levels = sorted(set(levels) | set(range(n_levels + 1)))
        for lv in levels:
            level = self.level(lv)
            if not level.has_summary() and n_levels is None:
                continue  # a level in progress is not damage
            try:
                level.verify()
            except Damaged as exc:
                problems.append(exc)
        return problems

    # -- run-level tensors ---------------------------------------------------------------
    def theta0(self) -> dict[str, Any]:
        return load_tensors(self.file(THETA0))[0]

    def save_theta0(self, tensors: dict[str, Any]) -> None:
        save_tensors(self.file(THETA0), tensors)

    def rewind_point(self) -> dict[str, Any]:
        """θk, the weights at the rewind step (late rewinding)."""
        return load_tensors(self.file(REWIND))[0]

    def save_rewind_point(self, tensors: dict[str, Any]) -> None:
        save_tensors(self.file(REWIND), tensors)

    def has_config(self) -> bool:
        return (self.path / CONFIG).is_file()

    # -- housekeeping --------------------------------------------------------------------
    def lock(self) -> Any:
        return exclusive(self.path, f"{self.path} is being run by another process; wait for "
                                    "it to finish or stop it")

    def tidy(self) -> list[Path]:
        """Remove what an interrupted writer left: temporary files and the checkpoints of
        finished levels. Call only while holding :meth:`lock`."""
        removed = [p for p in self.path.rglob("*.tmp") if is_temporary(p)]
        for lv in self.finished_levels():
            ckpt = self.level(lv).file(CHECKPOINT)
            if ckpt.exists():
                removed.append(ckpt)
        for p in removed:
            p.unlink(missing_ok=True)
        return removed

    def write_levels_csv(self, csv_text: str) -> None:
        atomic_write_bytes(self.file("levels.csv"), csv_text.encode())

    def copy_rewind_point_from(self, other: RunDir) -> None:
        atomic_write_bytes(self.file(REWIND), other.file(REWIND).read_bytes())

    def copy_level_from(self, other: RunDir, level: int) -> None:
        """Copy a verified level byte for byte (work shared between runs)."""
        src, dst = other.level(level), self.level(level)
        dst.path.mkdir(parents=True, exist_ok=True)
        names = list(src.summary()["files"]) + [SUMMARY]
        for name in names:
            atomic_write_bytes(dst.file(name), src.file(name).read_bytes())


def store_entries(store: str | Path) -> list[Path]:
    """The run and group directories of a store (anything with a config file), sorted."""
    return sorted(p for p in Path(store).iterdir() if (p / CONFIG).exists())


def count_finished_levels(store: Path) -> int:
    """Levels finished in all runs of ``store`` (cheap: for progress bars)."""
    return sum(1 for _ in Path(store).glob(f"*/level_*/{SUMMARY}"))


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


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
