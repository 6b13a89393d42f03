"""Which device a run trains on: ``train.device`` resolved on this machine and worker."""

from __future__ import annotations

import torch

from .errors import ConfigError

WORKER_ORDINAL: list[int] = []  # in a local pool's worker: its number (lth.execution.Local)


def set_worker_ordinal(ordinal: int) -> None:
    """This process is the local pool's worker ``ordinal``: ``device = "cuda"`` (or
    ``"auto"``) means GPU ``ordinal`` modulo the GPUs here, so workers spread over the GPUs
    (an explicit ``cuda:N`` still wins)."""
    WORKER_ORDINAL[:] = [ordinal]


def choose_device(want: str) -> torch.device:
    """``train.device`` as a torch device, refusing one this machine does not have.
    ``cuda`` (and ``auto`` with a GPU) is this worker's GPU, else the current one."""
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device = {want!r} but CUDA is not available here; "
                              "use device = 'cpu' (or 'auto')")
        count = torch.cuda.device_count()
        if want == "cuda":
            return torch.device("cuda", WORKER_ORDINAL[0] % count if WORKER_ORDINAL else
                                torch.cuda.current_device())
        index = int(want.split(":", 1)[1])
        if index >= count:
            raise ConfigError(f"train.device = {want!r} but this machine (or this Ray task) "
                              f"sees {count} GPU(s), cuda:0 to cuda:{count - 1}; use "
                              "device = 'cuda' to let each worker take its own")
    if want == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device = 'mps' but MPS is not available; use 'cpu'")
    return torch.device(want)
