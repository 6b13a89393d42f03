"""Greedy forward selection (Ye et al., ICML 2020, "Good Subnetworks Provably Exist:
Pruning via Greedy Forward Selection") and the pre-training sweep of Wolfe et al. ("How
much pre-training is enough to discover a good subnetwork?").
"""

from .config import (
    ForwardSweepConfig,
    load_forward_config,
    run_forward_sweep,
    sweep_table_text,
)
from .mlp import MLPParts, expand, kept_mask, mlp_parts, shrink
from .selection import (
    ForwardSelection,
    TheorySelection,
    select_neurons,
    select_theory,
    selection_batch,
)
from .sweep import finetune, pretraining_sweep, train_steps

__all__ = ["ForwardSelection", "ForwardSweepConfig", "MLPParts", "TheorySelection", "expand",
           "finetune", "kept_mask", "load_forward_config", "mlp_parts", "pretraining_sweep",
           "run_forward_sweep", "select_neurons", "select_theory", "selection_batch", "shrink",
           "sweep_table_text", "train_steps"]
