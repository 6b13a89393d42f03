"""The rest of sparse training on lth's store: gradual magnitude pruning and dynamic sparse
training (SET, RigL), as ``mask_updates.method`` objects (:mod:`lth.sparse.methods`) and
as :class:`~lth.mask_updates.MaskUpdates` anyone can give :func:`lth.fit` or
:func:`lth.train.train_level` (:class:`GradualPruning`, :class:`DropAndGrow`)."""

from .dropgrow import DropAndGrow, update_fractions
from .gradual import GradualPruning, cubic_counts
from .methods import METHODS, LevelMask, Method, Window

__all__ = ["METHODS", "DropAndGrow", "GradualPruning", "LevelMask", "Method", "Window",
           "cubic_counts", "update_fractions"]
