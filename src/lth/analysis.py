"""Load finished (or partly finished) results as tidy DataFrames: ``lth.load(path)``.

``path`` may be one run directory, a session/robust group directory, or a whole store.
Interrupted runs contribute the levels they finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .errors import StoreError
from .experiment.result import TABLE_COLUMNS, Result
from .store import read_json


@dataclass
class Results:
    """``runs``: one row per run (run_dir, experiment, seed, group, kind, status);
    ``levels``: one row per finished level (densities, accuracies, early stop);
    ``layers``: one row per level and layer (weights, kept, density);
    ``curves``: one row per evaluation (losses and accuracies over steps)."""

    runs: pd.DataFrame
    levels: pd.DataFrame
    layers: pd.DataFrame
    curves: pd.DataFrame

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
        for name in ("runs", "levels", "layers", "curves"):
            path = out / f"{name}.{fmt}"
            frame = getattr(self, name)
            if fmt == "csv":
                frame.to_csv(path, index=False)
            else:
                try:
                    frame.to_parquet(path, index=False)
                except ImportError as exc:
                    raise StoreError(f"Parquet export needs pyarrow: pip install pyarrow "
                                     f"({exc})") from None
            paths.append(path)
        return paths


def _is_run(d: Path) -> bool:
    return (d / "config.json").exists() and (d / "theta0.safetensors").exists()


def _group_kind(d: Path) -> str | None:
    if not (d / "config.json").exists():
        return None
    return read_json(d / "config.json").get("identity", {}).get("kind")


def _discover(path: Path) -> list[dict]:
    """Run entries under ``path``: a run, a group directory, or a store of either."""
    if _is_run(path):
        cfg = read_json(path / "config.json")
        return [{"run_dir": str(path), "experiment": cfg.get("name", path.name),
                 "seed": cfg["identity"]["settings"]["seed"], "group": None, "kind": "run",
                 "status": "done" if _finished(path, cfg) else "partial"}]
    kind = _group_kind(path)
    if kind in ("session", "robust"):
        trials = read_json(path / "trials.json") if (path / "trials.json").exists() else {}
        out = []
        for t in trials.values():
            run_dirs = [t["run_dir"]] if t.get("run_dir") else []
            if not run_dirs:  # interrupted: find its run directory by name and seed
                run_dirs = [str(d) for d in (path / "trials").glob(f"{t['variant']}-*")
                            if _is_run(d) and _trial_of(d, t)]
            for rd in run_dirs:
                out.append({"run_dir": rd, "experiment": t["variant"], "seed": t["seed"],
                            "group": path.name, "kind": kind, "status": t["status"]})
        return out
    if path.is_dir():
        found = []
        for d in sorted(p for p in path.iterdir() if p.is_dir()):
            if _is_run(d) or _group_kind(d) in ("session", "robust"):
                found += _discover(d)
        return found
    raise StoreError(f"{path} is not a run, session/robust or store directory")


def _trial_of(run: Path, trial: dict) -> bool:
    cfg = read_json(run / "config.json")
    return (cfg.get("name") == trial["variant"]
            and cfg["identity"]["settings"]["seed"] == trial["seed"])


def _finished(run: Path, cfg: dict) -> bool:
    n = cfg.get("identity", {}).get("settings", {}).get("n_levels")
    return n is not None and all((run / f"level_{lv:03d}" / "summary.json").exists()
                                 for lv in range(n + 1))


def load(path: str | Path) -> Results:
    """Tidy tables of everything under ``path`` (see :class:`Results`), e.g.
    ``lth.load("runs").levels.groupby("experiment").best_test_acc.max()``."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path} does not exist; give a run, group or store directory")
    entries = _discover(path)
    levels, layers, curves = [], [], []
    for e in entries:
        r = Result(e["run_dir"])
        ids = {"experiment": e["experiment"], "seed": e["seed"], "run_dir": e["run_dir"]}
        sizes = r.config().get("prunable", {})
        for lv in r.levels:
            s = r.summary(lv)
            row = {**ids, **{c: s.get(c) for c in TABLE_COLUMNS}}
            row.update({f"density[{n}]": d for n, d in s["layer_density"].items()})
            levels.append(row)
            layers += [{**ids, "level": lv, "layer": n, "weights": sizes.get(n),
                        "kept": round(d * sizes[n]) if n in sizes else None, "density": d}
                       for n, d in s["layer_density"].items()]
        h = r.history()
        if not h.empty:
            curves.append(h.assign(**ids))
    front = ["experiment", "seed", "level"]

    def frame(rows: list[dict]) -> pd.DataFrame:
        f = pd.DataFrame(rows)
        return f[[c for c in front if c in f] + [c for c in f if c not in front]] if len(f) \
            else f

    curve = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    if len(curve):
        curve = curve[front + ["step"] + [c for c in curve if c not in (*front, "step")]]
    return Results(pd.DataFrame(entries), frame(levels), frame(layers), curve)
