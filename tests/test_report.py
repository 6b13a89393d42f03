from __future__ import annotations

import re
import shutil
import subprocess

import matplotlib.image
import pytest

import lth
from lth.cli import main
from lth.experiment import LotterySession

from .conftest import FAST_TRAIN

EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def store(tmp_path_factory, digits):
    root = tmp_path_factory.mktemp("report")
    model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                             hidden=(16,))
    LotterySession(model, digits, train=FAST_TRAIN, levels=2, seeds=[0, 1],
                   variants={"ticket": {}, "control": {"control": "random_reinit",
                                                       "of": "ticket"}}
                   ).run(store=root / "store")
    lth.LotteryModel(model, digits, train=FAST_TRAIN, levels=1, name=EVIL
                     ).run(store=root / "evil")
    return root


def test_report_files_tables_and_escaping(store, tmp_path):
    index = lth.report.build_report(store / "store", tmp_path / "out")
    page = index.read_text()
    for name in ("levels.csv", "layers.csv", "curves.csv", "runs.csv",
                 "accuracy_vs_weights.png", "accuracy_vs_weights.svg",
                 "learning_curves_ticket.png", "mask_overlap.png",
                 "mask_overlap_experiments.png"):
        assert (tmp_path / "out" / name).exists(), name
    png = matplotlib.image.imread(tmp_path / "out" / "accuracy_vs_weights.png")
    assert png.shape[0] > 100 and png.shape[1] > 100
    loaded = lth.load(store / "store")
    ticket2 = loaded.levels.query("experiment == 'ticket' and level == 2")
    mean = ticket2.final_test_acc.mean()
    assert f"{mean:.4f}" in page  # the per-level table holds the run's numbers
    assert page.count("data:image/png;base64,") >= 6
    evil = lth.report.build_report(store / "evil", tmp_path / "evil").read_text()
    assert EVIL not in evil and "&lt;img src=x onerror=alert(1)&gt;" in evil


def test_report_cli_and_errors(store, tmp_path, capsys):
    assert main(["report", str(store / "store"), "--out", str(tmp_path / "r")]) == 0
    assert "index.html" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_report_renders_in_a_real_browser(store, tmp_path):
    index = lth.report.build_report(store / "store", tmp_path / "out")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=5000", "--dump-dom", index.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    assert 'data-images-ok="yes"' in dom, "every embedded image decodes in the browser"
    assert len(re.findall(r"<img ", dom)) >= 6
    loaded = lth.load(store / "store")
    for value in loaded.levels.query("seed == 0").early_stop_step.unique():
        assert f"{value:.0f}" in dom
    assert "<table" in dom and "Resolved configurations" in dom


def test_report_when_the_first_run_never_finished_a_level(digits, tmp_path):
    model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                             hidden=(8,))

    def bomb(level, step, end):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lth.LotteryModel(model, digits, train=FAST_TRAIN, levels=1, name="aaa").run(
            store=tmp_path / "st", progress=bomb)
    lth.LotteryModel(model, digits, train=FAST_TRAIN, levels=1, name="zzz").run(
        store=tmp_path / "st")
    page = lth.report.build_report(tmp_path / "st", tmp_path / "out").read_text()
    assert "zzz" in page and page.count("data:image/png;base64,") >= 4


def test_learning_curves_of_long_runs_show_a_spread_of_levels(digits, tmp_path):
    model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                             hidden=(16,))
    train = {**FAST_TRAIN, "duration": "20it", "eval_every": "10it"}
    lth.LotteryModel(model, digits, train=train, levels=9, name="long",
                     prune={"rate": 0.3}).run(store=tmp_path / "store")
    page = lth.report.build_report(tmp_path / "store", tmp_path / "out").read_text()
    assert "6 of 10 levels: 0, 2, 4, 5, 7, 9" in page
    from lth.report.html import _figures

    res = lth.load(tmp_path / "store")
    make = next(fn for stem, _, fn in _figures(res) if stem == "learning_curves_long")
    fig = make()
    labels = sorted(line.get_label() for line in fig.axes[0].lines
                    if line.get_label().startswith("level"))
    assert labels == sorted(f"level {lv}" for lv in (0, 2, 4, 5, 7, 9))
