"""A store written by lth 0.2 before modes became objects (issue 21) resumes as it is.

``tests/data/store_v0_2`` was made by the main branch of that day (commit b7dfa89) with
``lth session modes.toml --store . --executor sequential``: one variant per mode the engine
asks about (see ``modes.toml``). Running the same session now must find every trial in the
directory its identity names and every level finished: nothing trains again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

import lth
import lth.train.loop
from lth.cli import main
from lth.experiment.result import COST_COLUMNS

STORE = Path(__file__).parent / "data" / "store_v0_2"


def _fingerprint(store: Path) -> dict[str, int]:
    return {str(p.relative_to(store)): p.stat().st_mtime_ns
            for p in store.rglob("*") if p.suffix in (".safetensors", ".json")
            and p.parent.name.startswith("level_")}


def test_a_store_of_lth_0_2_resumes_without_training(tmp_path, monkeypatch, capsys):
    store = tmp_path / "store"
    shutil.copytree(STORE, store)
    before = _fingerprint(store)
    old_table = pd.read_csv(next(store.glob("modes-session-*/table.csv")))

    def no_training(*args, **kwargs):
        raise AssertionError("a level of the old store was trained again")

    monkeypatch.setattr(lth.train.loop, "train_stack", no_training)
    monkeypatch.setattr("lth.experiment.imp.train_stack", no_training)
    monkeypatch.chdir(store)
    assert main(["session", "modes.toml", "--store", ".", "--quiet",
                 "--executor", "sequential"]) == 0
    assert "trials: 13 done, 0 failed" in capsys.readouterr().out
    assert len(list(store.glob("modes-session-*"))) == 1
    assert len(list(store.glob("modes-session-*/trials/*"))) == 13
    assert _fingerprint(store) == before  # no level file rewritten
    new_table = pd.read_csv(next(store.glob("modes-session-*/table.csv")))
    pd.testing.assert_frame_equal(new_table[old_table.columns], old_table)
    # Columns added since: training costs, not counted when these levels were trained.
    added = [c for c in new_table.columns if c not in old_table.columns]
    assert added == COST_COLUMNS and new_table[added].isna().all().all()
