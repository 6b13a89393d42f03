"""Load finished (or partly finished) results as tidy DataFrames: ``lth.load(path)``.

``path`` may be one run directory, a session/robust group directory, or a whole store.
Interrupted runs contribute the levels they finished. Runs are grouped by identity: the
seeds of one experiment share its ``experiment_id``; two runs with the same name but
different settings are two experiments, labelled by what differs (:mod:`lth.labels`:
``quickstart · criterion=movement``). What cannot be read is listed in ``problems``,
never dropped without a word.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import StoreError
from .experiment.result import Result, level_row, with_numbers
from .labels import experiment_labels
from .status import command_hint
from .store import (
    GROUP_KINDS,
    Damaged,
    RunDir,
    Trials,
    is_run_or_group,
    legacy_format,
    store_entries,
)
from .studies import STUDIES


@dataclass
class Results:
    """``runs``: one row per run (run_dir, experiment, experiment_id, seed, group, kind,
    status, dataset, model); ``levels``: one row per finished level (densities,
    accuracies, early stop); ``layers``: one row per level and layer (weights, kept,
    density); ``curves``: one row per evaluation (losses and accuracies over steps);
    ``problems``: what could not be read, and why; ``studies``: one table per registered
    study (:mod:`lth.studies`), its rows beside the run's experiment, seed and run_dir,
    e.g. ``studies["instability"]``: one row per analysed level of ``lth instability``
    (rewind step, barriers, the copies' accuracies), also ``.instability``."""

    runs: pd.DataFrame
    levels: pd.DataFrame
    layers: pd.DataFrame
    curves: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    studies: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def instability(self) -> pd.DataFrame:
        """``studies["instability"]`` (empty without analyses)."""
        return self.studies.get("instability", pd.DataFrame())

    def result(self, run_dir: str | Path) -> Result:
        return Result(run_dir)

    def to_csv(self, directory: str | Path) -> list[Path]:
        return self._export(directory, "csv")

    def to_parquet(self, directory: str | Path) -> list[Path]:
        return self._export(directory, "parquet")

    def _export(self, directory: str | Path, fmt: str) -> list[Path]:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        frames = {"runs": self.runs, "levels": self.levels, "layers": self.layers,
                  "curves": self.curves}
        # A study's table only where it has rows: stores without its analyses get no file.
        frames.update({name: t for name, t in self.studies.items() if len(t)})
        for name, frame in frames.items():
            path = out / f"{name}.{fmt}"
            if fmt == "csv":
                frame.to_csv(path, index=False)
            else:
                try:
                    frame.to_parquet(path, index=False)
                except ImportError:
                    raise StoreError("Parquet export needs pyarrow: pip install 'lth[parquet]' "
                                     "(or write CSV with to_csv)") from None
            paths.append(path)
        return paths


class _Finder:
    """Walks a path for runs, noting what it cannot use (and the command that repairs it)."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.problems: list[str] = []

    def walk(self, path: Path) -> None:
        if legacy_format(path):
            self.problems.append(f"{path}: made by lth 0.1 (store format 1), not read; "
                                 f"`lth migrate {path.parent}` upgrades it")
        elif is_run_or_group(path):
            self.entry(path)
        elif path.is_dir():
            for d in store_entries(path):
                self.walk(d)

    def entry(self, d: Path) -> None:
        run = RunDir(d)
        kind = run.kind()
        fix = command_hint(kind)
        try:
            cfg = run.config()
        except Damaged as exc:
            self.problems.append(f"{exc}; {fix}")
            cfg = None
        if kind in GROUP_KINDS:
            self.group(d, kind)
        elif cfg is not None:
            self.run(d, cfg, group=None, kind="run", status=None, fix=fix)

    def run(self, d: Path, cfg: dict[str, Any], *, group: str | None, kind: str,
            status: str | None, fix: str) -> None:
        identity = cfg["identity"]
        run = RunDir(d)
        self.problems += [f"{exc}; left out; {fix}" for exc in run.verify(deep=False)]
        source = run.masks_source()
        if source is not None and not source.path.is_dir():
            self.problems.append(f"{d.name} reuses the masks of {source.name}, which is not in "
                                 f"this store; if it was, `lth run {source.path}` restores it")
        finished = run.finished_levels()
        n_levels = cfg.get("n_levels", identity.get("settings", {}).get("n_levels"))
        complete = n_levels is not None and finished == list(range(n_levels + 1))
        self.entries.append({
            "run_dir": str(d), "run_id": cfg.get("run_id"), "name": cfg.get("name", d.name),
            "experiment_id": cfg.get("experiment_id"), "seed": identity.get("seed"),
            "group": group, "kind": kind,
            "status": status or ("done" if complete else "partial"),
            "dataset": (cfg.get("data") or {}).get("name"), "model": cfg.get("model"),
            "n_levels": n_levels, "levels_done": len(finished), "_config": cfg})

    def group(self, gdir: Path, kind: str) -> None:
        """The trials in the group's order, then runs its record lacks (interrupted
        trials; a damaged trials.json)."""
        trials = Trials(gdir)
        fix = command_hint(kind)
        damaged = trials.problem()
        if damaged is not None:
            self.problems.append(f"{damaged}; {fix}")
        dirs: dict[Path, str | None] = {}
        for key, entry in trials.read().items():
            run = trials.run_path(entry)
            if run is not None and run.is_dir():
                dirs[run.resolve()] = entry.get("status")
            elif entry.get("status") == "done":
                self.problems.append(f"{gdir.name}: the run of trial {key} is missing; {fix}")
        store = gdir / "trials"
        for d in store_entries(store) if store.is_dir() else []:
            dirs.setdefault(d.resolve(), None)
        for d, status in dirs.items():
            try:
                run_cfg = RunDir(d).config()
            except Damaged as exc:
                self.problems.append(f"{exc}; not read; {fix}")
                continue
            self.run(d, run_cfg, group=gdir.name, kind=kind, status=status, fix=fix)


def load(path: str | Path) -> Results:
    """Tidy tables of everything under ``path`` (see :class:`Results`), e.g.
    ``lth.load("runs").levels.groupby("experiment").best_test_acc.max()``."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path} does not exist; give a run, group or store directory")
    if not path.is_dir():
        raise StoreError(f"{path} is not a run, session/robust or store directory")
    finder = _Finder()
    finder.walk(path)
    seen: set[str] = set()
    entries = []
    for e in finder.entries:  # the same run reached twice (copied stores) counts once
        if e["run_dir"] not in seen:
            seen.add(e["run_dir"])
            entries.append(e)
    labels = experiment_labels((e["name"], e["experiment_id"], e["_config"]) for e in entries)
    levels, layers, curves = [], [], []
    studied: dict[str, list[dict[str, Any]]] = {name: [] for name in STUDIES}
    for e in entries:
        e["experiment"] = labels[e["name"], e["experiment_id"]]
        ids = {"experiment": e["experiment"], "seed": e["seed"], "run_dir": e["run_dir"],
               "experiment_id": e["experiment_id"]}
        for name, study in STUDIES.items():
            rows, problems = study.rows(RunDir(e["run_dir"]))
            studied[name] += [{**ids, **row} for row in rows]
            finder.problems += problems
        r = Result(e["run_dir"])
        sizes = r.config().get("prunable", {})
        for lv in r.levels:
            s = r.summary(lv)
            levels.append({**ids, **level_row(s), "finished_at": s.get("finished_at")})
            layers += [{**ids, "level": lv, "layer": n, "weights": sizes.get(n),
                        "kept": round(d * sizes[n]) if n in sizes else None, "density": d}
                       for n, d in s["layer_density"].items()]
            try:
                curves.append(pd.DataFrame(r.run.level(lv).history()).assign(level=lv, **ids))
            except Damaged as exc:
                finder.problems.append(f"{exc}; its curves are left out; "
                                       f"{command_hint(e['kind'])}")
    front = ["experiment", "seed", "level"]

    def frame(rows: list[dict]) -> pd.DataFrame:
        f = pd.DataFrame(rows)
        return f[[c for c in front if c in f] + [c for c in f if c not in front]] if len(f) \
            else f

    curve = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    if len(curve):
        curve = curve[front + ["step"] + [c for c in curve if c not in (*front, "step")]]
    runs = pd.DataFrame([{k: v for k, v in e.items() if not k.startswith("_")}
                         for e in entries])
    if len(runs):
        runs = runs[["experiment", "seed"] + [c for c in runs if c not in ("experiment",
                                                                             "seed")]]
    return Results(runs, with_numbers(frame(levels)), frame(layers), curve, finder.problems,
                   {name: STUDIES[name].table(frame(rows)) for name, rows in studied.items()})
