from __future__ import annotations

import pandas as pd
import pytest
from torch import nn

import lth
from lth.experiment import LotteryRobust

from .conftest import FAST_TRAIN


class Stop(Exception):
    pass


def test_load_a_run_a_group_and_a_mixed_store(digits, small_mlp, tmp_path):
    store = tmp_path / "store"
    single = lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, levels=2,
                              name="single").run(store=store)
    robust = LotteryRobust(small_mlp, digits, seeds=[0, 1], train=FAST_TRAIN, levels=1,
                           name="rob").run(store=store)

    one = lth.load(single.path)
    assert one.levels.level.tolist() == [0, 1, 2]
    assert one.levels.best_test_acc.tolist() == single.table().best_test_acc.tolist()
    assert set(one.layers.layer) == {"1.weight", "3.weight", "5.weight"}
    assert one.curves.groupby("level").step.max().tolist() == [60, 60, 60]

    group = lth.load(robust.path)
    assert sorted(group.levels.seed.unique()) == [0, 1]
    assert (group.levels.experiment == "rob").all()

    mixed = lth.load(store)
    assert sorted(mixed.runs.kind.unique()) == ["robust", "run"]
    assert len(mixed.levels) == 3 + 2 * 2
    row = mixed.layers.query("experiment == 'single' and level == 1 and layer == '1.weight'")
    assert row.weights.item() == 64 * 32 and row.kept.item() == round(64 * 32 * 0.8)


def test_interrupted_run_loads_what_finished(digits, tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

    def bomb(level, step, end):
        if level == 1:
            raise Stop

    exp = lth.LotteryModel(model, digits, train=FAST_TRAIN, levels=3, name="cut")
    with pytest.raises(Stop):
        exp.run(store=tmp_path, progress=bomb)
    loaded = lth.load(tmp_path)
    assert loaded.runs.status.tolist() == ["partial"]
    assert loaded.levels.level.tolist() == [0]


def test_export_csv_and_errors(digits, small_mlp, tmp_path):
    lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, levels=1).run(store=tmp_path / "s")
    loaded = lth.load(tmp_path / "s")
    paths = loaded.to_csv(tmp_path / "out")
    assert [p.name for p in paths] == ["runs.csv", "levels.csv", "layers.csv", "curves.csv"]
    assert pd.read_csv(paths[1]).level.tolist() == [0, 1]
    parquet = loaded.to_parquet(tmp_path / "pq")
    back = pd.read_parquet(parquet[3])
    assert back.test_acc.tolist() == loaded.curves.test_acc.tolist()
    with pytest.raises(lth.StoreError, match="does not exist"):
        lth.load(tmp_path / "nothing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(lth.StoreError, match="not a run, session/robust or store"):
        lth.load(tmp_path / "file.txt")


def test_interrupted_trial_is_matched_to_its_own_variant(tmp_path, digits, small_mlp):
    from lth.experiment import LotterySession
    from lth.store import Trials

    res = LotterySession(small_mlp, digits, train=FAST_TRAIN, levels=1,
                         variants={"a": {}, "a-b": {}}).run(store=tmp_path)
    trials = Trials(res.path)
    status = trials.read()
    a_dir = str(trials.run_path(status["a-s0"]))
    del status["a-s0"]["run_dir"]
    status["a-s0"]["status"] = "pending"
    trials.write(status)
    runs = lth.load(res.path).runs.set_index("experiment")
    assert runs.loc["a", "run_dir"] == a_dir
    assert runs.loc["a", "status"] == "done"  # all its levels are there


def test_status_of_an_interrupted_python_run(digits, small_mlp, tmp_path, capsys):
    from lth.cli import main

    result = lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, levels=2).run(
        store=tmp_path)
    (result.path / "level_002" / "summary.json").unlink()
    assert main(["status", str(tmp_path)]) == 0
    assert "2 levels done, interrupted" in capsys.readouterr().out


def test_runs_with_one_name_but_other_settings_are_two_experiments(digits, small_mlp,
                                                                    tmp_path):
    for criterion in ("large_final", "movement"):
        lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, levels=1, name="quickstart",
                         prune={"criterion": criterion}).run(store=tmp_path)
    lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, levels=1, name="quickstart",
                     seed=1).run(store=tmp_path)
    loaded = lth.load(tmp_path)
    assert sorted(loaded.runs.experiment.unique()) == [
        "quickstart · criterion=large_final", "quickstart · criterion=movement"]
    seeds = loaded.runs.groupby("experiment").seed.apply(sorted).to_dict()
    assert seeds == {"quickstart · criterion=large_final": [0, 1],
                     "quickstart · criterion=movement": [0]}
    assert loaded.levels.groupby("experiment").size().to_dict() == {
        "quickstart · criterion=large_final": 4, "quickstart · criterion=movement": 2}
