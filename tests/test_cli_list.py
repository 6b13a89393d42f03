"""``lth list``: the kinds, and each kind's entries with one line each."""

from __future__ import annotations

import pytest

import lth
from lth.cli import main
from lth.data import DATASETS

REGISTRIES = {"models": lth.MODELS, "datasets": DATASETS, "criteria": lth.CRITERIA,
              "reinit": lth.REINIT_MODES, "tasks": lth.TASKS}


def _listed(capsys, *args: str) -> dict[str, str]:
    assert main(["list", *args]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.endswith(":")
    return dict(row.strip().split("  ", 1) for row in rows)


def test_list_alone_names_every_kind(capsys):
    kinds = _listed(capsys)
    assert list(kinds) == ["models", "datasets", "criteria", "reinit", "tasks", "presets"]
    assert all(text.strip() for text in kinds.values())


@pytest.mark.parametrize("kind", list(REGISTRIES))
def test_each_kind_lists_every_entry_with_its_description(capsys, kind):
    listed = _listed(capsys, kind)
    assert list(listed) == list(REGISTRIES[kind].names())
    assert all(text.strip() and "(no description)" not in text for text in listed.values())


def test_descriptions_come_from_docstrings_and_registrations(capsys):
    models = _listed(capsys, "models")
    assert models["lenet_300_100"].strip() == ("LeNet-300-100 of Frankle & Carbin (2019): fc "
                                               "300, 100, classes.")
    assert "``" not in models["vgg11"]  # reST markup is dropped
    reinit = _listed(capsys, "reinit")
    assert reinit["random"].strip() == lth.REINIT_MODES["random"].values.__doc__
    # lr_rewind reuses rewind's function; its line is the one it was registered with
    assert "Renda et al. 2020" in reinit["lr_rewind"] and reinit["lr_rewind"] != reinit["rewind"]
    tasks = _listed(capsys, "tasks")
    assert tasks["regression"].strip() == ("mean squared error loss; metrics: mae, mse; "
                                           "targets: real")
    assert all(len(line) <= 100 for line in _row_lines(capsys, "criteria"))


def _row_lines(capsys, kind: str) -> list[str]:
    assert main(["list", kind]) == 0
    return capsys.readouterr().out.splitlines()


def test_presets_name_the_command_that_runs_them(capsys, monkeypatch, tmp_path):
    listed = _listed(capsys, "presets")
    assert listed["quickstart"].split()[0] == "run"
    assert "Quickstart: LeNet-style MLP" in listed["quickstart"]
    assert listed["session_ticket_vs_reinit"].split()[0] == "session"
    assert listed["forward_digits"].split()[0] == "forward-sweep"


def test_unknown_kind_suggests_the_right_one(capsys):
    assert main(["list", "model"]) == 2
    assert "unknown kind 'model'; did you mean 'models'?" in capsys.readouterr().err
