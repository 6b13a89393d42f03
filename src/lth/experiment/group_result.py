"""The results of a group directory (session / robust): per-trial tables, across-seed
statistics and curves, read from its ``trials.json`` and the trials' runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..store import Trials
from .result import Result, curve_metrics, level_metrics
from .stats import aggregate


class GroupResult:
    """Results of a group directory: per-trial tables, across-seed statistics, curves."""

    def __init__(self, path: str | Path, *, _keepalive: Any = None):
        self.path = Path(path)
        self._keepalive = _keepalive

    def status(self) -> dict[str, dict]:
        """Every trial's entry (status, variant, seed, run_dir relative to the group)."""
        return Trials(self.path).read()

    def trials(self) -> pd.DataFrame:
        """One row per trial: key, variant, seed, status, run_dir (a full path), error."""
        trials = Trials(self.path)
        rows = [{"key": k, **v, "run_dir": str(p) if (p := trials.run_path(v)) else None}
                for k, v in self.status().items()]
        cols = ["key", "variant", "seed", "status", "run_dir", "error", "wall_time_s"]
        return pd.DataFrame(rows).reindex(columns=cols)

    def _done(self) -> list[tuple[str, dict, Result]]:
        trials = Trials(self.path)
        return [(k, v, Result(trials.run_path(v))) for k, v in self.status().items()
                if v.get("status") == "done" and (p := trials.run_path(v)) is not None
                and p.is_dir()]

    def table(self) -> pd.DataFrame:
        """Long per-level table of every finished trial (experiment, seed, level, ...)."""
        frames = [r.table().assign(experiment=v["variant"], seed=v["seed"])
                  for _, v, r in self._done()]
        if not frames:
            return pd.DataFrame()
        t = pd.concat(frames, ignore_index=True)
        front = ["experiment", "seed", "level"]
        return t[front + [c for c in t.columns if c not in front]]

    def curves(self) -> pd.DataFrame:
        """Every evaluation of every finished trial, with experiment and seed columns."""
        frames = [r.history().assign(experiment=v["variant"], seed=v["seed"])
                  for _, v, r in self._done()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def stats(self) -> pd.DataFrame:
        """Per experiment, level and metric: n, mean, median, min, max, sd, 95% CI, plus the
        experiment's n_ok / n_failed trials."""
        table = self.table()
        if table.empty:
            return pd.DataFrame()
        metrics = [m for m in level_metrics(table.columns)
                   if m not in ("train_steps", "steps_to_mask", "earlybird_step")]
        out = aggregate(table, ["experiment", "level"], metrics)
        trials = self.trials()
        ok = trials[trials.status == "done"].groupby("variant").size()
        bad = trials[trials.status == "failed"].groupby("variant").size()
        out["n_ok"] = out["experiment"].map(ok).fillna(0).astype(int)
        out["n_failed"] = out["experiment"].map(bad).fillna(0).astype(int)
        return out

    def counts(self) -> pd.DataFrame:
        """Per experiment: trials finished, failed and not finished (every variant, even one
        with no finished trial)."""
        t = self.trials()
        if t.empty:
            return pd.DataFrame(columns=["experiment", "n_ok", "n_failed", "n_unfinished"])
        return (t.assign(n_ok=t.status == "done", n_failed=t.status == "failed",
                         n_unfinished=~t.status.isin(["done", "failed"]))
                .groupby("variant", sort=False)[["n_ok", "n_failed", "n_unfinished"]].sum()
                .reset_index().rename(columns={"variant": "experiment"}))

    def curve_stats(self) -> pd.DataFrame:
        """Per experiment, level, evaluation step and metric: statistics across seeds."""
        curves = self.curves()
        if curves.empty:
            return pd.DataFrame()
        return aggregate(curves, ["experiment", "level", "step"], curve_metrics(curves.columns))

    def pruning_summary(self) -> pd.DataFrame:
        """Per experiment, level and layer: weights, weights kept and % pruned (seed means)."""
        rows = []
        for _, v, r in self._done():
            sizes = r.config()["prunable"]
            for level in r.levels:
                for layer, d in r.summary(level)["layer_density"].items():
                    rows.append({"experiment": v["variant"], "seed": v["seed"], "level": level,
                                 "layer": layer, "weights": sizes[layer],
                                 "kept": round(d * sizes[layer]), "pct_pruned": 100 * (1 - d)})
        if not rows:
            return pd.DataFrame()
        frame = pd.DataFrame(rows)
        return (frame.groupby(["experiment", "level", "layer"], sort=False)
                [["weights", "kept", "pct_pruned"]].mean().reset_index())

    def write_tables(self) -> None:
        store = Trials(self.path)
        for name, frame in (("trials", self.trials()), ("counts", self.counts()),
                            ("table", self.table()),
                            ("stats", self.stats()), ("curve_stats", self.curve_stats())):
            store.write_table(name, frame.to_csv(index=False))

    def summary_line(self) -> str:
        counts = self.trials()["status"].value_counts()
        return (f"{int(counts.get('done', 0))} done, {int(counts.get('failed', 0))} failed, "
                f"{int(counts.get('pending', 0))} not finished")
