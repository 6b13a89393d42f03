"""What runs in every worker process, whatever the executor: its setup, the call that
restores the user's registry entries before running a trial, and the error of a worker
that died."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import LTHError
from ..registry import EntryRef, restore

if TYPE_CHECKING:  # only annotations: lth.experiment imports this package
    from ..experiment.trials import Outcome


class WorkerLost(LTHError):
    """A worker process died while running a trial (killed, out of memory, ...)."""


def init_worker() -> None:
    import torch

    # One intra-op thread per worker: on a shared box more threads only contend.
    torch.set_num_threads(1)
    try:  # and one inter-op thread (torch.jit.fork, ...), settable once, before any op
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # set already (a Ray worker's second task): it stays as it was set


def run_in_worker(refs: tuple[EntryRef, ...], path: tuple[str, ...],
               fn: Callable[..., Outcome], *args: Any) -> Outcome:
    # Per call, not in a pool initializer: a failing import is then this trial's error,
    # reported as such, not a pool that breaks with "a process terminated abruptly".
    restore(refs, path=path)
    return fn(*args)
