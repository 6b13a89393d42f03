"""What the commands say as they run: levels verified and skipped, where an interrupted
level resumes, one line per level on a pipe (no ``\\r`` redraws), and on a terminal (a pty)
notes that never land in the middle of the bar."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--set", "train.duration='40it'", "--set", "train.eval_every='10it'",
         "--set", "n_levels=2", "--set", "model.hidden=[32]"]
# Long enough to interrupt level 1 after a checkpoint or two (about a second a level).
SLOW = ["--set", "train.duration='1200it'", "--set", "train.eval_every='20it'",
        "--set", "train.checkpoint_every='20it'", "--set", "n_levels=2",
        "--set", "model.hidden=[32]"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


def _lth(*args: str) -> list[str]:
    return [sys.executable, "-m", "lth", *args]


def _piped(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(_lth(*args), env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout + done.stderr, "a pipe gets lines, not bar redraws"
    return done


def test_piped_run_prints_a_line_per_level_and_a_rerun_says_it_skipped(tmp_path):
    args = ["run", str(ROOT / "configs" / "quickstart.toml"), "--store", str(tmp_path), *QUICK]
    first = _piped(*args).stderr.splitlines()
    assert [re.sub(r" in [0-9.]+ s$", "", line) for line in first] == [
        "level 0/2: trained steps 0–40", "level 1/2: trained steps 0–40",
        "level 2/2: trained steps 0–40"]
    again = _piped(*args)
    assert again.stderr.splitlines() == ["levels 0–2 verified, skipped"]
    assert "it/s" not in again.stderr and "run directory:" in again.stdout
    # --quiet: no progress lines, but still what was skipped
    quiet = _piped(*args, "--quiet", "--set", "n_levels=3")
    assert quiet.stderr.splitlines() == ["levels 0–2 verified, skipped"]


def _checkpoint_step(path: Path) -> int:
    from lth.store.files import load_tensors

    return int(load_tensors(path)[1]["step"])


def _interrupt_in_level_1(store: Path, **popen) -> tuple[subprocess.Popen, int]:
    """Start the slow run, SIGINT it once level 1 has a checkpoint; (process, its step)."""
    proc = subprocess.Popen(_lth("run", str(ROOT / "configs" / "quickstart.toml"),
                                 "--store", str(store), *SLOW), env=ENV, **popen)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        found = list(store.glob("*/level_001/checkpoint.safetensors"))
        if found:
            break
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.fail("the run finished before it could be interrupted; make it longer")
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    return proc, _checkpoint_step(found[0])


def _said_on_resume(stderr: str) -> list[str]:
    """A resumed run's lines, less the note that it removed a temporary file: a Ctrl-C can
    land in the instant between a checkpoint's temporary file and its cleanup, and removing
    it on the next run is the store's recovery."""
    return [line for line in stderr.splitlines()
            if not line.startswith("lth: removed leftover ")]


def test_interrupted_run_says_so_and_the_rerun_where_it_resumes(tmp_path):
    proc, step = _interrupt_in_level_1(tmp_path, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    assert proc.returncode == 130
    assert err.splitlines()[-1] == "lth: interrupted; re-run the same command to resume"
    assert "\r" not in out + err
    again = _piped("run", str(ROOT / "configs" / "quickstart.toml"), "--store", str(tmp_path),
                   *SLOW)
    lines = _said_on_resume(again.stderr)
    assert lines[:2] == ["level 0 verified, skipped", f"resuming level 1 at step {step} of 1200"]
    assert 0 < step < 1200
    assert re.fullmatch(rf"level 1/2: trained steps {step}–1200 in [0-9.]+ s", lines[2])
    assert re.fullmatch(r"level 2/2: trained steps 0–1200 in [0-9.]+ s", lines[3])


def _on_pty(argv: list[str], *, interrupt_when: Callable[[str], bool] | None = None) -> str:
    """Run ``argv`` with a terminal (a pty, 120 columns) as stdin, stdout and stderr; with
    ``interrupt_when``, send SIGINT once it is true of the output. Returns the output."""
    import fcntl
    import pty
    import struct
    import termios

    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(argv, stdin=child, stdout=child, stderr=child, env=ENV)
    os.close(child)
    out, sent = b"", False
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
        if interrupt_when and not sent and interrupt_when(out.decode(errors="replace")):
            proc.send_signal(signal.SIGINT)
            sent = True
    proc.wait(timeout=60)
    os.close(main)
    return out.decode()


def _shown(output: str) -> list[str]:
    """Each line as the terminal leaves it: the text after its last carriage return."""
    return [line.split("\r")[-1] for line in output.replace("\r\n", "\n").split("\n")]


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")
def test_on_a_terminal_notes_are_never_inside_the_bar(tmp_path):
    argv = _lth("run", str(ROOT / "configs" / "quickstart.toml"), "--store", str(tmp_path),
                *SLOW)
    def in_level_1(out: str) -> bool:  # the bar is there, and a checkpoint to resume from
        return "level 1/2:" in out and any(tmp_path.glob("*/level_001/checkpoint.*"))

    out = _on_pty(argv, interrupt_when=in_level_1)
    assert "it/s" in out, "a terminal gets the bar"
    assert "lth: interrupted; re-run the same command to resume" in _shown(out)
    again = _shown(_on_pty(argv))
    assert "level 0 verified, skipped" in again
    assert any(re.fullmatch(r"resuming level 1 at step \d+ of 1200", line) for line in again)
    finished = _shown(_on_pty(argv))
    assert finished[0] == "levels 0–2 verified, skipped" and "it/s" not in "".join(finished)


def test_piped_robust_run_lines_then_skips_its_finished_trials(tmp_path):
    args = ["robust", str(ROOT / "configs" / "quickstart.toml"), "--seeds", "0-1",
            "--store", str(tmp_path), "--executor", "sequential", *QUICK]
    first = _piped(*args).stderr.splitlines()
    assert first[-1] == "levels 6/6 finished; trials: 2 done, 0 failed"
    assert len(first) <= 6, "at most one line per finished level"
    again = _piped(*args).stderr.splitlines()
    assert again == ["2 trials finished before: verified, skipped"]


def test_interrupted_robust_run_says_it_resumes_the_trial(tmp_path):
    args = ["robust", str(ROOT / "configs" / "quickstart.toml"), "--seeds", "0-1",
            "--store", str(tmp_path), "--executor", "sequential", *SLOW]
    proc = subprocess.Popen(_lth(*args), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if list(tmp_path.glob("*/trials/*/level_001/checkpoint.safetensors")):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, "interrupted while its first trial trained"
    assert err.splitlines()[-1] == "lth: interrupted; re-run the same command to resume"
    again = _said_on_resume(_piped(*args).stderr)
    assert again[0] == "resuming 1 trial interrupted before, from its last checkpoint"
    assert again[-1] == "levels 6/6 finished; trials: 2 done, 0 failed"


def test_log_lines_and_warnings_are_written_above_a_live_bar(monkeypatch):
    import io
    import logging
    import warnings

    from tqdm.auto import tqdm

    from lth.cli.main import _log_to_stderr

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    _log_to_stderr()
    bar = tqdm(total=10, file=err, ncols=60)
    bar.update(3)
    logging.getLogger("lth").info("removed leftover %s", "x.tmp")
    warnings.warn("a note", UserWarning, stacklevel=1)
    bar.update(3)
    bar.close()
    shown = _shown(err.getvalue())
    assert "lth: removed leftover x.tmp" in shown
    assert any(line.endswith("UserWarning: a note") for line in shown)


def test_an_unknown_executor_is_one_error_naming_the_known_ones(capsys):
    from lth.cli import main

    code = main(["robust", str(ROOT / "configs" / "quickstart.toml"), "--seeds", "0",
                 "--executor", "lcoal", *QUICK])
    assert code == 2
    assert "unknown executor 'lcoal'; did you mean 'local'?" in capsys.readouterr().err
