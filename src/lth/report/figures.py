"""Figures of results: learning curves, test accuracy and early-stop iteration against the
weights remaining, per-layer density, mask overlap and weight figures; plus the per-layer
pruning table.

The table functions take the tables of ``lth.load(path)`` (``levels``, ``layers``,
``curves``), or the ``lth.Results`` itself, or an ``lth.Result``; the mask and weight
functions (from :mod:`lth.report.figures_weights`) take an ``lth.Result``. Every figure is a
:class:`matplotlib.figure.Figure` made without pyplot, and nothing is written or shown:
``fig.savefig("accuracy.png", dpi=150)``. Several seeds draw their mean ± sd (bands or error
bars); one seed draws plain lines. Accuracies are shown in percent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullLocator

from ..errors import ConfigError, did_you_mean, unknown_name
from ..labels import pick_experiments
from .figures_earlybird import earlybird_distances
from .figures_instability import instability_path, instability_vs_rewind
from .figures_weights import (
    LINESTYLES,
    PALETTE,
    init_vs_final,
    jaccard,
    mask_overlap,
    new_figure,
    outside_legend,
    shared_name,
    style,
    weight_histograms,
    wrapped,
)

__all__ = ["accuracy_vs_weights", "earlybird_distances", "early_stop_vs_weights",
           "init_vs_final", "instability_path", "instability_vs_rewind", "jaccard",
           "layer_density", "learning_curves", "mask_overlap", "pruning_summary_table",
           "weight_histograms"]

WHEN = {"early_stop": "at early stop", "final": "final", "best": "best",
        "start": "untrained (the supermask)"}


def _score_axis(metric: str) -> tuple[str, str, float]:
    """A task metric's name in titles, its axis label and the factor it is drawn with
    (accuracies in %)."""
    if metric == "acc":
        return "accuracy", "Accuracy (%)", 100.0
    return metric, metric, 1.0


def _main_score(columns: Any, *prefixes: str) -> str:
    """The first task metric of a table (``acc`` for classification), from the columns
    named ``<prefix><metric>``."""
    found = [c[len(p):] for c in columns for p in prefixes
             if c.startswith(p) and c != f"{p}loss"]
    if not found:
        raise ConfigError(f"the table has no {prefixes[0]}<metric> column; is it a results "
                          "table of lth.load?")
    return found[0]


def score_name(levels: pd.DataFrame) -> str:
    """What the per-level figures draw: the task's first metric, as titles name it
    (``accuracy`` for classification)."""
    return _score_axis(_main_score(levels.columns, *(f"{w}_test_" for w in WHEN)))[0]


def _curve_panels(frame: pd.DataFrame) -> list[tuple[str, str, str, float]]:
    """(column, title, y label, factor): losses above, the main metric below."""
    metric = _main_score(frame.columns, "train_")
    name, label, scale = _score_axis(metric)
    return [("train_loss", "Training loss", "Loss", 1.0), ("test_loss", "Test loss", "Loss", 1.0),
            (f"train_{metric}", f"Training {name}", label, scale),
            (f"test_{metric}", f"Test {name}", label, scale)]


def _table(data: Any, name: str, needs: Sequence[str]) -> pd.DataFrame:
    """The ``name`` table (levels, layers or curves) of a DataFrame, an ``lth.Results``, or
    anything with a ``path`` that ``lth.load`` reads (an ``lth.Result``, a group result)."""
    from ..analysis import load

    if isinstance(data, pd.DataFrame):
        frame = data
    elif isinstance(getattr(data, name, None), pd.DataFrame):
        frame = getattr(data, name)
    elif hasattr(data, "path"):
        frame = getattr(load(data.path), name)
    else:
        raise ConfigError(f"expected the {name} table of lth.load(path) (a DataFrame), an "
                          f"lth.Results or an lth.Result; got {type(data).__name__}")
    if frame.empty:
        raise ConfigError(f"the {name} table is empty: nothing to plot (has a level finished? "
                          "lth.load(path).runs lists the runs found)")
    if "experiment" not in frame:  # e.g. Result.table(): one run
        frame = frame.assign(experiment="run")
    if "seed" not in frame:
        frame = frame.assign(seed=0)
    missing = [c for c in needs if c not in frame]
    if missing:
        raise ConfigError(f"the {name} table lacks column(s) {', '.join(missing)}; "
                          f"pass lth.load(path).{name}")
    return frame


def _choose(frame: pd.DataFrame, column: str, wanted: Any) -> list:
    """The values of ``column`` asked for (default: all, in order of appearance); an
    experiment by its label, name or (a unique prefix of) its id (:mod:`lth.labels`)."""
    if column == "experiment":
        return pick_experiments(frame, wanted)
    present = list(pd.unique(frame[column]))
    if wanted is None:
        return present
    wanted = [wanted] if isinstance(wanted, str) or not isinstance(wanted, Iterable) \
        else list(wanted)
    for w in wanted:
        if w not in present:
            raise ConfigError(unknown_name(column, w, map(str, present)))
    return wanted


def _one(frame: pd.DataFrame, column: str, wanted: Any) -> Any:
    chosen = _choose(frame, column, wanted)
    if len(chosen) != 1:
        raise ConfigError(f"the table holds {column}s {', '.join(map(str, chosen))}; choose "
                          f"one with {column}=...")
    return chosen[0]


def _over_seeds(frame: pd.DataFrame, by: list[str], value: str,
                x: str | None = None) -> pd.DataFrame:
    """Per group of ``by``: mean, sd (n - 1) and count of ``value`` over seeds (NaN
    dropped), and the mean of ``x`` as column ``x``."""
    spec = {"mean": (value, "mean"), "sd": (value, "std"), "n": (value, "count")}
    if x is not None:
        spec["x"] = (x, "mean")
    return frame.dropna(subset=[value]).groupby(by, sort=True).agg(**spec).reset_index()


def _errorbar(ax: Axes, agg: pd.DataFrame, look: dict, scale: float = 1.0, **kw: Any) -> None:
    """Mean line with ± sd error bars where several seeds exist; a plain line otherwise."""
    several = bool((agg["n"] > 1).any())
    yerr = agg["sd"].fillna(0).to_numpy() * scale if several else None
    ax.errorbar(agg["x"].to_numpy(), agg["mean"].to_numpy() * scale, yerr=yerr,
                capsize=3 if several else 0, markersize=5, **look, **kw)


def _seeds_note(frame: pd.DataFrame) -> str:
    n = frame["seed"].nunique()
    return f"mean ± sd over {n} seeds" if n > 1 else ""


def learning_curves(curves: Any, *, by: str = "level", experiment: Any = None,
                    level: Any = None) -> Figure:
    """2 × 2 panels against the training step: training loss, test loss, and the task's
    first metric on training and test data (accuracy for classification); mean ± sd bands
    across seeds.

    ``by="level"``: one line per level of one ``experiment`` (``level``: the levels to draw,
    default all). ``by="experiment"``: one line per experiment (``experiment``: which,
    default all) at one ``level`` (default: the last level every experiment finished).
    """
    frame = _table(curves, "curves", ["level", "step", "train_loss", "test_loss"])
    panels = _curve_panels(frame)
    frame = _table(frame, "curves", [column for column, *_ in panels])
    if by == "level":
        name = _one(frame, "experiment", experiment)
        frame = frame[frame["experiment"] == name]
        groups = [(f"level {lv}", frame[frame["level"] == lv])
                  for lv in sorted(_choose(frame, "level", level))]
        what, legend = name, "Level"
    elif by == "experiment":
        names = _choose(frame, "experiment", experiment)
        frame = frame[frame["experiment"].isin(names)]
        if level is None:
            level = int(frame.groupby("experiment")["level"].max().min())
        level = _one(frame, "level", level)
        groups = [(n, frame[(frame["experiment"] == n) & (frame["level"] == level)])
                  for n in names]
        what, legend = f"level {level}", "Experiment"
    else:
        raise ConfigError(f"by={by!r}{did_you_mean(by, ['level', 'experiment'])}; use 'level' "
                          "or 'experiment'")
    fig = new_figure(10.5, 7.5)
    axes = fig.subplots(2, 2, sharex=True)
    for ax, (column, title, ylabel, scale) in zip(axes.flat, panels, strict=True):
        for i, (label, part) in enumerate(groups):
            agg = _over_seeds(part, ["step"], column)
            if agg.empty:
                continue
            y, look = agg["mean"].to_numpy() * scale, style(i)
            ax.plot(agg["step"].to_numpy(), y, label=label, markersize=4,
                    markevery=max(1, len(agg) // 20), **look)
            if (agg["n"] > 1).any():
                sd = agg["sd"].fillna(0).to_numpy() * scale
                ax.fill_between(agg["step"].to_numpy(), y - sd, y + sd, color=look["color"],
                                alpha=0.2, linewidth=0)
        if not ax.lines:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")
        ax.set(title=title, ylabel=ylabel)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("Training iteration (step)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    entries: dict[str, Any] = {}  # one entry per line, from whichever panel drew it
    for ax in axes.flat:
        for line in ax.lines:
            entries.setdefault(line.get_label(), line)
    panels = fig.get_size_inches()[0]
    outside_legend(fig, list(entries.values()), list(entries), title=legend)
    # Centred over the panels, not the legend beside them, and wrapped to their width.
    fig.suptitle(wrapped("\n".join(filter(None, [f"Learning curves: {what}",
                                                 _seeds_note(frame)])), panels - 0.8),
                 x=0.5 * panels / fig.get_size_inches()[0])
    return fig


def _weights_axis(ax: Axes, pct: pd.Series) -> None:
    """Log-scaled % of weights remaining, decreasing to the right as in the paper, ticked at
    the measured densities (thinned so that labels do not collide)."""
    values = sorted({float(v) for v in pct.dropna() if v > 0}, reverse=True)
    ax.set_xlabel("Weights remaining (%, log scale)")
    if not values:
        return
    ax.set_xscale("log")
    gap = math.log10(values[0] / values[-1]) / 10 or 1e-9
    ticks = [values[0]]
    for v in values[1:]:
        if math.log10(ticks[-1] / v) >= gap:
            ticks.append(v)
    ax.set_xticks(ticks, labels=[f"{t:.3g}" for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(values[0] * 1.12, values[-1] / 1.12)


def _when(column: str) -> str:
    return WHEN.get(column.split("_test_")[0], column)


def _vs_weights(levels: Any, columns: list[str], experiments: Any, ylabel: str, title: str,
                note: str = "", scale: float = 1.0) -> Figure:
    frame = _table(levels, "levels", ["level", "pct_remaining", *columns])
    names = _choose(frame, "experiment", experiments)
    frame = frame[frame["experiment"].isin(names)]
    fig = new_figure(7.2, 4.8)
    ax = fig.add_subplot()
    for i, name in enumerate(names):
        part = frame[frame["experiment"] == name]
        for j, column in enumerate(columns):
            agg = _over_seeds(part, ["level"], column, x="pct_remaining")
            label = name if len(columns) == 1 else f"{name} ({_when(column)})"
            _errorbar(ax, agg, style(i), scale, linestyle=LINESTYLES[j % len(LINESTYLES)],
                      label=label)
    _weights_axis(ax, frame["pct_remaining"])
    shared, shown = shared_name([str(n) for n in names])
    ax.set(ylabel=ylabel)
    common = shared and f"{shared}\u00a0·\u00a0…"  # the name all share, said once
    notes = "; ".join(filter(None, [note, _seeds_note(frame)]))
    ax.set_title(wrapped("\n".join(filter(None, [title, common, notes])),
                         fig.get_size_inches()[0] - 1.2))
    # Several metrics: one entry per experiment (its colour) plus one per line style,
    # rather than experiments x metrics entries.
    handles = ax.containers[::len(columns)] + [
        Line2D([], [], color=PALETTE[6], linestyle=LINESTYLES[j % len(LINESTYLES)])
        for j in range(len(columns) if len(columns) > 1 else 0)]
    labels = shown + ([_when(c) for c in columns]
                                        if len(columns) > 1 else [])
    outside_legend(ax, handles, labels, title="Experiment")
    ax.grid(alpha=0.3)
    return fig


def accuracy_vs_weights(levels: Any, *, metric: str = "early_stop", experiments: Any = None
                        ) -> Figure:
    """The task's first test metric (accuracy in % for classification) against the % of
    weights remaining (log x, decreasing to the right), one line per experiment with ± sd
    error bars over seeds. ``metric``: ``early_stop``, ``final``, ``best``, ``start`` (the
    untrained starting weights: with rewinding, the supermask's score), ``"both"`` (early
    stop solid, final dashed), or a column such as ``final_test_mae``."""
    frame = _table(levels, "levels", ["level", "pct_remaining"])
    score = _main_score(frame.columns, *(f"{when}_test_" for when in WHEN))
    if metric == "both":
        columns = [f"early_stop_test_{score}", f"final_test_{score}"]
        what, note = "", "early stop (solid) and final (dashed)"
    elif metric in WHEN:
        columns, what, note = [f"{metric}_test_{score}"], f" {WHEN[metric]}", ""
    elif metric in frame and metric.split("_test_")[0] in WHEN:
        columns, what, note = [metric], f" {WHEN[metric.split('_test_')[0]]}", ""
        score = metric.split("_test_", 1)[1]
    else:
        raise ConfigError(unknown_name("metric", metric, [*WHEN, "both", *[
            c for c in frame if c.split("_test_")[0] in WHEN and "_test_" in c]]))
    name, _, scale = _score_axis(score)
    ylabel = f"Test {name} (%)" if scale == 100.0 else f"Test {name}"
    return _vs_weights(frame, columns, experiments, ylabel,
                       f"Test {name}{what} vs weights remaining", note, scale=scale)


def early_stop_vs_weights(levels: Any, experiments: Any = None) -> Figure:
    """Early-stopping iteration (step of minimum validation loss) against the % of weights
    remaining (log x, decreasing to the right), ± sd error bars over seeds."""
    return _vs_weights(levels, ["early_stop_step"], experiments,
                       "Early-stop iteration (training steps)",
                       "Early-stopping iteration vs weights remaining")


def _layers_of(layers: Any, experiment: Any, seed: Any) -> pd.DataFrame:
    frame = _table(layers, "layers", ["level", "layer", "weights", "kept", "density"])
    name = _one(frame, "experiment", experiment)
    frame = frame[frame["experiment"] == name]
    if seed is not None:
        frame = frame[frame["seed"] == _one(frame, "seed", seed)]
    return frame


def layer_density(layers: Any, *, experiment: Any = None, seed: Any = None) -> Figure:
    """% of each layer's weights remaining by pruning level, one line per layer plus all
    layers together (dashed); mean ± sd over seeds unless ``seed`` picks one."""
    frame = _layers_of(layers, experiment, seed)
    fig = new_figure(7.2, 4.8)
    ax = fig.add_subplot()
    for i, layer in enumerate(pd.unique(frame["layer"])):
        agg = _over_seeds(frame[frame["layer"] == layer], ["level"], "density", x="level")
        _errorbar(ax, agg, style(i), 100.0, label=str(layer))
    total = frame.groupby(["seed", "level"])[["kept", "weights"]].sum().reset_index()
    total["density"] = total["kept"] / total["weights"]
    agg = _over_seeds(total, ["level"], "density", x="level")
    _errorbar(ax, agg, {"color": PALETTE[6], "marker": "*"}, 100.0, linestyle="--",
              label="all layers")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    name = frame["experiment"].iloc[0]
    seeds = f"seed {frame['seed'].iloc[0]}" if seed is not None else _seeds_note(frame)
    ax.set(xlabel="Pruning level (IMP round)", ylabel="Weights remaining in the layer (%)")
    ax.set_title(wrapped("\n".join(filter(None, [f"Per-layer density: {name}", seeds])),
                         fig.get_size_inches()[0] - 1.2))
    outside_legend(ax, title="Layer")
    ax.grid(alpha=0.3)
    return fig


def pruning_summary_table(layers: Any, experiment: Any = None, seed: Any = None,
                          level: int | None = None) -> pd.DataFrame:
    """Per layer at one ``level`` (default the last): weights, weights kept and % pruned,
    then a ``total`` row; kept is the mean over seeds unless ``seed`` picks one."""
    frame = _layers_of(layers, experiment, seed)
    level = int(frame["level"].max()) if level is None else _one(frame, "level", level)
    part = frame[frame["level"] == level]
    rows = part.groupby("layer", sort=False).agg(weights=("weights", "max"),
                                                 kept=("kept", "mean")).reset_index()
    total = pd.DataFrame([{"layer": "total", "weights": rows["weights"].sum(),
                           "kept": rows["kept"].sum()}])
    out = pd.concat([rows, total], ignore_index=True)
    if (out["kept"] % 1 == 0).all():
        out["kept"] = out["kept"].astype(int)
    out["weights"] = out["weights"].astype(int)
    out["pct_pruned"] = 100.0 * (1 - out["kept"] / out["weights"])
    out.attrs.update(experiment=frame["experiment"].iloc[0], level=level,
                     seeds=sorted(part["seed"].unique().tolist()))
    return out
