"""The store checks what it reads: damaged files are recomputed (same numbers) or named in
one message with a command that works; a store can be moved; a crash between a level's
summary and its table leaves nothing behind."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

import lth
from lth.cli import main
from lth.experiment import LotterySession
from lth.store import Damaged, RunDir, load_tensors, read_record, save_tensors

from .conftest import FAST_TRAIN, states_equal

TRAIN = {**FAST_TRAIN, "checkpoint_every": "20it"}


def flip(path, n=16):
    """Flip ``n`` bytes in the middle of a file."""
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + n] = bytes(b ^ 0xFF for b in raw[mid:mid + n])
    path.write_bytes(bytes(raw))


def experiment(model, data, **kw):
    return lth.LotteryModel(model, data, train=kw.pop("train", TRAIN),
                            levels=kw.pop("levels", 2), **kw)


@pytest.fixture
def straight(digits, small_mlp, tmp_path):
    return experiment(small_mlp, digits).run(store=tmp_path / "straight")


def same_numbers(a, b):
    assert a.levels == b.levels
    for level in a.levels:
        assert states_equal(a.weights(level), b.weights(level))
        assert a.mask(level) == b.mask(level)
    cols = [c for c in a.table().columns if c != "wall_time_s"]
    assert a.table()[cols].equals(b.table()[cols])


def test_files_carry_digests_checked_on_read(tmp_path):
    import torch

    save_tensors(tmp_path / "t.safetensors", {"w": torch.arange(64.0)}, {"step": 3})
    assert load_tensors(tmp_path / "t.safetensors")[1] == {"step": 3}
    flip(tmp_path / "t.safetensors", n=4)
    with pytest.raises(Damaged, match="does not match its digest"):
        load_tensors(tmp_path / "t.safetensors")
    from lth.store import write_record

    write_record(tmp_path / "r.json", {"acc": 0.8716})
    text = (tmp_path / "r.json").read_text().replace("0.8716", "0.8736")
    (tmp_path / "r.json").write_text(text)
    with pytest.raises(Damaged, match="does not match its digest"):
        read_record(tmp_path / "r.json")


@pytest.mark.parametrize("target", ["level_001/final.safetensors", "level_001/mask.safetensors",
                                    "level_001/start.safetensors", "level_001/history.json",
                                    "level_001/summary.json", "theta0.safetensors",
                                    "level_000/final.safetensors"])
@pytest.mark.parametrize("damage", ["flip", "delete", "truncate"])
def test_damaged_finished_file_is_recomputed_to_the_same_numbers(
        digits, small_mlp, tmp_path, straight, target, damage, caplog):
    run = experiment(small_mlp, digits).run(store=tmp_path / "b")
    path = run.path / target
    if damage == "flip":
        flip(path)
    elif damage == "delete":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 3])
    assert main(["status", str(tmp_path / "b"), "--verify"]) == 0
    again = experiment(small_mlp, digits).run(store=tmp_path / "b")
    same_numbers(straight, again)
    assert not RunDir(again.path).verify(2)


@pytest.mark.parametrize("content", ["{}", "[]", "null", '{"level": 1}', "not json"])
def test_summary_of_any_shape_is_treated_as_damage(digits, small_mlp, tmp_path, straight,
                                                   content, capsys):
    run = experiment(small_mlp, digits).run(store=tmp_path / "b")
    (run.path / "level_001" / "summary.json").write_text(content)
    assert main(["status", str(tmp_path / "b")]) == 0
    assert "2 levels done" in capsys.readouterr().out  # level 1 is not counted
    assert lth.load(tmp_path / "b").levels.level.tolist() == [0, 2]
    same_numbers(straight, experiment(small_mlp, digits).run(store=tmp_path / "b"))


def test_damaged_config_is_rewritten(digits, small_mlp, tmp_path, straight, capsys):
    run = experiment(small_mlp, digits).run(store=tmp_path / "b")
    (run.path / "config.json").write_text("[]")
    assert main(["status", str(tmp_path / "b")]) == 0
    assert "damaged config.json" in capsys.readouterr().out
    assert lth.load(tmp_path / "b").problems
    same_numbers(straight, experiment(small_mlp, digits).run(store=tmp_path / "b"))
    assert read_record(run.path / "config.json")["identity"]


def test_level_directory_replaced_by_a_file(digits, small_mlp, tmp_path, straight):
    run = experiment(small_mlp, digits).run(store=tmp_path / "b")
    shutil.rmtree(run.path / "level_001")
    (run.path / "level_001").write_text("oops")
    same_numbers(straight, experiment(small_mlp, digits).run(store=tmp_path / "b"))


def test_wrong_shape_mask_of_an_unfinished_level_is_redrawn(digits, small_mlp, tmp_path,
                                                            straight):
    import torch

    run = experiment(small_mlp, digits).run(store=tmp_path / "b")
    level = run.path / "level_002"
    (level / "summary.json").unlink()
    save_tensors(level / "mask.safetensors", {"1.weight": torch.ones(3, 3, dtype=torch.bool)})
    same_numbers(straight, experiment(small_mlp, digits).run(store=tmp_path / "b"))


def test_damaged_checkpoint_restarts_the_level(digits, tmp_path):
    from torch import nn

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    train = {**TRAIN, "duration": "90it"}
    straight = experiment(model, digits, train=train, levels=1).run(store=tmp_path / "a")

    class Stop(Exception):
        pass

    def bomb(level, step, end):
        if level == 1 and step >= 70:
            raise Stop

    with pytest.raises(Stop):
        experiment(model, digits, train=train, levels=1).run(store=tmp_path / "b",
                                                             progress=bomb)
    (ckpt,) = (tmp_path / "b").glob("*/level_001/checkpoint.safetensors")
    flip(ckpt)
    again = experiment(model, digits, train=train, levels=1).run(store=tmp_path / "b")
    same_numbers(straight, again)


def test_crash_after_the_summary_leaves_nothing_behind(digits, small_mlp, tmp_path, straight):
    run = experiment(small_mlp, digits).run(store=tmp_path / "b")
    # As if killed after level 2's summary: stale checkpoint, short table, temp litter.
    shutil.copy(run.path / "level_002" / "final.safetensors",
                run.path / "level_002" / "checkpoint.safetensors")
    (run.path / "levels.csv").write_text("level\n0\n1\n")
    (run.path / "level_002" / ".final.safetensors.abc.tmp").write_bytes(b"x")
    again = experiment(small_mlp, digits).run(store=tmp_path / "b")
    same_numbers(straight, again)
    import pandas as pd

    assert pd.read_csv(again.path / "levels.csv").level.tolist() == [0, 1, 2]
    assert not list(again.path.rglob("*.tmp"))
    assert not list(again.path.rglob("checkpoint.safetensors"))


def test_missing_rewind_point_retrains_level0(digits, small_mlp, tmp_path):
    reinit = {"rewind_step": "20it"}
    straight = experiment(small_mlp, digits, reinit=reinit).run(store=tmp_path / "a")
    run = experiment(small_mlp, digits, reinit=reinit).run(store=tmp_path / "b")
    (run.path / "rewind.safetensors").unlink()
    same_numbers(straight, experiment(small_mlp, digits, reinit=reinit).run(
        store=tmp_path / "b"))
    assert (run.path / "rewind.safetensors").exists()


def cli_ticket(tmp_path, n_levels: int, *control_sets: str):
    """A ticket run by `lth run` from a tiny TOML, and the command of a control that reuses
    its masks (named "c", with ``control_sets`` as --set overrides): (store, ticket,
    control argv)."""
    toml = tmp_path / "t.toml"
    toml.write_text(f'name = "t"\nn_levels = {n_levels}\n[model]\nname = "mlp"\n'
                    'hidden = [16]\n[data]\nname = "digits"\n[train]\nduration = "60it"\n'
                    'eval_every = "20it"\nbatch_size = 32\n')
    store = str(tmp_path / "s")
    assert main(["run", str(toml), "--store", store, "--quiet"]) == 0
    (ticket,) = (tmp_path / "s").iterdir()
    control = ["run", str(toml), "--store", store, "--quiet", "--masks-from", str(ticket),
               *[arg for value in control_sets for arg in ("--set", value)], "--set",
               'name="c"']
    return store, ticket, control


def test_damaged_masks_source_names_the_file_and_a_working_fix(tmp_path, capsys):
    store, ticket, control = cli_ticket(tmp_path, 2, 'reinit.mode="random"')
    os.remove(ticket / "level_002" / "mask.safetensors")
    (ticket / "level_002" / "summary.json").unlink()  # the mask is gone, with its level
    assert main(control) == 2
    err = capsys.readouterr().err
    assert "level_002/summary.json is missing" in err and f"(`lth run {ticket}`)" in err
    (ticket / "level_001" / "mask.safetensors").write_bytes(b"garbage")
    # The ticket's level 2 is redone; the command the message names repairs the source.
    fix = f"lth run {ticket}"
    assert main(fix.split()[1:] + ["--quiet"]) == 0
    assert not RunDir(ticket).verify(2)
    assert main(control) == 0


def test_a_moved_store_opens_from_anywhere(digits, small_mlp, tmp_path, monkeypatch):
    session = LotterySession(small_mlp, digits, train=TRAIN, levels=1,
                             variants={"ticket": {},
                                       "control": {"control": "random_reinit", "of": "ticket"}})
    monkeypatch.chdir(tmp_path)
    session.run(store="runs")
    shutil.move(tmp_path / "runs", tmp_path / "elsewhere")
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    loaded = lth.load(tmp_path / "elsewhere")
    assert sorted(loaded.runs.experiment) == ["control", "ticket"] and not loaded.problems
    assert main(["report", str(tmp_path / "elsewhere"), "--out", "rep"]) == 0
    again = session.run(store=tmp_path / "elsewhere")  # nothing to redo
    assert again.trials().status.tolist() == ["done", "done"]


def test_damaged_trials_file_is_rebuilt_without_retraining(digits, small_mlp, tmp_path):
    session = LotterySession(small_mlp, digits, train=TRAIN, levels=1, seeds=[0, 1],
                             variants={"ticket": {}})
    first = session.run(store=tmp_path)
    finals = {p: p.read_bytes() for p in first.path.rglob("final.safetensors")}
    stamps = {p: p.stat().st_mtime_ns for p in finals}
    (first.path / "trials.json").write_text('{"ticket-s0": ')
    again = session.run(store=tmp_path)
    assert again.trials().status.tolist() == ["done", "done"]
    assert {p: p.stat().st_mtime_ns for p in finals} == stamps


def test_a_damaged_trial_of_a_finished_session_is_recomputed(digits, small_mlp, tmp_path):
    session = LotterySession(small_mlp, digits, train=TRAIN, levels=1, variants={"t": {}})
    first = session.run(store=tmp_path)
    run = first.trials().run_dir.item()
    before = lth.Result(run).weights(1)
    flip(next((tmp_path).rglob("level_001/final.safetensors")))
    again = session.run(store=tmp_path)
    assert states_equal(lth.Result(again.trials().run_dir.item()).weights(1), before)


def test_legacy_runs_are_named_not_resumed(digits, small_mlp, tmp_path, capsys):
    old = tmp_path / "experiment-0123456789ab"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({"identity": {"settings": {}}}))
    assert main(["status", str(tmp_path)]) == 0
    assert "lth migrate" in capsys.readouterr().out
    assert "lth migrate" in lth.load(tmp_path).problems[0]


@pytest.mark.parametrize("stem", ["mask.safetensors", "start.safetensors", "history.json"])
def test_a_file_copied_from_another_level_is_not_reused(digits, small_mlp, tmp_path, straight,
                                                        stem):
    run = experiment(small_mlp, digits).run(store=tmp_path / "b")
    shutil.copy(run.path / "level_001" / stem, run.path / "level_002" / stem)
    if stem == "history.json":  # the tables read it: not shown as level 2's curves
        loaded = lth.load(tmp_path / "b")
        assert loaded.problems and 2 not in set(loaded.curves.level)
    same_numbers(straight, experiment(small_mlp, digits).run(store=tmp_path / "b"))


def test_config_with_a_wrong_typed_identity_is_rewritten(digits, small_mlp, tmp_path, straight):
    from lth.store import write_record

    run = experiment(small_mlp, digits).run(store=tmp_path / "b")
    cfg = read_record(run.path / "config.json")
    write_record(run.path / "config.json", {**cfg, "identity": "x"})  # its digest is valid
    same_numbers(straight, experiment(small_mlp, digits).run(store=tmp_path / "b"))


def verify_listing(store, capsys):
    capsys.readouterr()
    assert main(["status", str(store), "--verify"]) == 0
    return [ln.strip() for ln in capsys.readouterr().out.splitlines() if "damaged" in ln]


def numbers(loaded):
    """The levels table without what depends on the clock."""
    return loaded.levels.drop(columns=["finished_at", "wall_time_s"])


def rewrite(path, **fields):
    """A record with some fields changed, its digest recomputed (it verifies)."""
    from lth.store import write_record

    write_record(path, {**read_record(path), **fields})


@pytest.mark.parametrize("damage", [
    "delete rewind", "delete last summary", "delete first summary", "level is a file",
    "delete config", "prunable wrong type", "data wrong type", "levels.csv edited"])
def test_status_verify_and_load_name_every_damage(digits, small_mlp, tmp_path, damage,
                                                  capsys):
    """Each kind of damage is listed by `status --verify` and in `Results.problems`; the
    run's own command repairs it."""
    reinit = {"rewind_step": "10it"}
    run = experiment(small_mlp, digits, reinit=reinit).run(store=tmp_path / "b").path
    pristine = lth.load(tmp_path / "b")
    assert not verify_listing(tmp_path / "b", capsys) and not pristine.problems
    named = {"delete rewind": "rewind.safetensors", "delete last summary": "summary.json",
             "delete first summary": "summary.json", "level is a file": "level_001",
             "delete config": "config.json", "prunable wrong type": "prunable",
             "data wrong type": "data", "levels.csv edited": "levels.csv"}[damage]
    if damage == "delete rewind":
        (run / "rewind.safetensors").unlink()
    elif damage == "delete last summary":
        (run / "level_002" / "summary.json").unlink()
    elif damage == "delete first summary":
        (run / "level_000" / "summary.json").unlink()
    elif damage == "level is a file":
        shutil.rmtree(run / "level_001")
        (run / "level_001").write_text("oops")
    elif damage == "delete config":
        (run / "config.json").unlink()
    elif damage == "levels.csv edited":  # a derived table: checked against the summaries
        text = (run / "levels.csv").read_text().splitlines()
        text[2] = text[2].replace(",", ",9", 1)
        (run / "levels.csv").write_text("\n".join(text) + "\n")
    else:
        field = damage.split()[0]
        rewrite(run / "config.json", **{field: "x"})
    listed = verify_listing(tmp_path / "b", capsys)
    assert listed and named in listed[0], listed
    loaded = lth.load(tmp_path / "b")
    if damage != "levels.csv edited":  # lth.load reads the summaries, not the table
        assert any(named in p for p in loaded.problems), loaded.problems
    if "config" in damage or "type" in damage:
        assert "`lth run FILE`" in listed[0]
    rerun = experiment(small_mlp, digits, reinit=reinit).run(store=tmp_path / "b")
    assert not verify_listing(tmp_path / "b", capsys) and not lth.load(tmp_path / "b").problems
    assert numbers(lth.load(tmp_path / "b")).equals(numbers(pristine))
    assert rerun.path == run


def test_an_interrupted_level_is_not_called_damaged(digits, small_mlp, tmp_path, capsys):
    run = experiment(small_mlp, digits, levels=1).run(store=tmp_path / "b").path
    (run / "level_002").mkdir()
    shutil.copy(run / "level_001" / "mask.safetensors", run / "level_002")  # began, no more
    assert not verify_listing(tmp_path / "b", capsys)
    assert not lth.load(tmp_path / "b").problems


@pytest.fixture
def finished_session(digits, small_mlp, tmp_path):
    session = LotterySession(small_mlp, digits, train=TRAIN, levels=1,
                             variants={"ticket": {},
                                       "control": {"control": "random_reinit", "of": "ticket"}})
    return session, session.run(store=tmp_path / "s")


@pytest.mark.parametrize("damage", ["trials.json truncated", "trials.json []",
                                    "trial run_dir wrong type", "session config deleted",
                                    "session kind wrong type", "trial config deleted",
                                    "trial prunable wrong type", "trial run deleted",
                                    "trial levels.csv deleted"])
def test_session_damage_is_listed_and_repaired(finished_session, tmp_path, damage, capsys):
    session, first = finished_session
    gdir = first.path
    pristine = lth.load(tmp_path / "s")
    trial = next(p for p in (gdir / "trials").iterdir() if p.name.startswith("ticket"))
    if damage == "trials.json truncated":
        (gdir / "trials.json").write_text('{"trials": {')
    elif damage == "trials.json []":
        (gdir / "trials.json").write_text("[]")
    elif damage == "trial run_dir wrong type":
        rec = read_record(gdir / "trials.json")
        rec["trials"]["ticket-s0"]["run_dir"] = 7
        rewrite(gdir / "trials.json", **rec)
    elif damage == "session config deleted":
        (gdir / "config.json").unlink()
    elif damage == "session kind wrong type":
        rewrite(gdir / "config.json", kind=3)
    elif damage == "trial config deleted":
        (trial / "config.json").unlink()
    elif damage == "trial prunable wrong type":
        rewrite(trial / "config.json", prunable="x")
    elif damage == "trial levels.csv deleted":
        (trial / "levels.csv").unlink()
    else:
        shutil.rmtree(trial)
    listed = verify_listing(tmp_path / "s", capsys)
    assert listed, damage
    assert not any(ln.startswith(f"{trial.parent.parent.name}: 0 levels") for ln in listed)
    capsys.readouterr()
    assert main(["status", str(tmp_path / "s")]) == 0
    assert "[session]" in capsys.readouterr().out  # still shown as the session it is
    loaded = lth.load(tmp_path / "s")
    assert loaded.problems or damage == "trial levels.csv deleted", damage
    session.run(store=tmp_path / "s")
    assert not verify_listing(tmp_path / "s", capsys)
    again = lth.load(tmp_path / "s")
    assert not again.problems
    assert numbers(again).equals(numbers(pristine))


def test_a_finished_session_removes_leftovers(finished_session, tmp_path):
    session, first = finished_session
    gdir = first.path
    trial = next((gdir / "trials").iterdir())
    litter = [gdir / ".trials.json.1234.tmp", trial / "level_001" / ".final.safetensors.9.tmp"]
    for p in litter:
        p.write_bytes(b"half")
    shutil.copy(trial / "level_001" / "final.safetensors",
                trial / "level_001" / "checkpoint.safetensors")
    session.run(store=tmp_path / "s")
    assert not any(p.exists() for p in litter)
    assert not (trial / "level_001" / "checkpoint.safetensors").exists()


@pytest.mark.parametrize("damage", ["summary flipped", "config deleted", "directory deleted"])
def test_masks_source_damage_names_a_fix_that_works(tmp_path, capsys, damage):
    store, ticket, control = cli_ticket(tmp_path, 2, 'reinit.mode="random"')
    assert main(control) == 0
    pristine = lth.load(store)
    if damage == "summary flipped":
        flip(ticket / "level_002" / "summary.json", n=4)
    elif damage == "config deleted":
        (ticket / "config.json").unlink()
    else:
        shutil.rmtree(ticket)
    capsys.readouterr()
    assert main(control) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("lth: error") == 1
    assert {"summary flipped": "level_002/summary.json", "config deleted": "config.json",
            "directory deleted": "config.json"}[damage] in err
    assert f"(`lth run {ticket}`" in err
    assert main(["run", str(ticket), "--quiet"]) == 0
    assert main(control) == 0
    again = lth.load(store)
    assert numbers(again).equals(numbers(pristine)) and not again.problems


def test_a_masks_source_with_fewer_levels_names_the_command_that_extends_it(tmp_path, capsys):
    _, ticket, control = cli_ticket(tmp_path, 1, "n_levels=2")
    capsys.readouterr()
    assert main(control) == 2
    fix = re.search(r"`(lth run [^`]+)`", capsys.readouterr().err).group(1)
    assert fix == f"lth run {ticket} --set n_levels=2"
    assert main(fix.split()[1:] + ["--quiet"]) == 0
    assert main(control) == 0
