"""The local pool's fixed costs (issue 23): its workers train on one thread, map the
datasets the parent loaded instead of reading the files again, and exit at once when the
pool shuts down; a group reads its dataset once per process, whatever the executor, and
its executors give the same weights; the tables at its end need no scipy import."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import lth
from lth.data import DATASETS, kept_datasets, load_dataset
from lth.execution import Local
from lth.experiment.stats import t_quantile

ROBUST = """
name = "counted"
n_levels = 1
[model]
name = "mlp"
hidden = [16]
[data]
name = "counted_digits"
[train]
duration = "20it"
eval_every = "10it"
batch_size = 32
"""


def _worker_view() -> dict:
    """In a worker: its threads, and whether the digits it loads came from the parent."""
    with kept_datasets():
        data = load_dataset("digits")
    return {"threads": torch.get_num_threads(), "interop": torch.get_num_interop_threads(),
            "shared": data.x_train.is_shared(), "identity": data.identity()}


def counted_digits(*, val_size: float = 0.1, split_seed: int = 0) -> lth.Data:
    """The digits, each load counted by a line in $LTH_TEST_LOADS (in any process)."""
    with open(os.environ["LTH_TEST_LOADS"], "a") as f:
        f.write(f"{os.getpid()}\n")
    return lth.load_digits(val_size=val_size, split_seed=split_seed)


def _results(pool: Local, tasks: list) -> list:
    while len(pool.wait(tasks, timeout=1.0)) < len(tasks):
        pass
    return [pool.result(t) for t in tasks]


def test_workers_use_one_thread_and_the_datasets_of_the_parent():
    with kept_datasets():
        parent = load_dataset("digits")
    pool = Local(2)
    try:
        views = _results(pool, [pool.submit(_worker_view) for _ in range(2)])  # one each
        processes = [w.process for w in pool._workers]
    finally:
        pool.shutdown()
    assert len(processes) == 2
    assert views == [{"threads": 1, "interop": 1, "shared": True,
                      "identity": parent.identity()}] * 2
    assert [p.exitcode for p in processes] == [0, 0]  # exited, cleanly


def test_workers_started_early_exit_cleanly_without_a_task():
    pool = Local(2)
    try:
        pool.start(1)
        pool.start(5)  # no more than the pool's capacity
        processes = [w.process for w in pool._workers]
        assert len(processes) == 2
        _results(pool, [pool.submit(os.getpid)])  # one of them gets a call, one none
    finally:
        pool.shutdown()
    assert [p.exitcode for p in processes] == [0, 0]


def test_a_group_reads_its_dataset_once_and_executors_agree(tmp_path, monkeypatch):
    loads = tmp_path / "loads.txt"
    monkeypatch.setenv("LTH_TEST_LOADS", str(loads))
    lth.register_dataset(counted_digits)
    try:
        (tmp_path / "robust.toml").write_text(ROBUST)
        robust = lth.LotteryRobust.from_config(tmp_path / "robust.toml", seeds=[0, 1, 2])
        local = robust.run(store=tmp_path / "local", executor="local", workers=2)
        # Read by the parent's check; its two workers (three trials) took the parent's copy.
        assert loads.read_text().split() == [str(os.getpid())]
        seq = robust.run(store=tmp_path / "seq", executor="sequential")
        assert loads.read_text().split() == [str(os.getpid())]  # kept in this process
    finally:
        del DATASETS["counted_digits"]
    assert _weights(local) == _weights(seq) and len(_weights(seq)) == 6


def _weights(result: lth.GroupResult) -> dict[str, bytes]:
    return {f"{Path(r).name}/{p.parent.name}": p.read_bytes()
            for r in result.trials().run_dir for p in Path(r).glob("level_*/final.safetensors")}


def test_t_quantile_matches_scipy():
    stdtrit = pytest.importorskip("scipy.special").stdtrit
    for df in [*range(1, 60), 99, 100, 1000]:
        assert t_quantile(df) == pytest.approx(float(stdtrit(df, 0.975)), rel=1e-12)
    with pytest.raises(ValueError, match="whole number"):
        t_quantile(0)
