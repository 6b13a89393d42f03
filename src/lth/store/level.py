"""One level's directory: its files, its summary (written last, with the digests of the
level's files) and its mid-training checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .files import Damaged, load_tensors, read_record, save_tensors, verify_file, write_record
from .layout import CHECKPOINT, EARLYBIRD, HISTORY, SUMMARY

# Summary fields every reader relies on (and, whatever the task, its metrics' values).
_NUMBERS = ("density", "pct_remaining", "weights_remaining", "early_stop_step", "train_steps")
_METRIC_PREFIXES = ("best_test_", "final_test_", "early_stop_test_")

if TYPE_CHECKING:
    from .run import RunDir


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
        metrics = [k for k in s if k.startswith(_METRIC_PREFIXES)]
        if not isinstance(s.get("layer_density"), dict) or not metrics or not all(
                isinstance(s.get(k), int | float) for k in (*_NUMBERS, *metrics)):
            raise Damaged(self.file(SUMMARY), "has fields of the wrong type")
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

    def verify(self, checked: list[Path] | None = None) -> None:
        """Check the summary and every file it lists; :class:`Damaged` names the first bad.
        ``checked``: gets each file found intact."""
        recorded = self.summary()["files"]
        found = checked if checked is not None else []
        found.append(self.file(SUMMARY))
        for name, digest in recorded.items():
            verify_file(self.file(name), digest)
            found.append(self.file(name))

    def recorded(self, name: str) -> str | None:
        try:
            return self.summary()["files"].get(name)
        except Damaged:
            return None

    def has(self, stem: str) -> bool:
        """Whether the committed level recorded the tensor file ``stem``."""
        return self.recorded(f"{stem}.safetensors") is not None

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
        verify_file(self.file(HISTORY), self.recorded(HISTORY))  # not another level's
        rows = read_record(self.file(HISTORY)).get("rows")
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            raise Damaged(self.file(HISTORY), "holds no evaluation rows")
        return rows

    def digest(self, stem: str) -> str:
        """The digest of a tensor file this level wrote (checked)."""
        return verify_file(self.file(f"{stem}.safetensors"))

    def tensor_digests(self, *stems: str) -> dict[str, str]:
        """``{file name: digest}`` of tensor files this level wrote, for :meth:`commit`."""
        return {f"{stem}.safetensors": self.digest(stem) for stem in stems}

    def in_progress(self) -> bool:
        """Training was interrupted: a checkpoint is there."""
        return self.file(CHECKPOINT).exists()

    def trained(self) -> bool:
        """Training ended (its weights are written, no checkpoint is left): without a
        summary, the level is damaged, not interrupted."""
        return not self.in_progress() and (self.file("final.safetensors").exists()
                                           or self.file(HISTORY).exists())

    def record(self, name: str) -> dict[str, Any]:
        """A JSON record of this level, checked against the digest its summary holds."""
        verify_file(self.file(name), self.recorded(name))
        return read_record(self.file(name))

    def has_earlybird(self) -> bool:
        """The finished level ran an early-bird search (its summary lists the record)."""
        try:
            return EARLYBIRD in self.summary()["files"]
        except Damaged:
            return False

    def earlybird(self) -> dict[str, Any]:
        """The early-bird search record, checked against the summary's digest."""
        return self.record(EARLYBIRD)

    # -- writing ------------------------------------------------------------------------
    def write_earlybird(self, record: dict[str, Any]) -> tuple[str, str]:
        """Write the early-bird search record; returns (file name, digest) for the
        summary's ``files``."""
        return EARLYBIRD, self.write(EARLYBIRD, record)

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
        """Forget a damaged level: every file, so that nothing of it (a mask put there from
        another level, say) is reused when it is recomputed."""
        if self.path.is_dir():
            shutil.rmtree(self.path)
        elif self.path.exists():
            self.path.unlink()

    def checkpoint(self) -> LevelCheckpoint:
        return LevelCheckpoint(self.file(CHECKPOINT))


class LevelCheckpoint:
    """The mid-level checkpoint of one level (see :class:`lth.train.job.Checkpoints`).
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
