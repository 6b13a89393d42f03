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
    mlflow_run_id.txt      the MLflow run this run logs into (``lth run --mlflow``)
    <study>/<part>/        a study's analysis (``instability/level_001/``)
    .lock                  held by the process running the run

A group (session / robust, ``<store>/<name>-<kind>-<group_id>/``): ``config.json``,
``trials.json`` (status of every trial; run directories relative to the group), ``trials/``
(a store of the trials' runs), ``failures/<key>.txt``, ``running/<key>.pid``, tables
(``<name>.csv``).

A study's analyses (:mod:`lth.store.analysis`) live in ``<run>/<study>/<part>/``, each
with its files and a summary written last, as a level has.

Paths stored inside a store are relative to it, so a store can be moved or copied.
Every JSON record and tensor file carries its own digest (:mod:`lth.store.files`).
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreError

log = logging.getLogger("lth")
FORMAT = 2  # the store format this lth writes; runs of format 1 (lth 0.1) are not resumed
CONFIG, TRIALS, SUMMARY, HISTORY, EARLYBIRD = ("config.json", "trials.json", "summary.json",
                                               "history.json", "earlybird.json")
CHECKPOINT, THETA0, REWIND = ("checkpoint.safetensors", "theta0.safetensors",
                              "rewind.safetensors")
LEVELS_CSV = "levels.csv"  # a table derived from the summaries: checked against them
TRACKING_ID = "{tracker}_run_id.txt"  # a tracker's id of this run (MLflow), kept on resume
# A group's folders: the trials' runs, the tracebacks of failed trials, live trials' pids.
TRIAL_RUNS, FAILURES, RUNNING = "trials", "failures", "running"
GROUP_KINDS = ("session", "robust")
# Directory names: a run is ``<name>-<run_id>``, a group ``<name>-<kind>-<group_id>``; the
# name tells a run or group apart from other folders of a store when its config is gone.
RUN_DIR_NAME = re.compile(r".+-[0-9a-f]{12}")
GROUP_DIR_NAME = re.compile(r".+-(session|robust)-[0-9a-f]{12}")


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


def note_legacy_siblings(store: Path, name: str) -> None:
    """Runs of the same name made by lth 0.1 are not resumed: say so, with the fix."""
    pattern = re.compile(re.escape(name) + r"-[0-9a-f]{12}")
    for d in sorted(store.glob(f"{glob.escape(name)}-*")) if store.is_dir() else []:
        if pattern.fullmatch(d.name) and legacy_format(d):
            log.warning("%s was made by lth 0.1 (store format 1) and is not resumed; "
                        "`lth migrate %s` upgrades it in place", d, store)
