"""What a finished (or partly finished) experiment leaves: tables, curves, masks, weights."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..masks import Mask
from ..store import RunDir

TABLE_COLUMNS = ["level", "pct_remaining", "weights_remaining", "best_test_acc",
                 "final_test_acc", "early_stop_step", "early_stop_test_acc",
                 "early_stop_val_loss", "train_steps", "steps_to_mask", "earlybird_step",
                 "wall_time_s"]


def summarize(level: int, mask: Mask, history: list[dict[str, float]], start_step: int,
              wall_time: float) -> dict[str, Any]:
    """Per-level record: densities, best/final test accuracy and the early-stop iteration.

    The early-stop iteration is the evaluated step of minimum validation loss (the paper's
    measure of learning speed; the test loss stands in when there is no validation set);
    the untrained starting point is not a candidate.
    """
    trained = [r for r in history if r["step"] > start_step] or history
    key = "val_loss" if not math.isnan(trained[-1]["val_loss"]) else "test_loss"
    best = min(trained, key=lambda r: (r[key], r["step"]))
    kept, sizes = mask.kept(), mask.sizes()
    total = sum(sizes.values())
    return {
        "level": level,
        "density": sum(kept.values()) / total,
        "pct_remaining": 100.0 * sum(kept.values()) / total,
        "weights_remaining": sum(kept.values()),
        "weights_total": total,
        "layer_density": {n: kept[n] / sizes[n] for n in sizes},
        "best_test_acc": max(r["test_acc"] for r in trained),
        "final_test_acc": history[-1]["test_acc"],
        "final_val_acc": history[-1]["val_acc"],
        "early_stop_step": int(best["step"]),
        "early_stop_on": key,
        "early_stop_test_acc": best["test_acc"],
        "early_stop_val_loss": best["val_loss"],
        "train_steps": int(history[-1]["step"]) - start_step,
        "wall_time_s": wall_time,
    }


def levels_frame(summaries: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per level: the main columns, then one ``density[<param>]`` column per layer."""
    rows = []
    for s in summaries:
        row = {c: s.get(c) for c in TABLE_COLUMNS}
        row.update({f"density[{n}]": d for n, d in s["layer_density"].items()})
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else TABLE_COLUMNS)


class Result:
    """Results of one run, read from its run directory (``lth.LotteryModel.run`` returns one).

    ``table()`` gives one row per level, ``history()`` the evaluation curves, ``mask(level)``
    and ``weights(level, "start" | "final")`` the saved tensors.
    """

    def __init__(self, run_dir: str | Path, *, _keepalive: Any = None):
        self.run = RunDir(run_dir)
        self._keepalive = _keepalive  # a TemporaryDirectory when run without a store

    @property
    def path(self) -> Path:
        return self.run.path

    @property
    def levels(self) -> list[int]:
        """Finished levels (their summaries verify), in order."""
        return self.run.finished_levels()

    def config(self) -> dict[str, Any]:
        return self.run.config()

    def summary(self, level: int) -> dict[str, Any]:
        s = self.run.level(level).summary()
        s.pop("files", None)
        return s

    def table(self) -> pd.DataFrame:
        """Per-level DataFrame (level, % weights remaining, accuracies, early-stop step, ...)."""
        return levels_frame([self.summary(lv) for lv in self.levels])

    def history(self, level: int | None = None) -> pd.DataFrame:
        """Evaluation curves (one row per evaluation), with a ``level`` column."""
        chosen = self.levels if level is None else [level]
        frames = [pd.DataFrame(self.run.level(lv).history()).assign(level=lv)
                  for lv in chosen]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def earlybird_levels(self) -> list[int]:
        """Finished levels that ran an early-bird search."""
        return [lv for lv in self.levels
                if "earlybird.json" in self.run.level(lv).summary()["files"]]

    def earlybird(self, level: int = 0) -> dict[str, Any]:
        """The early-bird search record of a finished level: ``check_steps``, the pairwise
        ``distance_matrix`` of the masks at those checks and ``drawn_step`` (None: the
        ticket was not drawn and the level trained in full)."""
        searched = self.earlybird_levels()
        if level not in searched:
            raise KeyError(f"level {level} of {self.path.name} has no early-bird search record;"
                           f" levels with one: {searched or 'none (earlybird.enabled = false)'}")
        lv = self.run.level(level)
        return lv.record("earlybird.json")

    def mask(self, level: int) -> Mask:
        order = list(self.config().get("prunable", {})) or None
        return Mask(self.run.level(level).tensors("mask"), order=order)

    def weights(self, level: int, which: str = "final") -> dict[str, torch.Tensor]:
        """``which='start'``: the weights the level trained from; ``'final'``: after training."""
        if which not in ("start", "final"):
            raise ValueError(f"which={which!r}; use 'start' or 'final'")
        return self.run.level(level).tensors(which)

    def __repr__(self) -> str:
        return f"Result({str(self.path)!r}, levels={self.levels})"


COMPARE_COLUMNS = {"pct_remaining": "% weights", "early_stop_test_acc": "acc@es",
                   "early_stop_step": "es it", "final_test_acc": "final acc"}


def compare(results: list[Result], labels: list[str] | None = None) -> pd.DataFrame:
    """Side-by-side per-level table of several runs: per run the % of weights remaining,
    the test accuracy at early stop, the early-stop iteration and the final test accuracy.
    The % column is shared when every run has the same densities. Missing levels are NaN."""
    labels = labels or [r.path.name for r in results]
    if len(labels) != len(results):
        raise ValueError(f"{len(labels)} labels for {len(results)} runs")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels repeat: {labels}; give each run its own")
    tables = [r.table()[["level", *COMPARE_COLUMNS]] for r in results]
    shared = all(t[["level", "pct_remaining"]].equals(tables[0][["level", "pct_remaining"]])
                 for t in tables)
    merged = tables[0][["level", "pct_remaining"]].rename(
        columns={"pct_remaining": "% weights"}) if shared else None
    for t, label in zip(tables, labels, strict=True):
        t = t.drop(columns="pct_remaining") if shared else t
        t = t.rename(columns={c: f"{label} {short}" for c, short in COMPARE_COLUMNS.items()})
        merged = t if merged is None else merged.merge(t, on="level", how="outer")
    assert merged is not None
    return merged.sort_values("level").reset_index(drop=True)
