"""Report figures stay readable with many experiments of long labels: no text over other
text, every text inside the figure, no collapsed layout."""

from __future__ import annotations

import itertools
import warnings

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

import lth

LONG = "lenet_digits_reproduction_of_frankle_and_carbin_figure_three"
VARIANTS = [{}, {"prune": {"rate": 0.5, "criterion": "random"}},
            {"prune": {"rate": 0.35, "scope": "global"}}, {"reinit": {"mode": "random"}},
            {"prune": {"rate": 0.5}, "reinit": {"mode": "random"}}]


@pytest.fixture(scope="module")
def five(digits, tmp_path_factory):
    """Five experiments of one long name (labels of 80+ characters), and the report's
    figure list for them."""
    store = tmp_path_factory.mktemp("five")
    for kw in VARIANTS:
        model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                                 hidden=(16,))
        lth.LotteryModel(model, digits, train={"duration": "20it", "eval_every": "10it"},
                         levels=2, name=LONG, **kw).run(store=store, progress=False)
    return store


def _texts(fig):
    """The visible, non-empty texts of a drawn figure, with their boxes in pixels."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    hidden = set()  # labels of ticks outside the view: made, but not drawn
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - 1e-9 * abs(hi - lo) <= tick.get_loc() <= hi + 1e-9 * abs(hi - lo):
                    hidden.update({id(tick.label1), id(tick.label2)})
    return [(t, t.get_window_extent(renderer)) for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip() and id(t) not in hidden
            and (t.axes is None or t.axes.get_visible())]


def readable(fig) -> list[str]:
    """What is wrong with a figure's text: texts over each other or outside the figure."""
    problems = []
    texts = _texts(fig)
    box = fig.bbox
    for t, b in texts:
        if b.x0 < box.x0 - 1 or b.y0 < box.y0 - 1 or b.x1 > box.x1 + 1 or b.y1 > box.y1 + 1:
            problems.append(f"outside the figure: {t.get_text()!r}")
    for (s, a), (t, b) in itertools.combinations(texts, 2):
        if a.shrunk(0.98, 0.98).overlaps(b.shrunk(0.98, 0.98)) and a.width and b.width:
            problems.append(f"{s.get_text()!r} overlaps {t.get_text()!r}")
    return problems


def test_every_report_figure_of_five_long_labels_is_readable(five):
    from lth.report.catalog import _figures

    res = lth.load(five)
    drawn = 0
    for stem, _, draw in _figures(res):
        if draw is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "constrained_layout not applied ..." fails
            fig = draw()
            problems = readable(fig)
        assert not problems, f"{stem}: " + "; ".join(problems[:5])
        for ax in fig.axes:  # colour bars are thin by design: their length counts
            short = max if ax.get_label() == "<colorbar>" else min
            assert short(ax.bbox.width, ax.bbox.height) > 100, f"{stem}: axes squashed"
        drawn += 1
    assert drawn >= 8


def test_the_overlap_checker_sees_overlapping_text():
    from lth.report.figures_weights import new_figure

    fig = new_figure()
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, "a long label here")
    ax.text(0.52, 0.5, "another long label")
    assert any("overlaps" in p for p in readable(fig))


def test_a_mask_overlap_of_twelve_long_labels_keys_them_by_tags():
    import torch

    from lth.report.figures import mask_overlap

    g = torch.Generator().manual_seed(0)
    masks = {f"{LONG} · rate=0.{i}, criterion=magnitude_after_training_{i}":
             lth.Mask({"w": torch.rand(64, generator=g) > 0.5}) for i in range(12)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = mask_overlap(masks)
        assert not readable(fig)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list("ABCDEFGHIJKL")
    assert min(ax.bbox.width, ax.bbox.height) > 300  # the heatmap keeps its size
    key = fig.legends[0]
    assert key.get_texts()[0].get_text().replace("\n", " ") == \
        "A: rate=0.0, criterion=magnitude_after_training_0"
    assert LONG in key.get_title().get_text().replace("\n", "")


def test_file_names_of_long_labels_stay_short_and_distinct():
    from lth.report.sections import slug

    long = "n" * 200  # the longest name lth takes
    a, b = slug(f"{long} · rate=0.5, criterion=random"), slug(f"{long} · rate=0.2")
    assert len(a) <= 120 and len(b) <= 120 and a != b
    assert slug("quickstart · rate=0.5") == "quickstart_rate_0.5"
