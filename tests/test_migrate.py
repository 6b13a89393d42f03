"""Runs and groups written by lth 0.1 are upgraded in place by ``lth migrate`` and then
resume (nothing retrained) under this lth. The fixture store was made by lth 0.1 (commit
9915043) from the two TOML files inside it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

import lth
from lth.cli import main

LEGACY = Path(__file__).parent / "data" / "legacy_store"


def test_migrated_store_resumes_without_retraining(tmp_path, capsys, monkeypatch):
    store = tmp_path / "store"
    shutil.copytree(LEGACY, store)
    old_tables = {p.parent.name: pd.read_csv(p) for p in store.rglob("levels.csv")}
    monkeypatch.chdir(store)
    assert main(["run", "e.toml", "--store", ".", "--quiet"]) == 0  # before: a new run
    err = capsys.readouterr().err
    assert "made by lth 0.1" in err and "lth migrate" in err
    fresh = next(d for d in store.glob("e-*") if d.name != "e-a3c141021cfd")
    shutil.rmtree(fresh)
    assert main(["migrate", "."]) == 0
    out = capsys.readouterr().out
    assert "e-a3c141021cfd -> e-" in out and "s-session-46d9a3b372a9 -> s-session-" in out
    stamps = {p: p.stat().st_mtime_ns for p in store.rglob("final.safetensors")}
    assert len(stamps) == 9
    assert main(["run", "e.toml", "--store", ".", "--quiet"]) == 0
    assert main(["session", "s.toml", "--store", ".", "--quiet", "--executor",
                 "sequential"]) == 0
    assert {p: p.stat().st_mtime_ns for p in store.rglob("final.safetensors")} == stamps
    assert len(list(store.glob("e-*"))) == 1 and len(list(store.glob("s-session-*"))) == 1
    loaded = lth.load(store)
    assert not loaded.problems
    run = lth.Result(next(store.glob("e-*")))
    old = old_tables["e-a3c141021cfd"]
    assert run.table().best_test_acc.tolist() == old.best_test_acc.tolist()
    assert sorted(loaded.runs.experiment) == ["e", "shuffled", "ticket"]
