"""lth: Lottery Ticket Hypothesis experiments on any PyTorch module.

>>> import lth
>>> sorted(lth.CRITERIA)[:3]
['grasp', 'large_final', 'large_final_diff_sign']

Every name below loads its module on first use (PEP 562), so ``import lth`` and the
``lth`` command's ``--help`` do not import torch, pandas or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

# name -> the module (relative to lth) that defines it
_FROM = {
    "Results": "analysis", "load": "analysis",
    **dict.fromkeys(["DataConfig", "EarlyBirdConfig", "ExperimentConfig", "ModelConfig",
                     "PruneConfig", "ReinitConfig", "TaskConfig", "TrainConfig",
                     "load_config"], "config"),
    **dict.fromkeys(["Data", "from_arrays", "from_dataset", "load_dataset", "load_digits",
                     "register_dataset"], "data"),
    **dict.fromkeys(["ConfigError", "DataError", "LTHError", "ModelError", "StorageError",
                     "StoreError"], "errors"),
    **dict.fromkeys(["GroupResult", "LotteryModel", "LotteryRobust", "LotterySession",
                     "Result"], "experiment"),
    "load_ticket": "export", "initialize": "init",
    "Mask": "masks", "prunable_names": "masks",
    "MODELS": "models", "create_model": "models", "register_model": "models",
    "CRITERIA": "pruning", "register_criterion": "pruning",
    "REINIT_MODES": "reinitialization", "register_reinit": "reinitialization",
    "get_state": "state", "set_state": "state",
    **dict.fromkeys(["apply_mask", "fit", "prune", "reinit"], "steps"),
    "STUDIES": "studies", "Study": "studies", "register_study": "studies",
    "TASKS": "tasks", "Task": "tasks",
}
_SUBMODULES = ("report", "sparse_ticket")  # exported as modules

__all__ = [  # a literal list, for linters and readers; tests check it against _FROM
    "CRITERIA", "MODELS", "REINIT_MODES", "STUDIES", "TASKS", "ConfigError", "Data",
    "DataConfig", "DataError", "EarlyBirdConfig", "ExperimentConfig", "GroupResult",
    "LTHError", "LotteryModel", "LotteryRobust", "LotterySession", "Mask", "ModelConfig",
    "ModelError", "PruneConfig", "ReinitConfig", "Result", "Results", "StorageError",
    "StoreError", "Study", "Task", "TaskConfig", "TrainConfig", "__version__", "apply_mask",
    "create_model", "fit", "from_arrays", "from_dataset", "get_state", "initialize", "load",
    "load_config", "load_dataset", "load_digits", "load_ticket", "prunable_names", "prune",
    "register_criterion", "register_dataset", "register_model", "register_reinit",
    "register_study", "reinit", "report", "set_state", "sparse_ticket",
]


def __getattr__(name: str) -> Any:
    if name in _FROM:
        value = getattr(importlib.import_module(f".{_FROM[name]}", __name__), name)
    else:
        try:  # any submodule, as `import lth` made them attributes before they were lazy
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value  # once: later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what type checkers and IDEs see: the eager imports of before
    from . import report, sparse_ticket
    from .analysis import Results, load
    from .config import (
        DataConfig,
        EarlyBirdConfig,
        ExperimentConfig,
        ModelConfig,
        PruneConfig,
        ReinitConfig,
        TaskConfig,
        TrainConfig,
        load_config,
    )
    from .data import Data, from_arrays, from_dataset, load_dataset, load_digits, register_dataset
    from .errors import ConfigError, DataError, LTHError, ModelError, StorageError, StoreError
    from .experiment import GroupResult, LotteryModel, LotteryRobust, LotterySession, Result
    from .export import load_ticket
    from .init import initialize
    from .masks import Mask, prunable_names
    from .models import MODELS, create_model, register_model
    from .pruning import CRITERIA, register_criterion
    from .reinitialization import REINIT_MODES, register_reinit
    from .state import get_state, set_state
    from .steps import apply_mask, fit, prune, reinit
    from .studies import STUDIES, Study, register_study
    from .tasks import TASKS, Task
