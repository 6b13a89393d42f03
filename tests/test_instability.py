"""Linear mode connectivity: interpolation, BatchNorm re-estimation, barriers, and the
stored, resumable two-copy analysis of `lth instability`."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from torch import nn

import lth
from lth.cli import main as lth_main
from lth.experiment.instability import (
    barrier,
    instability,
    interpolate,
    linear_path,
    recompute_batchnorm,
)
from lth.seeding import derive_seed
from lth.train import evaluate

from .conftest import FAST_TRAIN
from .test_groups import BASE


def test_interpolation_is_exact_at_the_ends():
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(50, generator=g), "n": torch.tensor(3)}
    b = {"w": torch.randn(50, generator=g), "n": torch.tensor(7)}
    assert torch.equal(interpolate(a, b, 0.0)["w"], a["w"])
    assert torch.equal(interpolate(a, b, 1.0)["w"], b["w"])
    assert torch.allclose(interpolate(a, b, 0.25)["w"], 0.75 * a["w"] + 0.25 * b["w"])
    assert interpolate(a, b, 0.5)["n"] == 3  # integer buffers: not interpolated


def test_path_ends_are_the_two_nets_own_evaluations(digits, small_mlp):
    a = lth.get_state(small_mlp)
    other = copy.deepcopy(small_mlp)
    lth.fit(other, digits, mask=lth.Mask.ones(other, lth.prunable_names(other)), seed=1,
            train=FAST_TRAIN)
    b = lth.get_state(other)
    rows = linear_path(small_mlp, a, b, digits, points=5, task=lth.tasks.CLASSIFICATION,
                       output=None, eval_batch_size=97, batch_size=32, seed=0)
    assert [r["alpha"] for r in rows] == [0, 0.25, 0.5, 0.75, 1]
    for row, state in ((rows[0], a), (rows[-1], b)):
        net = copy.deepcopy(small_mlp)
        lth.set_state(net, state)
        own = evaluate(net, digits.x_test, digits.y_test, 97, digits.prepare)
        assert row["test_loss"] == own["loss"] and row["test_acc"] == own["acc"]
    assert rows[-1]["test_acc"] > rows[0]["test_acc"]  # the trained end is the better one


def test_barrier_is_the_worst_point_above_the_mean_of_the_ends():
    rows = [{"test_loss": 0.3, "test_acc": 0.9}, {"test_loss": 0.9, "test_acc": 0.6},
            {"test_loss": 0.5, "test_acc": 0.8}]
    out = barrier(rows)
    assert out["test_loss_barrier"] == pytest.approx(0.9 - 0.4)
    assert out["test_error_barrier"] == pytest.approx(0.4 - 0.15)
    flat = barrier([{"test_loss": 1.0}, {"test_loss": 0.5}])
    assert flat == {"test_loss_barrier": pytest.approx(0.25)}  # no accuracy: loss only


def test_batchnorm_statistics_are_recomputed_from_training_batches(digits):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64), nn.Linear(64, 10))
    net[1].running_mean.fill_(5.0)  # stale statistics (an average of two nets')
    recompute_batchnorm(net, digits, batch_size=32, seed=3, batches=4)
    g = torch.Generator().manual_seed(derive_seed(3, "bn-batches"))
    idx = torch.randperm(len(digits.y_train), generator=g)[:128]
    x = digits.prepare(digits.x_train[idx]).flatten(1)
    assert torch.allclose(net[1].running_mean, x.mean(0), atol=1e-5)
    batch_vars = torch.stack([x[i:i + 32].var(0) for i in range(0, 128, 32)])
    assert torch.allclose(net[1].running_var, batch_vars.mean(0), atol=1e-4)
    assert net[1].momentum == 0.1 and net.training  # settings restored


def test_instability_is_stored_and_resumes(digits, small_mlp, tmp_path):
    exp = lth.LotteryModel(small_mlp, digits, train={**FAST_TRAIN, "duration": "40it"},
                           levels=1, reinit={"rewind_step": "10it"})
    table = instability(exp, tmp_path, [0, 1], points=3)
    assert list(table.level) == [0, 1] and (table.rewind_step == 10).all()
    assert table.pct_remaining.tolist()[0] == 100.0 and table.pct_remaining.tolist()[1] < 100
    assert (table.test_error_barrier >= 0).all() and (table.test_loss_barrier >= 0).all()
    run = next(tmp_path.glob("experiment-*"))
    where = run / "instability" / "level_001"
    copies = [lth.store.files.load_tensors(where / f"copy_{i}.safetensors")[0]
              for i in range(2)]
    assert not all(torch.equal(copies[0][k], copies[1][k]) for k in copies[0])  # two orders
    mask = lth.Result(run).mask(1)
    for c in copies:  # both copies keep the ticket's mask
        assert all(not c[n][~keep].any() for n, keep in mask.items())

    again = instability(exp, tmp_path, [0, 1], points=3)  # finished: read back
    assert again.drop(columns="wall_time_s").equals(table.drop(columns="wall_time_s"))
    loaded = lth.load(tmp_path)  # in the store's tables, beside the levels
    assert loaded.instability.level.tolist() == [0, 1]
    assert loaded.instability.test_error_barrier.tolist() == table.test_error_barrier.tolist()
    (run / "instability" / "level_000" / "summary.json").write_text("{")
    damaged = lth.load(tmp_path)
    assert damaged.instability.level.tolist() == [1]
    assert any("instability analysis is damaged" in p for p in damaged.problems)

    (where / "summary.json").unlink()  # interrupted after one copy: the other retrains
    (where / "copy_1.safetensors").unlink()
    resumed = instability(exp, tmp_path, [1], points=3)
    again_1 = lth.store.files.load_tensors(where / "copy_1.safetensors")[0]
    assert all(torch.equal(again_1[k], v) for k, v in copies[1].items())
    assert resumed.test_error_barrier.item() == table.test_error_barrier[1]


def test_instability_command(tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(BASE)
    assert lth_main(["instability", str(cfg), "--rewind-steps", "0,10", "--levels",
                          "0,1", "--points", "3", "--store", str(tmp_path / "runs"),
                          "--csv", str(tmp_path / "lmc.csv")]) == 0
    out = capsys.readouterr().out
    assert "test_error_barrier" in out
    table = pd.read_csv(tmp_path / "lmc.csv")
    pairs = sorted(zip(table.rewind_step, table.level, strict=True))
    assert pairs == [(0, 0), (0, 1), (10, 0), (10, 1)]
    assert lth_main(["instability", str(cfg), "--levels", "a,b"]) == 2
    assert "--levels = 'a,b'; give whole numbers" in capsys.readouterr().err


def test_path_of_a_batchnorm_net_re_estimates_statistics_at_every_point(digits):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(),
                        nn.Linear(16, 10))
    a = lth.get_state(net)
    b = {k: v * 1.5 if v.is_floating_point() else v for k, v in a.items()}
    rows = linear_path(net, a, b, digits, points=3, task=lth.tasks.CLASSIFICATION,
                       output=None, eval_batch_size=64, batch_size=32, seed=4)
    for row, state in ((rows[0], a), (rows[-1], b)):
        ref = copy.deepcopy(net)
        lth.set_state(ref, state)
        recompute_batchnorm(ref, digits, batch_size=32, seed=4)
        own = evaluate(ref, digits.x_test, digits.y_test, 64, digits.prepare)
        assert row["test_loss"] == pytest.approx(own["loss"], rel=1e-6)


def test_more_points_reuse_the_trained_copies(digits, small_mlp, tmp_path):
    exp = lth.LotteryModel(small_mlp, digits, train={**FAST_TRAIN, "duration": "30it"},
                           levels=0)
    instability(exp, tmp_path, [0], points=3)
    where = next(tmp_path.glob("experiment-*")) / "instability" / "level_000"
    before = (where / "copy_0.safetensors").stat().st_mtime_ns
    finer = instability(exp, tmp_path, [0], points=5)
    assert finer.points.item() == 5
    assert len(lth.store.files.read_record(where / "path.json")["rows"]) == 5
    assert (where / "copy_0.safetensors").stat().st_mtime_ns == before


def test_a_copy_killed_mid_training_resumes_bit_identically(digits, small_mlp, tmp_path,
                                                           monkeypatch):
    train = {**FAST_TRAIN, "duration": "40it", "checkpoint_every": "10it"}
    exp = lth.LotteryModel(small_mlp, digits, train=train, levels=0)
    straight = instability(exp, tmp_path / "a", [0], points=3)
    saves = []
    real_save = lth.store.level.LevelCheckpoint.save

    def dying_save(self, tensors, meta):
        real_save(self, tensors, meta)
        if "instability" in str(self.path):
            saves.append(meta["step"])
        if len(saves) == 2:
            raise KeyboardInterrupt  # killed after the copy's second checkpoint

    monkeypatch.setattr(lth.store.level.LevelCheckpoint, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        instability(exp, tmp_path / "b", [0], points=3)
    monkeypatch.setattr(lth.store.level.LevelCheckpoint, "save", real_save)
    assert list((tmp_path / "b").glob("*/instability/level_000/copy_0.ckpt"))
    resumed = instability(exp, tmp_path / "b", [0], points=3)
    cols = ["test_error_barrier", "test_loss_barrier", "copy_0_test_loss", "copy_1_test_loss"]
    assert resumed[cols].equals(straight[cols])


def test_instability_figures_and_report_draw_the_stored_numbers(digits, small_mlp, tmp_path):
    exp = lth.LotteryModel(small_mlp, digits, train={**FAST_TRAIN, "duration": "30it"},
                           levels=1, name="lmc")
    for k in (0, 10):
        instability(exp.replace(reinit={"rewind_step": k}), tmp_path / "runs", [0, 1],
                    points=3)
    table = lth.load(tmp_path / "runs").instability
    fig = lth.report.figures.instability_vs_rewind(table)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines() if
             line.get_label().startswith("level")}
    for level, line in zip((0, 1), sorted(lines.values(), key=lambda ln: ln.get_label()),
                           strict=True):
        part = table[table.level == level].sort_values("rewind_step")
        assert list(line.get_xdata()) == part.rewind_step.tolist()
        assert list(line.get_ydata()) == part.test_error_barrier.tolist()
    row = table[(table.level == 1) & (table.rewind_step == 0)].iloc[0]
    path = lth.store.files.read_record(f"{row.run_dir}/instability/level_001/path.json")
    fig = lth.report.figures.instability_path(row.run_dir, 1)
    test_line = next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == "test error")
    assert list(test_line.get_ydata()) == [1 - r["test_acc"] for r in path["rows"]]
    assert lth_main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "instability_lmc.png").exists()
    assert (tmp_path / "rep" / "instability_path_lmc.png").exists()
