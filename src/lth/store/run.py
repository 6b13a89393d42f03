"""One run's directory: its config (the specification), θ0, rewind point and levels."""

from __future__ import annotations

import csv
import io
import math
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
    GROUP_DIR_NAME,
    GROUP_KINDS,
    LEVELS_CSV,
    REWIND,
    RUN_DIR_NAME,
    SUMMARY,
    THETA0,
    TRACKING_ID,
    TRIAL_RUNS,
    TRIALS,
    exclusive,
    legacy_format,
    note_legacy_siblings,
    short_hash,
)
from .level import Level

# Config fields readers rely on, with their types (a record whose digest is right but whose
# fields are not is damage too: rewritten by the command that made it).
_CONFIG_TYPES: dict[str, type | tuple[type, ...]] = {
    "kind": str, "name": str, "run_id": str, "experiment_id": str, "level0_key": str,
    "n_levels": int, "rewind_step": int, "prunable": dict, "data": dict, "model": str,
    "experiment": dict, "masks_source": dict}


def _wrong_fields(cfg: dict[str, Any]) -> list[str]:
    wrong = [k for k, t in _CONFIG_TYPES.items() if k in cfg and not isinstance(cfg[k], t)]
    if isinstance(cfg.get("kind"), str) and cfg["kind"] not in GROUP_KINDS:
        wrong.append("kind")
    prunable = cfg.get("prunable")
    if isinstance(prunable, dict) and not all(isinstance(v, int) for v in prunable.values()):
        wrong.append("prunable")
    return wrong


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
        wrong = _wrong_fields(cfg)
        if wrong:
            raise Damaged(self.path / CONFIG, f"has fields of the wrong type ({', '.join(wrong)})")
        return cfg

    def config_problem(self) -> Damaged | None:
        """What is wrong with the config (None: it reads as lth wrote it)."""
        try:
            self.config()
        except Damaged as exc:
            return exc
        return None

    def kind(self) -> str:
        """``run``, ``session`` or ``robust``: from the config or, when it is damaged or
        gone, from the directory's name and contents."""
        try:
            return self.config().get("kind") or "run"
        except Damaged:
            pass
        named = GROUP_DIR_NAME.fullmatch(self.name)
        if named and ((self.path / TRIALS).exists() or (self.path / TRIAL_RUNS).is_dir()):
            return named.group(1)
        return "run"

    def kept_config(self) -> dict[str, Any] | None:
        """The copy of this run's config that a run reusing its masks keeps
        (``masks_source``), if one in the same store does; it must hash to this
        directory's run_id."""
        store = self.path.parent
        for sibling in sorted(store.iterdir()) if store.is_dir() else []:
            reuser = RunDir(sibling)
            source = reuser.masks_source()
            if source is not None and source.path == self.path:
                kept = reuser.config()["masks_source"]
                if not _wrong_fields(kept):
                    return kept
        return None

    def masks_source(self) -> RunDir | None:
        """Where, in this run's store, the run whose masks it reuses would be (from the copy
        of its config this run keeps); None if it reuses none."""
        try:
            kept = self.config().get("masks_source")
        except Damaged:
            return None
        if not isinstance(kept, dict) or not isinstance(kept.get("identity"), dict):
            return None
        return RunDir(self.path.parent / f"{kept.get('name')}-{short_hash(kept['identity'])}")

    def restore_config(self) -> bool:
        """Rewrite a missing or damaged config from :meth:`kept_config`; False: no copy."""
        kept = self.kept_config()
        if kept is None:
            return False
        self.path.mkdir(parents=True, exist_ok=True)
        write_record(self.path / CONFIG, kept)
        return True

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

    def verify(self, n_levels: int | None = None, *, deep: bool = True,
               checked: list[Path] | None = None) -> list[Damaged]:
        """Every problem with this run's files (empty: intact). ``deep``: check each file
        against its digest (reads everything); else only the config, the summaries and
        which files are there. ``n_levels``: levels 0..n_levels must all be finished.
        ``checked``: gets each file found intact (``lth status --verify`` counts them)."""
        problems: list[Damaged] = []
        found = checked if checked is not None else []

        def check(fn: Any, path: Path | None = None) -> None:
            try:
                fn()
            except Damaged as exc:
                problems.append(exc)
            else:
                found.extend([path] if path is not None else [])

        def present(path: Path) -> None:
            verify_file(path) if deep else _exists(path)

        try:
            cfg = self.config()
            found.append(self.file(CONFIG))
        except Damaged as exc:
            problems.append(exc)
            cfg = {}
        check(lambda: present(self.file(THETA0)), self.file(THETA0))
        if self.file(REWIND).exists() or (cfg.get("rewind_step", 0) > 0
                                          and self.level(0).has_summary()):
            check(lambda: present(self.file(REWIND)), self.file(REWIND))
        levels = self.level_numbers()
        if n_levels is not None:
            levels = sorted(set(levels) | set(range(n_levels + 1)))
        summed = [lv for lv in levels if self.level(lv).has_summary()]
        for lv in levels:
            level = self.level(lv)
            if level.path.is_file():
                problems.append(Damaged(level.path, "is a file, not a level directory"))
            elif level.has_summary():
                check((lambda lv=level: lv.verify(found)) if deep else level.summary)
            elif n_levels is not None or (summed and lv < summed[-1]) or level.trained():
                problems.append(Damaged(level.file(SUMMARY), "is missing"))
        if deep and summed:
            check(self._check_levels_csv, self.file(LEVELS_CSV))
        return problems

    def _check_levels_csv(self) -> None:
        """levels.csv has one row per finished level, each cell equal to its summary's
        (a column is a summary field, ``density[<param>]`` one of its layer densities)."""
        path = self.file(LEVELS_CSV)
        try:
            rows = list(csv.DictReader(io.StringIO(path.read_text())))
        except FileNotFoundError:
            raise Damaged(path, "is missing (the next `lth run` rebuilds it)") from None
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise Damaged(path, f"cannot be read ({exc})") from None
        summaries = self.summaries()
        if [row.get("level") for row in rows] != [str(lv) for lv in sorted(summaries)] or \
                not all(_row_matches(row, summaries[int(row["level"])]) for row in rows):
            raise Damaged(path, "does not match the level summaries (the next `lth run` "
                                "rebuilds it)")

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
        atomic_write_bytes(self.file(LEVELS_CSV), csv_text.encode())

    @property
    def levels_csv(self) -> Path:
        """The per-level table (rebuilt from the summaries by every run)."""
        return self.file(LEVELS_CSV)

    def tracking_id(self, tracker: str) -> str | None:
        """The id a tracker (``mlflow``) gave this run, so a resumed run logs into it."""
        path = self.file(TRACKING_ID.format(tracker=tracker))
        try:
            return path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def save_tracking_id(self, tracker: str, run_id: str) -> None:
        atomic_write_bytes(self.file(TRACKING_ID.format(tracker=tracker)), run_id.encode())

    def write_config(self, record: dict[str, Any]) -> None:
        """Replace the config record (:mod:`lth.experiment.migrate` upgrading a run)."""
        write_record(self.file(CONFIG), record)

    def copy_rewind_point_from(self, other: RunDir) -> None:
        atomic_write_bytes(self.file(REWIND), other.file(REWIND).read_bytes())

    def copy_level_from(self, other: RunDir, level: int) -> None:
        """Copy a verified level byte for byte (work shared between runs)."""
        src, dst = other.level(level), self.level(level)
        dst.path.mkdir(parents=True, exist_ok=True)
        names = list(src.summary()["files"]) + [SUMMARY]
        for name in names:
            atomic_write_bytes(dst.file(name), src.file(name).read_bytes())


def _row_matches(row: dict[str, str | None], summary: dict[str, Any]) -> bool:
    for column, cell in row.items():
        if column is None or cell is None:
            return False  # more or fewer cells than columns
        if column.startswith("density[") and column.endswith("]"):
            value = summary["layer_density"].get(column[8:-1])
        else:
            value = summary.get(column)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            if cell != "":
                return False
        elif isinstance(value, int | float):
            try:
                if float(cell) != float(value):
                    return False
            except ValueError:
                return False
        elif cell != str(value):
            return False
    return True


def _exists(path: Path) -> None:
    if not path.is_file():
        raise Damaged(path, "is missing")


def store_entries(store: str | Path) -> list[Path]:
    """The run and group directories of a store, sorted."""
    return sorted(p for p in Path(store).iterdir() if is_run_or_group(p))


def is_run_or_group(d: Path) -> bool:
    """A run or group directory: it has a config file, or it is named like one and holds
    a run's or group's files (its config is gone)."""
    return d.is_dir() and ((d / CONFIG).exists() or bool(RUN_DIR_NAME.fullmatch(d.name) and (
        any((d / name).exists() for name in (THETA0, TRIALS, TRIAL_RUNS))
        or any(d.glob("level_*")))))


def count_finished_levels(store: Path) -> int:
    """Levels finished in all runs of ``store`` (cheap: for progress bars)."""
    return sum(1 for _ in Path(store).glob(f"*/level_*/{SUMMARY}"))
