"""``lth report PATH --out DIR``: one self-contained ``index.html`` (figures embedded as
data URIs, per-level tables, the resolved configs, run metadata) plus the figures as PNG
and SVG and the tidy tables as CSV. Every name and value from configs is HTML-escaped."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from .. import __version__
from ..analysis import Results, load
from ..errors import LTHError
from ..experiment.result import Result

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#222;padding:0 1rem}h1{font-size:1.6rem}h2{margin-top:2.2rem;
border-bottom:1px solid #ddd;padding-bottom:.3rem}table{border-collapse:collapse;
font-size:.85rem;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;
text-align:right}th{background:#f3f3f3}figure{margin:1rem 0}figure img{max-width:100%;
border:1px solid #eee}figcaption{font-size:.85rem;color:#555}pre{background:#f7f7f7;
padding:.8rem;overflow:auto;font-size:.8rem}.note{color:#a33}
"""
# Lets a browser test (and a reader) see that every embedded image decoded.
_CHECK = """<script>window.addEventListener('load',function(){var i=document.images,ok=i.length>0;
for(var k=0;k<i.length;k++){ok=ok&&i[k].complete&&i[k].naturalWidth>0;}
document.body.setAttribute('data-images-ok',ok?'yes':'no');});</script>"""


def _slug(name: Any) -> str:
    """A file-name-safe form of a user-given name (the page shows the escaped original)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._") or "x"


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(frame: pd.DataFrame, floats: str = "{:.4f}") -> str:
    return frame.to_html(index=False, escape=True, border=0, na_rep="",
                         float_format=lambda v: floats.format(v))


def _level_table(levels: pd.DataFrame) -> pd.DataFrame:
    cols = {"pct_remaining": "% weights", "best_test_acc": "best test acc",
            "final_test_acc": "final test acc", "early_stop_step": "early-stop it",
            "early_stop_test_acc": "acc @ early stop"}
    steps = {"train_steps": "steps trained", "steps_to_mask": "steps to find the mask"}
    if "earlybird_step" in levels and levels["earlybird_step"].notna().any():
        cols.update(steps)  # what the early-bird search saved, level by level
    if levels["seed"].nunique() <= 1:
        table = levels[["experiment", "level", *cols]].rename(columns=cols)
        table["% weights"] = table["% weights"].map("{:.1f}".format)
        return table
    g = levels.groupby(["experiment", "level"], sort=False)
    out = g[list(cols)].agg(["mean", "std"])
    flat = pd.DataFrame({"experiment": [k[0] for k in out.index],
                         "level": [k[1] for k in out.index],
                         "seeds": g.size().to_numpy()})
    for c, label in cols.items():
        integer = c == "early_stop_step" or c in steps
        flat[label] = [f"{m:.0f} ± {s:.0f}" if integer else f"{m:.4f} ± {s:.4f}"
                       for m, s in zip(out[(c, "mean")], out[(c, "std")].fillna(0), strict=True)]
    flat["% weights"] = [f"{m:.1f}" for m in out[("pct_remaining", "mean")]]
    return flat


def _figures(res: Results) -> list[tuple[str, str, Callable[[], Any]]]:
    from . import figures as f

    first = Result(res.levels.run_dir.iloc[0])  # a run with at least one finished level
    last = max(first.levels)
    exp0 = res.levels.experiment.iloc[0]
    layer0 = next(iter(first.config().get("prunable", {})), None)
    items = [
        ("accuracy_vs_weights", "Test accuracy (at early stop: solid; at the end: dashed) vs "
         "weights remaining", lambda: f.accuracy_vs_weights(res.levels, metric="both")),
        ("early_stop_vs_weights", "Early-stopping iteration vs weights remaining",
         lambda: f.early_stop_vs_weights(res.levels)),
        ("layer_density", f"Per-layer density by level ({exp0})",
         lambda: f.layer_density(res.layers, experiment=exp0)),
        ("mask_overlap", f"Mask overlap (Jaccard) between levels ({first.path.name})",
         lambda: f.mask_overlap({f"level {lv}": first.mask(lv) for lv in first.levels})),
        ("weight_histograms", f"|weight| at initialisation (θ0): kept vs pruned by level {last}",
         lambda: f.weight_histograms(first, last)),
    ]
    seed0 = res.levels.seed.min()
    per_exp = res.runs[res.runs.seed == seed0].drop_duplicates("experiment")
    if len(per_exp) > 1:  # a session: do the variants' masks agree at their last level?
        def across() -> Any:
            masks = {}
            for row in per_exp.itertuples():
                r = Result(row.run_dir)
                if r.levels and max(r.levels) > 0:
                    masks[str(row.experiment)] = r.mask(max(r.levels))
            return f.mask_overlap(masks)

        items.append(("mask_overlap_experiments", f"Mask overlap (Jaccard) between "
                      f"experiments at their last level (seed {seed0})", across))
    searched = [Result(d) for d in res.levels.drop_duplicates("run_dir").run_dir
                if 0 in Result(d).earlybird_levels()]
    for r in searched[:2]:  # the first early-bird experiments of a session
        items.append((f"earlybird_distances_{_slug(r.path.name)}", f"Early-bird search: mask "
                      f"distances during the dense training ({r.path.name})",
                      lambda r=r: f.earlybird_distances(r, 0)))
    if layer0 is not None:
        items.append(("init_vs_final", f"Surviving weights of {layer0}, level {last}: start "
                      "vs end of training", lambda: f.init_vs_final(first, last, layer0)))
    for exp in list(res.curves.experiment.unique())[:4]:
        levels = sorted(res.curves.loc[res.curves.experiment == exp, "level"].unique())
        shown = _spread(levels, MAX_CURVE_LEVELS)
        note = "" if len(shown) == len(levels) else (
            f"; {len(shown)} of {len(levels)} levels: {', '.join(map(str, shown))}")
        items.append((f"learning_curves_{_slug(exp)}", f"Learning curves by level ({exp}{note})",
                      lambda e=exp, lv=shown: f.learning_curves(res.curves, experiment=e,
                                                                 level=lv)))
    return items


MAX_CURVE_LEVELS = 6  # more lines than this in one panel cannot be told apart


def _spread(levels: list, most: int) -> list:
    """At most ``most`` of ``levels``, evenly spread, always with the first and the last."""
    if len(levels) <= most:
        return [int(v) for v in levels]
    picks = {round(i * (len(levels) - 1) / (most - 1)) for i in range(most)}
    return [int(levels[i]) for i in sorted(picks)]


def _render(fig: Any, out: Path, stem: str) -> str:
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110, bbox_inches="tight")
    (out / f"{stem}.png").write_bytes(png.getvalue())
    fig.savefig(out / f"{stem}.svg", format="svg", bbox_inches="tight")
    return base64.b64encode(png.getvalue()).decode()


def build_report(path: str | Path, out: str | Path, *, title: str | None = None) -> Path:
    """Write the report of ``path`` (a run, group or store) into ``out``; returns index.html."""
    res = load(path)
    if res.levels.empty:
        raise LTHError(f"{path} has no finished level to report; run it first")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    res.to_csv(out)
    from .figures import pruning_summary_table

    parts = [f"<h1>{_esc(title or 'lth report: ' + Path(path).name)}</h1>"]
    configs = {r: Result(r).config() for r in res.runs.run_dir}
    meta = _metadata(res, configs)
    parts.append("<h2>Run metadata</h2>" + _table(meta, "{}"))
    parts.append("<h2>Per-level results</h2>" + _table(_level_table(res.levels)))
    parts.append("<h2>Figures</h2>")
    for stem, caption, draw in _figures(res):
        try:
            data = _render(draw(), out, stem)
        except (LTHError, ValueError, KeyError) as exc:
            parts.append(f"<p class='note'>{_esc(caption)}: not drawn ({_esc(exc)})</p>")
            continue
        link = f"<a href='{_esc(stem)}.svg'>SVG</a>"
        parts.append(f"<figure><img alt='{_esc(caption)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{_esc(caption)} — {link}</figcaption></figure>")
    exp0 = res.levels.experiment.iloc[0]
    parts.append(f"<h2>Pruning summary ({_esc(exp0)}, last level)</h2>"
                 + _table(pruning_summary_table(res.layers, experiment=exp0), "{:.2f}"))
    parts.append("<h2>Resolved configurations</h2>")
    for run_dir, cfg in configs.items():
        shown = {k: v for k, v in cfg.items() if k != "identity"}
        parts.append(f"<h3>{_esc(Path(run_dir).name)}</h3><pre>"
                     f"{_esc(json.dumps(shown, indent=2, default=str))}</pre>")
    parts.append("<p>Tables: <a href='levels.csv'>levels.csv</a>, <a href='layers.csv'>"
                 "layers.csv</a>, <a href='curves.csv'>curves.csv</a>, <a href='runs.csv'>"
                 "runs.csv</a></p>")
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>"
            f"{_esc(title or Path(path).name)}</title><style>{_CSS}</style>{_CHECK}</head>"
            f"<body>{''.join(parts)}</body></html>")
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _metadata(res: Results, configs: dict[str, dict]) -> pd.DataFrame:
    cfg0 = next(iter(configs.values()))
    data = cfg0.get("data", {})
    rows = [("report made", dt.datetime.now().isoformat(timespec="seconds")),
            ("lth (report / runs)", f"{__version__} / "
             f"{', '.join(sorted({c.get('lth_version', '?') for c in configs.values()}))}"),
            ("torch (runs)", ", ".join(sorted({c.get("torch_version", "?")
                                                for c in configs.values()}))),
            ("experiments", ", ".join(res.levels.experiment.unique())),
            ("seeds", ", ".join(str(s) for s in sorted(res.levels.seed.unique()))),
            ("data", f"{data.get('name')} ({data.get('n_train')} train / {data.get('n_val')} "
                     f"val / {data.get('n_test')} test)"),
            ("data identity (SHA-256)", cfg0.get("identity", {}).get("data", "?")),
            ("runs (finished)", f"{len(res.runs)} ({int((res.runs.status == 'done').sum())})"),
            ("training wall time", f"{res.levels.wall_time_s.sum():.1f} s")]
    return pd.DataFrame(rows, columns=["", "value"])
