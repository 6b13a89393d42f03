"""Figures of the early-bird search: how the pruning mask settles while the dense network
trains (You et al., 2020, draw the pairwise mask distances between epochs). Import them
from :mod:`lth.report.figures`."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.patches import Rectangle

from ..errors import ConfigError
from .figures_weights import HEATMAP, PALETTE, _as_result, new_figure, outside_legend


def earlybird_distances(result: Any, level: int = 0) -> Any:
    """Left: the pairwise normalised Hamming distance between the masks pruning would have
    given at each check of ``level``'s training (dark = alike). Right: the newest mask's
    largest distance to the masks in the queue before it, against ε; the ticket is drawn
    where it first falls to ε or below (marked on both panels)."""
    result = _as_result(result)
    rec = result.earlybird(level)
    steps = rec["check_steps"]
    if not steps:
        raise ConfigError(f"level {level} of {result.path.name} made no early-bird check "
                          "(training ended before the first one)")
    # None: a distance not kept (old masks dropped beyond the search's memory budget)
    matrix = np.array([[np.nan if d is None else d for d in row]
                       for row in rec["distance_matrix"]], dtype=float)
    n, q, eps = len(steps), rec["queue"], rec["epsilon"]
    fig = new_figure(11.0, 4.6)
    ax, ax2 = fig.subplots(1, 2, width_ratios=[1.1, 1])
    image = ax.imshow(matrix, cmap=HEATMAP, vmin=0.0, vmax=max(float(np.nanmax(matrix)), 1e-9),
                      origin="upper")
    ticks = np.unique(np.linspace(0, n - 1, min(n, 8)).round().astype(int))
    ax.set_xticks(ticks, labels=[str(steps[i]) for i in ticks], rotation=40, ha="right")
    ax.set_yticks(ticks, labels=[str(steps[i]) for i in ticks])
    ax.set(xlabel="Training step of the check", ylabel="Training step of the check",
           title=f"Mask distance between checks (level {level})")
    fig.colorbar(image, ax=ax, label="Normalised Hamming distance")
    worst = [float(matrix[i, max(0, i - q + 1):i].max()) if i else np.nan for i in range(n)]
    ax2.plot(steps, worst, color=PALETTE[0], marker="o", ms=4,
             label=f"max distance to the (up to) {q - 1} previous masks")
    ax2.axhline(eps, color=PALETTE[1], ls="--", label=f"ε = {eps:g}")
    drawn = rec["drawn_step"]
    if drawn is not None:
        i = steps.index(drawn)
        ax.add_patch(Rectangle((i - q + 0.5, i - q + 0.5), q, q, fill=False,
                               edgecolor=PALETTE[4], lw=2))
        ax2.axvline(drawn, color=PALETTE[2], ls=":", label=f"ticket drawn at step {drawn}")
    ax2.set(xlabel="Training step", ylabel="Normalised Hamming distance",
            title="Early-bird rule" + ("" if drawn is not None else " (not drawn)"))
    ax2.set_ylim(bottom=0)
    outside_legend(ax2)
    return fig
