#!/usr/bin/env python
"""Corruption campaign: damage finished lth stores in every way we can think of and check
that lth either recomputes the damage (same numbers as before) or stops with exit code 2
and one clear message naming the file and a command that fixes it.

    .venv/bin/python scripts/corruption_campaign.py --out /tmp/campaign

What it does:

1. Writes a tiny experiment (digits, MLP [16], 2 levels of 60 iterations, late rewinding
   to iteration 20 so ``rewind.safetensors`` exists) and a tiny session (``ticket`` and its
   ``random_reinit`` control) and runs each once with the real ``lth`` command: the
   pristine stores, kept under ``OUT/pristine``. A third store holds the experiment and a
   run reusing its masks (``lth run ... --masks-from``): damage to a run that another
   run needs cannot be repaired by the other run's command, so that is where lth must
   stop with exit code 2 and name the command that repairs the source.
2. For each case: copies the pristine store, applies one damage, keeps a copy of the
   damaged store, then runs ``lth status STORE``, ``lth status STORE --verify``,
   ``lth.load`` and ``lth report`` on the damaged copy, and the original command
   (``lth run ...`` / ``lth session ...``) on the store. If that exits 2, the command its
   message names is run, then the original command again. Finally the store's numbers
   (every level's start and final tensors, every summary table minus ``wall_time_s``)
   are compared with the pristine ones, ``lth status --verify`` must find nothing, and
   ``lth.load`` must show the pristine numbers.
3. Writes ``OUT/campaign.md`` (the table, also printed) and ``OUT/results.json`` (every
   command's exit code, output and timing). The folders of failed cases stay under
   ``OUT/cases`` for inspection; those of passing cases are removed (``--keep`` keeps
   them).

Speed: importing torch, scikit-learn and matplotlib takes seconds, which hundreds of fresh
``lth`` processes would pay each time. So this script imports them once and *forks* one
child process per command: the child calls ``lth.cli.main(argv)`` exactly as the ``lth``
console script does (an uncaught exception prints a traceback and exits 1), with its own
stdout/stderr files. The parent never runs torch code itself (forking after torch has
started threads is unsafe). The pristine stores are made by the real ``lth`` executable.
Reports (matplotlib, the slowest step) run in the background, one at a time, while the
next case runs: at most one training process runs at any moment.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

EXPERIMENT_TOML = """\
# Tiny experiment of the corruption campaign (scripts/corruption_campaign.py).
name = "tiny"
seed = 0
n_levels = 2

[model]
name = "mlp"
hidden = [16]

[data]
name = "digits"

[train]
duration = "60it"
eval_every = "20it"
batch_size = 32
checkpoint_every = "20it"

[reinit]
rewind_step = "20it"      # late rewinding: the run keeps rewind.safetensors
"""

# The session's base: the same experiment, rewinding to θ0 (no [reinit] table).
BASE_TOML = EXPERIMENT_TOML.split("[reinit]")[0]

SESSION_TOML = """\
# Tiny session of the corruption campaign: the ticket and its random-reinit control.
name = "s"
seeds = [0]
base = "base.toml"

[variants.ticket]

[variants.control]
control = "random_reinit"
of = "ticket"
"""

COMMAND_TIMEOUT = 180  # seconds; a tiny run takes about one
# Not numbers of a level: timings, paths, and the experiment's label (which names what
# tells it apart from the other experiments the store holds).
IGNORED_COLUMNS = {"wall_time_s", "finished_at", "run_dir", "experiment"}


# ---------------------------------------------------------------------------------------
# Forked children: one per command, as cheap as a function call, isolated as a process.
# ---------------------------------------------------------------------------------------
def preimport() -> None:
    """Import what every lth command imports, once, in the parent (no torch code runs)."""
    import matplotlib  # noqa: F401
    import matplotlib.pyplot  # noqa: F401
    import pandas  # noqa: F401
    import sklearn.datasets  # noqa: F401  (lth's digits loader imports it lazily)

    import lth  # noqa: F401
    import lth.analysis  # noqa: F401
    import lth.cli.main  # noqa: F401
    import lth.report.figures  # noqa: F401
    import lth.report.html  # noqa: F401


@dataclass
class Proc:
    """One finished (or killed) child: what a shell would have seen."""

    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    result: Any = None  # what a Python-function child returned (JSON)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def traceback(self) -> bool:
        return "Traceback" in self.output

    def first_err(self) -> str:
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        return lines[0] if lines else ""

    def to_json(self) -> dict[str, Any]:
        return {"argv": self.argv, "rc": self.rc, "seconds": round(self.seconds, 3),
                "timed_out": self.timed_out, "traceback": self.traceback,
                "stdout": self.stdout[-4000:], "stderr": self.stderr[-4000:]}


class Child:
    """A forked child running ``target()``; stdout/stderr go to files."""

    def __init__(self, argv: list[str], target: Callable[[], int], cwd: Path, logs: Path,
                 result_file: Path | None = None):
        self.argv, self.cwd, self.result_file = argv, cwd, result_file
        logs.mkdir(parents=True, exist_ok=True)
        stem = _next_log_stem(logs, argv)
        self.out, self.err = logs / f"{stem}.out", logs / f"{stem}.err"
        sys.stdout.flush()
        sys.stderr.flush()
        self.t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                os.chdir(cwd)
                for fd, path in ((1, self.out), (2, self.err)):
                    f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    os.dup2(f, fd)
                    os.close(f)
                sys.argv = ["lth", *argv]
                try:
                    code = target()
                except SystemExit as exc:  # as the interpreter does for sys.exit
                    if exc.code is None:
                        code = 0
                    elif isinstance(exc.code, int):
                        code = exc.code
                    else:
                        print(exc.code, file=sys.stderr)
                        code = 1
                except BaseException:  # noqa: BLE001 - what an uncaught exception shows
                    traceback.print_exc()
                    code = 1
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code if isinstance(code, int) else 1)
        self.pid = pid

    def done(self) -> bool:
        return self._status(os.WNOHANG) is not None

    def _status(self, flags: int) -> int | None:
        if hasattr(self, "_rc"):
            return self._rc
        pid, status = os.waitpid(self.pid, flags)
        if pid == 0:
            return None
        self._rc = os.waitstatus_to_exitcode(status)
        self._seconds = time.perf_counter() - self.t0
        return self._rc

    def wait(self, timeout: float = COMMAND_TIMEOUT) -> Proc:
        timed_out = False
        while self._status(os.WNOHANG) is None:
            if time.perf_counter() - self.t0 > timeout:
                os.kill(self.pid, 9)  # our own child, by its id
                self._status(0)
                timed_out = True
                break
            time.sleep(0.01)
        result = None
        if self.result_file is not None and self.result_file.exists():
            try:
                result = json.loads(self.result_file.read_text())
            except ValueError:
                result = None
        return Proc(self.argv, self._rc, _read(self.out), _read(self.err), self._seconds,
                    timed_out, result)


_LOG_COUNTER: dict[Path, int] = {}


def _next_log_stem(logs: Path, argv: list[str]) -> str:
    n = _LOG_COUNTER.get(logs, 0) + 1
    _LOG_COUNTER[logs] = n
    words = "-".join(a for a in argv[:2] if not a.startswith("/"))
    return f"{n:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', words)[:40]}"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def lth_cli(argv: list[str], cwd: Path, logs: Path, *, background: bool = False
            ) -> Proc | Child:
    """``lth ARGV`` in a forked child, as the console script would run it."""

    def target() -> int:
        from lth.cli import main

        return main(argv)

    child = Child(argv, target, cwd, logs)
    return child if background else child.wait()


def py_child(name: str, fn: Callable[[], Any], cwd: Path, logs: Path) -> Proc:
    """``fn()`` in a forked child; its JSON-able return value comes back as ``result``."""
    result_file = logs / f"{name}.result.json"
    result_file.unlink(missing_ok=True)

    def target() -> int:
        value = fn()
        result_file.write_text(json.dumps(value))
        return 0

    return Child([f"<python:{name}>"], target, cwd, logs, result_file).wait()


# ---------------------------------------------------------------------------------------
# What a store holds: functions run in children (they import torch through lth).
# ---------------------------------------------------------------------------------------
def run_dirs(store: Path) -> list[Path]:
    """The run directories of a store: its runs and its groups' trials."""
    out = []
    for d in sorted(p for p in store.iterdir() if p.is_dir()):
        if (d / "trials").is_dir():
            out += sorted(p for p in (d / "trials").iterdir() if p.is_dir())
        elif (d / "config.json").exists():
            out.append(d)
    return out


def _cell(v: Any) -> str:
    """A value as exact text (floats by repr; NaN and None alike)."""
    try:
        import math

        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "nan"
    except TypeError:
        pass
    if hasattr(v, "item"):
        try:
            v = v.item()
        except (ValueError, AttributeError):
            pass
    return repr(v)


def fingerprint(store: Path) -> dict[str, Any]:
    """Per run (relative path): its table minus wall_time_s and the SHA-256 of every
    level's start and final tensors, read through ``lth.Result``."""
    import lth

    out: dict[str, Any] = {}
    for d in run_dirs(store):
        key = str(d.relative_to(store))
        entry: dict[str, Any] = {}
        try:
            r = lth.Result(d)
            levels = r.levels
            table = r.table().drop(columns=["wall_time_s"], errors="ignore")
            entry["levels"] = levels
            entry["table"] = [{c: _cell(v) for c, v in row.items()}
                              for row in table.to_dict("records")]
            tensors = {}
            for lv in levels:
                for which in ("start", "final"):
                    w = r.weights(lv, which)
                    tensors[f"{lv}/{which}"] = {
                        k: f"{tuple(t.shape)} {t.dtype} "
                           f"{hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()}"
                        for k, t in sorted(w.items())}
            entry["tensors"] = tensors
        except Exception as exc:  # noqa: BLE001 - recorded as a difference
            entry["error"] = f"{type(exc).__name__}: {exc}"
        out[key] = entry
    return out


def loaded(store: Path) -> dict[str, Any]:
    """``lth.load(store)``: its problems, and its levels and curves as exact text, keyed by
    run directory relative to the store. An exception is returned, not raised."""
    import lth

    try:
        res = lth.load(store)
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()}
    root = str(store.resolve())

    def rows(frame: Any, keys: list[str]) -> dict[str, dict[str, str]]:
        out = {}
        for row in frame.to_dict("records"):
            run = os.path.relpath(str(Path(row["run_dir"]).resolve()), root)
            k = "|".join([run] + [_cell(row[c]) for c in keys])
            out[k] = {c: _cell(v) for c, v in row.items() if c not in IGNORED_COLUMNS}
        return out

    return {"problems": [str(p) for p in res.problems],
            "levels": rows(res.levels, ["level"]) if len(res.levels) else {},
            "curves": rows(res.curves, ["level", "step"]) if len(res.curves) else {},
            "runs": sorted(os.path.relpath(str(Path(p).resolve()), root)
                           for p in res.runs.get("run_dir", []))}


def report_tables(out: Path, store: Path, cwd: Path) -> dict[str, Any]:
    """The levels and curves CSVs ``lth report`` wrote, as exact text (plain Python);
    relative run directories are relative to ``cwd``, where the report ran."""
    import csv

    root = str(store.resolve())
    tables: dict[str, Any] = {}
    for name, keys in (("levels", ["level"]), ("curves", ["level", "step"])):
        path = out / f"{name}.csv"
        if not path.exists():
            tables[name] = None
            continue
        with open(path, newline="") as f:
            table = {}
            for row in csv.DictReader(f):
                run = os.path.relpath(str((cwd / row["run_dir"]).resolve()), root)
                k = "|".join([run] + [row[c] for c in keys])
                table[k] = {c: v for c, v in row.items() if c not in IGNORED_COLUMNS}
            tables[name] = table
    return tables


def differing(shown: dict[str, dict], pristine: dict[str, dict]) -> list[str]:
    """Rows shown with a value other than the pristine one (or a row pristine lacks)."""
    bad = []
    for key, row in shown.items():
        ref = pristine.get(key)
        if ref is None:
            bad.append(f"{key}: not in the pristine store")
            continue
        for c, v in row.items():
            if c in ref and _same(ref[c], v):
                continue
            bad.append(f"{key} {c}: {v} (pristine {ref.get(c)})")
    return bad


def _same(a: str, b: str) -> bool:
    if a == b:
        return True
    try:  # CSV text vs repr: compare as floats, exactly
        return float(a) == float(b) or (a.lower() in ("nan", "") and b.lower() in ("nan", ""))
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------
# Damages
# ---------------------------------------------------------------------------------------
def truncate_half(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[:len(data) // 2])


def truncate_zero(p: Path) -> None:
    p.write_bytes(b"")


def flip16(p: Path) -> None:
    data = bytearray(p.read_bytes())
    mid = max(0, len(data) // 2 - 8)
    for i in range(mid, min(mid + 16, len(data))):
        data[i] ^= 0xFF
    p.write_bytes(bytes(data))


def delete(p: Path) -> None:
    p.unlink()


def replace_with(text: str) -> Callable[[Path], None]:
    def damage(p: Path) -> None:
        p.write_text(text)
    return damage


def wrong_type(path_in_record: list[str], value: Any) -> Callable[[Path], None]:
    """Set one field of a record to a value of the wrong type, with a correct digest
    (the record verifies; only its content is wrong)."""
    def damage(p: Path) -> None:
        from lth.store.files import DIGEST, write_record

        rec = json.loads(p.read_text())
        rec.pop(DIGEST, None)
        node = rec
        for k in path_in_record[:-1]:
            node = node[k]
        node[path_in_record[-1]] = value
        write_record(p, rec)
    return damage


def level_to_file(p: Path) -> None:
    shutil.rmtree(p)
    p.write_text("not a level directory\n")


def copy_from(src_rel: str) -> Callable[[Path], None]:
    def damage(p: Path, _src=src_rel) -> None:
        run = p.parent.parent
        shutil.copyfile(run / _src, p)
    return damage


BYTE_DAMAGES: dict[str, Callable[[Path], None]] = {
    "truncate to half": truncate_half, "truncate to 0 bytes": truncate_zero,
    "flip 16 bytes": flip16, "delete": delete}
JSON_DAMAGES: dict[str, Callable[[Path], None]] = {
    "replace with {}": replace_with("{}"), "replace with []": replace_with("[]"),
    "replace with null": replace_with("null"), 'replace with "x"': replace_with('"x"')}
LEVEL_FILES = ["mask.safetensors", "start.safetensors", "final.safetensors", "history.json",
               "summary.json"]
WRONG_TYPE = {  # per JSON file kind: (label, field path, wrong value)
    "config.json": [("identity", ["identity"], []), ("prunable", ["prunable"], "x")],
    "group config.json": [("identity", ["identity"], "x"), ("kind", ["kind"], ["session"])],
    "history.json": [("rows", ["rows"], "x")],
    "summary.json": [("layer_density", ["layer_density"], "x")],
}


@dataclass
class Case:
    scope: str            # "run" or "session"
    damage: str           # what was done
    file: str             # path relative to the store ("" for none)
    apply: Callable[[Path, Path], None]  # (store, case dir) -> None
    expect_listed: bool = True  # status --verify must list the file
    names: list[str] = field(default_factory=list)  # any of these in a message names it

    @property
    def label(self) -> str:
        return f"{self.scope}: {self.damage}"


def on_file(rel: str, fn: Callable[[Path], None]) -> Callable[[Path, Path], None]:
    def apply(store: Path, _cdir: Path) -> None:
        fn(store / rel)
    return apply


def build_cases(run_rel: str, group_rel: str, trial_rel: str, ctx: Ctx) -> list[Case]:
    """Every damage to every file kind of the run and of the session (group files and
    one trial, the ticket, whose masks the control reuses). Per-level file kinds take
    their level in turn (0, 1, 2) so each level is damaged in several ways."""
    cases: list[Case] = []

    def add(scope: str, damage: str, rel: str, fn: Callable[[Path, Path], None],
            listed: bool = True, names: list[str] | None = None) -> None:
        base = Path(rel).name
        cases.append(Case(scope, damage, rel, fn, listed,
                          names or [base, str(Path(rel).parent.name) + "/" + base]))

    def noop(store: Path, _cdir: Path) -> None:
        return None

    for scope, run in (("run", run_rel), ("session", trial_rel)):
        add(scope, "no damage (control)", "", noop, listed=False, names=[""])
        files = ["config.json", "theta0.safetensors"]
        files += ["rewind.safetensors"] if scope == "run" else []
        files += ["levels.csv"]
        for name in files:
            for dname, fn in BYTE_DAMAGES.items():
                add(scope, dname, f"{run}/{name}", on_file(f"{run}/{name}", fn))
        for dname, fn in JSON_DAMAGES.items():
            add(scope, dname, f"{run}/config.json", on_file(f"{run}/config.json", fn))
        for label, keys, value in WRONG_TYPE["config.json"]:
            add(scope, f"wrong type: {label} = {json.dumps(value)}", f"{run}/config.json",
                on_file(f"{run}/config.json", wrong_type(keys, value)))
        for ki, name in enumerate(LEVEL_FILES):
            for di, (dname, fn) in enumerate(BYTE_DAMAGES.items()):
                rel = f"{run}/level_{(ki + di) % 3:03d}/{name}"
                add(scope, dname, rel, on_file(rel, fn))
            if name.endswith(".json"):
                for di, (dname, fn) in enumerate(JSON_DAMAGES.items()):
                    rel = f"{run}/level_{(ki + di + 1) % 3:03d}/{name}"
                    add(scope, dname, rel, on_file(rel, fn))
                for di, (label, keys, value) in enumerate(WRONG_TYPE[name]):
                    rel = f"{run}/level_{(ki + di + 2) % 3:03d}/{name}"
                    add(scope, f"wrong type: {label} = {json.dumps(value)}", rel,
                        on_file(rel, wrong_type(keys, value)))
        # a level directory replaced by a file
        for lv in ((1, 2) if scope == "run" else (1,)):
            rel = f"{run}/level_{lv:03d}"
            add(scope, "level directory replaced by a file", rel, on_file(rel, level_to_file),
                names=[f"level_{lv:03d}"])
        # a mask of the wrong shape, a valid file with its own digest
        for lv in ((1, 2) if scope == "run" else (1,)):
            rel = f"{run}/level_{lv:03d}/mask.safetensors"
            add(scope, "mask of the wrong shape (valid file, own digest)", rel,
                wrong_shape_mask(rel, ctx))
        # a file copied from another level
        copied = LEVEL_FILES if scope == "run" else ["final.safetensors", "summary.json"]
        for name in copied:
            rel = f"{run}/level_002/{name}"
            add(scope, f"copied from level_001/{name}", rel,
                on_file(rel, copy_from(f"level_001/{name}")))
        # leftovers of interrupted writes, and stale checkpoints
        add(scope, "leftover .tmp files (run dir and levels)", f"{run}/.x.tmp",
            leftover_tmp(run), listed=False)
        add(scope, "stale checkpoint.safetensors in a finished level (a real one)",
            f"{run}/level_001/checkpoint.safetensors",
            stale_checkpoint(run, ctx.checkpoints[scope]), listed=False)
        if scope == "run":
            add(scope, "garbage checkpoint.safetensors in a finished level",
                f"{run}/level_002/checkpoint.safetensors",
                on_file(f"{run}/level_002/checkpoint.safetensors",
                        replace_with("garbage\n")), listed=False)
    # the session's own files
    for name, kind in (("config.json", "group config.json"), ("trials.json", None)):
        rel = f"{group_rel}/{name}"
        for dname, fn in {**BYTE_DAMAGES, **JSON_DAMAGES}.items():
            add("session", dname, rel, on_file(rel, fn))
        if kind:
            for label, keys, value in WRONG_TYPE[kind]:
                add("session", f"wrong type: {label} = {json.dumps(value)}", rel,
                    on_file(rel, wrong_type(keys, value)))
        else:
            ticket = Path(trial_rel).name
            add("session", 'wrong type: trials["ticket-s0"].run_dir = 123', rel,
                on_file(rel, wrong_type(["trials", "ticket-s0", "run_dir"], 123)))
            add("session", 'wrong value: trials["ticket-s0"].run_dir = a missing directory', rel,
                on_file(rel, wrong_type(["trials", "ticket-s0", "run_dir"],
                                        f"trials/{ticket[:-12]}000000000000")),
                names=["trials.json", "ticket-s0"])
    add("session", "leftover .tmp files in the group directory", f"{group_rel}/.x.tmp",
        lambda store, _c: [(store / group_rel / n).write_text("partial")
                           for n in (".x.tmp", ".trials.json.abc123.tmp")],
        listed=False)
    return cases


def build_masks_from_cases(src: str, dep: str) -> list[Case]:
    """A run that reuses the masks of another run of the store (``--masks-from``): damage
    the source where the dependent run must read it. ``lth run`` of the dependent cannot
    repair another run; it should stop with one message naming the file and the command
    that repairs the source."""
    def both(*steps: tuple[str, Callable[[Path], None]]) -> Callable[[Path, Path], None]:
        def apply(store: Path, _cdir: Path) -> None:
            for rel, fn in steps:
                fn(store / rel)
        return apply

    def rmtree(p: Path) -> None:
        shutil.rmtree(p)

    scope = "masks-from"
    return [
        Case(scope, "no damage (control)", "", lambda s, c: None, False, [""]),
        Case(scope, "source mask flipped; the dependent's level_002/mask.safetensors "
             "deleted (it must read the source's again)", f"{src}/level_002/mask.safetensors",
             both((f"{src}/level_002/mask.safetensors", flip16),
                  (f"{dep}/level_002/mask.safetensors", delete)),
             names=["mask.safetensors"]),
        Case(scope, "source mask truncated to 0 bytes; the dependent's level_001 mask and "
             "summary deleted", f"{src}/level_001/mask.safetensors",
             both((f"{src}/level_001/mask.safetensors", truncate_zero),
                  (f"{dep}/level_001/mask.safetensors", delete),
                  (f"{dep}/level_001/summary.json", delete)),
             names=["mask.safetensors"]),
        Case(scope, "source level_002/summary.json flipped (dependent intact)",
             f"{src}/level_002/summary.json",
             both((f"{src}/level_002/summary.json", flip16)), names=["summary.json"]),
        Case(scope, "source config.json deleted (dependent intact)", f"{src}/config.json",
             both((f"{src}/config.json", delete)), names=["config.json"]),
        Case(scope, "source run directory deleted (dependent intact)", src,
             both((src, rmtree)), False, [src]),
    ]


def wrong_shape_mask(rel: str, ctx: Ctx) -> Callable[[Path, Path], None]:
    def apply(store: Path, cdir: Path) -> None:
        def make() -> None:
            import torch

            from lth.store import load_tensors, save_tensors

            tensors, _ = load_tensors(store / rel)
            save_tensors(store / rel, {k: torch.ones(tuple(reversed(v.shape)) + (1,),
                                                     dtype=v.dtype)
                                       for k, v in tensors.items()})

        proc = py_child("wrong_shape_mask", make, cdir, cdir / "logs")
        if proc.rc != 0:
            raise RuntimeError(f"could not write the wrong-shape mask: {proc.stderr}")
    return apply


def leftover_tmp(run: str) -> Callable[[Path, Path], None]:
    def apply(store: Path, _cdir: Path) -> None:
        d = store / run
        (d / ".x.tmp").write_text("partial")
        (d / ".config.json.k2j3h4.tmp").write_text('{"half": ')
        (d / "level_001" / ".final.safetensors.a8b7c6.tmp").write_bytes(b"\x00" * 100)
        (d / "level_002" / ".summary.json.zz91.tmp").write_text("")
    return apply


def stale_checkpoint(run: str, source: Path) -> Callable[[Path, Path], None]:
    def apply(store: Path, _cdir: Path) -> None:
        shutil.copyfile(source, store / run / "level_001" / "checkpoint.safetensors")
    return apply


# ---------------------------------------------------------------------------------------
# The campaign
# ---------------------------------------------------------------------------------------
@dataclass
class Ctx:
    out: Path
    configs: Path
    commands: dict[str, list[str]]       # scope -> the original command's argv
    pristine: dict[str, Path]            # scope -> pristine store
    fingerprints: dict[str, Any] = field(default_factory=dict)
    loads: dict[str, Any] = field(default_factory=dict)
    reports: dict[str, Any] = field(default_factory=dict)
    checkpoints: dict[str, Path] = field(default_factory=dict)


def lth_executable() -> str:
    local = ROOT / ".venv" / "bin" / "lth"
    if local.exists():
        return str(local)
    found = shutil.which("lth")
    if not found:
        sys.exit("lth is not installed (no .venv/bin/lth, none on PATH)")
    return found


def make_pristine(ctx: Ctx) -> None:
    """The two pristine stores, made by the real ``lth`` command, once."""
    lth = lth_executable()
    for scope in ("run", "session"):
        store = ctx.pristine[scope]
        if store.exists():
            shutil.rmtree(store)
        store.parent.mkdir(parents=True, exist_ok=True)
        argv = [lth, *ctx.commands[scope], "--store", str(store)]
        t0 = time.perf_counter()
        p = subprocess.run(argv, capture_output=True, text=True, cwd=ctx.configs)
        print(f"pristine {scope}: `{shlex.join(argv)}` exit {p.returncode} "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
        if p.returncode != 0:
            sys.exit(f"the pristine {scope} failed:\n{p.stdout}\n{p.stderr}")


def make_masks_from_pristine(ctx: Ctx, src: str) -> None:
    """A store with the experiment and a run reusing its masks (``--masks-from``), made
    from the folder above the store so the recorded source path is ``store/<src>``."""
    lth = lth_executable()
    home = ctx.out / "pristine" / "masks-from"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    ctx.pristine["masks-from"] = home / "store"
    ctx.commands["masks-from"] = ["run", str(ctx.configs / "experiment.toml"),
                                  "--masks-from", f"store/{src}", "--quiet"]
    for argv in ([lth, *ctx.commands["run"], "--store", "store"],
                 [lth, *ctx.commands["masks-from"], "--store", "store"]):
        t0 = time.perf_counter()
        p = subprocess.run(argv, capture_output=True, text=True, cwd=home)
        print(f"pristine masks-from: `{shlex.join(argv)}` exit {p.returncode} "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
        if p.returncode != 0:
            sys.exit(f"the pristine masks-from store failed:\n{p.stdout}\n{p.stderr}")


def make_checkpoints(ctx: Ctx) -> None:
    """Real checkpoints of finished levels: train a scratch copy whose checkpoints are not
    removed at the end of each level (``Path.unlink`` patched in that child only)."""
    logs = ctx.out / "pristine" / "logs"
    for scope, toml in (("run", "experiment.toml"), ("session", "base.toml")):
        scratch = ctx.out / "pristine" / f"checkpoints-{scope}"
        shutil.rmtree(scratch, ignore_errors=True)

        def target(toml=toml, scratch=scratch) -> int:
            import pathlib

            from lth.cli import main

            unlink = pathlib.Path.unlink

            def keep_checkpoints(self, missing_ok=False):  # lth removes them with unlink
                if self.name != "checkpoint.safetensors":
                    unlink(self, missing_ok=missing_ok)

            pathlib.Path.unlink = keep_checkpoints
            return main(["run", str(ctx.configs / toml), "--store", str(scratch), "--quiet"])

        p = Child(["run", toml, "(checkpoints kept)"], target, ctx.configs, logs).wait()
        found = sorted(scratch.glob("*/level_001/checkpoint.safetensors"))
        if p.rc != 0 or not found:
            sys.exit(f"could not make a stale checkpoint ({scope}): {p.stderr}")
        ctx.checkpoints[scope] = found[0]


def verify_listing(proc: Proc) -> list[str]:
    return [ln.strip() for ln in proc.stdout.splitlines() if "damaged" in ln]


FIX_RE = [re.compile(r"`(lth [^`]+)`"),
          re.compile(r"\b(lth (?:run|session|robust|migrate|status|report)\b[^;()`\n]*)")]


def fix_command(message: str) -> str | None:
    for rx in FIX_RE:
        m = rx.search(message)
        if m:
            return m.group(1).strip().rstrip(".,;:")
    return None


def error_lines(proc: Proc) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("lth: error")]


@dataclass
class Record:
    case: Case
    procs: dict[str, Any] = field(default_factory=dict)
    outcome: str = ""
    problems: list[str] = field(default_factory=list)  # what failed
    notes: list[str] = field(default_factory=list)
    report_child: Child | None = None
    report_dir: Path | None = None
    damaged_copy: Path | None = None
    cdir: Path | None = None
    index: int = 0
    seconds: float = 0.0

    def fail(self, text: str) -> None:
        self.problems.append(text)


def run_case(case: Case, ctx: Ctx, index: int) -> Record:
    t0 = time.perf_counter()
    rec = Record(case, index=index)
    cdir = ctx.out / "cases" / f"{index:03d}-{case.scope}"
    shutil.rmtree(cdir, ignore_errors=True)
    cdir.mkdir(parents=True)
    rec.cdir = cdir
    logs = cdir / "logs"
    store, damaged = cdir / "store", cdir / "damaged"
    shutil.copytree(ctx.pristine[case.scope], store, symlinks=True)
    case.apply(store, cdir)
    shutil.copytree(store, damaged, symlinks=True)
    rec.damaged_copy = damaged
    command = [*ctx.commands[case.scope], "--store", "store"]
    real_damage = case.expect_listed

    # 1. status, status --verify
    for key, argv in (("status", ["status", "store"]),
                      ("verify", ["status", "store", "--verify"])):
        p = lth_cli(argv, cdir, logs)
        rec.procs[key] = p
        if p.traceback:
            rec.fail(f"`lth {shlex.join(argv)}` printed a traceback ({_last_line(p)})")
        elif p.rc != 0:
            rec.fail(f"`lth {shlex.join(argv)}` exited {p.rc}: {p.first_err()}")
    listed = verify_listing(rec.procs["verify"])
    if real_damage and not rec.procs["verify"].traceback:
        if not listed:
            says = [ln.strip() for ln in rec.procs["verify"].stdout.splitlines()
                    if ln.strip()]
            rec.fail("`status --verify` lists no damaged file (it says: "
                     f"{_short(' / '.join(says), 120)})")
        elif not any(n and n in ln for ln in listed for n in case.names):
            rec.fail(f"`status --verify` lists other files, not {case.file}: {listed[0]}")
    elif listed:
        rec.notes.append(f"verify: {listed[0]}")

    # 2. lth.load and lth report on the damaged copy (the report in the background)
    check_load(rec, ctx, damaged, cdir, "load (damaged)", expect_problem=real_damage)
    rec.report_dir = cdir / "report"
    rec.report_child = lth_cli(["report", "damaged", "--out", "report"], cdir, logs,
                               background=True)

    # 3. the original command, and the fix it names if it stops
    rr = lth_cli(command, cdir, logs)
    rec.procs["rerun"] = rr
    final = rr
    if rr.rc == 2 and not rr.traceback:
        errs = error_lines(rr)
        message = "\n".join(errs) or rr.stderr
        rec.notes.append(f"message: {_short(errs[0] if errs else rr.first_err())}")
        if len(errs) != 1:
            rec.fail(f"exit 2 with {len(errs)} error lines, not one")
        if case.names != [""] and not any(n in message for n in case.names):
            rec.fail(f"the message does not name {case.file}")
        fix = fix_command(message)
        if fix is None:
            rec.fail("the message gives no command that fixes it")
        else:
            argv = shlex.split(fix)
            rec.notes.append(f"fix: `{fix}`")
            fx = lth_cli(argv[1:], cdir, logs)
            rec.procs["fix"] = fx
            if fx.traceback or fx.rc != 0:
                rec.fail(f"the fix `{fix}` exited {fx.rc}"
                         f"{' with a traceback' if fx.traceback else ''}: "
                         f"{_short(_last_line(fx))}")
            final = lth_cli(command, cdir, logs)
            rec.procs["rerun after fix"] = final
    if final.traceback:
        rec.fail(f"`lth {shlex.join(command)}` printed a traceback: "
                 f"{_short(_last_line(final))}")
    elif final.timed_out:
        rec.fail(f"`lth {shlex.join(command)}` ran past {COMMAND_TIMEOUT} s")
    elif final.rc != 0:
        rec.fail(f"`lth {shlex.join(command)}` exited {final.rc}"
                 f"{' after the fix' if final is not rr else ''}: "
                 f"{_short(_failure_text(final))}")

    # 4. the numbers, the store's state and lth.load after the re-run
    fp = py_child("fingerprint", lambda: fingerprint(store), cdir, logs)
    rec.procs["fingerprint"] = fp
    same = fp.rc == 0 and fp.result == ctx.fingerprints[case.scope]
    if not same:
        rec.fail("numbers differ from the pristine run: "
                 + _short(fingerprint_diff(fp, ctx.fingerprints[case.scope])))
    after = lth_cli(["status", "store", "--verify"], cdir, logs)
    rec.procs["verify after"] = after
    still = verify_listing(after)
    if final.rc == 0 and (still or after.rc != 0 or after.traceback):
        rec.fail(f"after the re-run `status --verify` still says: "
                 f"{_short(still[0] if still else _last_line(after))}")
    left = [str(p.relative_to(store)) for p in store.rglob("*.tmp")]
    left += [str(p.relative_to(store)) for p in store.rglob("checkpoint.safetensors")]
    if left:
        rec.notes.append(f"left in the store after the re-run: {', '.join(sorted(left))}")
    check_load(rec, ctx, store, cdir, "load (after)", expect_problem=False)

    if not rec.problems:
        rec.outcome = ("clear message + fix worked" if rr.rc == 2 else
                       "recomputed-identical")
    rec.seconds = time.perf_counter() - t0
    return rec


def _failure_text(p: Proc) -> str:
    failed = [ln for ln in p.stdout.splitlines() if ln.startswith("failed:")]
    return failed[0] if failed else (p.first_err() or _last_line(p))


def check_load(rec: Record, ctx: Ctx, store: Path, cdir: Path, key: str,
               expect_problem: bool) -> None:
    p = py_child(key.replace(" ", "_").replace("(", "").replace(")", ""),
                 lambda: loaded(store), cdir, cdir / "logs")
    rec.procs[key] = p
    res = p.result
    if p.rc != 0 or res is None:
        rec.fail(f"{key}: lth.load crashed: {_short(_last_line(p))}")
        return
    if "error" in res:
        rec.fail(f"{key}: lth.load raised {_short(res['error'])}")
        return
    ref = ctx.loads[rec.case.scope]
    bad = differing(res["levels"], ref["levels"]) + differing(res["curves"], ref["curves"])
    if bad:
        rec.fail(f"{key}: shows numbers other than the pristine ones: {_short(bad[0])} "
                 f"(+{len(bad) - 1} more)")
    dropped = sorted(set(ref["levels"]) - set(res["levels"]))
    dropped_curves = sorted({k.rsplit("|", 1)[0] for k in set(ref["curves"]) -
                             set(res["curves"])})
    if res["problems"]:
        rec.notes.append(f"{key}: {len(res['problems'])} problem(s): "
                         f"{_short(res['problems'][0], 90)}")
    if (dropped or dropped_curves) and not res["problems"]:
        rec.fail(f"{key}: leaves out {', '.join(dropped or dropped_curves)} without a word "
                 "in Results.problems")
    elif expect_problem and not res["problems"] and not dropped and key.endswith("(damaged)"):
        rec.notes.append(f"{key}: damage not in Results.problems (the numbers it shows are "
                         "right)")


def finish_report(rec: Record, ctx: Ctx) -> None:
    """Collect the background report of the damaged copy and check it."""
    if rec.report_child is None:
        return
    p = rec.report_child.wait()
    rec.report_child = None
    rec.procs["report (damaged)"] = p
    if p.traceback:
        rec.fail(f"`lth report` on the damaged store printed a traceback: "
                 f"{_short(_last_line(p))}")
    elif p.timed_out:
        rec.fail("`lth report` ran too long")
    elif p.rc == 2:
        errs = error_lines(p)
        if len(errs) != 1:
            rec.fail(f"`lth report` exited 2 with {len(errs)} error lines")
        rec.notes.append(f"report: {_short(errs[0] if errs else p.first_err())}")
    elif p.rc != 0:
        rec.fail(f"`lth report` exited {p.rc}: {_short(_last_line(p))}")
    else:
        assert rec.damaged_copy is not None and rec.report_dir is not None
        got = report_tables(rec.report_dir, rec.damaged_copy, rec.cdir)
        ref = ctx.reports[rec.case.scope]
        for name in ("levels", "curves"):
            if got[name] is None:
                rec.fail(f"`lth report` wrote no {name}.csv")
                continue
            bad = differing(got[name], ref[name])
            if bad:
                rec.fail(f"`lth report` {name}.csv shows numbers other than the pristine "
                         f"ones: {_short(bad[0])} (+{len(bad) - 1} more)")
        notes = re.findall(r"<p class='note'>(.*?)</p>",
                           (rec.report_dir / "index.html").read_text(errors="replace"))
        if notes:
            rec.notes.append(f"report: {len(notes)} figure(s) not drawn")
    if rec.problems and rec.outcome:
        rec.outcome = ""


def fingerprint_diff(fp: Proc, ref: dict[str, Any]) -> str:
    if fp.rc != 0 or fp.result is None:
        return f"fingerprint crashed: {_last_line(fp)}"
    got = fp.result
    for run, entry in ref.items():
        mine = got.get(run)
        if mine is None:
            return f"{run} is gone"
        if "error" in mine:
            return f"{run}: {mine['error']}"
        if mine.get("levels") != entry["levels"]:
            return f"{run}: levels {mine.get('levels')} (pristine {entry['levels']})"
        for k, v in entry["tensors"].items():
            if mine["tensors"].get(k) != v:
                return f"{run}: level {k} tensors differ"
        if mine["table"] != entry["table"]:
            for a, b in zip(mine["table"], entry["table"], strict=False):
                for c in b:
                    if a.get(c) != b[c]:
                        return f"{run}: level {b.get('level')} {c} = {a.get(c)} (pristine {b[c]})"
            return f"{run}: table differs"
    extra = sorted(set(got) - set(ref))
    return f"extra run directories {extra}" if extra else "differs"


def _last_line(p: Proc) -> str:
    lines = [ln for ln in p.output.splitlines() if ln.strip()]
    return lines[-1].strip() if lines else f"(no output, exit {p.rc})"


def _short(text: str, n: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 1] + "…"


# ---------------------------------------------------------------------------------------
def table_md(records: list[Record]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    rows = ["| # | case | file | outcome | notes |", "|---|---|---|---|---|"]
    for i, r in enumerate(records, 1):
        outcome = r.outcome or "FAILED: " + "; ".join(r.problems)
        rows.append(f"| {i} | {esc(r.case.label)} | `{esc(r.case.file) or '-'}` | "
                    f"{esc(outcome)} | {esc('; '.join(r.notes))} |")
    return "\n".join(rows)


def summary_md(records: list[Record], seconds: float, git: str) -> str:
    counts: dict[str, int] = {}
    for r in records:
        key = r.outcome or "FAILED"
        counts[key] = counts.get(key, 0) + 1
    by_scope = {}
    for r in records:
        s = by_scope.setdefault(r.case.scope, {"cases": 0, "failed": 0})
        s["cases"] += 1
        s["failed"] += not r.outcome
    lines = [f"{len(records)} cases in {seconds:.0f} s ({git}): "
             + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))]
    lines += [f"- {scope}: {v['cases']} cases, {v['failed']} failed"
              for scope, v in by_scope.items()]
    return "\n".join(lines)


def git_state() -> str:
    import lth

    where = Path(lth.__file__).resolve().parents[1]
    if where != ROOT / "src":
        return f"lth {lth.__version__} from {where}"
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return f"lth at {head}{' with uncommitted changes' if dirty else ''}"
    except OSError:
        return "lth (no git)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/campaign", help="output folder (default: "
                    "/tmp/campaign); an earlier campaign there is replaced")
    ap.add_argument("--only", help="run only the cases whose label or file contain this")
    ap.add_argument("--keep", action="store_true", help="keep the folders of passing cases")
    ap.add_argument("--src", help="test the lth package under this folder (e.g. an exported "
                    "commit's src/) instead of the installed one")
    args = ap.parse_args(argv)
    if args.src:
        src = str(Path(args.src).resolve())
        if not (Path(src) / "lth" / "__init__.py").exists():
            sys.exit(f"--src {src} holds no lth package")
        sys.path.insert(0, src)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [src, *filter(None, [os.environ.get("PYTHONPATH")])])
    t_start = time.perf_counter()
    # One thread per process, for every lth process of the campaign (pristine included,
    # so the numbers compare): the box is shared, and a report runs beside each case.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    out = Path(args.out).resolve()
    if out.exists() and any(out.iterdir()):
        if not (out / "pristine").is_dir() and not (out / "configs").is_dir():
            sys.exit(f"--out {out} is not empty and holds no earlier campaign; give a new or "
                     "empty folder")
        shutil.rmtree(out)
    configs = out / "configs"
    configs.mkdir(parents=True)
    (configs / "experiment.toml").write_text(EXPERIMENT_TOML)
    (configs / "base.toml").write_text(BASE_TOML)
    (configs / "session.toml").write_text(SESSION_TOML)
    ctx = Ctx(out=out, configs=configs,
              commands={"run": ["run", str(configs / "experiment.toml"), "--quiet"],
                        "session": ["session", str(configs / "session.toml"),
                                    "--executor", "sequential", "--quiet"]},
              pristine={"run": out / "pristine" / "run", "session": out / "pristine" /
                        "session"})
    make_pristine(ctx)
    src = run_dirs(ctx.pristine["run"])[0].name
    make_masks_from_pristine(ctx, src)
    print("importing lth, torch, scikit-learn, matplotlib once ...", flush=True)
    preimport()
    make_checkpoints(ctx)
    logs = out / "pristine" / "logs"
    for scope, store in ctx.pristine.items():
        fp = py_child(f"fingerprint-{scope}", lambda s=store: fingerprint(s), out, logs)
        ld = py_child(f"load-{scope}", lambda s=store: loaded(s), out, logs)
        rep = lth_cli(["report", str(store), "--out", str(out / "pristine" / f"report-{scope}")],
                      out, logs)
        vf = lth_cli(["status", str(store), "--verify"], out, logs)
        if fp.rc or ld.rc or rep.rc or vf.rc or "error" in (ld.result or {}) \
                or verify_listing(vf) or ld.result["problems"]:
            sys.exit(f"the pristine {scope} store does not read back cleanly:\n"
                     f"{fp.stderr}{ld.stderr}{ld.result}{rep.stderr}{vf.stdout}")
        ctx.fingerprints[scope], ctx.loads[scope] = fp.result, ld.result
        ctx.reports[scope] = report_tables(out / "pristine" / f"report-{scope}", store, out)
    run_rel = run_dirs(ctx.pristine["run"])[0].name
    group = next(p for p in ctx.pristine["session"].iterdir() if (p / "trials").is_dir())
    ticket = next(p for p in (group / "trials").iterdir() if p.name.startswith("ticket-"))
    cases = build_cases(run_rel, group.name, f"{group.name}/trials/{ticket.name}", ctx)
    dep = next(d.name for d in run_dirs(ctx.pristine["masks-from"]) if d.name != src)
    cases += build_masks_from_cases(src, dep)
    if args.only:
        cases = [c for c in cases if args.only in c.label or args.only in c.file]
    print(f"{len(cases)} cases; pristine stores under {out / 'pristine'}", flush=True)

    records: list[Record] = []
    pending: Record | None = None  # the record whose report runs in the background

    def settle(rec: Record) -> None:
        finish_report(rec, ctx)
        status = rec.outcome or "FAILED: " + "; ".join(rec.problems)
        print(f"[{rec.index:3d}/{len(cases)}] {rec.case.label} | {rec.case.file or '-'}"
              f" | {_short(status, 200)}", flush=True)
        if rec.outcome and not args.keep and rec.cdir is not None:
            shutil.rmtree(rec.cdir, ignore_errors=True)

    for i, case in enumerate(cases, 1):
        try:
            rec = run_case(case, ctx, i)
        except Exception as exc:  # noqa: BLE001 - a bug of this script, not of lth
            rec = Record(case, index=i)
            rec.fail(f"campaign error: {type(exc).__name__}: {exc}")
            traceback.print_exc()
        records.append(rec)
        if pending is not None:
            settle(pending)
        pending = rec
    if pending is not None:
        settle(pending)

    seconds = time.perf_counter() - t_start
    table = table_md(records)
    summary = summary_md(records, seconds, git_state())
    (out / "campaign.md").write_text(f"# Corruption campaign\n\n{summary}\n\n{table}\n")
    (out / "results.json").write_text(json.dumps([{
        "case": r.case.label, "file": r.case.file, "outcome": r.outcome or "FAILED",
        "seconds": round(r.seconds, 2),
        "problems": r.problems, "notes": r.notes,
        "commands": {k: v.to_json() for k, v in r.procs.items() if isinstance(v, Proc)}}
        for r in records], indent=1))
    print()
    print(table)
    print()
    print(summary)
    print(f"\nwritten: {out / 'campaign.md'}, {out / 'results.json'}")
    return 0 if all(r.outcome for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
