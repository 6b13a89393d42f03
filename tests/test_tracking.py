from __future__ import annotations

import sys

import pytest

import lth
from lth.cli import main
from lth.tracking import MLflow, TensorBoard

from .conftest import FAST_TRAIN


class Stop(Exception):
    pass


def test_tensorboard_scalars_read_back(digits, small_mlp, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, levels=1,
                              earlybird={"enabled": True, "every": "5it", "epsilon": 0.3}
                              ).run(store=tmp_path / "s", trackers=[TensorBoard(tmp_path / "tb")])
    acc = EventAccumulator(str(tmp_path / "tb" / result.path.name))
    acc.Reload()
    best = acc.Scalars("levels/best_test_acc")
    assert [e.step for e in best] == [0, 1]
    assert [e.value for e in best] == pytest.approx(result.table().best_test_acc.tolist())
    curve = acc.Scalars("level_1/test_acc")
    hist = result.history(1)
    assert [e.step for e in curve] == hist.step.tolist()
    assert [e.value for e in curve] == pytest.approx(hist.test_acc.tolist())
    assert "config" in acc.Tags()["tensors"][0] or acc.Tags()["tensors"]
    drawn = acc.Scalars("levels/earlybird_step")  # only the level that searched
    assert [(e.step, e.value) for e in drawn] == [(0, result.table().earlybird_step[0])]
    assert [e.value for e in acc.Scalars("levels/steps_to_mask")] == \
        result.table().steps_to_mask.tolist()


def test_mlflow_sqlite_metrics_params_and_resume(digits, small_mlp, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def bomb(level, step, end):
        if level == 2:
            raise Stop

    exp = lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, levels=2)
    with pytest.raises(Stop):
        exp.run(store=tmp_path / "s", trackers=[MLflow(uri)], progress=bomb)
    result = exp.run(store=tmp_path / "s", trackers=[MLflow(uri)])
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("lth").experiment_id])
    assert len(runs) == 1  # the resumed run logged into the same MLflow run
    run_id = runs[0].info.run_id
    history = client.get_metric_history(run_id, "final_test_acc")
    assert sorted(m.step for m in history) == [0, 1, 2]
    by_step = {m.step: m.value for m in history}
    assert [by_step[lv] for lv in (0, 1, 2)] == pytest.approx(
        result.table().final_test_acc.tolist())
    assert runs[0].data.params["settings.train.lr"] == "0.0012"
    assert runs[0].info.status == "FINISHED"


def test_mlflow_local_file_store(digits, small_mlp, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, levels=0).run(
        store=tmp_path / "s", trackers=[MLflow(uri, experiment="fs")])
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("fs").experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "best_test_acc")] == [0]


def test_cli_flags_and_missing_packages(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    cfg = Path(__file__).resolve().parents[1] / "configs" / "quickstart.toml"
    assert main(["run", str(cfg), "--store", str(tmp_path / "s"), "--quiet",
                 "--set", "n_levels=0", "--set", "train.duration='20it'",
                 "--tensorboard", str(tmp_path / "tb")]) == 0
    assert list((tmp_path / "tb").glob("*/events.out.tfevents.*"))
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(lth.ConfigError, match="pip install mlflow-skinny"):
        MLflow("sqlite:///x.db")
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(lth.ConfigError, match="pip install tensorboard"):
        TensorBoard(tmp_path)
