"""The filesystem fails politely (issue 14): a full disk, a read-only store, a store path
that is a file, names too long or unsafe. Each gives one message that says what, where and
the fix; finished work stays intact and the run resumes once the cause is gone.

Full and read-only disks are real: a small tmpfs mounted for the test (root only; the test
is skipped where mounting is not allowed)."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

import pytest
import torch

import lth
from lth.cli import main
from lth.report.figures import accuracy_vs_weights
from lth.store import RunDir

ROOT = Path(__file__).resolve().parents[1]
TRAIN = {"duration": "30it", "eval_every": "10it", "batch_size": 32,
         "checkpoint_every": "10it"}


class Disk:
    """A tmpfs of ``size`` mounted at ``path``; resizable and remountable read-only."""

    def __init__(self, path: Path, size: str):
        self.path = path
        path.mkdir()
        self._mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))

    def _mount(self, *args: str) -> None:
        done = subprocess.run(["mount", *args], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")

    def remount(self, options: str) -> None:
        self._mount("-o", f"remount,{options}", str(self.path))

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@pytest.fixture
def disk(tmp_path):
    made: list[Disk] = []

    def make(size: str) -> Disk:
        made.append(Disk(tmp_path / f"disk{len(made)}", size))
        return made[-1]

    yield make
    for d in made:
        d.close()


def wide(digits):
    model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                             hidden=(512, 256))
    return lth.initialize(model, "default", seed=0)


def finished_levels(store: Path) -> dict[int, dict]:
    (run,) = [RunDir(p) for p in store.iterdir() if p.is_dir()]
    return {lv: run.level(lv).summary() for lv in range(5) if run.level(lv).has_summary()}


def test_a_full_disk_stops_with_one_message_and_resumes_identically(digits, disk, tmp_path):
    exp = lth.LotteryModel(wide(digits), digits, train=TRAIN, levels=3)
    straight = exp.run(store=tmp_path / "straight")
    small = disk("4m")
    with pytest.raises(lth.StorageError, match=r"no space left on the disk holding .*disk0.*"
                                               r"free some space.*finished work is kept"):
        exp.run(store=small.path)
    kept = finished_levels(small.path)
    for lv in kept:  # whatever finished verifies
        RunDir(next(small.path.iterdir())).level(lv).verify()
    small.remount("size=64m")  # the cause is gone
    resumed = exp.run(store=small.path)
    for level in range(4):
        a, b = straight.weights(level), resumed.weights(level)
        assert all(torch.equal(a[n], b[n]) for n in a)
    assert {lv: s["finished_at"] for lv, s in finished_levels(small.path).items()
            if lv in kept} == {lv: s["finished_at"] for lv, s in kept.items()}  # not redone


def test_a_read_only_store_is_named_and_its_runs_stay_readable(digits, small_mlp, disk,
                                                               capsys):
    store = disk("16m")
    exp = lth.LotteryModel(copy.deepcopy(small_mlp), digits, train=TRAIN, levels=1)
    done = exp.run(store=store.path)
    store.remount("ro")
    with pytest.raises(lth.StorageError, match="read-only filesystem.*remount it writable"):
        exp.replace(levels=2).run(store=store.path)
    assert lth.Result(done.path).table()["level"].tolist() == [0, 1]
    assert main(["status", str(store.path)]) == 0  # reading needs no writing
    code = main(["report", str(store.path), "--out", str(store.path / "report")])
    assert code == 2
    err = capsys.readouterr().err
    assert "read-only filesystem" in err and "Traceback" not in err


def test_a_store_path_that_is_a_file_is_refused_before_training(digits, small_mlp, tmp_path,
                                                                capsys):
    file = tmp_path / "not_a_dir"
    file.write_text("x")
    exp = lth.LotteryModel(copy.deepcopy(small_mlp), digits, train=TRAIN, levels=1)
    with pytest.raises(lth.StorageError, match="not_a_dir.*a file where a directory is needed"):
        exp.run(store=file)
    config = ROOT / "configs" / "quickstart.toml"
    assert main(["run", str(config), "--store", str(file), "--quiet",
                 "--set", "train.duration='20it'"]) == 2
    err = capsys.readouterr().err
    assert "a file where a directory is needed" in err and "Traceback" not in err
    assert file.read_text() == "x"


@pytest.mark.parametrize("name", ["x" * 250, ".", "..", ".hidden", "a/b", "tab\there"])
def test_names_that_cannot_name_a_directory_are_refused(digits, small_mlp, name):
    with pytest.raises(lth.ConfigError, match="name"):
        lth.LotteryModel(small_mlp, digits, name=name)
    with pytest.raises(lth.ConfigError, match="name"):
        lth.LotterySession(small_mlp, digits, name=name, variants={"a": {}})


def test_names_with_math_characters_draw_as_written(digits, small_mlp, tmp_path):
    result = lth.LotteryModel(copy.deepcopy(small_mlp), digits, train=TRAIN, levels=1,
                              name="cost$5^2_x").run(store=tmp_path)
    fig = accuracy_vs_weights(lth.load(result.path).levels)
    fig.savefig(tmp_path / "fig.png", bbox_inches="tight")
    texts = [t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text"))]
    assert any("cost$5^2_x" in t for t in texts)


def test_run_files_follow_the_umask(digits, small_mlp, tmp_path):
    before = os.umask(0o002)  # a group-shared store
    try:
        result = lth.LotteryModel(copy.deepcopy(small_mlp), digits, train=TRAIN,
                                  levels=1).run(store=tmp_path)
    finally:
        os.umask(before)
    files = [p for p in result.path.rglob("*") if p.is_file() and p.suffix != ".lock"]
    assert files and all(p.stat().st_mode & 0o777 == 0o664 for p in files), \
        {p.name: oct(p.stat().st_mode & 0o777) for p in files}


def test_an_unwritable_download_cache_is_named(monkeypatch, disk):
    from .test_datasets import Server, mnist_files, serve_as

    cache = disk("4m")
    cache.remount("ro")
    monkeypatch.setenv("LTH_CACHE", str(cache.path))
    monkeypatch.delenv("LTH_DATA", raising=False)
    files = mnist_files()
    server = Server(files)
    try:
        serve_as(monkeypatch, "mnist", files, server)
        with pytest.raises(lth.DataError, match=r"cannot write to the download cache .*Read-only.*"
                                                r"set \$LTH_CACHE to a writable directory"):
            lth.load_dataset("mnist", val_size=10)
    finally:
        server.close()


def test_an_unwritable_tensorboard_dir_is_one_message(disk, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    logs = disk("4m")
    logs.remount("ro")
    code = main(["run", str(ROOT / "configs" / "quickstart.toml"), "--store",
                 str(tmp_path / "store"), "--quiet", "--tensorboard", str(logs.path / "tb"),
                 "--set", "train.duration='20it'", "--set", "n_levels=1"])
    err = capsys.readouterr().err
    assert code == 2 and "read-only filesystem" in err and "Traceback" not in err


def test_a_full_disk_stops_a_group_run_and_leaves_its_trials_to_resume(digits, disk):
    robust = lth.LotteryRobust(wide(digits), digits, train=TRAIN, levels=2, seeds=[0, 1])
    small = disk("4m")
    with pytest.raises(lth.StorageError, match="no space left"):
        robust.run(store=small.path, executor="sequential")
    (status,) = small.path.glob("*/trials.json")
    assert "failed" not in status.read_text()  # the disk's fault, not the trials'
    small.remount("size=64m")
    result = robust.run(store=small.path, executor="sequential")
    assert (result.trials().status == "done").all()


def test_a_damaged_file_error_crosses_processes_intact(tmp_path):
    import pickle

    from lth.store import Damaged

    again = pickle.loads(pickle.dumps(Damaged(tmp_path / "x", "is missing")))
    assert (again.path, again.problem, str(again)) == (tmp_path / "x", "is missing",
                                                       f"{tmp_path / 'x'} is missing")
