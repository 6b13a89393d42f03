"""A report over a whole store: one section per (dataset, model), legends beside the plots,
nothing left out without a word, elapsed wall time beside compute time."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

import lth
from lth.report import catalog
from lth.report.catalog import _figures
from lth.report.sections import duration, split, wall_times

TRAIN = {"duration": "60it", "eval_every": "20it", "batch_size": 32}
BLOBS = [f"blob{i}" for i in range(5)]  # more experiments than the old limit of 4 curves
DAMAGED = "zz<b>damaged"


def blobs() -> lth.Data:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 12)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    return lth.from_arrays(x[:180], y[:180], x[180:], y[180:], name="blobs")


@pytest.fixture(scope="module")
def store(tmp_path_factory, digits):
    """digits: a ticket and its control, seeds 0 and 1, run by 2 workers; blobs: 5 one-seed
    experiments, and one interrupted before its first level (another model, so that it
    shares no dense level 0 with them); a run whose config is damaged."""
    root = tmp_path_factory.mktemp("whole") / "store"
    model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                             hidden=(16,))
    lth.LotterySession(model, digits, train=TRAIN, levels=1, seeds=[0, 1],
                       variants={"ticket": {}, "control": {"control": "random_reinit",
                                                           "of": "ticket"}}
                       ).run(store=root, executor="local", workers=2)
    data = blobs()
    small = lth.create_model("mlp", input_shape=data.input_shape, num_classes=2, hidden=(8,))
    for name in BLOBS:
        lth.LotteryModel(small, data, train=TRAIN, levels=1, name=name).run(store=root)

    def stop(level, step, end):
        raise KeyboardInterrupt

    other = lth.create_model("mlp", input_shape=data.input_shape, num_classes=2, hidden=(4,))
    with pytest.raises(KeyboardInterrupt):
        lth.LotteryModel(other, data, train=TRAIN, levels=1, name="stopped").run(
            store=root, progress=stop)
    (root / DAMAGED).mkdir()
    (root / DAMAGED / "config.json").write_text('{"broken": ')
    return root


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return out, lth.report.build_report(store, out).read_text()


def sections_of(page: str) -> dict[str, str]:
    """dataset -> the HTML of its section."""
    found = re.findall(r"<section class='lth-section'[^>]*data-dataset='([^']*)'.*?</section>",
                       page, flags=re.S)
    bodies = re.findall(r"<section class='lth-section'.*?</section>", page, flags=re.S)
    return dict(zip(found, bodies, strict=True))


def legend_boxes(fig) -> list:
    """The drawn legends of ``fig``, each checked to lie inside the figure and off every
    axes (data area and colour bars)."""
    fig.draw_without_rendering()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    for legend in legends:
        box = legend.get_window_extent()
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent()), (fig, ax.get_title())
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 + 1
        assert fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1 + 1
    return legends


def test_every_report_figure_keeps_its_legend_off_the_data(store):
    digits, blob = sorted(split(lth.load(store)), key=lambda sec: sec.dataset != "digits")
    drawn = [draw for _, _, draw in _figures(digits.results) if draw is not None]
    drawn += [draw for stem, _, draw in _figures(blob.results) if "vs_weights" in stem]
    legends = [legend for draw in drawn for legend in legend_boxes(draw())]
    # accuracy and early stop (both sections), density, histograms, scatter, 2 x curves
    assert len(legends) == 9
    assert len(legends[-2].get_texts()) == 5 + 2  # blobs: 5 experiments, 2 line styles


def test_one_section_per_dataset_and_model(store, report):
    out, page = report
    sections = sections_of(page)
    assert list(sections) == ["blobs", "digits"]
    digits, blob = sections["digits"], sections["blobs"]
    for html, own, other in ((digits, ["ticket", "control"], BLOBS),
                             (blob, BLOBS, ["ticket", "control"])):
        assert "Per-level results" in html and "Pruning summary" in html
        assert html.count("data:image/png;base64,") >= 7  # its own figures
        for name in own:  # in the per-level table (2 levels) and the pruning summary
            assert html.count(f"<td>{name}</td>") >= 2 + 3, name
        for name in other:
            assert f"<td>{name}</td>" not in html and f"({name})" not in html
    # every experiment's pruning summary, each at its last level
    summary = digits[digits.index("Pruning summary"):]
    assert summary.count("<td>total</td>") == 2
    assert sections["blobs"][blob.index("Pruning summary"):].count("<td>total</td>") == 5
    assert (out / "digits_Sequential__accuracy_vs_weights.png").exists()
    assert (out / "blobs_Sequential__accuracy_vs_weights.png").exists()
    accuracy = lth.load(store).levels.query("experiment == 'blob3' and level == 1")
    assert f"{accuracy.final_test_acc.item():.4f}" in blob


def test_every_experiment_has_learning_curves_or_is_named(store, report, monkeypatch):
    out, page = report
    for name in BLOBS:
        assert (out / f"blobs_Sequential__learning_curves_{name}.png").exists(), name
        assert f"Learning curves by level ({name})" in sections_of(page)["blobs"]
    assert "left out" not in sections_of(page)["blobs"].split("Learning curves")[1]
    # over the limit: the figures not drawn are named, with how to draw them
    monkeypatch.setattr(catalog, "MAX_CURVE_FIGURES", 3)
    blob = next(s for s in split(lth.load(store)) if s.dataset == "blobs")
    items = _figures(blob.results)
    drawn = [stem for stem, _, draw in items if stem.startswith("learning_curves_") and draw]
    assert drawn == [f"learning_curves_{n}" for n in BLOBS[:3]]
    note = next(caption for _, caption, draw in items if draw is None)
    assert "3 of 5 experiments; left out: blob3, blob4" in note
    # the experiment without a pruned level is named where masks are compared
    overlap = next(caption for stem, caption, _ in items if stem == "mask_overlap_experiments")
    assert "left out: stopped (no pruned level)" in overlap


def test_elapsed_wall_time_of_parallel_trials_and_compute_time(store, report):
    _, page = report
    levels = lth.load(store).levels
    session = levels[levels.run_dir.str.contains("/trials/")]
    elapsed, compute, untimed = wall_times(session)
    # elapsed < compute when the 2 workers overlapped (levels here take ~0.05 s, a worker
    # ~1 s to start: they may not); the union of intervals is checked in its doctest.
    assert untimed == 0 and 0 < elapsed <= compute
    assert compute < session.wall_time_s.sum()  # the shared dense level 0 counts once
    digits = sections_of(page)["digits"]
    for label, seconds in (("elapsed wall time", elapsed), ("compute time", compute)):
        assert re.search(rf"<td>{label}</td>\s*<td>{re.escape(duration(seconds))}:", digits)
    head = page.split("<section")[0]  # the store's metadata: every run
    for label, seconds in zip(["elapsed wall time", "compute time"], wall_times(levels)[:2],
                              strict=True):
        assert re.search(rf"<td>{label}</td>\s*<td>{re.escape(duration(seconds))}:", head)


def test_wall_times_of_overlapping_copied_and_untimed_levels():
    t = pd.DataFrame({"wall_time_s": [10.0, 10.0, 10.0, 4.0, 3.0, 2.0],
                      "finished_at": [110.0, 105.0, 105.0, 200.0, None, np.nan]})
    # [100, 110] and [95, 105] overlap (and the copy of the latter counts once): 15 s,
    # then [196, 200]: 4 s; the two levels without a finish time add 5 s to both
    assert wall_times(t) == (24.0, 29.0, 2)
    assert wall_times(t.drop(columns="finished_at")) == (39.0, 39.0, 6)
    assert wall_times(t.iloc[:0]) == (0.0, 0.0, 0)
    assert duration(985.0) == "985.0 s (16.4 min)" and duration(5.25) == "5.2 s"


def test_elapsed_never_exceeds_compute_time_however_the_clock_rounds():
    # finished_at is time.time() (~1.7e9 s: floats 2.4e-7 s apart), wall_time_s a
    # perf_counter difference: a level's start, end - wall, is rounded, and the length of
    # [start, end] was once taken for its wall time (0.21164584 > 0.21164584 of compute).
    walls = [0.0777232025872626, 0.038300977701636214, 0.09562165564431378]
    ends = [1700000446.415631, 1700000446.969227, 1700000447.5775716]
    elapsed, compute, untimed = wall_times(pd.DataFrame({"wall_time_s": walls,
                                                         "finished_at": ends}))
    assert elapsed == compute == math.fsum(walls) and untimed == 0  # disjoint levels
    rng = np.random.default_rng(0)  # and any mix of overlapping, adjacent, copied levels
    for _ in range(300):
        n = int(rng.integers(1, 8))
        wall = rng.uniform(0.01, 0.3, n)
        end = 1.7e9 + np.cumsum(rng.uniform(-0.2, 0.4, n))
        levels = pd.DataFrame({"wall_time_s": wall, "finished_at": end})
        levels = pd.concat([levels, levels.iloc[:1]], ignore_index=True)  # a shared level 0
        elapsed, compute, _ = wall_times(levels)
        assert 0 < elapsed <= compute == math.fsum(wall)


def test_what_could_not_be_read_is_listed_escaped(report):
    _, page = report
    listed = page[page.index("<h2 id='not-included'>Not included</h2>"):page.index("<section")]
    assert "zz&lt;b&gt;damaged/config.json is not valid JSON" in listed
    assert DAMAGED not in page
    assert re.search(r"stopped-[0-9a-f]+ \(stopped, seed 0\): no finished level", listed)


def test_a_store_without_a_finished_level_says_what_it_could_not_read(tmp_path):
    (tmp_path / "s" / "bad").mkdir(parents=True)
    (tmp_path / "s" / "bad" / "config.json").write_text("{")
    with pytest.raises(lth.LTHError, match="no finished level.*1 problem.*not valid JSON"):
        lth.report.build_report(tmp_path / "s", tmp_path / "out")
