"""A group of trials in one directory: the engine under sessions and robust runs.

Layout of ``<store>/<name>-<kind>-<hash12>/``: ``config.json`` (identity), ``trials.json``
(status of every trial, written only by the driver), ``trials/`` (each trial's run
directory), ``failures/<key>.txt`` (tracebacks), ``running/<key>.pid`` (live trials), and
the tables ``table.csv``, ``stats.csv``, ``curve_stats.csv``, ``trials.csv``.

A trial that finished is never run again; one that was interrupted resumes from its last
checkpoint; one that failed is skipped (and counted) unless ``retry_failed``.
"""

from __future__ import annotations

import fcntl
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .. import __version__
from ..errors import ConfigError, StoreError
from ..execution import WorkerLost, make_executor
from ..store import RunDir, atomic_write_bytes, read_json, write_json
from .result import Result
from .stats import aggregate
from .trials import Outcome, Trial, run_trial

LEVEL_METRICS = ["pct_remaining", "best_test_acc", "final_test_acc", "early_stop_step",
                 "early_stop_test_acc", "early_stop_val_loss"]
CURVE_METRICS = ["train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"]


class TrialGroup:
    """Trials run together and stored in one directory (see the module docstring)."""

    kind = "group"

    def __init__(self, name: str, trials: Sequence[Trial], identity: dict[str, Any],
                 info: dict[str, Any] | None = None):
        keys = [t.key for t in trials]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"trial keys repeat: {keys}")
        by_key = {t.key: t for t in trials}
        for t in trials:
            if t.masks_of is None:
                continue
            if t.masks_of not in keys:
                raise ConfigError(f"trial {t.key!r} reuses the masks of {t.masks_of!r}, which "
                                  f"is not in this {self.kind}; known: {', '.join(keys)}")
            if _levels(t) > _levels(by_key[t.masks_of]):
                raise ConfigError(f"variant {t.variant!r} has {_levels(t)} levels but reuses "
                                  f"the masks of {by_key[t.masks_of].variant!r}, which has "
                                  f"{_levels(by_key[t.masks_of])}; give it at most as many")
        self.name, self.trials, self.identity = name, list(trials), identity
        self.info = info or {}

    def check(self) -> None:
        """Check every variant against its model and data before any trial trains."""
        seen = set()
        for t in self.trials:
            if t.variant in seen:
                continue
            seen.add(t.variant)
            exp = t.build(None)
            if t.masks_of is not None:  # its masks come later; check everything else
                exp = exp.replace(masks_from_mode="same")
            exp.check()

    def run(self, store: str | Path | None = "runs", *, executor: str = "sequential",
            workers: int | None = None, retry_failed: bool = False,
            progress: bool = False) -> GroupResult:
        """Run every trial that is not finished; returns the group's results.

        ``store=None`` uses a temporary directory that lives as long as the result.
        """
        keepalive = None
        if store is None:
            keepalive = tempfile.TemporaryDirectory(prefix="lth-")
            store = keepalive.name
        self.check()
        identity = {"kind": self.kind, "lth": ".".join(__version__.split(".")[:2]),
                    **self.identity}
        gdir = RunDir.open(store, f"{self.name}-{self.kind}", identity,
                           {"name": self.name, "kind": self.kind, **self.info}).path
        status: dict[str, dict] = (read_json(gdir / "trials.json")
                                   if (gdir / "trials.json").exists() else {})
        for t in self.trials:
            entry = status.setdefault(t.key, {"status": "pending"})
            entry.update(variant=t.variant, seed=t.seed)
            if entry["status"] == "failed" and retry_failed:
                entry["status"] = "pending"
        write_json(gdir / "trials.json", status)
        lock = open(gdir / ".lock", "a")  # noqa: SIM115 - held for the whole run
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise StoreError(f"{gdir} is being run by another process; wait for it to finish "
                             "(`lth status` shows its trials) or stop it") from None
        try:
            pool = make_executor(executor, workers)
            try:
                _Driver(self.trials, gdir, status, pool, progress).loop()
            finally:
                pool.shutdown()
        finally:
            lock.close()  # the kernel drops the lock with the process, even on kill -9
        result = GroupResult(gdir, _keepalive=keepalive)
        result.write_tables()
        return result


def _levels(t: Trial) -> int:
    return t.config.n_levels if t.config is not None else t.experiment.config.n_levels  # type: ignore[union-attr]


class _Driver:
    """Submits ready trials (dependencies finished), collects outcomes, retries lost ones."""

    def __init__(self, trials: list[Trial], gdir: Path, status: dict, pool: Any,
                 progress: bool):
        self.trials = {t.key: t for t in trials}
        self.gdir, self.status, self.pool = gdir, status, pool
        self.running: dict[Any, str] = {}
        self.lost: dict[str, int] = {}
        self.bar = _Progress(gdir, trials, status) if progress else None

    def record(self, key: str, **entry: Any) -> None:
        self.status[key].update(entry)
        write_json(self.gdir / "trials.json", self.status)

    def ready(self) -> list[Trial]:
        out = []
        busy = set(self.running.values())
        for key, t in self.trials.items():
            if self.status[key]["status"] != "pending" or key in busy:
                continue
            dep = self.status.get(t.masks_of, {}) if t.masks_of else {"status": "done"}
            if dep["status"] == "failed":
                error = f"needs the masks of {t.masks_of}, which failed"
                atomic_write_bytes(self.gdir / "failures" / f"{key}.txt", error.encode())
                self.record(key, status="failed", error=error)
            elif dep["status"] == "done":
                out.append(t)
        return out

    def loop(self) -> None:
        while True:
            for t in self.ready()[:max(0, self.pool.capacity - len(self.running))]:
                masks = self.status[t.masks_of]["run_dir"] if t.masks_of else None
                handle = self.pool.submit(run_trial, t, str(self.gdir / "trials"), masks,
                                          str(self.gdir / "running"))
                self.running[handle] = t.key
                self.record(t.key, status="pending", started=time.time())
            if not self.running:
                break
            for handle in self.pool.wait(list(self.running), timeout=0.5):
                self.collect(handle, self.running.pop(handle))
            if self.bar:
                self.bar.update(self.status, len(self.running))
        if self.bar:
            self.bar.close(self.status)

    def collect(self, handle: Any, key: str) -> None:
        try:
            out: Outcome = self.pool.result(handle)
        except WorkerLost as exc:
            self.lost[key] = self.lost.get(key, 0) + 1
            if self.lost[key] < 2:  # resubmit once: it resumes from its checkpoint
                return
            out = Outcome(key, "failed", error=f"{exc}; twice")
        if out.status == "failed":
            fail = self.gdir / "failures" / f"{key}.txt"
            atomic_write_bytes(fail, (out.traceback or out.error or "").encode())
            self.record(key, status="failed", error=out.error)
        else:
            self.record(key, status="done", run_dir=out.run_dir,
                        wall_time_s=round(out.wall_time_s, 3))


class _Progress:
    """One bar over all trials' levels, with done / running / failed trial counts."""

    def __init__(self, gdir: Path, trials: list[Trial], status: dict):
        from tqdm.auto import tqdm

        total = sum((t.config.n_levels if t.config else t.experiment.config.n_levels) + 1
                    for t in trials)  # type: ignore[union-attr]
        self.gdir = gdir
        self.bar = tqdm(total=total, unit="level", dynamic_ncols=True)
        self.update(status, 0)

    def update(self, status: dict, running: int) -> None:
        levels = len(list(self.gdir.glob("trials/*/level_*/summary.json")))
        self.bar.n = min(levels, self.bar.total)
        counts = pd.Series([s["status"] for s in status.values()]).value_counts()
        self.bar.set_postfix(done=int(counts.get("done", 0)), running=running,
                             failed=int(counts.get("failed", 0)), refresh=False)
        self.bar.refresh()

    def close(self, status: dict) -> None:
        self.update(status, 0)
        self.bar.close()


class GroupResult:
    """Results of a group directory: per-trial tables, across-seed statistics, curves."""

    def __init__(self, path: str | Path, *, _keepalive: Any = None):
        self.path = Path(path)
        self._keepalive = _keepalive

    def status(self) -> dict[str, dict]:
        f = self.path / "trials.json"
        return read_json(f) if f.exists() else {}

    def trials(self) -> pd.DataFrame:
        """One row per trial: key, variant, seed, status, run_dir, error."""
        rows = [{"key": k, **v} for k, v in self.status().items()]
        cols = ["key", "variant", "seed", "status", "run_dir", "error", "wall_time_s"]
        return pd.DataFrame(rows).reindex(columns=cols)

    def _done(self) -> list[tuple[str, dict, Result]]:
        return [(k, v, Result(v["run_dir"])) for k, v in self.status().items()
                if v.get("status") == "done" and v.get("run_dir")]

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
        out = aggregate(table, ["experiment", "level"], LEVEL_METRICS)
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
        return aggregate(curves, ["experiment", "level", "step"], CURVE_METRICS)

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
        for name, frame in (("trials", self.trials()), ("counts", self.counts()),
                            ("table", self.table()),
                            ("stats", self.stats()), ("curve_stats", self.curve_stats())):
            atomic_write_bytes(self.path / f"{name}.csv", frame.to_csv(index=False).encode())

    def summary_line(self) -> str:
        counts = self.trials()["status"].value_counts()
        return (f"{int(counts.get('done', 0))} done, {int(counts.get('failed', 0))} failed, "
                f"{int(counts.get('pending', 0))} not finished")
