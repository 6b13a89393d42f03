"""lth: Lottery Ticket Hypothesis experiments on any PyTorch module.

>>> import lth
>>> sorted(lth.CRITERIA)[:3]
['grasp', 'large_final', 'large_final_diff_sign']
"""

from . import report, sparse_ticket  # noqa: E402
from .analysis import Results, load  # noqa: E402
from .config import (  # noqa: E402
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
from .data import (  # noqa: E402
    Data,
    from_arrays,
    from_dataset,
    load_dataset,
    load_digits,
    register_dataset,
)
from .errors import (  # noqa: E402
    ConfigError,
    DataError,
    LTHError,
    ModelError,
    StorageError,
    StoreError,
)
from .experiment import (  # noqa: E402
    GroupResult,
    LotteryModel,
    LotteryRobust,
    LotterySession,
    Result,
)
from .export import load_ticket  # noqa: E402
from .init import initialize  # noqa: E402
from .masks import Mask, prunable_names  # noqa: E402
from .models import MODELS, create_model, register_model  # noqa: E402
from .pruning import CRITERIA, register_criterion  # noqa: E402
from .reinitialization import REINIT_MODES, register_reinit  # noqa: E402
from .state import get_state, set_state  # noqa: E402
from .steps import apply_mask, fit, prune, reinit  # noqa: E402
from .studies import STUDIES, Study, register_study  # noqa: E402
from .tasks import TASKS, Task  # noqa: E402
from .version import __version__

__all__ = [
    "CRITERIA", "MODELS", "REINIT_MODES", "STUDIES", "TASKS", "Study", "ConfigError", "Data",
    "DataConfig",
    "DataError", "Task", "TaskConfig", "apply_mask", "fit", "get_state", "prune", "reinit",
    "set_state",
    "EarlyBirdConfig", "ExperimentConfig", "GroupResult", "LTHError", "LotteryModel",
    "LotteryRobust", "LotterySession", "Mask", "ModelConfig", "ModelError",
    "PruneConfig", "ReinitConfig", "Result", "Results", "StorageError", "StoreError", "TrainConfig",
    "__version__",
    "create_model", "from_arrays", "from_dataset", "initialize", "load_config", "load_dataset",
    "load_ticket", "sparse_ticket",
    "load", "load_digits", "prunable_names", "register_criterion", "register_dataset",
    "register_model", "register_reinit", "register_study", "report",
]
