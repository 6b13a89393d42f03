"""The local executor: spawned worker processes on this machine, one task each."""

from __future__ import annotations

import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..data import keep_shared, shared_datasets
from ..devices import set_worker_ordinal
from ..errors import ConfigError, LTHError
from ..registry import EntryRef, portable_entries
from .worker import WorkerLost, init_worker, run_in_worker

if TYPE_CHECKING:  # only annotations: lth.experiment imports this package
    from ..experiment.trials import Outcome


class _Task:
    """A call submitted to a :class:`Local` pool: its outcome, or the error that ended it."""

    def __init__(self, fn: Callable[..., Outcome], args: tuple):
        self.call: tuple | None = (fn, args)
        self.done, self.value, self.error = False, None, None

    def finish(self, value: Any = None, error: BaseException | None = None) -> None:
        self.call, self.done, self.value, self.error = None, True, value, error


class _Worker:
    """One spawned worker process and the task it runs."""

    def __init__(self, context: Any, ordinal: int, refs: tuple[EntryRef, ...]):
        self.ordinal = ordinal
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, name=f"lth-worker-{ordinal}",
                                       args=(child, ordinal, refs, os.getpid()), daemon=True)
        self.process.start()
        child.close()
        self.task: _Task | None = None
        self.ready = False  # it sent its first message: it started and imported lth
        self.has_datasets = False  # they go with its first task, once the parent has them

    def close(self) -> None:
        self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)


def _worker_main(conn: Any, ordinal: int, refs: tuple[EntryRef, ...], parent: int) -> None:
    """A worker's loop: run each call it receives, send back ``(value, error)``."""
    import threading
    import time

    def watch_parent() -> None:  # a worker dies with its parent, even by kill -9
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch_parent, daemon=True).start()
    init_worker()
    set_worker_ordinal(ordinal)
    conn.send(("ready", None))
    try:  # before its first task: the datasets the parent loaded (None: stop)
        datasets = conn.recv()
    except EOFError:
        _exit_now()
    except Exception:  # noqa: BLE001 - without them the worker reads the files itself
        datasets = []
    if datasets is None:
        _exit_now()
    keep_shared(datasets)
    while True:
        try:
            message = conn.recv()
        except EOFError:
            _exit_now()
        except Exception as exc:  # noqa: BLE001 - the call could not be unpickled here
            conn.send((None, _unpicklable_call(exc)))
            continue
        if message is None:
            _exit_now()
        fn, args = message
        try:
            reply: tuple = (run_in_worker(refs, (), fn, *args), None)
        except Exception as exc:  # noqa: BLE001 - this call's error, reported as such
            reply = (None, exc)
        try:
            conn.send(reply)
        except Exception as exc:  # noqa: BLE001 - an error that cannot be pickled
            conn.send((None, LTHError(f"{type(exc).__name__}: {exc}")))


def _exit_now() -> None:
    """Leave without the interpreter's teardown: everything the worker writes is already
    on disk, and unloading torch took ~0.45 s per worker, which the parent waited out."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    os._exit(0)


def _unpicklable_call(exc: Exception) -> LTHError:
    return ConfigError(
        f"a worker process could not load the trial ({type(exc).__name__}: {exc}); its "
        "model, task or data refers to something only the main process has (a class or "
        "function defined in a notebook or in the script run directly): move it into a "
        ".py module that you import, or use executor='sequential'")


class Local:
    """Spawned worker processes (one thread each), each running one task at a time.

    A worker that dies (killed, out of memory) costs only its own task, which fails with
    :class:`WorkerLost` (the scheduler resubmits it once); the others run on, and a new
    worker takes its place. Workers exit when their parent does, even after ``kill -9``.
    With GPUs, worker ``i`` trains on GPU ``i`` modulo their number (``device = "cuda"``);
    by default there is then one worker per GPU, each training its stack."""

    def __init__(self, workers: int | None = None, *, gpu: bool = False):
        self.capacity = workers or (_gpu_count() if gpu else 0) or os.cpu_count() or 1
        # Spawned workers start with this process's sys.path (multiprocessing passes it).
        self._refs = portable_entries()
        _check_main_is_guarded()
        self._context = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        self._queue: list[_Task] = []

    def _start_worker(self) -> _Worker:
        # The lowest free number: a worker replacing a dead one takes its number (its GPU).
        taken = {w.ordinal for w in self._workers}
        worker = _Worker(self._context, min(set(range(len(taken) + 1)) - taken), self._refs)
        self._workers.append(worker)
        return worker

    def start(self, tasks: int) -> None:
        """Start the workers for ``tasks`` tasks now, before any is submitted: each takes
        about a second to import torch and lth, time the caller spends checking."""
        while len(self._workers) < min(tasks, self.capacity):
            self._start_worker()

    def submit(self, fn: Callable[..., Outcome], *args: Any) -> _Task:
        task = _Task(fn, args)
        self._queue.append(task)
        self._dispatch()
        return task

    def _dispatch(self) -> None:
        while self._queue:
            idle = next((w for w in self._workers if w.task is None), None)
            if idle is None:
                if len(self._workers) >= self.capacity:
                    return
                idle = self._start_worker()
            task = self._queue.pop(0)
            try:
                if not idle.has_datasets:  # in shared memory: the worker maps them
                    idle.conn.send(shared_datasets())
                    idle.has_datasets = True
                idle.conn.send(task.call)
            except (BrokenPipeError, ConnectionResetError):
                self._queue.insert(0, task)
                self._lose(idle, None)
                continue
            except Exception as exc:  # noqa: BLE001 - the call cannot be pickled
                task.finish(error=ConfigError(
                    f"a trial cannot be sent to a worker process ({type(exc).__name__}: "
                    f"{exc}); its model, task or data must be picklable (no lambdas or "
                    "local functions), or use executor='sequential'"))
                continue
            idle.task = task

    def _lose(self, worker: _Worker, task: _Task | None) -> None:
        self._workers.remove(worker)
        code = worker.process.exitcode
        worker.close()
        if task is None:
            return
        if not worker.ready and code == 1 and _main_is_imported_again():
            # It failed while importing the main script again: every worker would.
            task.finish(error=ConfigError(
                f"a worker process failed while starting (exit code {code}); if you run lth "
                "from a script, put the code that runs the experiment under `if __name__ == "
                "'__main__':` (worker processes import your script again), or use "
                "executor='sequential'"))
        else:
            how = f"killed by signal {-code}" if code is not None and code < 0 else \
                f"exit code {code}"
            task.finish(error=WorkerLost(f"its worker process died ({how})"))

    def _receive(self, worker: _Worker) -> None:
        try:
            kind_or_value, error = worker.conn.recv()
        except (EOFError, OSError):
            self._lose(worker, worker.task)
            return
        except Exception as exc:  # noqa: BLE001 - a reply this process cannot unpickle
            kind_or_value, error = None, LTHError(
                f"a worker's reply could not be read here ({type(exc).__name__}: {exc})")
        if not worker.ready and kind_or_value == "ready":
            worker.ready = True
            return
        task, worker.task = worker.task, None
        if task is not None:
            task.finish(kind_or_value, error)

    def wait(self, handles: list, timeout: float) -> list:
        """The handles that are done, after waiting up to ``timeout`` for one if none is."""
        pending = [w for w in self._workers if w.task is not None or not w.ready]
        if pending:
            block = not any(h.done for h in handles)
            waitables = [w.conn for w in pending] + [w.process.sentinel for w in pending]
            mp.connection.wait(waitables, timeout=timeout if block else 0)
            for worker in pending:
                if worker.conn.poll():
                    self._receive(worker)
                elif not worker.process.is_alive():
                    self._lose(worker, worker.task)
            self._dispatch()
        return [h for h in handles if h.done]

    def result(self, handle: _Task) -> Outcome:
        if handle.error is not None:
            raise handle.error
        return handle.value  # type: ignore[return-value]

    def shutdown(self) -> None:
        """Idle workers exit; busy ones (an error ended the run early) are stopped, their
        trials resuming from their checkpoints next time."""
        self._queue.clear()
        for worker in self._workers:  # all told first, then awaited: they exit together
            if worker.task is None:
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
        for worker in self._workers:
            if worker.task is None:
                worker.process.join(timeout=10)
            worker.close()
        self._workers.clear()


def _main_is_imported_again() -> bool:
    """Spawned workers import the main module again: a script run directly."""
    import __main__

    return (getattr(__main__, "__file__", None) is not None
            and getattr(__main__, "__spec__", None) is None)


def _check_main_is_guarded() -> None:
    """Refuse to start workers from a script that runs the experiment at import time: each
    spawned worker imports the script again and would start it again."""
    import __main__

    if not _main_is_imported_again():
        return  # an interpreter, a notebook, or `python -m`: nothing is imported again
    script = __main__.__file__
    # The script's own top level: the outermost frame running __main__'s module code
    # (a call from a function the top level calls runs at import time too).
    frame, top = sys._getframe(1), None
    while frame is not None:
        if frame.f_globals is vars(__main__) and frame.f_code.co_name == "<module>":
            top = frame
        frame = frame.f_back
    if top is None:
        return
    if not _guarded(script, top.f_lineno):
        raise ConfigError(
            f"{script}, line {top.f_lineno}, runs trials in worker processes at import "
            "time; the workers import the script again and would each start them again. "
            "Put that code under `if __name__ == '__main__':` (or use "
            "executor='sequential')")


def _guarded(script: str, line: int) -> bool:
    """``line`` of ``script`` is inside an ``if __name__ == "__main__":`` block."""
    import ast

    try:
        tree = ast.parse(open(script, encoding="utf-8").read())
    except (OSError, SyntaxError, ValueError):
        return True  # cannot tell: do not refuse
    for node in tree.body:
        if (isinstance(node, ast.If) and "__name__" in ast.unparse(node.test)
                and "__main__" in ast.unparse(node.test)
                and node.lineno <= line <= (node.end_lineno or node.lineno)):
            return True
    return False


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()
