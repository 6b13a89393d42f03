"""Studies as plug-ins: a toy study registered from this test module — nothing of lth's own
files touched — gets its table in ``lth.load``, its figure and table in ``lth report`` and
its verb in the ``lth`` command; its files go through the store's analysis directory."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from matplotlib.figure import Figure

import lth
from lth.cli import main as lth_main
from lth.cli.main import build_parser
from lth.cli.studies import parse_value, settings_of
from lth.config_schema import Section
from lth.errors import ConfigError
from lth.store import Analysis, Damaged, RunDir, study_name_problem
from lth.studies import STUDIES, Study, flag, register_study

from .test_groups import BASE


@dataclasses.dataclass(frozen=True)
class KeptSettings(Section):
    levels: tuple[int, ...] = flag((0,), "levels to count", metavar="L,L")
    scale: float = flag(1.0, "factor on the weights' L1 norm")

    def problems(self):
        return [] if self.scale > 0 else [("scale", f"got {self.scale}; must be > 0")]


class Kept(Study):
    """Weights kept and the L1 norm of the trained weights, per level."""

    name, settings, help, title = "kept", KeptSettings, "count kept weights", "Kept weights"
    columns = ("level", "kept", "norm")

    def over(self, result, settings):
        rows = []
        for level in settings.levels:
            analysis = self.analysis(result, level=level, settings={"scale": settings.scale})
            if not analysis.finished():
                final = result.weights(level, "final")
                norms = {n: final[n].abs().sum() * settings.scale for n in result.mask(level)}
                analysis.save("norms", norms)
                analysis.write("layers", {n: float(v) for n, v in norms.items()})
                analysis.commit({"level": level, "scale": settings.scale,
                                 "kept": sum(result.mask(level).kept().values()),
                                 "norm": float(sum(norms.values()))})
            rows.append({k: v for k, v in analysis.summary().items() if k != "files"})
        return pd.DataFrame(rows)

    def table(self, frame):
        return frame.assign(kept_per_norm=frame["kept"] / frame["norm"]) if len(frame) \
            else frame

    def figures(self, results):
        table = results.studies[self.name]

        def draw():
            fig = Figure()
            ax = fig.subplots()
            ax.plot(table.level, table.kept, marker="o")
            ax.set(xlabel="level", ylabel="weights kept")
            return fig

        return [("kept_vs_level", "Weights kept by level", draw)]


@pytest.fixture
def kept():
    study = register_study(Kept())
    yield study
    del STUDIES[study.name]


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(BASE)
    return path


def test_a_toy_study_gets_a_verb_a_table_and_a_report(kept, config, tmp_path, capsys):
    store = tmp_path / "runs"
    assert lth_main(["kept", str(config), "--levels", "0,2", "--scale", "2", "--store",
                     str(store), "--csv", str(tmp_path / "kept.csv")]) == 0
    printed = capsys.readouterr().out
    assert printed.split("\n")[0].split() == ["level", "kept", "norm"]
    written = pd.read_csv(tmp_path / "kept.csv")
    assert written.level.tolist() == [0, 2] and (written.scale == 2.0).all()

    loaded = lth.load(store)
    table = loaded.studies["kept"]
    run = lth.Result(table.run_dir.iloc[0])
    for row in table.itertuples():
        assert row.kept == sum(run.mask(row.level).kept().values())
        final = run.weights(row.level, "final")
        l1 = sum(float(final[n].abs().sum()) for n in run.mask(row.level))
        assert row.norm == pytest.approx(2 * l1, rel=1e-6)
    assert table.kept_per_norm.tolist() == (table.kept / table.norm).tolist()  # its table()
    assert table[["experiment", "seed", "level"]].values.tolist() == [["tiny", 0, 0],
                                                                       ["tiny", 0, 2]]
    assert [p.name for p in loaded.to_csv(tmp_path / "csv")][-1] == "kept.csv"
    assert loaded.instability.empty  # the built-in study is there, without rows

    assert lth_main(["report", str(store), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "kept_vs_level.png").exists()
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "Weights kept by level" in page and "<h3>Kept weights</h3>" in page
    assert "<a href='kept.csv'>kept.csv</a>" in page

    # stored through the store: files, then a summary that lists their digests
    analysis = Analysis.of(RunDir(run.path), "kept", level=2, settings={"scale": 2.0})
    assert set(analysis.summary()["files"]) == {"norms.safetensors", "layers.json"}
    layers = analysis.record("layers")
    (analysis.path / "layers.json").write_text("{}")
    damaged = lth.load(store)
    assert damaged.studies["kept"].level.tolist() == [0]
    assert any("kept analysis is damaged" in p and "run `lth kept` again" in p
               for p in damaged.problems)
    assert lth_main(["kept", str(config), "--levels", "2", "--scale", "2", "--store",
                     str(store)]) == 0  # as the problem says: running it again redoes it
    assert analysis.record("layers") == layers
    assert lth.load(store).studies["kept"].level.tolist() == [0, 2]


def test_a_study_s_flags_are_checked_and_unregistered_verbs_are_gone(kept, config, capsys):
    assert lth_main(["kept", str(config), "--scale", "x"]) == 2
    assert "--scale = 'x'; give a number" in capsys.readouterr().err
    assert lth_main(["kept", str(config), "--scale", "-1"]) == 2
    assert "scale: got -1.0; must be > 0" in capsys.readouterr().err
    help_text = build_parser()._subparsers._group_actions[0].choices["kept"].format_help()
    assert "--levels L,L" in help_text and "(default: 1.0)" in help_text
    del STUDIES["kept"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["kept", str(config)])
    register_study(kept)  # for the fixture to remove


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_every_registered_study_has_a_verb_whose_defaults_are_its_settings(name):
    study = STUDIES[name]
    args = build_parser().parse_args([name, "experiment.toml"])
    assert settings_of(study, args) == study.settings()
    assert study_name_problem(name) is None and study.help


def test_instability_is_a_registered_study():
    study = STUDIES["instability"]
    assert study.sweep(study.settings(rewind_steps=(0, 500))) == [
        ("reinit.rewind_step=0",), ("reinit.rewind_step=500",)]
    with pytest.raises(ConfigError, match="points: got 1"):
        study.settings(points=1)


@pytest.mark.parametrize("name", ["levels", "level_001", "summary", "Kept", "a b", "", None])
def test_a_study_name_must_not_clash_with_a_run_s_files_or_tables(name):
    bad = type("Bad", (Kept,), {"name": name})
    with pytest.raises(ConfigError, match="study Bad"):
        register_study(bad)
    assert name not in STUDIES


def test_a_study_named_like_a_command_is_refused_by_the_command():
    register_study(type("Report", (Kept,), {"name": "report"})())
    try:
        with pytest.raises(ConfigError, match="study 'report' has the name of an lth command"):
            build_parser()
    finally:
        del STUDIES["report"]


def test_registering_the_same_class_again_replaces_it_and_another_is_refused(kept):
    register_study(Kept())
    assert isinstance(STUDIES["kept"], Kept)
    other = type("Other", (Kept,), {"name": "kept"})
    with pytest.raises(ConfigError, match="already registered"):
        register_study(other)


def test_list_flags_say_what_they_expect():
    assert parse_value("1.5, 2", tuple[float, ...], "--x") == (1.5, 2.0)
    assert parse_value("true", bool, "--x") is True
    with pytest.raises(ConfigError, match="--levels = 'a,b'; give whole numbers separated"):
        parse_value("a,b", tuple[int, ...], "--levels")


def test_an_analysis_is_finished_by_its_summary_and_reuses_intact_files(tmp_path):
    import torch

    analysis = Analysis.of(RunDir(tmp_path), "toy", level=3)
    assert analysis.path == tmp_path / "toy" / "level_003" and not analysis.finished()
    assert analysis.reuse("w") is None
    analysis.save("w", {"x": torch.ones(3)})
    analysis.checkpoint("w").save({"x": torch.zeros(3)}, {"step": 1})
    assert not analysis.finished()  # files without a summary: interrupted
    again = Analysis.of(RunDir(tmp_path), "toy", level=3)
    assert torch.equal(again.reuse("w")["x"], torch.ones(3))
    again.commit({"level": 3})
    assert again.summary()["files"] == analysis.files  # the reused file is listed
    (again.path / "w.safetensors").write_bytes(b"12345678")
    with pytest.raises(Damaged):
        again.summary()
    with pytest.raises(ValueError, match="file stem"):
        again.write("../escape", {})
    by_settings = Analysis.of(RunDir(tmp_path), "toy", settings={"a": 1})
    assert by_settings.path.name == lth.store.short_hash({"a": 1})
    by_settings.commit({})
    found = lth.store.analyses(RunDir(tmp_path), "toy")
    assert sorted(a.path.name for a in found) == sorted([by_settings.path.name, "level_003"])
