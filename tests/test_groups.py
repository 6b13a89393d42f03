from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import lth
from lth.cli import main
from lth.experiment import LotteryRobust, LotterySession, parse_seeds
from lth.experiment.stats import describe, t_quantile
from lth.store import Trials

from .conftest import states_equal

BASE = """
name = "tiny"
seed = 0
n_levels = 2
[model]
name = "mlp"
hidden = [16]
[data]
name = "digits"
[train]
duration = "30it"
eval_every = "10it"
batch_size = 32
"""


@pytest.fixture
def base_toml(tmp_path):
    path = tmp_path / "base.toml"
    path.write_text(BASE)
    return path


def session_toml(tmp_path, body: str, seeds="[0]"):
    path = tmp_path / "session.toml"
    path.write_text(f'name = "s"\nseeds = {seeds}\nbase = "base.toml"\n{body}')
    return path


def test_session_variants_share_theta0_and_controls_reuse_masks(tmp_path, base_toml):
    path = session_toml(tmp_path, """
[variants.ticket]
[variants.movement]
prune.criterion = "movement"
[variants.reinit_control]
control = "random_reinit"
of = "ticket"
[variants.prune_control]
control = "random_prune"
of = "ticket"
""")
    result = LotterySession.from_config(path).run(store=tmp_path / "store")
    runs = {row.variant: lth.Result(row.run_dir) for row in result.trials().itertuples()}
    assert set(runs) == {"ticket", "movement", "reinit_control", "prune_control"}
    theta0 = runs["ticket"].weights(0, "start")
    for r in runs.values():
        assert states_equal(r.weights(0, "start"), theta0)
    # Same θ0 and data order: the dense level trains identically in every variant.
    assert runs["ticket"].history(0).equals(runs["movement"].history(0))
    ticket, reinit, prune = runs["ticket"], runs["reinit_control"], runs["prune_control"]
    for level in (1, 2):
        assert reinit.mask(level) == ticket.mask(level)
        keep = ticket.mask(level)["1.weight"]
        assert not torch.equal(reinit.weights(level, "start")["1.weight"][keep],
                               ticket.weights(level, "start")["1.weight"][keep])
        assert prune.mask(level).kept() == ticket.mask(level).kept()
        assert prune.mask(level) != ticket.mask(level)
    table = result.table()
    assert set(table.columns) >= {"experiment", "seed", "level", "pct_remaining"}
    assert len(table) == 4 * 3
    summary = result.pruning_summary()
    row = summary.query("experiment == 'ticket' and level == 1 and layer == '1.weight'")
    assert row["weights"].item() == 64 * 16
    assert row["pct_pruned"].item() == pytest.approx(20.0, abs=0.1)


def test_grid_and_session_errors(tmp_path, base_toml):
    path = session_toml(tmp_path, """
[grid]
"prune.criterion" = ["large_final", "movement"]
"reinit.mode" = ["rewind", "random"]
""")
    session = LotterySession.from_config(path)
    assert sorted({t.variant for t in session.trials}) == [
        "criterion=large_final,mode=random", "criterion=large_final,mode=rewind",
        "criterion=movement,mode=random", "criterion=movement,mode=rewind"]
    bad = session_toml(tmp_path, '[variants.a]\nprune.rtae = 0.3\n[variants.c]\n'
                       'control = "random_reinit"\nof = "a"\n')
    with pytest.raises(lth.ConfigError, match="variants.a.prune.rtae.*did you mean 'rate'"):
        LotterySession.from_config(bad)
    bad.write_text('base = "base.toml"\n[variants.c]\ncontrol = "random_reinit"\nof = "x"\n')
    with pytest.raises(lth.ConfigError, match="of = 'x' must name a variant"):
        LotterySession.from_config(bad)
    bad.write_text('base = "base.toml"\nvariant = 1\n')
    with pytest.raises(lth.ConfigError, match="did you mean 'variants'"):
        LotterySession.from_config(bad)
    with pytest.raises(lth.ConfigError, match="needs \\[variants.NAME\\]"):
        bad.write_text('base = "base.toml"\n')
        LotterySession.from_config(bad)


def test_describe_matches_numpy_and_scipy():
    x = [0.91, 0.93, 0.90, 0.95, 0.92]
    d = describe(x)
    assert d["n"] == 5 and d["mean"] == pytest.approx(np.mean(x))
    assert d["median"] == pytest.approx(np.median(x)) and d["sd"] == pytest.approx(
        np.std(x, ddof=1))
    assert t_quantile(4) == pytest.approx(2.7764451, abs=1e-6)  # tables' t(0.975, 4)
    half = 2.7764451 * np.std(x, ddof=1) / math.sqrt(5)
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((np.mean(x) - half, np.mean(x) + half))
    one = describe([0.5])
    assert one["n"] == 1 and one["mean"] == 0.5 and math.isnan(one["sd"])


def trial_files(result) -> dict[str, bytes]:
    out = {}
    for row in result.trials().itertuples():
        run = lth.Result(row.run_dir)
        for level in run.levels:
            out[f"{row.key}/{level}"] = (run.path / f"level_{level:03d}" /
                                         "final.safetensors").read_bytes()
    return out


def test_robust_statistics_and_executors_agree(tmp_path, base_toml):
    robust = LotteryRobust.from_config(base_toml, seeds=[0, 1, 2])
    seq = robust.run(store=tmp_path / "seq", executor="sequential")
    table = seq.table()
    assert sorted(table.seed.unique()) == [0, 1, 2]
    thetas = [lth.Result(r).weights(0, "start")["1.weight"] for r in seq.trials().run_dir]
    assert not torch.equal(torch.sign(thetas[0]), torch.sign(thetas[1]))  # own signs per seed
    stats = seq.stats().query("metric == 'final_test_acc' and level == 2").iloc[0]
    values = table.query("level == 2").final_test_acc.to_numpy()
    assert stats["mean"] == pytest.approx(values.mean())
    assert stats["sd"] == pytest.approx(values.std(ddof=1))
    assert (stats["n"], stats["n_ok"], stats["n_failed"]) == (3, 3, 0)
    curve = seq.curve_stats().query("metric == 'test_acc' and level == 1 and step == 20")
    at20 = seq.curves().query("level == 1 and step == 20").test_acc
    assert curve["mean"].item() == pytest.approx(at20.mean())
    for name in ("stats.csv", "table.csv", "curve_stats.csv", "trials.csv"):
        assert (seq.path / name).exists()
    local = robust.run(store=tmp_path / "local", executor="local", workers=2)
    assert trial_files(local) == trial_files(seq)
    on_ray = robust.run(store=tmp_path / "ray", executor="ray", workers=2)
    assert trial_files(on_ray) == trial_files(seq)


def test_adding_seeds_extends_and_other_settings_do_not_mix(tmp_path, base_toml):
    store = tmp_path / "store"
    first = LotteryRobust.from_config(base_toml, seeds=[0]).run(store=store)
    done = lth.Result(first.trials().run_dir[0]).path / "level_002" / "summary.json"
    stamp = done.stat().st_mtime_ns
    more = LotteryRobust.from_config(base_toml, seeds=[0, 1]).run(store=store)
    assert more.path == first.path and done.stat().st_mtime_ns == stamp
    assert sorted(more.table().seed.unique()) == [0, 1]
    other = LotteryRobust.from_config(base_toml, ["train.lr=0.01"], seeds=[0]).run(store=store)
    assert other.path != first.path


def test_failing_trial_is_isolated_counted_and_retried(tmp_path, base_toml, capsys):
    path = session_toml(tmp_path, """
[variants.ok]
[variants.bad]
train.optimizer = "sgd"
train.lr = 1e30
[variants.bad_control]
control = "random_reinit"
of = "bad"
""")
    store = str(tmp_path / "store")
    code = main(["session", str(path), "--store", store, "--executor", "sequential",
                 "--quiet"])
    out = capsys.readouterr().out
    assert code == 1 and "1 done, 2 failed" in out and "diverged" in out
    gdir = next((tmp_path / "store").iterdir())
    status = Trials(gdir).read()
    assert status["ok-s0"]["status"] == "done"
    assert "needs the masks of bad-s0" in status["bad_control-s0"]["error"]
    assert "TrainingError" in (gdir / "failures" / "bad-s0.txt").read_text()
    assert main(["status", store]) == 0
    assert "1 done, 2 failed" in capsys.readouterr().out
    stamp = (gdir / "failures" / "bad-s0.txt").stat().st_mtime_ns
    main(["session", str(path), "--store", store, "--executor", "sequential", "--quiet"])
    assert (gdir / "failures" / "bad-s0.txt").stat().st_mtime_ns == stamp  # not re-run
    main(["session", str(path), "--store", store, "--executor", "sequential", "--quiet",
          "--retry-failed"])
    assert (gdir / "failures" / "bad-s0.txt").stat().st_mtime_ns != stamp  # re-run


def test_parse_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4] and parse_seeds("3,1") == [3, 1]
    with pytest.raises(lth.ConfigError, match="range like 0-4"):
        parse_seeds("a-b")


def test_python_api_session_with_user_model(digits, small_mlp, tmp_path):
    session = LotterySession(small_mlp, digits, train={"duration": "20it", "batch_size": 32,
                                                       "eval_every": "10it"}, levels=1,
                             variants={"ticket": {}, "same_sign": {"reinit": {
                                 "mode": "random", "same_sign": True}}}, seeds=[0, 1])
    result = session.run(store=tmp_path)
    assert isinstance(result.table(), pd.DataFrame) and len(result.table()) == 2 * 2 * 2
    with pytest.raises(lth.ConfigError, match="variants.x.prun: unknown"):
        LotterySession(small_mlp, digits, variants={"x": {"prun": {}}})


# ---- review fixes -----------------------------------------------------------------------


@pytest.mark.parametrize("body, match", [
    ("seeds = 3\n[variants.a]\n", "seeds = 3; give a list"),
    ('base = 5\n', None),
    ("variants = 3\n", "variants must be tables"),
    ('[variants."lr=0.01"]\n[grid]\n"train.lr" = [0.01, 0.1]\n', "repeats a grid value or"),
    ('[grid]\n"train.lr" = [1e-3, 0.001]\n', "repeats a grid value"),
])
def test_session_file_type_errors_are_clear(tmp_path, base_toml, body, match):
    path = tmp_path / "s.toml"
    if body.startswith("base = 5"):
        path.write_text(body)
        match = "base = 5; give a \\[base\\] table"
    else:
        path.write_text(f'base = "base.toml"\n{body}')
    with pytest.raises(lth.ConfigError, match=match):
        LotterySession.from_config(path)


def test_session_seeds_as_a_range_string(tmp_path, base_toml):
    path = session_toml(tmp_path, "[variants.a]\n", seeds='"0-2"')
    assert [t.seed for t in LotterySession.from_config(path).trials] == [0, 1, 2]


def test_control_with_more_levels_than_its_source_is_refused(tmp_path, base_toml):
    path = session_toml(tmp_path, '[variants.t]\nn_levels = 1\n[variants.c]\n'
                        'control = "random_reinit"\nof = "t"\nn_levels = 2\n')
    with pytest.raises(lth.ConfigError, match="has 2 levels but reuses the masks of 't'"):
        LotterySession.from_config(path)


def test_bad_worker_counts(tmp_path, base_toml, capsys):
    assert main(["robust", str(base_toml), "--seeds", "0", "--workers", "0",
                 "--store", str(tmp_path), "--quiet"]) == 2
    assert "workers = 0; give 1 or more" in capsys.readouterr().err


def test_counts_cover_failed_variants_and_dependency_failures_leave_a_file(tmp_path,
                                                                            base_toml):
    path = session_toml(tmp_path, '[variants.bad]\ntrain.optimizer = "sgd"\ntrain.lr = 1e30\n'
                        '[variants.ctl]\ncontrol = "random_reinit"\nof = "bad"\n')
    result = LotterySession.from_config(path).run(store=tmp_path / "st")
    counts = result.counts().set_index("experiment")
    assert counts.loc["bad", "n_failed"] == 1 and counts.loc["ctl", "n_failed"] == 1
    assert "needs the masks of bad-s0" in (result.path / "failures" / "ctl-s0.txt").read_text()
    assert (result.path / "counts.csv").exists()


def test_a_group_cannot_be_run_twice_at_once(tmp_path, base_toml):
    import fcntl

    robust = LotteryRobust.from_config(base_toml, seeds=[0])
    first = robust.run(store=tmp_path)  # creates the directory
    with open(first.path / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(lth.StoreError, match="being run by another process"):
            robust.run(store=tmp_path)
    robust.run(store=tmp_path)  # free again


def test_session_trains_the_shared_dense_level_once(digits, small_mlp, tmp_path):
    variants = {"ticket": {}, "movement": {"prune": {"criterion": "movement"}},
                "control": {"control": "random_reinit", "of": "ticket"}}
    session = LotterySession(small_mlp, digits, train={"duration": "60it", "eval_every": "20it",
                                                       "batch_size": 32},
                             levels=1, variants=variants, seeds=[0])
    result = session.run(store=tmp_path / "s", executor="local", workers=2)
    runs = {row.variant: lth.Result(row.run_dir) for row in result.trials().itertuples()}
    level0 = {v: (r.path / "level_000" / "final.safetensors").read_bytes()
              for v, r in runs.items()}
    assert len(set(level0.values())) == 1
    # Trained once: the others copied its summary, finish time included.
    stamps = {r.summary(0)["finished_at"] for r in runs.values()}
    assert len(stamps) == 1
    # The costs are each run's own: the dense mask costs nothing, the copied network its steps.
    assert {r.summary(0)["steps_to_mask"] for r in runs.values()} == {0}
    assert {r.summary(0)["budget_steps"] for r in runs.values()} == {60}
    alone = lth.LotteryModel(small_mlp, digits, train={"duration": "60it", "eval_every": "20it",
                                                       "batch_size": 32},
                             levels=1, prune={"criterion": "movement"}).run(store=tmp_path / "a")
    assert (alone.path / "level_000" / "final.safetensors").read_bytes() == level0["movement"]
    assert (alone.path / "level_000" / "history.json").read_bytes() == \
        (runs["movement"].path / "level_000" / "history.json").read_bytes()
