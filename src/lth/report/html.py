"""``lth report PATH --out DIR``: one self-contained ``index.html`` (figures embedded as
data URIs, per-level tables, the resolved configs, run metadata) plus the figures as PNG
and SVG and the tidy tables as CSV. Runs of different datasets or models get sections of
their own; what could not be read is listed, never dropped. Every name and value from
configs is HTML-escaped."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd

from ..analysis import Results, load
from ..errors import LTHError, explained_os_errors
from ..experiment.result import Result, shown_columns, shown_costs
from ..studies import STUDIES
from ..version import __version__
from .catalog import _figures
from .sections import Section, duration, left_out, split, wall_times

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#222;padding:0 1rem}h1{font-size:1.6rem}h2{margin-top:2.2rem;
border-bottom:1px solid #ddd;padding-bottom:.3rem}table{border-collapse:collapse;
font-size:.85rem;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;
text-align:right}th{background:#f3f3f3}figure{margin:1rem 0}figure img{max-width:100%;
border:1px solid #eee}figcaption{font-size:.85rem;color:#555}pre{background:#f7f7f7;
padding:.8rem;overflow:auto;font-size:.8rem}.note{color:#a33}section{margin-top:2.5rem}
h3{margin-top:1.6rem}.not-included li{color:#a33}summary{cursor:pointer}
"""
# Lets a browser test (and a reader) see that every embedded image decoded.
_CHECK = """<script>window.addEventListener('load',function(){var i=document.images,ok=i.length>0;
for(var k=0;k<i.length;k++){ok=ok&&i[k].complete&&i[k].naturalWidth>0;}
document.body.setAttribute('data-images-ok',ok?'yes':'no');});</script>"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(frame: pd.DataFrame, floats: str = "{:.4f}") -> str:
    return frame.to_html(index=False, escape=True, border=0, na_rep="",
                         float_format=lambda v: floats.format(v))


def _level_table(levels: pd.DataFrame) -> pd.DataFrame:
    cols = shown_columns(levels.columns)
    steps = {"train_steps": "steps trained", "steps_to_mask": "steps to find the mask"}
    if "earlybird_step" in levels and levels["earlybird_step"].notna().any():
        cols.update(steps)  # what the early-bird search saved, level by level
    cols.update(shown_costs(levels))
    if levels["seed"].nunique() <= 1:
        table = levels[["experiment", "level", *cols]].rename(columns=cols)
        table["% weights"] = table["% weights"].map("{:.1f}".format)
        return table
    first = {e: i for i, e in enumerate(levels["experiment"].unique())}
    levels = levels.sort_values(["experiment", "level"], key=lambda c: c.map(first)
                                if c.name == "experiment" else c, kind="stable")
    g = levels.groupby(["experiment", "level"], sort=False)
    out = g[list(cols)].agg(["mean", "std"])
    flat = pd.DataFrame({"experiment": [k[0] for k in out.index],
                         "level": [k[1] for k in out.index],
                         "seeds": g.size().to_numpy()})
    for c, label in cols.items():
        integer = c in ("early_stop_step", "mask_updates", "budget_steps") or c in steps
        fmt = ".0f" if integer else ".3g" if c == "budget_flops" else ".4f"
        flat[label] = [f"{m:{fmt}}" if pd.isna(s) else f"{m:{fmt}} ± {s:{fmt}}"  # n = 1: no sd
                       for m, s in zip(out[(c, "mean")], out[(c, "std")], strict=True)]
    flat["% weights"] = [f"{m:.1f}" for m in out[("pct_remaining", "mean")]]
    return flat


def _render(fig: Any, out: Path, stem: str) -> str:
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110, bbox_inches="tight")
    (out / f"{stem}.png").write_bytes(png.getvalue())
    fig.savefig(out / f"{stem}.svg", format="svg", bbox_inches="tight")
    return base64.b64encode(png.getvalue()).decode()


@explained_os_errors
def build_report(path: str | Path, out: str | Path, *, title: str | None = None) -> Path:
    """Write the report of ``path`` (a run, group or store) into ``out``; returns index.html.

    One section per (dataset, model) holds its per-level table, figures and pruning
    summary; what could not be read is listed under "Not included".
    ``build_report("runs", "report")`` writes ``report/index.html``."""
    res = load(path)
    if res.levels.empty:
        why = f" ({len(res.problems)} problem(s) reading it; the first: {res.problems[0]})" \
            if res.problems else ""
        raise LTHError(f"{path} has no finished level to report; run it first{why}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = res.to_csv(out)
    configs = {r: Result(r).config() for r in res.runs.run_dir}
    parts = [f"<h1>{_esc(title or 'lth report: ' + Path(path).name)}</h1>"]
    found = split(res)
    several = len(found) > 1
    parts.append("<h2>Run metadata</h2>" + _table(_metadata(res, configs, found), "{}"))
    missing = left_out(res)
    if missing:
        parts.append("<h2 id='not-included'>Not included</h2><ul class='not-included'>"
                     + "".join(f"<li>{_esc(m)}</li>" for m in missing) + "</ul>")
    if several:
        parts.append("<h2>Sections (dataset · model)</h2><ul>" + "".join(
            f"<li><a href='#sec-{_esc(sec.slug)}'>{_esc(sec.title)}</a>: "
            f"{_count(sec.results)}</li>" for sec in found) + "</ul>")
    for sec in found:
        parts.append(_section(sec, configs, out, several=several))
    parts.append("<h2>Resolved configurations</h2>")
    for row in res.runs.itertuples():
        shown = {k: v for k, v in configs[row.run_dir].items() if k != "identity"}
        parts.append(f"<details><summary>{_esc(Path(row.run_dir).name)} ({_esc(row.experiment)}"
                     f", seed {_esc(row.seed)})</summary><pre>"
                     f"{_esc(json.dumps(shown, indent=2, default=str))}</pre></details>")
    parts.append("<p>Tables: " + ", ".join(f"<a href='{_esc(p.name)}'>{_esc(p.name)}</a>"
                                           for p in tables) + "</p>")
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>"
            f"{_esc(title or Path(path).name)}</title><style>{_CSS}</style>{_CHECK}</head>"
            f"<body>{''.join(parts)}</body></html>")
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _count(res: Results) -> str:
    n = res.levels.experiment.nunique()
    return f"{n} experiment{'s' * (n != 1)}, {len(res.runs)} run{'s' * (len(res.runs) != 1)}"


def _section(sec: Section, configs: dict[str, dict], out: Path, *, several: bool) -> str:
    """One (dataset, model): its numbers, figures and pruning summary. Figure files of a
    report with several sections are prefixed with the section's name."""
    res = sec.results
    parts = [f"<section class='lth-section' id='sec-{_esc(sec.slug)}' "
             f"data-dataset='{_esc(sec.dataset)}' data-model='{_esc(sec.model)}'>"
             f"<h2>{_esc(sec.title)}</h2><p>Dataset {_esc(sec.dataset)}, model "
             f"{_esc(sec.model)}: {_count(res)}.</p>"]
    if several:
        parts.append(_table(pd.DataFrame(_summary(res, configs), columns=["", "value"]), "{}"))
    parts.append("<h3>Per-level results</h3>" + _table(_level_table(res.levels)))
    for name, study in STUDIES.items():  # each study's own table, where it has rows
        rows = res.studies.get(name)
        if rows is not None and len(rows):
            parts.append(f"<h3>{_esc(study.title or name)}</h3>"
                         + _table(study.report_table(rows)))
    parts.append("<h3>Figures</h3>")
    for stem, caption, draw in _figures(res, f"{sec.slug}__" if several else ""):
        if draw is None:
            parts.append(f"<p class='note'>{_esc(caption)}</p>")
            continue
        try:
            data = _render(draw(), out, stem)
        except (LTHError, ValueError, KeyError) as exc:
            parts.append(f"<p class='note'>{_esc(caption)}: not drawn ({_esc(exc)})</p>")
            continue
        link = f"<a href='{_esc(stem)}.svg'>SVG</a>"
        parts.append(f"<figure><img alt='{_esc(caption)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{_esc(caption)} — {link}</figcaption></figure>")
    try:
        summary = _pruning_summary(res)
    except LTHError as exc:  # e.g. no layer densities recorded
        summary = f"<p class='note'>not made ({_esc(exc)})</p>"
    parts.append("<h3>Pruning summary (each experiment at its last level)</h3>" + summary)
    return "".join(parts) + "</section>"


def _pruning_summary(res: Results) -> str:
    """Per experiment and layer at the experiment's last level: weights, kept (mean over
    seeds), % pruned."""
    from .figures import pruning_summary_table

    frames = []
    for exp in pd.unique(res.layers.experiment):
        t = pruning_summary_table(res.layers, experiment=exp)
        frames.append(t.assign(experiment=exp, level=t.attrs["level"],
                               seeds=len(t.attrs["seeds"])))
    table = pd.concat(frames, ignore_index=True)
    if (table["kept"] % 1 == 0).all():
        table["kept"] = table["kept"].astype(int)
    table = table[["experiment", "level", "seeds", "layer", "weights", "kept", "pct_pruned"]]
    return _table(table.rename(columns={"pct_pruned": "% pruned"}), "{:.2f}")


def _unique(values: Any) -> list[str]:
    return list(dict.fromkeys(str(v) for v in values))


def _summary(res: Results, configs: dict[str, dict]) -> list[tuple[str, str]]:
    """Rows about the runs of ``res``: experiments, seeds, data, runs and times."""
    cfgs = [configs[d] for d in res.runs.run_dir]
    data = _unique(f"{d.get('name')} ({d.get('n_train')} train / {d.get('n_val')} val / "
                   f"{d.get('n_test')} test)" for d in (c.get("data", {}) for c in cfgs))
    elapsed, compute, untimed = wall_times(res.levels)
    note = f"; {untimed} level(s) without a finish time added in full" if untimed else ""
    return [("experiments", ", ".join(_unique(res.levels.experiment))),
            ("seeds", ", ".join(str(s) for s in sorted(res.levels.seed.unique()))),
            ("data", "; ".join(data)),
            ("data identity (SHA-256)", ", ".join(_unique(
                c.get("identity", {}).get("data", "?") for c in cfgs))),
            ("runs (finished)", f"{len(res.runs)} ({int((res.runs.status == 'done').sum())})"),
            ("elapsed wall time", f"{duration(elapsed)}: time during which at least one level "
                                  f"was training; parallel trials overlap{note}"),
            ("compute time", f"{duration(compute)}: the levels' training times added up over "
                             f"all runs and workers (a shared dense level 0 once){note}")]


def _metadata(res: Results, configs: dict[str, dict], found: list[Section]) -> pd.DataFrame:
    rows = [("report made", dt.datetime.now().isoformat(timespec="seconds")),
            ("lth (report / runs)", f"{__version__} / "
             f"{', '.join(sorted({c.get('lth_version', '?') for c in configs.values()}))}"),
            ("torch (runs)", ", ".join(sorted({c.get("torch_version", "?")
                                                for c in configs.values()})))]
    if len(found) > 1:
        rows.append(("sections (dataset · model)", "; ".join(
            f"{sec.title}: {_count(sec.results)}" for sec in found)))
    return pd.DataFrame(rows + _summary(res, configs), columns=["", "value"])
