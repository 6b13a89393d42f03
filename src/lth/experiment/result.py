"""What a finished (or partly finished) experiment leaves: tables, curves, masks, weights."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ..errors import ConfigError, StoreError, unknown_name
from ..masks import Mask
from ..store import Level, RunDir
from ..tasks import CLASSIFICATION, Task


def scores_of(names: Any) -> list[str]:
    """The task metrics a level summary (or a per-level table's columns, or any names)
    reports: ``acc`` for classification."""
    return [k[len("best_test_"):] for k in names if k.startswith("best_test_")]


def table_columns(scores: list[str]) -> list[str]:
    """The per-level table's main columns for a task with metrics ``scores``."""
    return ["level", "pct_remaining", "weights_remaining", *_metric_columns(scores),
            "train_steps", "steps_to_mask", "earlybird_step", *COST_COLUMNS, "wall_time_s"]


COST_COLUMNS = ["mask_updates", "mask_turnover", "train_flops", "flops_to_mask",
                "budget_steps", "budget_flops"]
"""What a level's network cost: mask changes while it trained and the share of its final
mask they brought in, the FLOPs of its training and of finding its mask, and in all (the
``budget_*``: every training step, or FLOP, the final network depends on)."""


def _metric_columns(scores: list[str]) -> list[str]:
    return [*[f"start_test_{m}" for m in scores],
            *[f"{what}_test_{m}" for m in scores for what in ("best", "final")],
            "early_stop_step", *[f"early_stop_test_{m}" for m in scores],
            "early_stop_val_loss"]



def shown_columns(columns: Any) -> dict[str, str]:
    """Readable names of a per-level table's main columns, for printed and HTML tables:
    ``best test acc``, ``final test acc``, ``early-stop it``, ``acc @ early stop``."""
    scores = scores_of(columns)
    out = {"pct_remaining": "% weights"}
    for m in scores:
        out.update({f"start_test_{m}": f"untrained test {m}",
                    f"best_test_{m}": f"best test {m}", f"final_test_{m}": f"final test {m}"})
    out["early_stop_step"] = "early-stop it"
    out.update({f"early_stop_test_{m}": f"{m} @ early stop" for m in scores})
    return out


def shown_costs(frame: pd.DataFrame) -> dict[str, str]:
    """Readable names of the cost columns a printed table shows: those of sparse training
    (updates, turnover, budgets) when a level of ``frame`` changed its mask while training."""
    if "mask_updates" not in frame or not (frame["mask_updates"].fillna(0) > 0).any():
        return {}
    return {"mask_updates": "mask updates", "mask_turnover": "mask turnover",
            "budget_steps": "budget steps", "budget_flops": "budget FLOPs"}


def level_metrics(columns: Any) -> list[str]:
    """The numbers of a per-level table (or summary) that statistics and trackers follow:
    the % remaining, every task metric (best, final, at early stop), the early stop."""
    wanted = ["pct_remaining", *_metric_columns(scores_of(columns)), "train_steps",
              "steps_to_mask", "earlybird_step", "mask_turnover", "budget_steps",
              "budget_flops"]
    return [c for c in wanted if c in columns]


def curve_metrics(columns: Any) -> list[str]:
    """The losses and metrics of an evaluation history (``train_*``, ``val_*``, ``test_*``)."""
    return [c for c in columns if c.startswith(("train_", "val_", "test_"))]


def _best(rows: list[dict[str, float]], key: str, goal: str) -> dict[str, float]:
    """The row with the best ``key`` (the earliest on ties; NaN never best)."""
    finite = [r for r in rows if not math.isnan(r[key])] or rows
    sign = 1.0 if goal == "min" else -1.0
    return min(finite, key=lambda r: (sign * r[key], r["step"]))


def summarize(level: int, mask: Mask, history: list[dict[str, float]], start_step: int,
              wall_time: float, task: Task = CLASSIFICATION, early_stop: str = "loss"
              ) -> dict[str, Any]:
    """Per-level record: densities, per task metric its best/final test value and the value
    at early stop, and the early-stop iteration.

    The early-stop iteration is the evaluated step with the best validation ``early_stop``
    metric (by default the minimum validation loss: the paper's measure of learning speed;
    the test split stands in when there is no validation set); the untrained starting
    point is not a candidate. ``start_test_<metric>`` is that untrained starting point:
    with rewinding, the masked initial network — a supermask's score (Zhou et al. 2019).
    """
    trained = [r for r in history if r["step"] > start_step] or history
    untrained = history[0] if history and history[0]["step"] == start_step else None
    split = "val" if not math.isnan(trained[-1]["val_loss"]) else "test"
    key = f"{split}_{early_stop}"
    best = _best(trained, key, task.goal(early_stop))
    kept, sizes = mask.kept(), mask.sizes()
    total = sum(sizes.values())
    out: dict[str, Any] = {
        "level": level,
        "density": sum(kept.values()) / total,
        "pct_remaining": 100.0 * sum(kept.values()) / total,
        "weights_remaining": sum(kept.values()),
        "weights_total": total,
        "layer_density": {n: kept[n] / sizes[n] for n in sizes},
    }
    for m in task.scores:
        out[f"start_test_{m}"] = untrained[f"test_{m}"] if untrained else None
        out[f"best_test_{m}"] = _best(trained, f"test_{m}", task.goal(m))[f"test_{m}"]
        out[f"final_test_{m}"] = history[-1][f"test_{m}"]
        out[f"final_val_{m}"] = history[-1][f"val_{m}"]
    out.update(early_stop_step=int(best["step"]), early_stop_on=key)
    out.update({f"early_stop_test_{m}": best[f"test_{m}"] for m in task.scores})
    out.update(early_stop_val_loss=best["val_loss"],
               train_steps=int(history[-1]["step"]) - start_step, wall_time_s=wall_time)
    return out


def level_row(summary: dict[str, Any]) -> dict[str, Any]:
    """A level summary as a table row: the main columns, then ``density[<param>]``."""
    row = {c: summary.get(c) for c in table_columns(scores_of(summary))}
    row.update({f"density[{n}]": d for n, d in summary["layer_density"].items()})
    return row


def with_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """Levels of older runs have no ``start_test_*``: NaN there, not None."""
    for c in frame.columns:
        if str(c).startswith("start_test_"):
            frame[c] = pd.to_numeric(frame[c])
    return frame


def levels_frame(summaries: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per level: the main columns, then one ``density[<param>]`` column per layer."""
    columns = table_columns(scores_of(summaries[0]) if summaries else CLASSIFICATION.scores)
    rows = [level_row(s) for s in summaries]
    return with_numbers(pd.DataFrame(rows, columns=None if rows else columns))


class Result:
    """Results of one run, read from its run directory (``lth.LotteryModel.run`` returns one).

    ``table()`` gives one row per level, ``history()`` the evaluation curves, ``mask(level)``
    and ``weights(level, "start" | "final")`` the saved tensors.
    """

    def __init__(self, run_dir: str | Path, *, _keepalive: Any = None):
        if not Path(run_dir).is_dir():
            raise StoreError(f"{run_dir} is not a run directory; `lth status STORE` lists "
                             "the runs of a store")
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

    def _stored(self, level: int) -> Level:
        """A level that the run has begun; asking for any other is a KeyError naming them."""
        begun = self.run.level_numbers()
        if level not in begun:
            raise KeyError(f"{self.path.name} has no level {level}; its levels: "
                           f"{', '.join(map(str, begun)) or 'none yet'}")
        return self.run.level(level)

    def summary(self, level: int) -> dict[str, Any]:
        s = self._stored(level).summary()
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
        return [lv for lv in self.levels if self.run.level(lv).has_earlybird()]

    def earlybird(self, level: int = 0) -> dict[str, Any]:
        """The early-bird search record of a finished level: ``check_steps``, the pairwise
        ``distance_matrix`` of the masks at those checks and ``drawn_step`` (None: the
        ticket was not drawn and the level trained in full)."""
        searched = self.earlybird_levels()
        if level not in searched:
            raise KeyError(f"level {level} of {self.path.name} has no early-bird search record;"
                           f" levels with one: {searched or 'none (earlybird.enabled = false)'}")
        return self.run.level(level).earlybird()

    def mask(self, level: int, *, start: bool = False) -> Mask:
        """The level's mask; ``start=True``: the one it began with, where it changed while
        the level trained (GMP, SET, RigL: ``mask_start``; the same mask otherwise)."""
        order = list(self.config().get("prunable", {})) or None
        lv = self._stored(level)
        stem = "mask_start" if start and lv.has("mask_start") else "mask"
        return Mask(lv.tensors(stem), order=order)

    def weights(self, level: int, which: str = "final") -> dict[str, torch.Tensor]:
        """``which='start'``: the weights the level trained from; ``'final'``: after training."""
        if which not in ("start", "final"):
            raise ValueError(f"which={which!r}; use 'start' or 'final'")
        return self._stored(level).tensors(which)

    def model_spec(self) -> dict[str, Any] | None:
        """``create_model``'s arguments for this run's model (``name``, ``input_shape``,
        ``num_classes``, ``options``); None for a run made from Python."""
        from ..config import ExperimentConfig

        cfg = self.config()
        if not isinstance(cfg.get("experiment"), dict):
            return None
        exp = ExperimentConfig.from_dict(cfg["experiment"])
        data = cfg.get("data") or {}
        return {"name": exp.model.name, "input_shape": list(data["input_shape"]),
                "num_classes": data["num_classes"], "options": dict(exp.model.options)}

    def model(self) -> nn.Module:
        """The model this run trained, rebuilt from its config (runs made from a config
        file, e.g. by ``lth run``); its weights are the builder's, not the run's."""
        from ..models import create_model

        spec = self.model_spec()
        if spec is None:
            raise ConfigError(f"{self.path.name} was made from Python: lth cannot rebuild its "
                              "model; export it from Python with Result.export(level, format, "
                              "model=<the model>) (`lth export` can write its state_dict)")
        return create_model(spec["name"], input_shape=tuple(spec["input_shape"]),
                            num_classes=spec["num_classes"], **spec["options"])

    def export(self, level: int | None = None, format: str = "state_dict", *,
               model: nn.Module | None = None) -> dict[str, torch.Tensor] | nn.Module:
        """The ticket of ``level`` (default: the last finished) for use outside lth:
        ``state_dict`` (weights, pruned ones zero), ``pruned`` (the model with
        ``torch.nn.utils.prune`` masks, training on as a pruned module), ``small`` (unit-
        pruned runs: a physically smaller module with equal outputs) or ``sparse`` (sparse
        kernels in the pruned ``nn.Linear`` layers; ``lth.sparse_ticket.save`` writes it);
        see :mod:`lth.export`. ``model``: the module the run trained (default: rebuilt from
        the run's config); with it, ``state_dict`` has exactly the keys of
        ``model.state_dict()`` (tied weights under each name, no non-persistent buffers)."""
        from ..export import FORMATS, example_input, export
        from ..keras import adapt

        if format not in FORMATS:
            raise ConfigError(unknown_name("export format", format, FORMATS))
        level = self.levels[-1] if level is None else level
        cfg = self.config()
        if format != "state_dict" or model is not None:
            model = self.model() if model is None else adapt(model)
        data = cfg.get("data") or {}
        example = None if format == "state_dict" else example_input(
            model, data.get("input_shape") or [], data.get("dtype", "float32"))
        return export(model, self.weights(level), self.mask(level), format,
                      units=(cfg.get("structure") or {}).get("units"), example=example)

    def __repr__(self) -> str:
        return f"Result({str(self.path)!r}, levels={self.levels})"


def compare(results: list[Result], labels: list[str] | None = None) -> pd.DataFrame:
    """Side-by-side per-level table of several runs: per run the % of weights remaining,
    the task's test metrics at early stop, the early-stop iteration and the final test
    metrics (for classification: accuracy).
    The % column is shared when every run has the same densities. Missing levels are NaN
    (``<NA>`` in the integer columns: level, early-stop iteration). ``labels``: one per
    run (default: the runs' experiment labels among them, :func:`lth.labels.run_labels`)."""
    if not labels:
        from ..labels import run_labels

        labels = run_labels([r.config() for r in results], [r.path.name for r in results])
    if len(labels) != len(results):
        raise ValueError(f"{len(labels)} labels for {len(results)} runs")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels repeat: {labels}; give each run its own")
    tables = [r.table() for r in results]
    scores = list(dict.fromkeys(m for t in tables for m in scores_of(t.columns)))
    short = {"pct_remaining": "% weights",
             **{f"early_stop_test_{m}": f"{m}@es" for m in scores}, "early_stop_step": "es it",
             **{f"final_test_{m}": f"final {m}" for m in scores}}
    tables = [t[["level", *[c for c in short if c in t]]] for t in tables]
    shared = all(t[["level", "pct_remaining"]].equals(tables[0][["level", "pct_remaining"]])
                 for t in tables)
    merged = tables[0][["level", "pct_remaining"]].rename(
        columns={"pct_remaining": "% weights"}) if shared else None
    for t, label in zip(tables, labels, strict=True):
        t = t.drop(columns="pct_remaining") if shared else t
        t = t.rename(columns={c: f"{label} {name}" for c, name in short.items()})
        merged = t if merged is None else merged.merge(t, on="level", how="outer")
    assert merged is not None
    steps = [c for c in merged if c.endswith(f" {short['early_stop_step']}")]
    merged[steps] = merged[steps].round().astype("Int64")  # iterations; NA: level missing
    return merged.sort_values("level").reset_index(drop=True)


def compare_text(table: pd.DataFrame) -> str:
    """:func:`compare`'s table as text: % weights to 0.1, scores to 4 decimals, integers as
    integers, ``—`` where a run lacks the level."""
    def whole(v: Any) -> str:
        return "—" if pd.isna(v) else str(int(v))

    ints = [c for c in table.columns if pd.api.types.is_integer_dtype(table[c])]
    shown = table.assign(**{c: table[c].map(whole) for c in ints})  # pandas: NA as <NA>
    pct = {c: "{:.1f}".format for c in table.columns if str(c).endswith("% weights")}
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4f}", formatters=pct,
                           na_rep="—")
