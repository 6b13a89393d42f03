"""One run's directory: its config (the specification), θ0, rewind point and levels."""

from __future__ import annotations

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
from .layout import (
    CHECKPOINT,
    CONFIG,
    FORMAT,
    REWIND,
    SUMMARY,
    THETA0,
    exclusive,
    legacy_format,
    note_legacy_siblings,
    short_hash,
)
from .level import Level


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
        if saved is not None and not isinstance(saved.get("identity"), dict):
            saved = None  # a record of the wrong shape: damage, rewritten below
        if saved is None and not cfg.exists():
            note_legacy_siblings(Path(store), name)
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
