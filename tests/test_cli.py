from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from lth.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--set", "train.duration='40it'", "--set", "train.eval_every='10it'",
         "--set", "n_levels=2", "--set", "model.hidden=[32]"]


def test_run_end_to_end_on_digits(tmp_path, capsys):
    code = main(["run", str(ROOT / "configs" / "quickstart.toml"), "--store", str(tmp_path),
                 "--quiet", *QUICK])
    out = capsys.readouterr().out
    assert code == 0
    run_dir = next(tmp_path.iterdir())
    table = pd.read_csv(run_dir / "levels.csv")
    assert table["level"].tolist() == [0, 1, 2]
    assert table["pct_remaining"].iloc[0] == 100.0
    assert "early-stop it" in out and "% weights" in out
    assert f"{table['best_test_acc'].iloc[2]:.4f}" in out
    # A second invocation resumes: nothing to train, the same table.
    assert main(["run", str(ROOT / "configs" / "quickstart.toml"), "--store", str(tmp_path),
                 "--quiet", *QUICK]) == 0
    assert pd.read_csv(run_dir / "levels.csv").equals(table)


def test_run_with_early_bird_and_units_shows_the_search(tmp_path, capsys):
    code = main(["run", str(ROOT / "configs" / "quickstart.toml"), "--store", str(tmp_path),
                 "--quiet", *QUICK, "--set", "prune.structure='unit'"])
    out = capsys.readouterr()
    # the preset sets an output rate, which means nothing for units: refused, by name
    assert code == 2 and "prune.output_rate: does not apply with structure = 'unit'" in out.err
    cfg = tmp_path / "units.toml"
    text = (ROOT / "configs" / "quickstart.toml").read_text()
    cfg.write_text("\n".join(line for line in text.splitlines()
                             if not line.startswith("output_rate")))
    code = main(["run", str(cfg), "--store", str(tmp_path), "--quiet", *QUICK,
                 "--set", "earlybird.enabled=true", "--set", "earlybird.every='4it'",
                 "--set", "earlybird.epsilon=0.3", "--set", "prune.structure='unit'"])
    out = capsys.readouterr().out
    assert code == 0 and "drawn at" in out and "steps to find mask" in out
    table = pd.read_csv(next(tmp_path.glob("quickstart-*")) / "levels.csv")
    assert table["earlybird_step"].notna().sum() >= 1


def test_bad_config_fails_before_training_with_one_message(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[train]\nlr = 1.5e-3\noptimiser = "adam"\n[prune]\nrate = 1.5\n'
                   'criterion = "magnitude_incr"\n')
    code = main(["run", str(cfg), "--store", str(tmp_path / "store"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "train.optimiser" in err and "did you mean 'optimizer'" in err
    assert "prune.rate" in err and "1.5" in err
    assert "did you mean 'magnitude_increase'" in err
    assert not (tmp_path / "store").exists()


def test_unknown_override_key(tmp_path, capsys):
    code = main(["run", str(ROOT / "configs" / "quickstart.toml"), "--store", str(tmp_path),
                 "--set", "train.lrr=0.1"])
    assert code == 2 and "did you mean 'lr'" in capsys.readouterr().err


def _lth(*args: str) -> list[str]:
    return [sys.executable, "-m", "lth", *args]


def test_kill_9_mid_level_then_rerun_matches_uninterrupted(tmp_path):
    args = ["run", str(ROOT / "configs" / "quickstart.toml"), "--quiet",
            "--set", "train.duration='400it'", "--set", "train.eval_every='20it'",
            "--set", "train.checkpoint_every='20it'", "--set", "n_levels=1",
            "--set", "model.hidden=[32]"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_lth(*args, "--store", str(tmp_path / "killed")), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    checkpoint = None
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "killed").glob("*/level_001/checkpoint.safetensors"))
        if found:
            checkpoint = found[0]
            break
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.fail("the run finished before it could be killed; make it longer")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint is not None and not (checkpoint.parent / "summary.json").exists()
    subprocess.run(_lth(*args, "--store", str(tmp_path / "killed")), check=True, env=env,
                   capture_output=True)
    subprocess.run(_lth(*args, "--store", str(tmp_path / "straight")), check=True, env=env,
                   capture_output=True)
    killed = next((tmp_path / "killed").iterdir())
    straight = next((tmp_path / "straight").iterdir())
    assert killed.name == straight.name
    for name in ("level_001/final.safetensors", "level_001/history.json",
                 "level_001/mask.safetensors", "level_000/final.safetensors"):
        assert (killed / name).read_bytes() == (straight / name).read_bytes(), name
    assert not list(killed.rglob("*.tmp")), "no half-written files left behind"


def test_compare_ticket_and_control(tmp_path, capsys):
    cfg = str(ROOT / "configs" / "quickstart.toml")
    assert main(["run", cfg, "--store", str(tmp_path), "--quiet", *QUICK]) == 0
    ticket = next(tmp_path.iterdir())
    assert main(["run", cfg, "--store", str(tmp_path), "--quiet", *QUICK,
                 "--set", "reinit.mode='random'", "--set", "name='control'",
                 "--masks-from", str(ticket)]) == 0
    control = next(p for p in tmp_path.iterdir() if p.name.startswith("control-"))
    capsys.readouterr()
    out_csv = tmp_path / "cmp.csv"
    assert main(["compare", str(ticket), str(control), "--labels", "ticket,control",
                 "--csv", str(out_csv)]) == 0
    out = capsys.readouterr().out
    assert "ticket acc@es" in out and "control es it" in out
    table = pd.read_csv(out_csv)
    assert table["level"].tolist() == [0, 1, 2]
    ticket_table = pd.read_csv(ticket / "levels.csv")
    assert table["ticket final acc"].tolist() == ticket_table["final_test_acc"].tolist()
    assert main(["compare", str(ticket), "--labels", "a,b"]) == 2


def test_compare_shows_each_runs_own_density(tmp_path, capsys):
    cfg = str(ROOT / "configs" / "quickstart.toml")
    main(["run", cfg, "--store", str(tmp_path), "--quiet", *QUICK])
    main(["run", cfg, "--store", str(tmp_path), "--quiet", *QUICK, "--set", "prune.rate=0.5",
          "--set", "name='half'"])
    a = next(p for p in tmp_path.iterdir() if p.name.startswith("quickstart-"))
    b = next(p for p in tmp_path.iterdir() if p.name.startswith("half-"))
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--labels", "a,b", "--csv",
                 str(tmp_path / "c.csv")]) == 0
    table = pd.read_csv(tmp_path / "c.csv")
    for label, run in (("a", a), ("b", b)):
        own = pd.read_csv(run / "levels.csv")["pct_remaining"]
        assert table[f"{label} % weights"].tolist() == own.tolist()
    assert table["b % weights"][1] < table["a % weights"][1]
    assert main(["compare", str(a), str(b), "--labels", "x,x"]) == 2
    assert "labels repeat" in capsys.readouterr().err
