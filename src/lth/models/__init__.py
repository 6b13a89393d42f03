"""Models chosen by name: :data:`MODELS` (``@register_model`` functions; the function's
name is the model's name) and :func:`create_model`.

Builders take ``input_shape`` and ``num_classes`` (filled from the data) plus options.
The built-in ones: the fully connected nets (:mod:`lth.models.dense`) and the paper's
convolutional networks (:mod:`lth.models.paper`).
"""

from __future__ import annotations

from ..errors import unknown_name
from . import dense, paper  # noqa: F401 - importing them registers their models
from .dense import lenet_300_100, mlp  # noqa: F401 - lth.models.mlp, as before
from .registry import (  # noqa: F401 - ModelBuilder: lth.models.ModelBuilder, as before
    MODELS,
    ModelBuilder,
    check_options,
    create_model,
    register_model,
)

MODELS.mark_builtin()  # every model registered so far is lth's own

__all__ = ["MODELS", "check_options", "create_model", "register_model", "unknown_name"]
