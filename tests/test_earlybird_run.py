"""Early-bird search inside IMP runs: stopping, recording, retraining, resuming."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import lth
from lth.earlybird import Search, mask_distance, pack, packed_distance
from lth.pruning import make_groups, next_mask
from lth.seeding import generator
from lth.store import load_tensors

from .conftest import states_equal

TRAIN = {"duration": "600it", "eval_every": "50it", "batch_size": 32,
         "checkpoint_every": "40it"}
EB = {"enabled": True, "every": "20it", "epsilon": 0.05}


def run(model, data, store, *, levels=2, prune=None, reinit=None, earlybird=EB, **kw):
    return lth.LotteryModel(model, data, train=TRAIN, prune=prune or {"rate": 0.5},
                            reinit=reinit, earlybird=earlybird, levels=levels, **kw
                            ).run(store=store)


def record(result, level):
    return json.loads((result.path / f"level_{level:03d}" / "earlybird.json").read_text())


def test_search_stops_where_the_rule_fires_and_the_next_level_prunes_there(digits, small_mlp,
                                                                            tmp_path):
    res = run(small_mlp, digits, tmp_path)
    table = res.table().set_index("level")
    for level in (0, 1):
        rec = record(res, level)
        drawn = rec["drawn_step"]
        assert drawn is not None and drawn == table.loc[level, "earlybird_step"]
        assert table.loc[level, "train_steps"] == drawn < 600  # rewind: trains from step 0
        assert res.history(level)["step"].iloc[-1] == drawn
        # The rule: the newest mask is within epsilon of each of the 4 before it, and it
        # had not fired at any earlier check.
        m = torch.tensor(rec["distance_matrix"])
        assert torch.equal(m, m.T) and torch.all(m.diagonal() == 0)
        n = len(rec["check_steps"])
        assert rec["check_steps"][-1] == drawn and n >= 5
        assert float(m[n - 1, n - 5:n - 1].max()) <= 0.05
        assert all(float(m[i, i - 4:i].max()) > 0.05 for i in range(4, n - 1))
    # The last level is the ticket: trained in full, no search.
    assert table.loc[2, "train_steps"] == 600
    assert not (res.path / "level_002" / "earlybird.json").exists()
    # What it cost to find each mask: the early levels' steps, not full trainings.
    assert table.loc[1, "steps_to_mask"] == table.loc[0, "train_steps"]
    assert table.loc[2, "steps_to_mask"] == table.loc[0, "train_steps"] + table.loc[1,
                                                                                   "train_steps"]
    assert table.loc[2, "pct_remaining"] == pytest.approx(25.0, abs=0.5)


def test_next_mask_is_the_candidate_at_the_draw(digits, small_mlp, tmp_path):
    """The mask compared at the last check is exactly the mask level 1 gets."""
    res = run(small_mlp, digits, tmp_path, levels=1)
    rec = record(res, 0)
    final = res.weights(0, "final")
    names = res.mask(1).names()
    groups = make_groups("layer", {n: 0.5 for n in names}, {n: final[n].numel() for n in names})
    dense = lth.Mask({n: torch.ones_like(final[n], dtype=torch.bool) for n in names})
    cand = next_mask(lth.PruneConfig(rate=0.5), groups, 1, dense, res.weights(0, "start"),
                     final, generator(0, "prune", 1))
    assert cand == res.mask(1)
    assert rec["drawn_step"] == res.table()["train_steps"].iloc[0]


def test_imp_without_search_trains_every_level_in_full(digits, small_mlp, tmp_path):
    res = run(small_mlp, digits, tmp_path, earlybird=None)
    table = res.table()
    assert (table["train_steps"] == 600).all()
    assert table["steps_to_mask"].tolist() == [0, 600, 1200]
    assert table["earlybird_step"].isna().all()


def test_continue_from_early_bird_weights(digits, small_mlp, tmp_path):
    res = run(small_mlp, digits, tmp_path, levels=1, reinit={"mode": "lr_rewind"})
    start, early = res.weights(1, "start"), res.weights(0, "final")
    mask = res.mask(1)
    for name in mask:
        assert torch.equal(start[name], early[name] * mask[name])
    assert res.table()["train_steps"].iloc[1] == 600


def test_interrupted_search_resumes_identically(digits, small_mlp, tmp_path):
    straight = run(small_mlp, digits, tmp_path / "a", levels=1)

    class Stop(Exception):
        pass

    def bomb(level, step, end):
        if level == 0 and step == 150:
            raise Stop

    exp = lth.LotteryModel(small_mlp, digits, train=TRAIN, prune={"rate": 0.5}, earlybird=EB,
                           levels=1)
    with pytest.raises(Stop):
        exp.run(store=tmp_path / "b", progress=bomb)
    run_dir = next((tmp_path / "b").iterdir())
    ckpt = load_tensors(run_dir / "level_000" / "checkpoint.safetensors")[0]
    assert any(k.startswith("monitor.mask.") for k in ckpt)
    resumed = run(small_mlp, digits, tmp_path / "b", levels=1)
    assert record(straight, 0) == record(resumed, 0)
    for level in (0, 1):
        assert states_equal(straight.weights(level), resumed.weights(level))


def test_one_shot_searches_only_the_dense_level(digits, small_mlp, tmp_path):
    res = run(small_mlp, digits, tmp_path, prune={"rate": 0.5, "schedule": "one_shot"})
    table = res.table()
    assert table["train_steps"].iloc[0] < 600 and (table["train_steps"].iloc[1:] == 600).all()
    assert table["steps_to_mask"].tolist()[1:] == [table["train_steps"].iloc[0]] * 2


def test_bad_early_bird_settings(digits, small_mlp, tmp_path):
    with pytest.raises(lth.ConfigError, match="do not fit"):
        run(small_mlp, digits, tmp_path, earlybird={**EB, "every": "200it"})
    with pytest.raises(lth.ConfigError, match="no BatchNorm"):
        run(small_mlp, digits, tmp_path, earlybird={**EB, "bn_l1": True})
    with pytest.raises(lth.ConfigError, match="queue"):
        lth.EarlyBirdConfig(queue=1)
    with pytest.raises(lth.ConfigError, match="epsilon"):
        lth.EarlyBirdConfig(epsilon=1.5)


def test_bn_l1_adds_the_slimming_subgradient():
    bn = nn.BatchNorm1d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, -2.0, 0.0]))
    bn.weight.grad = torch.zeros(3)
    search = Search(lambda m: None, every=1, queue=2, epsilon=0.1, gammas=["weight"], l1=1e-4)
    search.after_backward(dict(bn.named_parameters()), {"weight": bn.weight.grad})
    assert torch.equal(bn.weight.grad, torch.tensor([1e-4, -1e-4, 0.0]))


def test_packed_distance_equals_mask_distance():
    g = torch.Generator().manual_seed(0)
    a = lth.Mask({"w": torch.rand(7, 5, generator=g) > 0.5, "v": torch.rand(3, generator=g) > 0.3})
    b = lth.Mask({"w": torch.rand(7, 5, generator=g) > 0.5, "v": torch.rand(3, generator=g) > 0.3})
    assert packed_distance(pack(a), pack(b), 38) == pytest.approx(
        mask_distance(a, b))


def test_distance_figure_plots_the_record(digits, small_mlp, tmp_path):
    from lth.report import figures

    res = run(small_mlp, digits, tmp_path, levels=1)
    rec = res.earlybird(0)
    fig = figures.earlybird_distances(res, 0)
    heat, rule = fig.axes[0], fig.axes[1]
    assert heat.images[0].get_array().shape == (len(rec["check_steps"]),) * 2
    assert torch.allclose(torch.tensor(heat.images[0].get_array().data),
                          torch.tensor(rec["distance_matrix"], dtype=torch.float64))
    line = rule.lines[0]
    assert list(line.get_xdata()) == rec["check_steps"]
    assert line.get_ydata()[-1] <= 0.05 < max(line.get_ydata()[1:-1])
    with pytest.raises(KeyError, match="no early-bird search record"):
        res.earlybird(1)
    out = lth.report.build_report(res.path, tmp_path / "report")
    assert list((tmp_path / "report").glob("earlybird_distances_*.png"))
    assert "Early-bird search" in out.read_text()


def test_report_table_shows_the_search_cost(digits, small_mlp, tmp_path):
    res = run(small_mlp, digits, tmp_path, levels=1)
    html = lth.report.build_report(res.path, tmp_path / "report").read_text()
    table = res.table()
    assert "steps to find the mask" in html
    assert f"<td>{int(table['train_steps'].iloc[0])}</td>" in html


def test_search_needs_a_pruned_level(digits, small_mlp, tmp_path):
    for schedule in ("one_shot", "geometric"):
        with pytest.raises(lth.ConfigError, match="n_levels = 0"):
            run(small_mlp, digits, tmp_path, levels=0, prune={"rate": 0.5,
                                                                "schedule": schedule})
    with pytest.raises(lth.ConfigError, match="bn_l1_strength"):
        lth.EarlyBirdConfig(bn_l1_strength=float("nan"))


def test_progress_reaches_the_end_of_a_stopped_level(digits, small_mlp, tmp_path):
    seen = []
    lth.LotteryModel(small_mlp, digits, train=TRAIN, prune={"rate": 0.5}, earlybird=EB,
                     levels=1).run(store=tmp_path, progress=lambda *a: seen.append(a))
    assert (0, 600, 600) in seen and (1, 600, 600) in seen
