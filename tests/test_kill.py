"""Killing workers and the driver loses nothing finished and runs nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lth.store import Trials

LONG = """
name = "k"
n_levels = 1
[model]
name = "mlp"
hidden = [32]
[train]
duration = "400it"
eval_every = "20it"
checkpoint_every = "20it"
batch_size = 32
"""


def lth(*args: str) -> list[str]:
    return [sys.executable, "-m", "lth", *args]


def wait_for(predicate, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.02)
    pytest.fail("timed out waiting for the run to get there")


def statuses(store: Path) -> dict:
    groups = [p.parent for p in store.glob("*/trials.json")]
    return Trials(groups[0]).read() if groups else {}


def final_bytes(store: Path) -> dict[str, bytes]:
    """Trial run directory (named by its config hash, seed included) / level -> weights."""
    return {f"{p.parent.parent.name}/{p.parent.name}": p.read_bytes()
            for p in store.glob("*/trials/*/level_*/final.safetensors")}


def test_kill_a_worker_then_the_driver_then_rerun(tmp_path):
    cfg = tmp_path / "k.toml"
    cfg.write_text(LONG)
    store = tmp_path / "killed"
    args = ["robust", str(cfg), "--seeds", "0-2", "--workers", "2", "--executor", "local",
            "--quiet"]
    driver = subprocess.Popen(lth(*args, "--store", str(store)), start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # 1. kill -9 one worker in the middle of a trial (it has a checkpoint).
        def busy_worker():
            for pid_file in store.glob("*/running/*.pid"):
                key = pid_file.stem
                if list(store.glob(f"*/trials/{key.rsplit('-', 1)[0]}-*/level_*/"
                                   "checkpoint.safetensors")) and pid_file.read_text():
                    return int(pid_file.read_text())
            return None

        os.kill(wait_for(busy_worker), signal.SIGKILL)
        # 2. the driver recovers; once a trial has finished, kill -9 the whole run.
        done = wait_for(lambda: [k for k, v in statuses(store).items() if v["status"] == "done"])
        stamps = {p: p.stat().st_mtime_ns for p in store.glob("*/trials/*/level_*/summary.json")}
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    unfinished = [k for k, v in statuses(store).items() if v["status"] != "done"]
    assert done and unfinished, "the kill must land while work is left"
    # 3. re-run: finishes only what was missing.
    subprocess.run(lth(*args, "--store", str(store)), check=True, capture_output=True)
    assert all(v["status"] == "done" for v in statuses(store).values())
    for path, stamp in stamps.items():
        assert path.stat().st_mtime_ns == stamp, f"{path} was written again"
    straight = [a if a != "local" else "sequential" for a in args]  # same numbers anywhere
    subprocess.run(lth(*straight, "--store", str(tmp_path / "straight")), check=True,
                   capture_output=True)
    assert final_bytes(store) == final_bytes(tmp_path / "straight")
    assert len(final_bytes(store)) == 3 * 2
