"""Executors: where trials run. Sequential (in this process), a local process pool, Ray.

Each executor submits ``run_trial`` calls and reports finished ones; the scheduling
(dependencies, retries, progress) lives in :mod:`lth.experiment.group`. Executors with
worker processes ship the user's registry entries to them (:mod:`lth.registry`) and refuse
at creation an entry no worker could import.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigError, LTHError
from ..registry import EntryRef, Registry, portable_entries
from .local import Local
from .worker import WorkerLost, init_worker, run_in_worker

if TYPE_CHECKING:  # only annotations: lth.experiment imports this package
    from ..experiment.trials import Outcome


class Executor(Protocol):
    """Runs submitted calls somewhere; ``capacity`` calls at a time are worth submitting."""

    capacity: int

    def submit(self, fn: Callable[..., Outcome], *args: Any) -> Any: ...

    def wait(self, handles: list, timeout: float) -> list: ...

    def result(self, handle: Any) -> Outcome: ...

    def shutdown(self) -> None: ...


EXECUTORS: Registry[Callable[..., Executor]] = Registry("executor", workers=False)
"""Executor factories, called as ``factory(workers, gpu=...)``: ``gpu`` is True when the
trials train on CUDA (a Ray task then asks for a GPU)."""


class Sequential:
    """Runs each trial in this process, when it is submitted."""

    capacity = 1

    def __init__(self, workers: int | None = None, *, gpu: bool = False) -> None:
        # One at a time, whatever asked; on this process's GPU.
        self._done: dict[int, Outcome] = {}
        self._next = 0

    def submit(self, fn: Callable[..., Outcome], *args: Any) -> int:
        self._next += 1
        self._done[self._next] = fn(*args)
        return self._next

    def wait(self, handles: list, timeout: float) -> list:
        return list(handles)

    def result(self, handle: int) -> Outcome:
        return self._done.pop(handle)

    def shutdown(self) -> None:
        pass


class Ray:
    """Ray tasks of one CPU each (and one GPU each when ``gpu``: Ray then shows the task
    only its GPU, which ``device = "cuda"`` uses), on the cluster at ``$RAY_ADDRESS`` or a
    local Ray."""

    def __init__(self, workers: int | None = None, *, gpu: bool = False):
        try:
            import ray
        except ImportError:
            raise ConfigError("executor 'ray' needs Ray: pip install 'lth[ray]'") from None
        refs = portable_entries()  # before starting Ray: a refusal should cost nothing
        # Ray workers do not inherit sys.path; on this machine this path finds the modules.
        self._ship = (refs, tuple(sys.path))
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            address = os.environ.get("RAY_ADDRESS")
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                ray.init(address=address, **kwargs)
            else:  # a new local instance, even where `ray start` left a cluster running
                ray.init(address="local", num_cpus=workers or os.cpu_count(), **kwargs)
        slots = int(ray.cluster_resources().get("GPU" if gpu else "CPU", 0))
        if gpu and not slots:
            raise ConfigError("the trials train on CUDA but the Ray cluster has no GPU; "
                              "start its nodes with GPUs, or use device = 'cpu'")
        slots = max(slots, 1)
        self.capacity = min(workers, slots) if workers else slots
        self._task = ray.remote(num_cpus=1, num_gpus=1 if gpu else 0,
                                max_retries=0)(_ray_trial)

    def submit(self, fn: Callable[..., Outcome], *args: Any) -> Any:
        return self._task.remote(*self._ship, fn, *args)

    def wait(self, handles: list, timeout: float) -> list:
        done, _ = self._ray.wait(handles, num_returns=1, timeout=timeout)
        return done

    def result(self, handle: Any) -> Outcome:
        try:
            return self._ray.get(handle)
        except LTHError:  # a worker that cannot import a user entry: that, not "it died"
            raise
        except self._ray.exceptions.RayError as exc:
            raise WorkerLost(f"the Ray task died ({type(exc).__name__})") from None

    def shutdown(self) -> None:
        if self._started:
            self._ray.shutdown()


def _ray_trial(refs: tuple[EntryRef, ...], path: tuple[str, ...],
               fn: Callable[..., Outcome], *args: Any) -> Outcome:
    init_worker()
    return run_in_worker(refs, path, fn, *args)


for _name, _cls in (("sequential", Sequential), ("local", Local), ("ray", Ray)):
    EXECUTORS.register(_cls, name=_name)
EXECUTORS.mark_builtin()


def make_executor(name: str, workers: int | None = None, *, gpu: bool = False) -> Executor:
    """The executor registered as ``name``, for ``workers`` parallel trials (``None``: one
    per CPU core, or per GPU when ``gpu``: the trials train on CUDA).

    >>> make_executor("sequential").capacity
    1
    """
    if workers is not None and workers < 1:
        raise ConfigError(f"workers = {workers}; give 1 or more (or leave it out: one per "
                          "CPU core)")
    return EXECUTORS[name](workers, gpu=gpu)


__all__ = ["EXECUTORS", "Executor", "Local", "Ray", "Sequential", "WorkerLost",
           "make_executor"]
