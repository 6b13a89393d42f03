"""Experiment labels name what differs; ``experiment=`` takes a label, a name or an id;
``lth compare`` and ``lth status`` use the same labels."""

from __future__ import annotations

import re

import pandas as pd
import pytest

import lth
from lth.cli import main
from lth.errors import ConfigError

QUICK = {"duration": "20it", "eval_every": "10it"}


def _run(digits, store, **kw):
    model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                             hidden=(16,))
    return lth.LotteryModel(model, digits, train=QUICK, levels=kw.pop("levels", 2),
                            **kw).run(store=store, progress=False)


@pytest.fixture(scope="module")
def three(digits, tmp_path_factory):
    """Three Python-made experiments of one model and name: plain IMP, an early-bird
    search and SET mask updates."""
    store = tmp_path_factory.mktemp("three")
    runs = [_run(digits, store),
            _run(digits, store, earlybird={"enabled": True, "every": "5it", "queue": 2}),
            _run(digits, store, mask_updates={"method": "set", "every": "10it"})]
    return store, runs


def test_python_made_experiments_are_labelled_by_what_differs(three):
    store, _ = three
    labels = sorted(lth.load(store).levels.experiment.unique())
    # Not "experiment · bn_l1=None, bn_l1_strength=None, enabled=False, +6 more · b8bf4c":
    # the keys of a switched-off section and the id are no difference.
    assert labels == ["experiment · earlybird=off, mask_updates=none",
                      "experiment · earlybird=on", "experiment · mask_updates=set"]


def test_labels_list_the_differences_shortest_first_and_keep_defaults_out(digits, tmp_path):
    _run(digits, tmp_path, levels=1)
    _run(digits, tmp_path, levels=1, prune={"rate": 0.5})
    _run(digits, tmp_path, levels=1, prune={"criterion": "random", "scope": "global"})
    res = lth.load(tmp_path)
    assert set(res.runs.experiment) == {
        "experiment · rate=0.2, scope=layer, criterion=large_final",  # all at the defaults
        "experiment · rate=0.5", "experiment · scope=global, criterion=random"}


def _config(**settings):
    return {"identity": {"settings": settings}, "model": "Sequential",
            "data": {"name": "digits"}}


def test_a_section_off_everywhere_or_a_default_everywhere_adds_nothing():
    from lth.labels import experiment_labels

    off = _config(earlybird={"enabled": False}, prune={"rate": 0.3})
    same_off = _config(earlybird={"enabled": False, "queue": 9}, prune={"rate": 0.4})
    labels = experiment_labels([("a", "1", off), ("a", "2", same_off)])
    assert labels == {("a", "1"): "a · rate=0.3", ("a", "2"): "a · rate=0.4"}


def test_the_id_is_shown_only_where_nothing_else_tells_experiments_apart():
    from lth.labels import experiment_labels

    same = _config(prune={"rate": 0.3})
    labels = experiment_labels([("a", "123456789abc", same), ("a", "fedcba987654", same),
                                ("b", "000000000000", same)])
    assert labels == {("a", "123456789abc"): "a · 123456", ("a", "fedcba987654"): "a · fedcba",
                      ("b", "000000000000"): "b"}


def test_a_cut_label_that_would_repeat_shows_everything():
    from lth.labels import experiment_labels

    common = {f"k{i}": i for i in range(5)}  # short: shown first, the cut hides "longer"
    a = _config(train={**common, "longer": 1})
    b = _config(train={**common, "longer": 2})
    base = _config(train={f"k{i}": 9 for i in range(5)} | {"longer": 1})
    labels = experiment_labels([("n", "1", a), ("n", "2", b), ("n", "3", base)])
    assert labels[("n", "1")] != labels[("n", "2")]
    assert "+" not in labels[("n", "2")] and "longer=2" in labels[("n", "2")]
    assert labels[("n", "3")].endswith("+2 more")  # unique when cut: stays cut


TABLE = pd.DataFrame({"experiment": ["q · rate=0.5", "q · rate=0.2", "solo"],
                      "experiment_id": ["ea6bf603d16d", "eb0000000000", "77aa00bb11cc"]})


@pytest.mark.parametrize(("wanted", "found"), [
    ("q · rate=0.2", ["q · rate=0.2"]), ("ea6bf603d16d", ["q · rate=0.5"]),
    ("ea6b", ["q · rate=0.5"]), ("solo", ["solo"]), ("77", ["solo"]),
    (["eb", "solo"], ["q · rate=0.2", "solo"]), (None, list(TABLE.experiment)),
    ("rate=0.2", ["q · rate=0.2"]), ("0.5", ["q · rate=0.5"])])
def test_an_experiment_is_picked_by_label_name_id_id_prefix_or_difference(wanted, found):
    from lth.labels import pick_experiments

    assert pick_experiments(TABLE, wanted) == found


def test_an_ambiguous_or_unknown_experiment_lists_the_candidates():
    from lth.labels import pick_experiments

    with pytest.raises(ConfigError, match=r"'q' is ambiguous: the name of 2 experiments: "
                       r"'q · rate=0.5' \(ea6bf603d16d\); 'q · rate=0.2' \(eb0000000000\)"):
        pick_experiments(TABLE, "q")
    with pytest.raises(ConfigError, match="'e' is ambiguous: the id prefix of 2"):
        pick_experiments(TABLE, "e")
    with pytest.raises(ConfigError, match=r"unknown experiment 'zz'.*'solo' \(77aa00bb11cc\)"):
        pick_experiments(TABLE, "zz")


def test_figures_and_tables_take_an_experiment_id_or_a_name(three):
    from lth.report import figures as F

    store, runs = three
    res = lth.load(store)
    eid = runs[1].config()["experiment_id"]
    table = F.pruning_summary_table(res.layers, experiment=eid)
    assert table.attrs["experiment"] == "experiment · earlybird=on"
    assert F.pruning_summary_table(res, experiment=eid[:5]).attrs["experiment"] == \
        "experiment · earlybird=on"
    F.layer_density(res.layers, experiment=eid)
    F.learning_curves(res.curves, experiment=eid)
    with pytest.raises(ConfigError, match="'experiment' is ambiguous: the name of 3"):
        F.layer_density(res.layers, experiment="experiment")


def test_compare_heads_columns_with_labels_and_prints_gaps_and_integers(digits, tmp_path,
                                                                          capsys):
    a = _run(digits, tmp_path, levels=2)
    b = _run(digits, tmp_path, levels=1, prune={"rate": 0.5})
    c = _run(digits, tmp_path, levels=1, seed=1)
    assert main(["compare", str(a.path), str(b.path), str(c.path)]) == 0
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    assert "experiment · rate=0.2 · seed=0 acc@es" in header
    assert "experiment · rate=0.5 es it" in header and "experiment · rate=0.2 · seed=1" in header
    assert a.path.name not in header  # no directory hashes
    assert "NaN" not in out and "<NA>" not in out and "—" in rows[2]  # b, c lack level 2
    assert "20.0000" not in out and re.search(r"\b20\b", rows[0])  # es it: 20 steps


def test_status_says_what_differs_and_verify_ends_with_a_count(three, capsys, tmp_path):
    store, runs = three
    assert main(["status", str(store), "--verify"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"{runs[1].path.name} (earlybird=on): 3 levels done, finished" in lines
    assert f"{runs[2].path.name} (mask_updates=set): 3 levels done, finished" in lines
    files = [p for r in runs for p in r.path.rglob("*") if p.is_file() and p.name != ".lock"]
    assert lines[-1] == f"{len(files)} files verified, no damage"

    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    mask = copy / runs[0].path.name / "level_001" / "mask.safetensors"
    mask.write_bytes(mask.read_bytes()[:-3] + b"xyz")
    assert main(["status", str(copy), "--verify"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"\d+ files verified, 1 damaged \(listed above\)", out[-1])
    assert any("damaged level_001/mask.safetensors" in line for line in out)
