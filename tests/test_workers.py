"""Worker processes (issue 14): a dead worker costs only its own trial, the retry budget
is per trial, workers die with their parent even after ``kill -9``, and a script that would
make every worker fail (no ``__main__`` guard, a class only the main process has) gets one
error before any trial trains."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LONG = ["--set", "train.duration='600it'", "--set", "train.eval_every='100it'",
        "--set", "train.checkpoint_every='50it'", "--set", "n_levels=3",
        "--set", "model.hidden=[256, 256]"]


def lth(*args: str) -> list[str]:
    return [sys.executable, "-m", "lth", *args]


def robust_two_workers(store: Path) -> list[str]:
    """Two long trials (seeds 0 and 1) on a local pool of two workers."""
    return lth("robust", str(ROOT / "configs" / "quickstart.toml"), "--seeds", "0-1",
               "--workers", "2", "--store", str(store), "--quiet", *LONG)


def markers(store: Path) -> dict[str, int]:
    """Running trials: key -> the pid of the worker running it."""
    out = {}
    for path in store.glob("*/running/*.pid"):
        try:
            out[path.stem] = int(path.read_text())
        except (OSError, ValueError):
            pass  # being written or removed
    return out


def wait_for(condition, timeout: float, proc: subprocess.Popen, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"lth exited (rc {proc.returncode}) before {what}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def both(running: dict[str, int]) -> dict[str, int] | None:
    return running if len(running) == 2 else None


def moved(running: dict[str, int], key: str, pid: int) -> dict[str, int] | None:
    """``running`` once ``key`` runs in another worker than ``pid``."""
    return running if running.get(key, pid) != pid else None


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


@pytest.mark.slow
def test_a_killed_worker_costs_only_its_own_trial(tmp_path):
    store = tmp_path / "store"
    proc = subprocess.Popen(robust_two_workers(store), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        running = wait_for(lambda: both(markers(store)), 120, proc, "both trials started")
        victim, other = sorted(running)
        other_pids = {running[other]}
        os.kill(running[victim], signal.SIGKILL)  # once: the trial is retried
        first = running[victim]
        running = wait_for(lambda: moved(markers(store), victim, first), 120, proc,
                           "the killed trial resubmitted")
        other_pids |= {running[other]} if other in running else set()
        os.kill(running[victim], signal.SIGKILL)  # twice: the trial fails
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    (status_file,) = store.glob("*/trials.json")
    status = json.loads(status_file.read_text())["trials"]
    assert status[victim]["status"] == "failed" and "twice" in status[victim]["error"]
    assert status[other]["status"] == "done", status[other]
    assert len(other_pids) == 1  # the healthy trial kept its worker throughout
    assert "Traceback" not in err


@pytest.mark.slow
def test_workers_die_with_their_parent(tmp_path):
    store = tmp_path / "store"
    proc = subprocess.Popen(robust_two_workers(store), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(markers(store)) == 2, 120, proc, "both trials started")
        family = descendants(proc.pid)
        assert set(markers(store).values()) <= family
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(alive(p) for p in family):
        time.sleep(0.1)
    assert not [p for p in family if alive(p)], "processes outlived their parent"
    # A rerun finishes what was started, with no leftover worker writing beside it.
    done = subprocess.run(robust_two_workers(store), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr


SCRIPT = """
import lth

model = lth.create_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=(8,))
robust = lth.LotteryRobust(model, lth.load_digits(), seeds=[0, 1], levels=1,
                           train={{"duration": "20it", "eval_every": "10it"}})
{call}
"""


def run_script(tmp_path: Path, source: str, *, as_file: bool = True
               ) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    if as_file:
        path = tmp_path / "experiment.py"
        path.write_text(source)
        cmd = [sys.executable, str(path)]
    else:
        cmd = [sys.executable, "-c", source]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=env)


def test_a_script_without_a_main_guard_is_refused_before_any_trial(tmp_path):
    call = f"robust.run(store={str(tmp_path / 'store')!r}, executor='local', workers=2)"
    done = run_script(tmp_path, SCRIPT.format(call=call))
    assert done.returncode != 0
    assert "experiment.py, line 7, runs trials in worker processes at import time" in done.stderr
    assert "if __name__ == '__main__':" in done.stderr
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("*.pid"))
    in_function = SCRIPT.format(call=f"def main():\n    {call}\n\nmain()")
    done = run_script(tmp_path, in_function)  # a function called at the top level: refused
    assert done.returncode != 0 and "line 10, runs trials" in done.stderr, done.stderr
    guarded = SCRIPT.format(call="if __name__ == '__main__':\n    r = " + call +
                            "\n    assert (r.trials().status == 'done').all()")
    ok = run_script(tmp_path, guarded)
    assert ok.returncode == 0, ok.stderr


def test_a_model_class_only_the_main_process_has_is_one_error(tmp_path):
    source = textwrap.dedent(f"""
        import torch
        import lth

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Linear(64, 10)

            def forward(self, x):
                return self.fc(x.flatten(1))

        robust = lth.LotteryRobust(Net(), lth.load_digits(), seeds=[0, 1], levels=1,
                                   train={{"duration": "20it", "eval_every": "10it"}})
        robust.run(store={str(tmp_path / 'store')!r}, executor="local", workers=2)
        """)
    start = time.time()
    done = run_script(tmp_path, source, as_file=False)  # like a notebook: no file to import
    assert done.returncode != 0
    assert "could not load the trial" in done.stderr and "move it into a .py module" in \
        done.stderr
    assert time.time() - start < 120
