"""Which figures one section of a report draws, drawn lazily: ``(stem, caption, draw)``,
where ``draw`` is None for a note that names what is not drawn."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..analysis import Results
from ..experiment.result import Result
from ..studies import STUDIES, FigureItem
from .sections import slug

Item = FigureItem  # stem, caption, draw (None: a note)

MAX_CURVE_LEVELS = 6  # more lines than this in one panel cannot be told apart
MAX_LINES = 8  # experiments per accuracy figure, for the same reason
MAX_CURVE_FIGURES = 8  # learning-curve figures per section; the others are named
MAX_OVERLAP = 12  # experiments in one mask-overlap heatmap (n x n annotated cells)


def _figures(res: Results, prefix: str = "") -> list[Item]:
    """The figures of one section (``res``: its rows), drawn lazily; what is not drawn is
    named, in a caption or in a note."""
    from . import figures as f

    first = Result(res.levels.run_dir.iloc[0])  # a run with at least one finished level
    last = max(first.levels)
    exp0 = res.levels.experiment.iloc[0]
    layer0 = next(iter(first.config().get("prunable", {})), None)
    names = [str(n) for n in pd.unique(res.levels.experiment)]
    chunks = [names[i:i + MAX_LINES] for i in range(0, len(names), MAX_LINES)]
    items: list[Item] = []
    for stem, caption, draw in (
            ("accuracy_vs_weights", f"Test {f.score_name(res.levels)} (at early stop: solid; "
             "at the end: dashed) vs weights remaining",
             lambda c: f.accuracy_vs_weights(res.levels, metric="both", experiments=c)),
            ("early_stop_vs_weights", "Early-stopping iteration vs weights remaining",
             lambda c: f.early_stop_vs_weights(res.levels, c))):
        for k, chunk in enumerate(chunks, 1):
            if len(chunks) == 1:
                items.append((stem, caption, lambda d=draw, c=chunk: d(c)))
            else:
                items.append((f"{stem}_{k}", f"{caption} (part {k} of {len(chunks)}: "
                              f"{', '.join(chunk)})", lambda d=draw, c=chunk: d(c)))
    items += [
        ("layer_density", f"Per-layer density by level ({exp0})",
         lambda: f.layer_density(res.layers, experiment=exp0)),
        ("mask_overlap", f"Mask overlap (Jaccard) between levels ({first.path.name})",
         lambda: f.mask_overlap({f"level {lv}": first.mask(lv) for lv in first.levels})),
        ("weight_histograms", f"|weight| at initialisation (θ0): kept vs pruned by level {last}",
         lambda: f.weight_histograms(first, last)),
    ]
    items += _across_experiments(res)
    searched = [Result(d) for d in res.levels.drop_duplicates("run_dir").run_dir
                if 0 in Result(d).earlybird_levels()]
    for r in searched[:2]:  # the first early-bird experiments of a session
        items.append((f"earlybird_distances_{slug(r.path.name)}", f"Early-bird search: mask "
                      f"distances during the dense training ({r.path.name})",
                      lambda r=r: f.earlybird_distances(r, 0)))
    if len(searched) > 2:
        items.append(("earlybird_left_out", f"Early-bird search drawn for 2 of {len(searched)} "
                      "runs; left out: " + ", ".join(r.path.name for r in searched[2:]), None))
    if layer0 is not None:
        items.append(("init_vs_final", f"Surviving weights of {layer0}, level {last}: start "
                      "vs end of training", lambda: f.init_vs_final(first, last, layer0)))
    items += _learning_curves(res)
    for name, study in STUDIES.items():  # each study's figures, where it has rows
        if len(res.studies.get(name, ())):
            items += study.figures(res)
    seen: dict[str, int] = {}
    for i, (stem, caption, draw) in enumerate(items):  # names equal once made file-safe
        seen[stem] = seen.get(stem, 0) + 1
        items[i] = (f"{prefix}{stem}" + (f"_{seen[stem]}" if seen[stem] > 1 else ""),
                    caption, draw)
    return items


def _across_experiments(res: Results) -> list[Item]:
    """Do the experiments' masks agree at their last level (seed of the lowest number)?
    Only masks of the same prunable layers compare; the others are named."""
    from . import figures as f

    seed0 = res.levels.seed.min()
    per_exp = res.runs[res.runs.seed == seed0].drop_duplicates("experiment")
    if len(per_exp) < 2:
        return []
    last = res.levels.groupby("run_dir")["level"].max()
    rows = list(per_exp.itertuples())
    pruned = [r for r in rows if last.get(r.run_dir, 0) > 0]
    left = [f"{r.experiment} (no pruned level)" for r in rows if last.get(r.run_dir, 0) <= 0]

    def layers(run_dir: str) -> list:
        return sorted(Result(run_dir).config().get("prunable", {}).items())

    same = [r for r in pruned if layers(r.run_dir) == layers(pruned[0].run_dir)] \
        if pruned else []
    left += [f"{r.experiment} (other prunable layers)" for r in pruned
             if layers(r.run_dir) != layers(pruned[0].run_dir)]
    left += [f"{r.experiment} (over {MAX_OVERLAP} experiments)" for r in same[MAX_OVERLAP:]]
    shown = same[:MAX_OVERLAP]
    if len(shown) < 2:
        return []

    def across() -> Any:
        return f.mask_overlap({str(r.experiment): Result(r.run_dir).mask(int(last[r.run_dir]))
                               for r in shown})

    note = f"; left out: {', '.join(left)}" if left else ""
    return [("mask_overlap_experiments", f"Mask overlap (Jaccard) between experiments at "
             f"their last level (seed {seed0}{note})", across)]


def _learning_curves(res: Results) -> list[Item]:
    from . import figures as f

    names = list(pd.unique(res.curves.experiment)) if "experiment" in res.curves else []
    items: list[Item] = []
    for exp in names[:MAX_CURVE_FIGURES]:
        levels = sorted(res.curves.loc[res.curves.experiment == exp, "level"].unique())
        shown = _spread(levels, MAX_CURVE_LEVELS)
        note = "" if len(shown) == len(levels) else (
            f"; {len(shown)} of {len(levels)} levels: {', '.join(map(str, shown))}")
        items.append((f"learning_curves_{slug(exp)}", f"Learning curves by level ({exp}{note})",
                      lambda e=exp, lv=shown: f.learning_curves(res.curves, experiment=e,
                                                                 level=lv)))
    if len(names) > MAX_CURVE_FIGURES:
        items.append(("learning_curves_left_out", f"Learning curves drawn for the first "
                      f"{MAX_CURVE_FIGURES} of {len(names)} experiments; left out: "
                      f"{', '.join(map(str, names[MAX_CURVE_FIGURES:]))} (curves.csv holds "
                      "them all; lth.report.figures.learning_curves(lth.load(PATH).curves, "
                      "experiment=NAME) draws one)", None))
    return items


def _spread(levels: list, most: int) -> list:
    """At most ``most`` of ``levels``, evenly spread, always with the first and the last."""
    if len(levels) <= most:
        return [int(v) for v in levels]
    picks = {round(i * (len(levels) - 1) / (most - 1)) for i in range(most)}
    return [int(levels[i]) for i in sorted(picks)]
