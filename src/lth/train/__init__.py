"""Training: one step-based loop over in-memory data, optimizers, lr schedules, evaluation."""

from .evaluate import evaluate
from .loop import Span, batch_order, train_level
from .optim import lr_function, make_optimizer

__all__ = ["Span", "batch_order", "evaluate", "lr_function", "make_optimizer", "train_level"]
