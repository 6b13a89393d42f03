"""A study's analysis directory inside a run: ``<run>/<study>/<part>/``, the generalisation
of a level's directory to whatever a study (:mod:`lth.studies`) computes over a finished
run.

A study names its files by stem (``copy_0``, ``path``); this module gives them their file
names (tensors ``<stem>.safetensors``, records ``<stem>.json``, checkpoints
``<stem>.ckpt``). As a level does, an analysis commits a summary last (``summary.json``)
with the digests of every file it wrote or reused, so an interrupted analysis is not
finished and a finished one whose files changed reads as damaged.

>>> import tempfile
>>> from lth.store import RunDir
>>> run = RunDir(tempfile.mkdtemp())
>>> a = Analysis.of(run, "demo", level=1)
>>> a.path.relative_to(run.path).as_posix()
'demo/level_001'
>>> _ = a.write("numbers", {"rows": [1, 2]})
>>> _ = a.commit({"level": 1, "total": 3})
>>> a.summary()["total"], a.record("numbers")["rows"], a.finished()
(3, [1, 2], True)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .files import Damaged, load_tensors, read_record, save_tensors, verify_file, write_record
from .layout import CHECKPOINT, CONFIG, HISTORY, SUMMARY, TRIALS, short_hash
from .level import LevelCheckpoint

if TYPE_CHECKING:
    from .run import RunDir

TENSORS, RECORD, CKPT = ".safetensors", ".json", ".ckpt"
# A study's directory sits beside a run's levels and files: its name must be none of theirs.
_STUDY_NAME = re.compile(r"[a-z][a-z0-9_]*")
_TAKEN = {"level", "trials", "running", "failures", *(Path(n).stem for n in (
    CONFIG, TRIALS, SUMMARY, HISTORY, CHECKPOINT))}
_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def study_name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a study's directory in a run (None if it can).

    >>> study_name_problem("instability"), study_name_problem("level_2") is not None
    (None, True)
    """
    if not isinstance(name, str) or not _STUDY_NAME.fullmatch(name):
        return (f"{name!r} is not a study name: use lower-case letters, digits and _ , "
                "starting with a letter (it names a directory and a command)")
    if name in _TAKEN or name.startswith("level_"):
        return f"{name!r} names files of a run already; choose another name"
    return None


def _stem(stem: str) -> str:
    if not _STEM.fullmatch(stem):
        raise ValueError(f"file stem {stem!r}: use letters, digits, '_', '-' and '.'")
    return stem


class Analysis:
    """One analysis directory (see the module docstring). Files written or reused through
    this object are listed, with their digests, by :meth:`commit`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.files: dict[str, str] = {}  # file name -> digest, for the summary

    @classmethod
    def of(cls, run: RunDir, study: str, *, level: int | None = None,
           settings: dict[str, Any] | None = None) -> Analysis:
        """The analysis of ``study`` in ``run`` for one level and/or one set of settings
        (which name it: ``level_003``, ``level_003-<hash of settings>``, ``<hash>``; with
        neither, ``run``: one analysis per run)."""
        problem = study_name_problem(study)
        if problem:
            raise ValueError(problem)
        parts = [f"level_{level:03d}"] if level is not None else []
        if settings is not None:
            parts.append(short_hash(settings))
        return cls(run.path / study / ("-".join(parts) or "run"))

    def _file(self, stem: str, suffix: str) -> Path:
        return self.path / f"{_stem(stem)}{suffix}"

    # -- reading ------------------------------------------------------------------------
    def has_summary(self) -> bool:
        """A summary is there (finished, or damaged: :meth:`summary` tells)."""
        return (self.path / SUMMARY).is_file()

    def summary(self) -> dict[str, Any]:
        """The committed summary, every file it lists checked against its digest;
        :class:`Damaged` if missing, damaged, or a listed file changed."""
        s = read_record(self.path / SUMMARY)
        files = s.get("files")
        if not isinstance(files, dict) or not all(
                isinstance(d, str) and _STEM.fullmatch(n) for n, d in files.items()):
            raise Damaged(self.path / SUMMARY, "has no list of its files' digests")
        for name, digest in files.items():
            verify_file(self.path / name, digest)
        return s

    def finished(self) -> bool:
        try:
            self.summary()
        except Damaged:
            return False
        return True

    def _recorded(self, name: str) -> str | None:
        try:
            return read_record(self.path / SUMMARY).get("files", {}).get(name)
        except (Damaged, AttributeError):
            return None

    def record(self, stem: str) -> dict[str, Any]:
        """A JSON record of this analysis, checked (against the summary's digest once
        committed)."""
        path = self._file(stem, RECORD)
        verify_file(path, self._recorded(path.name))
        return read_record(path)

    def tensors(self, stem: str) -> dict[str, Any]:
        """A tensor file of this analysis, checked (against the summary once committed)."""
        path = self._file(stem, TENSORS)
        return load_tensors(path, self._recorded(path.name))[0]

    def reuse(self, stem: str) -> dict[str, Any] | None:
        """A tensor file written before (by an interrupted or earlier analysis), checked and
        listed for :meth:`commit`; None if it is missing or damaged."""
        path = self._file(stem, TENSORS)
        try:
            tensors = load_tensors(path)[0]
        except Damaged:
            return None
        self.files[path.name] = verify_file(path)
        return tensors

    # -- writing ------------------------------------------------------------------------
    def save(self, stem: str, tensors: dict[str, Any]) -> str:
        path = self._file(stem, TENSORS)
        self.files[path.name] = save_tensors(path, tensors)
        return self.files[path.name]

    def write(self, stem: str, record: dict[str, Any]) -> str:
        path = self._file(stem, RECORD)
        self.files[path.name] = write_record(path, record)
        return self.files[path.name]

    def checkpoint(self, stem: str) -> LevelCheckpoint:
        """A mid-training checkpoint (of a copy the study trains), dropped when damaged."""
        return LevelCheckpoint(self._file(stem, CKPT))

    def commit(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Write the summary last, with the digests of the files written or reused: the
        analysis is finished from this moment on. Returns the record written."""
        record = {**summary, "files": dict(self.files)}
        write_record(self.path / SUMMARY, record)
        return record


def analyses(run: RunDir, study: str) -> list[Analysis]:
    """Every analysis directory of ``study`` in ``run`` (finished or not), sorted."""
    root = run.path / study
    return [Analysis(p) for p in sorted(root.iterdir()) if p.is_dir()] if root.is_dir() \
        else []
