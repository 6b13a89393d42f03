from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

import lth
from lth.report.figures import (
    accuracy_vs_weights,
    early_stop_vs_weights,
    init_vs_final,
    jaccard,
    layer_density,
    learning_curves,
    mask_overlap,
    pruning_summary_table,
    weight_histograms,
)

TRAIN = {"duration": "30it", "eval_every": "10it", "batch_size": 32}


@pytest.fixture(scope="module")
def session(tmp_path_factory, digits):
    """A ticket and its random-reinit control, seeds 0 and 1, 2 levels."""
    model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                             hidden=(16,))
    variants = {"ticket": {}, "reinit": {"control": "random_reinit", "of": "ticket"}}
    group = lth.LotterySession(model, digits, train=TRAIN, levels=2, variants=variants,
                               seeds=[0, 1]).run(store=tmp_path_factory.mktemp("session"))
    return group, lth.load(group.path)


@pytest.fixture(scope="module")
def results(session):
    return session[1]


@pytest.fixture(scope="module")
def ticket(results):
    return lth.Result(results.runs.query("experiment == 'ticket' and seed == 0").run_dir.item())


def renders(fig: Figure) -> None:
    assert isinstance(fig, Figure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"


def mean_sd(frame: pd.DataFrame, by: str, column: str) -> pd.DataFrame:
    return frame.dropna(subset=[column]).groupby(by)[column].agg(["mean", "std"]).reset_index()


def bars(container) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """x, y and the (low, high) ends of the error bars of one errorbar container."""
    line, _, cols = container.lines
    ends = np.array([[seg[0][1], seg[1][1]] for seg in cols[0].get_segments()]) if cols \
        else None
    return np.asarray(line.get_xdata()), np.asarray(line.get_ydata()), ends


def test_learning_curves_by_level_draw_seed_means_with_sd_bands(results):
    fig = learning_curves(results, experiment="ticket")
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["Training loss", "Test loss",
                                               "Training accuracy", "Test accuracy"]
    assert axes[2].get_xlabel() == "Training iteration (step)" and "%" in axes[3].get_ylabel()
    assert "2 seeds" in fig.get_suptitle()
    # one legend for the four panels, beside them (it used to sit on the training-loss panel)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "level 0", "level 1", "level 2"]
    ticket = results.curves.query("experiment == 'ticket'")
    for ax, column, scale in zip(axes, ["train_loss", "test_loss", "train_acc", "test_acc"],
                                 [1, 1, 100, 100], strict=True):
        assert len(ax.lines) == 3 and len(ax.collections) == 3
        for level, line, band in zip([0, 1, 2], ax.lines, ax.collections, strict=True):
            want = mean_sd(ticket.query(f"level == {level}"), "step", column)
            assert line.get_marker() not in (None, "None", "")
            np.testing.assert_array_equal(line.get_xdata(), want["step"])
            np.testing.assert_allclose(line.get_ydata(), want["mean"] * scale)
            band_y = band.get_paths()[0].vertices[:, 1]
            for edge in (want["mean"] - want["std"], want["mean"] + want["std"]):
                assert np.isclose(band_y[:, None], (edge * scale).to_numpy()).any(0).all()
    # Training loss is NaN before the first step: the curve starts at the first evaluation.
    assert axes[0].lines[0].get_xdata()[0] == 10 and axes[1].lines[0].get_xdata()[0] == 0
    renders(fig)


def test_learning_curves_by_experiment_compare_at_the_last_level(results):
    fig = learning_curves(results.curves, by="experiment")
    ax = fig.axes[3]
    assert [line.get_label() for line in ax.lines] == ["ticket", "reinit"]
    for name, line in zip(["ticket", "reinit"], ax.lines, strict=True):
        want = mean_sd(results.curves.query(f"experiment == '{name}' and level == 2"),
                       "step", "test_acc")
        np.testing.assert_allclose(line.get_ydata(), want["mean"] * 100)
    single = learning_curves(results.curves.query("seed == 0"), by="experiment", level=1)
    assert not single.axes[0].collections  # one seed: plain lines, no bands
    assert "seeds" not in single.get_suptitle() and "level 1" in single.get_suptitle()
    renders(single)


def test_learning_curves_errors(results):
    with pytest.raises(lth.ConfigError, match="choose one with experiment="):
        learning_curves(results.curves)
    with pytest.raises(lth.ConfigError, match="did you mean 'ticket'"):
        learning_curves(results.curves, experiment="tiket")
    with pytest.raises(lth.ConfigError, match="did you mean 'level'"):
        learning_curves(results.curves, by="levle", experiment="ticket")
    with pytest.raises(lth.ConfigError, match="unknown level 7"):
        learning_curves(results.curves, experiment="ticket", level=7)
    with pytest.raises(lth.ConfigError, match="lacks column.*test_acc"):
        learning_curves(results.curves.drop(columns="test_acc"), experiment="ticket")
    with pytest.raises(lth.ConfigError, match="empty"):
        learning_curves(pd.DataFrame())
    with pytest.raises(lth.ConfigError, match="got int"):
        learning_curves(3)


def test_accuracy_vs_weights_error_bars_over_seeds_on_a_reversed_log_axis(results):
    fig = accuracy_vs_weights(results)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.xaxis_inverted()
    assert "Weights remaining (%" in ax.get_xlabel() and ax.get_ylabel() == "Test accuracy (%)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ticket", "reinit"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["100", "80", "63.9"]
    for name, container in zip(["ticket", "reinit"], ax.containers, strict=True):
        part = results.levels.query(f"experiment == '{name}'")
        want = mean_sd(part, "level", "early_stop_test_acc")
        x, y, ends = bars(container)
        np.testing.assert_allclose(x, part.groupby("level").pct_remaining.mean())
        np.testing.assert_allclose(y, want["mean"] * 100)
        np.testing.assert_allclose(ends[:, 0], (want["mean"] - want["std"]) * 100)
        np.testing.assert_allclose(ends[:, 1], (want["mean"] + want["std"]) * 100)
    renders(fig)

    both = accuracy_vs_weights(results.levels, metric="both", experiments=["ticket"]).axes[0]
    assert [c.get_label() for c in both.containers] == ["ticket (at early stop)",
                                                        "ticket (final)"]
    assert [c.lines[0].get_linestyle() for c in both.containers] == ["-", "--"]
    final = mean_sd(results.levels.query("experiment == 'ticket'"), "level", "final_test_acc")
    np.testing.assert_allclose(bars(both.containers[1])[1], final["mean"] * 100)

    with pytest.raises(lth.ConfigError, match="did you mean 'final_test_acc'"):
        accuracy_vs_weights(results.levels, metric="final_test_ac")
    with pytest.raises(lth.ConfigError, match="unknown experiment 'control'"):
        accuracy_vs_weights(results.levels, experiments=["control"])
    with pytest.raises(lth.ConfigError, match="empty"):
        accuracy_vs_weights(results.levels.iloc[:0])


def test_early_stop_vs_weights(results):
    seed0 = results.levels.query("seed == 0")
    ax = early_stop_vs_weights(seed0, ["reinit"]).axes[0]
    assert ax.get_xscale() == "log" and ax.xaxis_inverted()
    assert "Early-stop iteration" in ax.get_ylabel() and ax.get_legend() is not None
    x, y, ends = bars(ax.containers[0])
    part = seed0.query("experiment == 'reinit'").sort_values("level")
    np.testing.assert_allclose(x, part.pct_remaining)
    np.testing.assert_array_equal(y, part.early_stop_step)
    assert ends is None  # one seed: no error bars
    both = early_stop_vs_weights(results.levels).axes[0]
    want = mean_sd(results.levels.query("experiment == 'ticket'"), "level", "early_stop_step")
    np.testing.assert_allclose(bars(both.containers[0])[1], want["mean"])
    with pytest.raises(lth.ConfigError, match="did you mean 'reinit'"):
        early_stop_vs_weights(results.levels, "renit")


def test_layer_density_lines_per_layer_and_overall(results):
    fig = layer_density(results.layers, experiment="ticket")
    ax = fig.axes[0]
    assert [c.get_label() for c in ax.containers] == ["1.weight", "3.weight", "all layers"]
    assert ax.get_xlabel().startswith("Pruning level") and "%" in ax.get_ylabel()
    ticket = results.layers.query("experiment == 'ticket'")
    for layer, container in zip(["1.weight", "3.weight"], ax.containers[:2], strict=True):
        want = mean_sd(ticket.query(f"layer == '{layer}'"), "level", "density")
        x, y, _ = bars(container)
        np.testing.assert_array_equal(x, [0, 1, 2])
        np.testing.assert_allclose(y, want["mean"] * 100)
    overall = results.levels.query("experiment == 'ticket'").groupby("level").pct_remaining
    np.testing.assert_allclose(bars(ax.containers[2])[1], overall.mean())
    renders(fig)
    one = layer_density(results, experiment="reinit", seed=1).axes[0]
    assert bars(one.containers[0])[2] is None and "seed 1" in one.get_title()
    with pytest.raises(lth.ConfigError, match="unknown seed 5"):
        layer_density(results.layers, experiment="ticket", seed=5)
    with pytest.raises(lth.ConfigError, match="choose one with experiment="):
        layer_density(results.layers)


def test_pruning_summary_table_matches_the_group_summary(session):
    group, results = session
    table = pruning_summary_table(results.layers, "ticket", seed=0)
    assert table.columns.tolist() == ["layer", "weights", "kept", "pct_pruned"]
    assert table.layer.tolist() == ["1.weight", "3.weight", "total"]
    assert table.weights.tolist() == [64 * 16, 16 * 10, 64 * 16 + 16 * 10]
    mask = lth.Result(results.runs.query("experiment == 'ticket' and seed == 0")
                      .run_dir.item()).mask(2)
    assert table.kept.tolist()[:2] == [mask.kept()["1.weight"], mask.kept()["3.weight"]]
    assert table.kept.iloc[2] == sum(mask.kept().values())
    reference = group.pruning_summary().query("experiment == 'ticket' and level == 2")
    np.testing.assert_allclose(table.pct_pruned[:2], reference.pct_pruned)
    assert table.attrs["level"] == 2 and table.attrs["seeds"] == [0]
    first = pruning_summary_table(results.layers, "ticket", level=1)
    assert first.pct_pruned[0] == pytest.approx(20.0, abs=0.1)
    with pytest.raises(lth.ConfigError, match="unknown level 9"):
        pruning_summary_table(results.layers, "ticket", level=9)


def test_jaccard_known_values():
    a = lth.Mask({"w": torch.tensor([True, True, False, False]),
                  "v": torch.tensor([[True, False]])})
    b = lth.Mask({"w": torch.tensor([True, False, True, False]),
                  "v": torch.tensor([[True, True]])})
    assert jaccard(a, a) == 1.0
    assert jaccard(a, b) == pytest.approx(2 / 5)  # both: w0, v0; either: w0 w1 w2 v0 v1
    none = lth.Mask({"w": torch.zeros(4, dtype=torch.bool), "v": torch.zeros(1, 2).bool()})
    assert jaccard(a, none) == 0.0 and jaccard(none, none) == 1.0
    with pytest.raises(lth.ConfigError, match="different parameters"):
        jaccard(a, lth.Mask({"w": torch.ones(4, dtype=torch.bool)}))
    with pytest.raises(lth.ConfigError, match="shape"):
        jaccard(a, lth.Mask({"w": torch.ones(3, dtype=torch.bool), "v": torch.ones(1, 2)}))
    with pytest.raises(lth.ConfigError, match="give an lth.Mask"):
        jaccard(a, [1, 0])


def test_mask_overlap_heatmap_holds_the_jaccard_matrix(results, ticket):
    reinit = lth.Result(results.runs.query("experiment == 'reinit' and seed == 0")
                        .run_dir.item())
    masks = {"level 1": ticket.mask(1), "level 2": ticket.mask(2),
             "reinit level 2": reinit.mask(2)}
    fig = mask_overlap(masks)
    ax = fig.axes[0]
    values = np.asarray(ax.images[0].get_array())
    kept = {lv: sum(ticket.mask(lv).kept().values()) for lv in (1, 2)}
    want = np.array([[1, kept[2] / kept[1], kept[2] / kept[1]],  # level 2 ⊂ level 1
                     [kept[2] / kept[1], 1, 1],  # the control reuses the ticket's masks
                     [kept[2] / kept[1], 1, 1]])
    np.testing.assert_allclose(values, want)
    assert [t.get_text() for t in ax.texts] == [f"{v:.2f}" for v in want.flat]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(masks)
    assert len(fig.axes) == 2 and "Jaccard" in fig.axes[1].get_ylabel()  # the colour bar
    renders(fig)
    with pytest.raises(lth.ConfigError, match="non-empty dict"):
        mask_overlap({})
    with pytest.raises(lth.ConfigError, match=r"masks\['x'\] is a str"):
        mask_overlap({"x": "level 1"})


def test_weight_histograms_split_initial_weights_by_the_mask(ticket):
    fig = weight_histograms(ticket, 2, "1.weight")
    ax = fig.axes[0]
    kept_patch, pruned_patch = ax.patches
    keep = ticket.mask(2)["1.weight"].flatten().numpy()
    size = ticket.weights(0, "start")["1.weight"].abs().flatten().double().numpy()
    for patch, chosen in ((kept_patch, keep), (pruned_patch, ~keep)):
        counts, edges, _ = patch.get_data()
        np.testing.assert_array_equal(counts, np.histogram(size[chosen], edges)[0])
        assert counts.sum() == chosen.sum()
    assert "|weight|" in ax.get_xlabel() and ax.get_ylabel() == "Number of weights"
    assert ax.get_yscale() == "linear" and len(ax.get_legend().get_texts()) == 2
    renders(fig)
    pooled = weight_histograms(ticket, 1, log_count=True).axes[0]
    assert pooled.get_yscale() == "log"
    assert sum(p.get_data()[0].sum() for p in pooled.patches) == 64 * 16 + 16 * 10
    assert pooled.patches[0].get_data()[0].sum() == sum(ticket.mask(1).kept().values())
    renders(pooled.figure)
    with pytest.raises(lth.ConfigError, match="did you mean '1.weight'"):
        weight_histograms(ticket, 2, "1.weights")
    with pytest.raises(lth.ConfigError, match="level 7 .* not finished; finished levels: 0, 1"):
        weight_histograms(ticket, 7)


def test_init_vs_final_scatters_survivors(ticket):
    fig = init_vs_final(ticket, 2, "1.weight")
    ax = fig.axes[0]
    keep = ticket.mask(2)["1.weight"]
    start = ticket.weights(2, "start")["1.weight"][keep].double().numpy()
    final = ticket.weights(2, "final")["1.weight"][keep].double().numpy()
    np.testing.assert_allclose(ax.collections[0].get_offsets(), np.c_[start, final])
    pct = 100 * (1 - keep.sum().item() / keep.numel())
    assert f"{pct:.1f}% pruned" in ax.get_title()
    guide = [line for line in ax.lines if line.get_label().startswith("y = x")]
    assert len(guide) == 1 and ax.get_xlabel() and ax.get_ylabel()
    renders(fig)
    few = init_vs_final(ticket, 2, "1.weight", max_points=100).axes[0].collections[0]
    again = init_vs_final(ticket, 2, "1.weight", max_points=100).axes[0].collections[0]
    points = np.asarray(few.get_offsets())
    assert len(points) == 100 and np.array_equal(points, again.get_offsets())
    pairs = set(map(tuple, np.c_[start, final]))
    assert all(tuple(p) in pairs for p in points)
    with pytest.raises(lth.ConfigError, match="unknown layer '9.weight'"):
        init_vs_final(ticket, 2, "9.weight")


def test_one_level_one_evaluation_run_still_draws_markers(digits, tmp_path):
    model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                             hidden=(16,))
    run = lth.LotteryModel(model, digits, train={"duration": "10it", "eval_every": "10it",
                                                 "batch_size": 32}, levels=0).run(store=tmp_path)
    curves = learning_curves(run)  # a Result: read with lth.load
    train_loss = curves.axes[0].lines[0]
    assert len(train_loss.get_xdata()) == 1 and train_loss.get_marker() == "o"
    assert not curves.axes[0].collections
    levels = lth.load(run.path).levels
    for fig in (curves, accuracy_vs_weights(levels), early_stop_vs_weights(levels),
                layer_density(run), mask_overlap({"dense": run.mask(0)}),
                weight_histograms(run, 0), init_vs_final(run, 0, "1.weight")):
        for line in fig.axes[0].lines:
            if not line.get_label().startswith("y = x"):
                assert line.get_marker() not in (None, "None", "")
        renders(fig)
    x, y, ends = bars(accuracy_vs_weights(run.table()).axes[0].containers[0])
    assert list(x) == [100.0] and ends is None
    assert y[0] == pytest.approx(100 * levels.early_stop_test_acc.item())


def test_figure_modules_load_on_first_use():
    import importlib

    import lth

    assert lth.report.figures is importlib.import_module("lth.report.figures")
    assert callable(lth.report.figures_forward.pretraining_sweep_figure)
    with pytest.raises(AttributeError, match="no attribute 'figurez'"):
        lth.report.figurez  # noqa: B018


def test_a_long_legend_sits_beside_the_axes_in_columns():
    names = [f"quickstart · criterion=movement, seed_block={i}" for i in range(30)]
    levels = pd.DataFrame([{"experiment": n, "seed": 0, "level": lv,
                            "pct_remaining": 100 * 0.8 ** lv, "early_stop_step": 10 * lv,
                            "early_stop_test_acc": 0.5 + i / 100, "final_test_acc": 0.5}
                           for i, n in enumerate(names) for lv in range(3)])
    fig = accuracy_vs_weights(levels, metric="both")
    legend = fig.axes[0].get_legend()
    # The name all entries share is said once, in the title; the entries say the rest.
    assert [t.get_text() for t in legend.get_texts()] == [
        n.removeprefix("quickstart · ") for n in names] + ["at early stop", "final"]
    assert "quickstart" in fig.axes[0].get_title()
    fig.draw_without_rendering()
    box, ax = legend.get_window_extent(), fig.axes[0].get_window_extent()
    assert not box.overlaps(ax) and box.x0 > ax.x1  # to the right of the data
    assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1  # not cut off: the figure widens
    assert fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1  # in columns, not too tall
    assert ax.width > 0.35 * fig.bbox.width  # the plot keeps its room
    renders(fig)
