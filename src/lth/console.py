"""Lines for the person at the terminal, never in the middle of a progress bar.

>>> write("levels 0–3 verified, skipped", file=sys.stdout)
levels 0–3 verified, skipped
"""

from __future__ import annotations

import sys
from typing import IO


def write(text: str, *, file: IO[str] | None = None) -> None:
    """Write ``text`` as one line to ``file`` (default: stderr as it is now); a live tqdm
    bar is cleared first and drawn again below it."""
    file = file if file is not None else sys.stderr
    if "tqdm" in sys.modules:  # a bar can only be live if tqdm was imported
        from tqdm.auto import tqdm

        if tqdm._instances:  # noqa: SLF001 - tqdm's own registry of live bars
            tqdm.write(text, file=file)
            return
    print(text, file=file, flush=True)


def is_terminal(file: IO[str] | None = None) -> bool:
    """Whether ``file`` (default: stderr) is a terminal, where bars redraw in place; a pipe
    or a file gets one line per event instead."""
    file = file if file is not None else sys.stderr
    try:
        return file.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False
