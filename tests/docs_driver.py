"""Runs the blocks of one Markdown page, in order, in the current directory; started by
tests/test_docs_examples.py as ``python docs_driver.py SPEC.json``, one process per page.

Python blocks share one namespace, a ``__main__`` module whose ``__file__`` holds all the
page's Python at the page's own line numbers: tracebacks name the page's lines, and code
that starts worker processes behaves as it does in a script saved from the page (the
workers import that file again). Bash blocks run as ``bash -euo pipefail`` scripts, also
numbered as the page; what a bash block leaves running is stopped when it ends. Each
block's stdout and stderr (its child processes' included) go to ``<meta>/<i>.out`` and
``<i>.err``; ``results.jsonl`` gets a line when a block starts and one when it ends. The
first block that fails or times out ends the page.
"""

from __future__ import annotations

import doctest
import faulthandler
import json
import os
import signal
import subprocess
import sys
import time
import traceback
import types
from pathlib import Path

_DRIVER = sys.modules["__main__"]  # kept: the page gets a __main__ of its own


class BlockTimeout(BaseException):
    """A block ran past its time (a BaseException, so the block's `except Exception`
    cannot swallow it)."""


def _on_alarm(signum, frame):
    raise BlockTimeout


def _page_script(blocks: list[dict], path: Path) -> None:
    """The page's Python blocks as one file, each at its line in the page."""
    lines: list[str] = []
    for block in blocks:
        if block["action"] != "python":
            continue
        code = block["code"].splitlines()
        lines += [""] * (block["line"] - len(lines))
        lines[block["line"]:block["line"] + len(code)] = code
    path.write_text("\n".join(lines) + "\n")


def _capture(meta: Path, i: int) -> None:
    """Points fds 1 and 2 (and so every child process started from here) at block i's
    files."""
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, suffix in ((1, "out"), (2, "err")):
        with open(meta / f"{i}.{suffix}", "wb") as f:
            os.dup2(f.fileno(), fd)


def _page_frames(tb, script: str):
    """The traceback from the first frame in the page's code on (the driver's own frames
    say nothing about the page)."""
    while tb is not None and tb.tb_frame.f_code.co_filename != script:
        tb = tb.tb_next
    return tb


def _run_python(block: dict, module: types.ModuleType, script: str) -> tuple[str, str]:
    try:
        code = compile("\n" * block["line"] + block["code"], script, "exec")
        exec(code, module.__dict__)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            return "failed", f"SystemExit({exc.code!r})"
    except Exception as exc:  # noqa: BLE001 - any error of the page's code is its failure
        traceback.print_exception(type(exc), exc, _page_frames(exc.__traceback__, script))
        return "failed", "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return "ok", ""


def _run_doctest(block: dict, module: types.ModuleType, page: str) -> tuple[str, str]:
    test = doctest.DocTestParser().get_doctest(
        block["code"], module.__dict__, f"{page}:{block['line']}", page, block["line"])
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test, out=sys.stdout.write, clear_globs=False)
    if runner.failures:
        return "failed", (f"{runner.failures} of {runner.tries} doctest example(s) failed "
                          "(details in stdout)")
    return "ok", ""


def _run_bash(block: dict, meta: Path, stem: str, timeout: float) -> tuple[str, str]:
    script = meta / f"{stem}.L{block['line']}.sh"
    # Line 1 reports the failing command; the code starts at its own line in the page.
    trap = "trap 'echo \"docs-test: exit status $? at line $LINENO: $BASH_COMMAND\" >&2' ERR"
    script.write_text(trap + "\n" * block["line"] + block["code"])
    process = subprocess.Popen(["bash", "-euo", "pipefail", str(script)],
                               start_new_session=True)
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return "timeout", f"timed out after {timeout:g} s"
    finally:
        try:  # what the block left running in the background
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return ("ok", "") if code == 0 else ("failed", f"exit status {code}")


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    meta, page, timeout = Path(spec["meta"]), spec["page"], spec["timeout"]
    stem = Path(page).name
    script = meta / f"{stem}.py"
    _page_script(spec["blocks"], script)
    module = types.ModuleType("__main__")
    module.__file__ = str(script)
    sys.modules["__main__"] = module
    sys.path[0] = os.getcwd()  # as for `python page.py` run here: the page's own files import
    signal.signal(signal.SIGALRM, _on_alarm)
    with open(meta / "results.jsonl", "a", buffering=1) as results:
        for i, block in enumerate(spec["blocks"]):
            results.write(json.dumps({"block": i, "event": "start"}) + "\n")
            _capture(meta, i)
            start = time.perf_counter()
            # Backstop for code the alarm cannot interrupt: dump every thread's stack into
            # the block's stderr and exit.
            faulthandler.dump_traceback_later(timeout + 60, exit=True)
            try:
                if block["action"] == "bash":
                    status, detail = _run_bash(block, meta, stem, timeout)
                else:
                    signal.setitimer(signal.ITIMER_REAL, timeout)
                    try:
                        if block["action"] == "doctest":
                            status, detail = _run_doctest(block, module, page)
                        else:
                            status, detail = _run_python(block, module, str(script))
                    finally:
                        signal.setitimer(signal.ITIMER_REAL, 0)
            except BlockTimeout as exc:
                traceback.print_exception(type(exc), exc,
                                          _page_frames(exc.__traceback__, str(script)))
                status, detail = "timeout", f"timed out after {timeout:g} s"
            faulthandler.cancel_dump_traceback_later()
            sys.stdout.flush()
            sys.stderr.flush()
            results.write(json.dumps({"block": i, "event": "end", "status": status,
                                      "detail": detail,
                                      "seconds": time.perf_counter() - start}) + "\n")
            if status != "ok":
                break


if __name__ == "__main__":
    main(sys.argv[1])
