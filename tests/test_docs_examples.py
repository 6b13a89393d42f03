"""The docs run as written: every bash and Python block of README.md and docs/**/*.md.

One test per page (its id is the page's path). A page's blocks run in order in a fresh
directory of their own, which holds links to the repository's ``configs/``, ``scripts/`` and
``notebooks/`` (those that exist), with ``HOME`` in a fresh directory too, so no block sees
a store or a setting from outside its page. The page runs in one process of its own
(tests/docs_driver.py; no torch setting or registration leaks into other tests): its
Python blocks share one namespace, ``__main__`` as in a script saved from the page, and
its bash blocks each run as a script of their own (variables they set do not reach the next
block; what they leave running is stopped) with ``bash -euo pipefail``. The environment is
made here, not inherited: this interpreter's ``bin/`` (so its ``python`` and ``lth``) first
on ``PATH``, the lth under test on ``PYTHONPATH``, ``OMP_NUM_THREADS=1``,
``MPLBACKEND=Agg``, and from the caller only ``LTH_DATA`` and ``LTH_CACHE`` (where datasets
are). Each block gets ``BLOCK_TIMEOUT`` seconds; the first that fails ends the page, and the
failure names the page, the block's line, its code and the end of what it printed.

Which blocks run and the markers that change it are in tests/docs_blocks.py. A page with a
``<!-- docs-test: slow -->`` block is a slow test as a whole (``make test-slow``): its later
blocks may need what the slow one made, so the page runs only where all of it can.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .docs_blocks import Block, DocsBlockError, extract_blocks, runnable

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).resolve().with_name("docs_driver.py")
LINKED = ("configs", "scripts", "notebooks")  # what a page's directory can reach
BLOCK_TIMEOUT = 300.0
SHOWN_LINES = 40  # of a failing block's stdout and of its stderr


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _param(page: str, text: str):
    """The page's test: slow when one of its blocks that run is."""
    try:
        slow = any(b.slow for b in runnable(extract_blocks(text, page)))
    except DocsBlockError:
        slow = False  # the test reports the error
    return pytest.param(page, id=page, marks=[pytest.mark.slow] if slow else [])


def _environment(home: Path) -> dict[str, str]:
    import lth

    return {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin",
                                 "/usr/bin", "/bin"]),
        "HOME": str(home),
        "PYTHONPATH": str(Path(lth.__file__).resolve().parents[1]),  # the lth under test
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",  # figures are written, never shown
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        # Where datasets are found or downloaded to (their content is checked by digest).
        **{k: os.environ[k] for k in ("LTH_DATA", "LTH_CACHE") if k in os.environ},
    }


def _tail(path: Path) -> str:
    """The end of what a block printed, a progress bar redrawn with carriage returns shown
    as it last stood."""
    if not path.exists():
        return ""
    lines = [line.rstrip("\r").rpartition("\r")[2]
             for line in path.read_bytes().decode(errors="replace").rstrip("\n").split("\n")]
    if len(lines) <= SHOWN_LINES:
        return "\n".join(lines)
    return "\n".join([f"[... {len(lines) - SHOWN_LINES} lines]", *lines[-SHOWN_LINES:]])


def _failure(block: Block, meta: Path, i: int, what: str) -> str:
    code = "\n".join(f"{block.first_code_line + k:5d} | {line}"
                     for k, line in enumerate(block.code.splitlines()))
    parts = [f"{block.page}, line {block.line}: the {block.language} block {what}", code]
    for suffix, title in (("out", "stdout"), ("err", "stderr")):
        shown = _tail(meta / f"{i}.{suffix}").rstrip()
        parts.append(f"--- {title} ---\n{shown}" if shown else f"--- {title}: (empty) ---")
    return "\n".join(parts)


def run_page(page: str, text: str, workdir: Path, *, timeout: float = BLOCK_TIMEOUT) -> None:
    """Runs the blocks of ``text`` (the page ``page``) under ``workdir``; fails the test at
    the first block that fails."""
    blocks = runnable(extract_blocks(text, page))
    if not blocks:
        return
    cwd, home, meta = workdir / "page", workdir / "home", workdir / "meta"
    for d in (cwd, home, meta):
        d.mkdir(parents=True)
    for name in LINKED:
        if (ROOT / name).is_dir():
            (cwd / name).symlink_to(ROOT / name, target_is_directory=True)
    spec = {"page": page, "meta": str(meta), "timeout": timeout,
            "blocks": [{"line": b.line, "action": b.action, "code": b.code} for b in blocks]}
    (meta / "spec.json").write_text(json.dumps(spec))
    process = subprocess.Popen([sys.executable, str(DRIVER), str(meta / "spec.json")],
                               cwd=cwd, env=_environment(home), start_new_session=True,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        _, driver_err = process.communicate(timeout=timeout * len(blocks) + 120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, driver_err = process.communicate()
    finally:
        try:  # worker processes a block left behind
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    events = [json.loads(s) for s in (meta / "results.jsonl").read_text().splitlines()] \
        if (meta / "results.jsonl").exists() else []
    ends = [e for e in events if e["event"] == "end"]
    for end in ends:
        if end["status"] != "ok":
            i = end["block"]
            what = end["detail"] if end["status"] == "timeout" else f"failed: {end['detail']}"
            pytest.fail(_failure(blocks[i], meta, i, what), pytrace=False)
    if len(ends) < len(blocks):
        started = [e["block"] for e in events if e["event"] == "start"]
        how = f"exit code {process.returncode}"
        if not started:
            pytest.fail(f"{page}: the page's process stopped before its first block ({how})"
                        f"\n{driver_err.decode(errors='replace')}", pytrace=False)
        i = started[-1]
        pytest.fail(_failure(blocks[i], meta, i, f"never finished: the page's process "
                             f"ended ({how})"), pytrace=False)


@pytest.mark.parametrize("page", [_param(p.relative_to(ROOT).as_posix(), p.read_text())
                                  for p in _pages()])
def test_page_runs_as_written(page, tmp_path):
    try:
        run_page(page, (ROOT / page).read_text(), tmp_path)
    except DocsBlockError as exc:
        pytest.fail(str(exc), pytrace=False)


# The runner itself, on small pages written here.

def _fails(text: str, tmp_path: Path, **kwargs) -> str:
    with pytest.raises(pytest.fail.Exception) as info:
        run_page("p.md", text, tmp_path, **kwargs)
    return str(info.value)


def test_blocks_share_the_page_directory_and_python_namespace(tmp_path):
    page = "\n".join([
        "```python", "from pathlib import Path", "n = 3", "```",
        "```bash", "ls configs/quickstart.toml", "echo \"$OMP_NUM_THREADS $HOME\" > env.txt",
        "command -v lth > lth.txt", "```",
        "```python", "assert n == 3 and __name__ == '__main__'",
        "Path('seen.txt').write_text(Path('env.txt').read_text())", "```",
    ])
    run_page("p.md", page, tmp_path)
    threads, home = (tmp_path / "page" / "seen.txt").read_text().split()
    assert (threads, home) == ("1", str(tmp_path / "home"))
    lth_path = (tmp_path / "page" / "lth.txt").read_text().strip()
    assert lth_path == str(Path(sys.executable).parent / "lth")


def test_a_failing_bash_block_names_its_line_code_and_output_and_stops_the_page(tmp_path):
    page = "# Title\n\n```bash\necho before\nfalse\necho after\n```\n\n```bash\ntouch later\n```\n"
    message = _fails(page, tmp_path)
    assert message.startswith("p.md, line 3: the bash block failed: exit status 1")
    assert "    5 | false" in message
    assert "--- stdout ---\nbefore\n--- stderr ---" in message
    assert "docs-test: exit status 1 at line 5: false" in message
    assert not (tmp_path / "page" / "later").exists()


def test_pipelines_fail_too(tmp_path):
    message = _fails("```sh\nfalse | cat\n```\n", tmp_path)
    assert "failed: exit status 1" in message


def test_a_python_traceback_names_the_page_lines(tmp_path):
    page = "```python\nx = 1\n```\ntext\n```python\n\ny = x + undefined_name\n```\n"
    message = _fails(page, tmp_path)
    assert message.startswith("p.md, line 5: the python block failed: NameError: name "
                              "'undefined_name' is not defined")
    assert ", line 7, in <module>" in message
    assert "y = x + undefined_name" in message.split("--- stderr ---")[1]
    assert "docs_driver" not in message


def test_a_syntax_error_is_a_failure_of_its_block(tmp_path):
    message = _fails("```python\nprint('ok')\n```\n```python\ndef f(:\n```\n", tmp_path)
    assert message.startswith("p.md, line 4: the python block failed: ")
    assert "SyntaxError" in message


def test_doctest_blocks_check_their_output(tmp_path):
    run_page("p.md", "```python\n>>> 2 + 2\n4\n```\n", tmp_path / "a")
    message = _fails("```python\n>>> x = 2\n>>> x + 2\n5\n```\n", tmp_path / "b")
    assert "1 of 2 doctest example(s) failed" in message
    assert "Expected:\n    5\nGot:\n    4" in message


def _gone(pid: int) -> bool:
    """No such process, or a zombie (dead, waiting for whoever adopted it to reap it)."""
    for _ in range(50):
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def test_a_block_past_its_time_is_stopped_with_a_clear_failure(tmp_path):
    message = _fails("```bash\nsleep 30 & echo $! > bg.pid\nsleep 30\n```\n", tmp_path / "a",
                     timeout=1)
    assert message.startswith("p.md, line 1: the bash block timed out after 1 s")
    assert _gone(int((tmp_path / "a" / "page" / "bg.pid").read_text()))
    message = _fails("```python\nimport time\ntime.sleep(30)\n```\n", tmp_path / "b",
                     timeout=1)
    assert message.startswith("p.md, line 1: the python block timed out after 1 s")
    assert ", line 3, in <module>" in message


def test_a_process_that_dies_mid_block_is_reported(tmp_path):
    message = _fails("```python\nimport os\nos._exit(3)\n```\n", tmp_path)
    assert message.startswith("p.md, line 1: the python block never finished: the page's "
                              "process ended (exit code 3)")


def test_what_a_page_leaves_running_is_stopped(tmp_path):
    page = ("```bash\nsleep 30 & echo $! > bash.pid\n```\n```python\nimport subprocess\n"
            "from pathlib import Path\n"
            "Path('python.pid').write_text(str(subprocess.Popen(['sleep', '30']).pid))\n```\n")
    run_page("p.md", page, tmp_path)
    for name in ("bash.pid", "python.pid"):
        assert _gone(int((tmp_path / "page" / name).read_text()))


def test_skipped_and_output_blocks_do_not_run(tmp_path):
    page = ("<!-- docs-test: skip shows a failure -->\n```bash\nfalse\n```\n"
            "<!-- docs-test: output -->\n```bash\nfalse\n```\n```console\n$ false\n```\n")
    run_page("p.md", page, tmp_path)


def test_a_failure_shows_the_end_of_long_output_with_progress_bars_as_they_ended(tmp_path):
    page = ("```bash\nfor i in $(seq 100); do echo line $i; done\n"
            "printf 'bar 10%%\\rbar 50%%\\rbar 100%%\\n' >&2\nfalse\n```\n")
    message = _fails(page, tmp_path)
    out = message.split("--- stdout ---\n")[1].split("\n--- stderr")[0].splitlines()
    assert out[0] == f"[... {100 - SHOWN_LINES} lines]" and out[-1] == "line 100"
    assert len(out) == SHOWN_LINES + 1
    assert "--- stderr ---\nbar 100%\n" in message


def test_a_page_with_a_slow_block_is_a_slow_test():
    slow = "```bash\necho fast\n```\n<!-- docs-test: slow -->\n```bash\nlth run big.toml\n```\n"
    skipped = "<!-- docs-test: skip needs a GPU -->\n```bash\nx\n```\n"
    marks = {name: [m.name for m in _param(name, text).marks] for name, text in
             [("slow.md", slow), ("fast.md", slow.replace("<!-- docs-test: slow -->\n", "")),
              ("skipped.md", skipped), ("bad.md", "<!-- docs-test: sloow -->\n```bash\n```\n")]}
    assert marks == {"slow.md": ["slow"], "fast.md": [], "skipped.md": [], "bad.md": []}


def test_a_page_with_a_bad_marker_fails_naming_it(tmp_path):
    with pytest.raises(DocsBlockError, match="p.md, line 1: unknown docs-test marker 'sloow'"):
        run_page("p.md", "<!-- docs-test: sloow -->\n```bash\necho\n```\n", tmp_path)


def test_worker_processes_import_the_page_as_a_script(tmp_path):
    # lth's local executor spawns workers that import __main__ again, as from a script.
    page = ("```python\nimport multiprocessing as mp\n\ndef square(x):\n    return x * x\n```\n"
            "Text.\n\n```python\nif __name__ == '__main__':\n"
            "    with mp.get_context('spawn').Pool(1) as pool:\n"
            "        assert pool.map(square, [2, 3]) == [4, 9]\n```\n")
    run_page("p.md", page, tmp_path)
