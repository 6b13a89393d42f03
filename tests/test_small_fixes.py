"""Small things a new user met (issue 24), each pinned by a test."""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

import pytest
import torch

import lth
import lth.config
from lth import sparse_ticket
from lth.cli import main
from lth.errors import ConfigError, DataError, StoreError

ROOT = Path(__file__).resolve().parents[1]
TOML = ('name = "fix"\nn_levels = 1\n[model]\nname = "mlp"\nhidden = [32]\n'
        '[data]\nname = "digits"\n[train]\nduration = "10it"\neval_every = "10it"\n')


def test_data_repr_is_one_line_of_sizes(digits):
    text = repr(digits)
    assert "\n" not in text and "tensor(" not in text
    assert f"train {len(digits.y_train)}" in text and "10 classes" in text


def test_levels_given_as_text_is_reported_under_its_own_name(digits, small_mlp):
    with pytest.raises(ConfigError, match=r"^levels: got '3'; expected an integer"):
        lth.LotteryModel(small_mlp, digits, levels="3")


def test_one_hot_labels_are_refused_by_from_arrays():
    x = torch.randn(40, 5)
    y = torch.nn.functional.one_hot(torch.arange(40) % 3, 3)
    with pytest.raises(DataError, match=r"one-hot rows \(.*y.argmax\(1\)"):
        lth.from_arrays(x, y, x[:8], y[:8])
    # The same 0/1 rows as floats are multilabel targets, and token ids stay allowed.
    assert lth.from_arrays(x, y.float(), x[:8], y[:8].float()).num_classes == 3
    tokens = torch.randint(0, 7, (40, 6))
    assert lth.from_arrays(x, tokens, x[:8], tokens[:8]).y_train.shape[1] == 6


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_exported_files_follow_the_umask(tmp_path, umask_022):
    (tmp_path / "fix.toml").write_text(TOML)
    assert main(["run", str(tmp_path / "fix.toml"), "--store", str(tmp_path / "s"),
                 "--quiet"]) == 0
    (run,) = (tmp_path / "s").glob("fix-*")
    for fmt in ("state_dict", "sparse", "pruned"):
        out = tmp_path / f"ticket-{fmt}"
        assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 0
        assert out.stat().st_mode & 0o777 == 0o644, fmt
    model = lth.create_model("mlp", input_shape=(4,), num_classes=2, hidden=(8,))
    sparse_ticket.save(model, tmp_path / "own.safetensors")
    assert (tmp_path / "own.safetensors").stat().st_mode & 0o777 == 0o644


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "fix.toml").write_text(TOML)
    assert main(["run", str(tmp_path / "fix.toml"), "--store", str(tmp_path / "s"),
                 "--quiet"]) == 0
    results = lth.load(tmp_path / "s")
    for module in ("pyarrow", "fastparquet"):  # None in sys.modules: the import fails
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(StoreError) as err:
        results.to_parquet(tmp_path / "tables")
    assert str(err.value) == ("Parquet export needs pyarrow: pip install 'lth[parquet]' "
                              "(or write CSV with to_csv)")


def test_license_is_an_spdx_string():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"  # a TOML table is deprecated by setuptools
    assert all((ROOT / f).is_file() for f in project["license-files"])


# Found trying the docs site as a new user (issue 24).

def test_a_missing_run_directory_or_level_is_named_not_an_empty_run(tmp_path):
    with pytest.raises(StoreError, match=r"does-not-exist is not a run directory; "
                       r"`lth status STORE` lists"):
        lth.Result(tmp_path / "does-not-exist")
    (tmp_path / "fix.toml").write_text(TOML)
    assert main(["run", str(tmp_path / "fix.toml"), "--store", str(tmp_path / "s"),
                 "--quiet"]) == 0
    run = lth.Result(next((tmp_path / "s").glob("fix-*")))
    with pytest.raises(KeyError, match=r"has no level 9; its levels: 0, 1"):
        run.mask(9)  # not "Damaged ... is missing", which reads as a broken store
    assert sum(run.mask(1).kept().values()) < sum(run.mask(0).kept().values())


def test_status_of_a_missing_store_gives_advice_its_command_takes(tmp_path, capsys):
    assert main(["status", str(tmp_path / "nostore")]) != 0
    err = capsys.readouterr().err
    assert "nostore is not a directory" in err and "give the --store" not in err


def test_a_suggestion_is_not_followed_by_doubled_punctuation(tmp_path):
    (tmp_path / "fix.toml").write_text(TOML + 'optimiser = "sgd"\n')
    with pytest.raises(ConfigError) as err:
        lth.config.load_config(tmp_path / "fix.toml")
    assert "did you mean 'optimizer'? known keys: optimizer, lr" in str(err.value)
    assert "?;" not in str(err.value)


def test_python_settings_report_the_problems_of_every_section_at_once(digits, small_mlp):
    with pytest.raises(ConfigError, match=r"\(2 problem\(s\)\)") as err:
        lth.LotteryModel(small_mlp, digits, levels=2, train={"optimiser": "sgd"},
                         prune={"rate": 1.5})
    assert "train.optimiser" in str(err.value) and "prune.rate" in str(err.value)
