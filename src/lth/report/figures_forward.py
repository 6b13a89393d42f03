"""Figure of a pre-training sweep (:func:`lth.forward.pretraining_sweep`): how good the
subnetworks found by greedy forward selection are after each amount of dense pre-training.

Built without pyplot and nothing is written: ``fig.savefig("sweep.png", dpi=150)``.
"""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

from ..errors import ConfigError
from .figures_weights import LINESTYLES, PALETTE, new_figure, style

__all__ = ["pretraining_sweep_figure"]

_NEEDS = ("pretrain_iterations", "dense_train_loss", "dense_test_acc", "sub_train_loss",
          "sub_test_acc", "weights", "weights_dense")
_DENSE = {"color": PALETTE[6], "marker": "*", "linestyle": "--"}


def _iterations_axis(ax: Axes, its: list[int]) -> None:
    """Symmetric-log x axis (linear up to the smallest positive count, so 0 fits), ticked
    at the measured iteration counts, thinned so that labels do not collide."""
    positive = [i for i in its if i > 0]
    lin = min(positive) if positive else 1
    ax.set_xscale("symlog", linthresh=lin, linscale=0.5)
    ticks: list[int] = []
    for i in its:  # keep a tick when it is a visible step (x1.8) beyond the previous one
        if not ticks or i >= max(1.8 * ticks[-1], lin if ticks[-1] == 0 else 0):
            ticks.append(i)
    ax.set_xticks(ticks, labels=[f"{t:,}" for t in ticks], rotation=40, ha="right",
                  rotation_mode="anchor")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("Dense pre-training (iterations, symlog scale)")
    ax.grid(alpha=0.3)


def _line(ax: Axes, frame: pd.DataFrame, column: str, look: dict, label: str,
          scale: float = 1.0) -> None:
    if column in frame and frame[column].notna().any():
        ax.plot(frame["pretrain_iterations"], frame[column] * scale, label=label,
                **{"markersize": 5, **look})


def pretraining_sweep_figure(table: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Three panels against dense pre-training iterations: training loss (log scale) and
    test accuracy (%) of the subnetwork (after selection, and fine-tuned when the table has
    it) with the dense net for reference, and the subnetwork's size (% of each hidden
    layer's neurons kept and % of Linear weights kept).

    >>> t = pd.DataFrame({"pretrain_iterations": [0, 10], "dense_train_loss": [2.3, 0.5],
    ...                   "dense_test_acc": [0.1, 0.9], "sub_train_loss": [2.3, 0.6],
    ...                   "sub_test_acc": [0.1, 0.85], "weights": [10, 50],
    ...                   "weights_dense": [100, 100], "width_1": [1, 5]})
    >>> len(pretraining_sweep_figure(t).axes)
    3
    """
    if not isinstance(table, pd.DataFrame) or table.empty:
        raise ConfigError("expected the non-empty DataFrame of lth.forward.pretraining_sweep "
                          "(or pd.read_csv of its sweep.csv)")
    missing = [c for c in _NEEDS if c not in table]
    if missing:
        raise ConfigError(f"the sweep table lacks column(s) {', '.join(missing)}; pass the "
                          "table of lth.forward.pretraining_sweep")
    frame = table.sort_values("pretrain_iterations")
    its = [int(i) for i in frame["pretrain_iterations"]]
    fig = new_figure(13.5, 4.4)
    loss_ax, acc_ax, size_ax = fig.subplots(1, 3)
    steps = (int(frame["finetune_steps"].iloc[0])
             if "finetune_steps" in frame and frame["finetune_steps"].notna().any() else None)
    tuned = "subnetwork, fine-tuned" + (f" (+{steps:,} steps)" if steps else "")
    for ax, metric, scale in ((loss_ax, "train_loss", 1.0), (acc_ax, "test_acc", 100.0)):
        _line(ax, frame, f"sub_{metric}", style(0), "subnetwork (selected)", scale)
        _line(ax, frame, f"ft_{metric}", {**style(1), "linestyle": ":"}, tuned, scale)
        _line(ax, frame, f"dense_{metric}", _DENSE, "dense network", scale)
        _iterations_axis(ax, its)
        ax.legend(fontsize="small")
    positive = frame[["sub_train_loss", "dense_train_loss"]].stack()
    if (positive > 0).all() and not math.isclose(positive.max(), positive.min()):
        loss_ax.set_yscale("log")
        # Plain numbers (0.01, 0.5) read more easily than 10^-2 or 5×10^-1; labels at 1, 2
        # and 5 per decade when the losses span under 2 decades, else one per decade.
        plain = FuncFormatter(lambda v, _pos: f"{v:g}")
        narrow = math.log10(positive.max() / positive.min()) < 2
        loss_ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
        loss_ax.yaxis.set_major_formatter(plain)
        loss_ax.yaxis.set_minor_formatter(NullFormatter())
    loss_ax.set(ylabel="Training loss (cross-entropy, log scale)", title="Training loss")
    acc_ax.set(ylabel="Test accuracy (%)", title="Test accuracy")
    widths = [c for c in frame if c.startswith("width_")]
    for i, column in enumerate(widths):
        dense_width = _dense_width(frame, column)
        if dense_width:
            # layers often keep the same fraction: hollow markers of falling size keep
            # every layer visible where the lines coincide
            look = {**style(i + 2), "linestyle": LINESTYLES[(i + 1) % len(LINESTYLES)],
                    "markerfacecolor": "none", "markersize": max(4, 11 - 3 * i)}
            _line(size_ax, frame.assign(**{column: frame[column] / dense_width}), column,
                  look, f"hidden layer {column[6:]} neurons (of {dense_width:,})", 100.0)
    kept = 100.0 * frame["weights"] / frame["weights_dense"]
    size_ax.plot(frame["pretrain_iterations"], kept, label="Linear weights", markersize=5,
                 color=PALETTE[6], marker="X")
    _iterations_axis(size_ax, its)
    tops = [kept.max()] + [100.0 * frame[c].max() / w for c in widths
                           if (w := _dense_width(frame, c))]
    size_ax.set_ylim(0, min(105.0, 1.25 * max(tops) + 2))
    size_ax.set(ylabel="Kept in the subnetwork (% of dense)", title="Subnetwork size")
    size_ax.legend(fontsize="small")
    fig.suptitle(title or "Greedy forward selection after dense pre-training")
    return fig


def _dense_width(frame: pd.DataFrame, column: str) -> int | None:
    """A hidden layer's dense width (column ``dense_width_N``), or None if the table lacks it."""
    dense = f"dense_{column}"
    return int(frame[dense].iloc[0]) if dense in frame else None
