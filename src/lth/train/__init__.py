"""Training: one step-based loop over in-memory data (one trial or K stacked), masks that
may change at given steps, sparse kernels for sparse layers, optimizers over named state,
lr schedules, evaluation."""

from .evaluate import evaluate
from .loop import (
    Callback,
    Job,
    MaskUpdates,
    OnEval,
    Snapshot,
    Span,
    batch_order,
    sparse_layers,
    stack_key,
    torch_threads,
    train_level,
    train_stack,
)
from .optim import Optimizer, lr_function

__all__ = ["Callback", "Job", "MaskUpdates", "OnEval", "Optimizer", "Snapshot", "Span",
           "batch_order", "evaluate", "lr_function", "sparse_layers", "stack_key",
           "torch_threads", "train_level", "train_stack"]
