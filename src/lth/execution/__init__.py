"""Executors: where trials run. Sequential (in this process), a local process pool, Ray.

Each executor submits ``run_trial`` calls and reports finished ones; the scheduling
(dependencies, retries, progress) lives in :mod:`lth.experiment.group`. Executors with
worker processes ship the user's registry entries to them (:mod:`lth.registry`) and refuse
at creation an entry no worker could import.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import sys
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import ConfigError, LTHError
from ..experiment.trials import Outcome
from ..registry import EntryRef, Registry, portable_entries, restore


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


class WorkerLost(LTHError):
    """A worker process died while running a trial (killed, out of memory, ...)."""


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


def _init_worker(ordinal: Any = None) -> None:
    import torch

    # One intra-op thread per worker: on a shared box more threads only contend.
    torch.set_num_threads(1)
    if ordinal is not None:  # a local pool's worker: the next number, and its own GPU
        from ..experiment.plan import set_worker_ordinal

        with ordinal.get_lock():
            mine = ordinal.value
            ordinal.value += 1
        set_worker_ordinal(mine)


def _in_worker(refs: tuple[EntryRef, ...], path: tuple[str, ...],
               fn: Callable[..., Outcome], *args: Any) -> Outcome:
    # Per call, not in a pool initializer: a failing import is then this trial's error,
    # reported as such, not a pool that breaks with "a process terminated abruptly".
    restore(refs, path=path)
    return fn(*args)


class Local:
    """A pool of spawned worker processes (one thread each); rebuilt if a worker dies.
    With GPUs, worker ``i`` trains on GPU ``i`` modulo their number (``device = "cuda"``);
    by default there is then one worker per GPU, each training its stack."""

    def __init__(self, workers: int | None = None, *, gpu: bool = False):
        self.capacity = workers or (_gpu_count() if gpu else 0) or os.cpu_count() or 1
        # Spawned workers start with this process's sys.path (multiprocessing passes it).
        self._refs = portable_entries()
        self._pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        context = mp.get_context("spawn")
        return cf.ProcessPoolExecutor(self.capacity, mp_context=context,
                                      initializer=_init_worker,
                                      initargs=(context.Value("i", 0),))

    def submit(self, fn: Callable[..., Outcome], *args: Any) -> cf.Future:
        try:
            return self._pool.submit(_in_worker, self._refs, (), fn, *args)
        except cf.process.BrokenProcessPool:
            self._pool = self._new_pool()
            return self._pool.submit(_in_worker, self._refs, (), fn, *args)

    def wait(self, handles: list, timeout: float) -> list:
        done, _ = cf.wait(handles, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return list(done)

    def result(self, handle: cf.Future) -> Outcome:
        try:
            return handle.result()
        except cf.process.BrokenProcessPool as exc:
            raise WorkerLost(f"a worker process died ({exc})") from None

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


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
            else:
                ray.init(num_cpus=workers or os.cpu_count(), **kwargs)
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
    _init_worker()
    return _in_worker(refs, path, fn, *args)


for _name, _cls in (("sequential", Sequential), ("local", Local), ("ray", Ray)):
    EXECUTORS.register(_cls, name=_name)
EXECUTORS.mark_builtin()


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


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
