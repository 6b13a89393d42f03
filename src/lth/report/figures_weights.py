"""Figures of masks and weights — mask overlap, |initial weight| histograms, initial vs final
weights — and the colour-blind-safe style that every figure of :mod:`lth.report.figures`
shares. Import them from there.

Each function returns a :class:`matplotlib.figure.Figure` built without pyplot (no global
state, no GUI backend) and writes nothing; save one with ``fig.savefig("overlap.png")``.
"""

from __future__ import annotations

import math
import string
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.text import Text

from ..errors import ConfigError, unknown_name
from ..experiment.result import Result
from ..masks import Mask

# Okabe & Ito, "Color Universal Design" (2008): told apart under the common colour-vision
# deficiencies. Yellow comes last: it is faint on white.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
           "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")  # 7 against 8 colours: 56 distinct pairs
LINESTYLES = ("-", "--", ":", "-.")
TAGGED = 14  # axis labels longer than this become tags (A, B, ...) with a key
HEATMAP = "cividis"  # perceptually uniform and readable with colour-vision deficiencies


def style(i: int) -> dict[str, str]:
    """Colour and marker of the ``i``-th line of a figure."""
    return {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)]}


class _PlainTextFigure(Figure):
    """A figure whose text is drawn as written: experiment names with ``$`` or ``^`` are
    names, not matplotlib math (an odd ``$`` would fail the drawing)."""

    def _plain(self) -> None:
        for text in self.findobj(Text):
            text.set_parse_math(False)

    def draw(self, renderer: Any) -> None:
        self._plain()
        super().draw(renderer)

    def savefig(self, *args: Any, **kwargs: Any) -> None:
        self._plain()  # the tight bounding box measures the text before drawing
        super().savefig(*args, **kwargs)


def new_figure(width: float = 6.4, height: float = 4.4) -> Figure:
    return _PlainTextFigure(figsize=(width, height), layout="constrained")


_EM = 8.33 / 72  # inches per em of the legends' "small" font (10 pt * 0.833)
WRAP = 40  # characters per line of a legend entry; longer labels wrap
_CHAR = 0.62  # a character's mean width, in ems (DejaVu Sans, mixed text, generous)


def wrapped(text: str, width: float, size: float = 12.0) -> str:
    """``text`` broken into lines that fit ``width`` inches at ``size`` points (titles,
    keys), or into lines of ``-width`` characters when ``width`` is negative.

    >>> wrapped("a " * 8, -6).splitlines()
    ['a a a', 'a a a', 'a a']
    """
    chars = int(-width) if width < 0 else max(8, int(width * 72 / (_CHAR * size)))
    lines = [textwrap.fill(part, chars, break_on_hyphens=False) for part in text.split("\n")]
    return "\n".join(lines)


def shared_name(labels: Sequence[str]) -> tuple[str, list[str]]:
    """The experiment name that all of several ``labels`` share (to show once, in a title)
    and what is left of each label; ``("", labels)`` where they share none.

    >>> shared_name(["a · rate=0.5", "a · rate=0.2"])
    ('a', ['rate=0.5', 'rate=0.2'])
    """
    from ..labels import SEP

    heads = {str(v).split(SEP, 1)[0] for v in labels}
    if len(labels) < 2 or len(heads) != 1 or not all(SEP in str(v) for v in labels):
        return "", [str(v) for v in labels]
    head = heads.pop()
    return head, [str(v)[len(head) + len(SEP):] for v in labels]


def outside_legend(owner: Axes | Figure, handles: Sequence[Any] | None = None,
                   labels: Sequence[str] | None = None, *, title: str | None = None) -> Legend:
    """A legend right of ``owner`` (an Axes, or a whole Figure of several panels), never over
    the data: in as many columns as the figure's height needs, and the figure widened by the
    legend's width so the plot keeps its size (constrained layout makes the room).

    >>> fig = new_figure()
    >>> ax = fig.add_subplot()
    >>> _ = ax.plot([0, 1], label="a")
    >>> outside_legend(ax).get_texts()[0].get_text()
    'a'
    """
    fig = owner if isinstance(owner, Figure) else owner.figure
    if handles is None:
        handles, labels = owner.get_legend_handles_labels() if isinstance(owner, Axes) \
            else fig.axes[0].get_legend_handles_labels()
    labels = [wrapped(str(v), -WRAP) for v in (labels if labels is not None else [
        h.get_label() for h in handles])]
    title = wrapped(title, -WRAP) if title else title
    width, height = fig.get_size_inches()
    rows = max(1, int((height - 0.7) / (1.5 * _EM)))  # one line of text + spacing
    lines = [v.count("\n") + 1 for v in labels]
    ncols = max(1, math.ceil(sum(lines) / rows))
    longest = max([len(line) for v in [*labels, title or ""] for line in v.split("\n")] + [4])
    column = (2.0 + 0.8 + _CHAR * longest + 1.0) * _EM  # handle, pad, text, column gap
    fig.set_size_inches(width + ncols * column + 0.3, height)
    kw = {"title": title, "ncols": ncols, "fontsize": "small", "title_fontsize": "small"}
    if isinstance(owner, Figure):
        return fig.legend(handles, labels, loc="outside right upper", **kw)
    return owner.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                        borderaxespad=0.0, **kw)


def _as_mask(mask: Any, what: str) -> Mask:
    if isinstance(mask, Mask):
        return mask
    if isinstance(mask, Mapping) and mask and all(isinstance(t, torch.Tensor)
                                                  for t in mask.values()):
        return Mask(dict(mask))
    raise ConfigError(f"{what} is a {type(mask).__name__}; give an lth.Mask "
                      "(e.g. lth.Result(run_dir).mask(level))")


def jaccard(a: Mask, b: Mask) -> float:
    """Overlap of the weights two masks keep, over all their tensors together:
    |kept by both| / |kept by either|. 1.0 for identical masks (also when both keep nothing).

    >>> a = Mask({"w": torch.tensor([True, True, False, False])})
    >>> b = Mask({"w": torch.tensor([True, False, True, False])})
    >>> jaccard(a, b), jaccard(a, a)
    (0.3333333333333333, 1.0)
    """
    a, b = _as_mask(a, "a"), _as_mask(b, "b")
    if set(a) != set(b):
        raise ConfigError(f"the masks cover different parameters ({', '.join(a.names())} vs "
                          f"{', '.join(b.names())}); compare masks of the same model")
    both = either = 0
    for name, keep in a.items():
        other = b[name].to(keep.device)
        if other.shape != keep.shape:
            raise ConfigError(f"mask tensor {name!r} has shape {tuple(keep.shape)} in one mask "
                              f"and {tuple(other.shape)} in the other")
        both += int((keep & other).sum())
        either += int((keep | other).sum())
    return both / either if either else 1.0


def mask_overlap(masks: Mapping[str, Mask]) -> Figure:
    """Heatmap of the pairwise :func:`jaccard` overlap of ``masks`` (label -> mask), each
    cell annotated, e.g. ``{f"level {lv}": run.mask(lv) for lv in run.levels[1:]}``."""
    if not isinstance(masks, Mapping) or not masks:
        raise ConfigError("mask_overlap needs a non-empty dict of label -> lth.Mask, e.g. "
                          "{f'level {lv}': result.mask(lv) for lv in result.levels[1:]}")
    labels = [str(k) for k in masks]
    found = [_as_mask(m, f"masks[{k!r}]") for k, m in masks.items()]
    n = len(found)
    values = np.ones((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            values[i, j] = values[j, i] = jaccard(found[i], found[j])
    tags = _tags(n) if max(len(v) for v in labels) > TAGGED else labels
    side = max(3.0, 1.4 + 0.55 * n)  # the heatmap's square, its tick labels and title
    width = max(side + 2.0, 6.4 if tags is not labels else 0.0)
    name, rest = shared_name(labels)
    key = [f"{t}: {wrapped(v, width - 1.0, 10 * 0.833)}" for t, v in zip(tags, rest,
                                                                       strict=True)]
    key_lines = sum(k.count("\n") + 1 for k in key) + (name.count("\n") + 2 if name else 1)
    key_height = 0.4 + 1.5 * _EM * key_lines if tags is not labels else 0.0
    fig = new_figure(width, side + 0.9 + key_height)
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap=HEATMAP, vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=tags, rotation=0 if tags is not labels else 40,
                  ha="center" if tags is not labels else "right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=tags)
    for i in range(n):
        for j in range(n):  # cividis runs dark blue -> yellow: dark text on the light end
            ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center",
                    color="black" if values[i, j] >= 0.55 else "white",
                    fontsize=9 if n <= 8 else 7)
    ax.set(xlabel="Mask", ylabel="Mask")
    ax.set_title(wrapped("Mask overlap (Jaccard index of kept weights)", width - 1.5))
    fig.colorbar(image, ax=ax, label="Jaccard index\n|kept ∩ kept| / |kept ∪ kept|")
    if tags is not labels:  # the key: tag -> full label, below the heatmap
        blank = [Line2D([], [], linestyle="none") for _ in key]
        fig.legend(blank, key, loc="outside lower center", title=wrapped(
            f"Masks ({name}\u00a0·\u00a0…)" if name else "Masks", width - 1.0,
            10 * 0.833), handlelength=0, handletextpad=0, alignment="left",
            fontsize="small", title_fontsize="small")
    return fig


def _tags(n: int) -> list[str]:
    """Short names of ``n`` axis entries: A, B, ... (M1, M2, ... beyond 26)."""
    return list(string.ascii_uppercase[:n]) if n <= 26 else [f"M{i + 1}" for i in range(n)]


def _as_result(result: Any) -> Result:
    if isinstance(result, Result):
        return result
    if isinstance(result, str | Path):
        return Result(result)
    raise ConfigError(f"expected an lth.Result (or its run directory); got "
                      f"{type(result).__name__}")


def _level_mask(result: Result, level: int) -> Mask:
    done = result.levels
    if level not in done:
        raise ConfigError(f"level {level!r} of {result.path} is not finished; finished levels: "
                          f"{', '.join(map(str, done)) or 'none'}")
    return result.mask(level)


def _check_layer(mask: Mask, layer: str) -> None:
    if layer not in mask.names():
        raise ConfigError(unknown_name("layer", layer, mask.names()))


def weight_histograms(result: Result, level: int, layer: str | None = None, *,
                      log_count: bool = False, bins: int = 50) -> Figure:
    """Histograms of |weight| at initialization (θ0, the dense level's start, where no weight
    is pruned yet) for the weights ``level``'s mask keeps and for those it prunes.

    ``layer``: one prunable parameter (default: all of them pooled). At a pruned level's own
    start the pruned weights are already zero, hence θ0.
    """
    result = _as_result(result)
    mask = _level_mask(result, level)
    if layer is not None:
        _check_layer(mask, layer)
    names = mask.names() if layer is None else [layer]
    init = result.weights(0, "start")
    keep = np.concatenate([mask[n].cpu().flatten().numpy() for n in names])
    size = np.concatenate([init[n].detach().abs().flatten().double().numpy() for n in names])
    edges = np.histogram_bin_edges(size, bins=bins)
    fig = new_figure()
    ax = fig.add_subplot()
    for i, (label, chosen) in enumerate((("kept", keep), ("pruned", ~keep))):
        counts, _ = np.histogram(size[chosen], edges)
        color = PALETTE[i]
        ax.stairs(counts, edges, fill=True, facecolor=to_rgba(color, 0.35), edgecolor=color,
                  linewidth=1.5, label=f"{label} by level {level} ({int(chosen.sum()):,})")
    if log_count:
        ax.set_yscale("log", nonpositive="clip")
    where = layer or f"all {len(names)} prunable layers"
    ax.set(xlabel="|weight| at initialization (θ0)",
           ylabel="Number of weights" + (" (log scale)" if log_count else ""),
           title=f"Initial |weight| of kept vs pruned weights: level {level}, {where}")
    outside_legend(ax)
    ax.grid(alpha=0.3)
    return fig


def init_vs_final(result: Result, level: int, layer: str, *, max_points: int = 20_000,
                  seed: int = 0) -> Figure:
    """Scatter of the weights of ``layer`` that survive ``level``: value at the level's start
    (its initialization: rewound, or reinitialized for a control) against the value after
    training, with the y = x guide. At most ``max_points`` points, drawn with a fixed seed."""
    result = _as_result(result)
    mask = _level_mask(result, level)
    _check_layer(mask, layer)
    keep = mask[layer].cpu().flatten()
    x = result.weights(level, "start")[layer].detach().flatten()[keep].double().numpy()
    y = result.weights(level, "final")[layer].detach().flatten()[keep].double().numpy()
    survivors = len(x)
    if survivors > max_points:
        pick = np.sort(np.random.default_rng(seed).choice(survivors, max_points, replace=False))
        x, y = x[pick], y[pick]
    fig = new_figure(5.6, 5.2)
    ax = fig.add_subplot()
    ax.scatter(x, y, s=7, alpha=0.45, color=PALETTE[0], linewidths=0,
               label=f"surviving weights ({len(x):,} shown)")
    ax.axline((0.0, 0.0), slope=1.0, color=PALETTE[6], linestyle="--", linewidth=1,
              label="y = x (unchanged by training)")
    pruned = 100.0 * (1 - survivors / max(keep.numel(), 1))
    shown = f", {len(x):,} shown" if len(x) < survivors else ""
    ax.set(xlabel="Weight at the level's start (initialization)",
           ylabel="Weight after training (final)",
           title=f"{layer}, level {level}: {pruned:.1f}% pruned\n"
                 f"({survivors:,} surviving weights{shown})")
    outside_legend(ax)
    ax.grid(alpha=0.3)
    return fig
