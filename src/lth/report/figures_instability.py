"""Figures of linear mode connectivity (``lth instability``): the error barrier against
the rewind step k, and the error along the path between two copies. Import them from
:mod:`lth.report.figures`."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..errors import ConfigError
from ..store import Damaged
from ..studies.instability import stored_path
from .figures_weights import PALETTE, new_figure, outside_legend


def instability_vs_rewind(table: pd.DataFrame, split: str = "test") -> Any:
    """The error barrier (loss barrier for tasks without accuracy) against the rewind step
    k, one line per level (``table``: ``lth.load(...).instability``; seeds averaged)."""
    column = f"{split}_error_barrier"
    if column not in table or table[column].isna().all():
        column = f"{split}_loss_barrier"
    if table.empty or column not in table:
        raise ConfigError("no instability analysis to draw; run `lth instability` first")
    fig = new_figure()
    ax = fig.subplots()
    for i, (level, part) in enumerate(table.groupby("level")):
        mean = part.groupby("rewind_step")[column].mean()
        pct = part.pct_remaining.mean()
        ax.plot(mean.index, mean.values, marker="o", color=PALETTE[i % len(PALETTE)],
                label=f"level {level} ({pct:.1f}% of weights)")
    ax.set_xscale("symlog", linthresh=max(1, int(table.rewind_step[table.rewind_step > 0]
                                                  .min()) if (table.rewind_step > 0).any()
                                              else 1))
    ax.axhline(0, color="#999999", lw=0.8)
    what = "error" if "error" in column else "loss"
    ax.set(xlabel="Rewind step k (iterations)", ylabel=f"{split.capitalize()} {what} barrier",
           title="Instability: worst point of the linear path above its ends")
    outside_legend(ax)
    return fig


def instability_path(run_dir: str, level: int, split: str = "test") -> Any:
    """Error (or loss) at each point of the linear path between a level's two copies."""
    try:
        rows = stored_path(run_dir, level)
    except (Damaged, KeyError, TypeError) as exc:  # missing, damaged or not a path: say which
        raise ConfigError(f"no stored path for level {level} of {run_dir} ({exc}); run "
                          "`lth instability` first") from None
    alpha = [r["alpha"] for r in rows]
    fig = new_figure()
    ax = fig.subplots()
    for i, part in enumerate(("train", "test")):
        key = f"{part}_acc" if f"{part}_acc" in rows[0] else f"{part}_loss"
        values = [1 - r[key] if key.endswith("acc") else r[key] for r in rows]
        ax.plot(alpha, values, marker="o", color=PALETTE[i],
                label=f"{part} {'error' if key.endswith('acc') else 'loss'}")
    ax.set(xlabel="α (0: copy 0, 1: copy 1)", ylabel="Error" if "acc" in key else "Loss",
           title=f"Linear path between two copies (level {level})")
    outside_legend(ax)
    return fig
