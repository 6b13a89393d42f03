"""A mask that changes at given steps inside a level: :class:`MaskUpdates`.

Gradual magnitude pruning shrinks the mask on a schedule; SET and RigL drop weights and
regrow as many elsewhere (RigL where the dense gradient is largest). The trainer asks the
object after every step whether it is :meth:`~MaskUpdates.due`; when it is, it hands over
the trial's current weights, mask and (if :attr:`~MaskUpdates.gradients`) the step's dense
gradients, and applies the mask it gets back:

- weights the new mask prunes are set to exactly 0;
- the optimizer state (momentum, Adam's moments) of every position whose mask changed,
  dropped or regrown, is set to 0, so a dropped weight stays 0 (see
  :class:`~lth.train.optim.Optimizer`) and a regrown one starts from 0 with fresh moments;
- the update is counted (``mask_updates`` in every history row of such a job) and the job's
  ``mask`` is the last mask when training ends.

IMP is the case with no updates: a :class:`~lth.train.Job` without ``mask_updates``
trains exactly as before. The object's :meth:`~MaskUpdates.state` and the current mask are
part of the level's checkpoints, so a level interrupted after an update resumes
bit-identically.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from .errors import ModelError
from .masks import Mask

Tensors = dict[str, torch.Tensor]


class MaskUpdates(ABC):
    """When and how a level's mask changes while it trains.

    ``due(step)`` is asked once ``step`` steps are done (the numbering of evaluation rows
    and of :meth:`lth.train.Callback.after_step`) and must be a pure function of the step:
    the trainer may ask it again. ``update`` sees the weights after that step's optimizer
    update and, when :attr:`gradients` is True, the dense gradients of the masked weights
    computed in that step (before masking: pruned positions too, what RigL ranks; None
    when fp16 loss scaling skipped that step's update for an overflow). All of them are
    views of the training state: copy what you keep, change nothing in place. The
    optimizer's step counter is not reset for regrown weights (it is one per tensor).
    An object with counters or a generator returns them from :meth:`state` (saved with
    each checkpoint) and takes them back in :meth:`load`.

    >>> import torch
    >>> from lth.masks import Mask
    >>> class HalveAt(MaskUpdates):
    ...     def due(self, step):
    ...         return step == 20
    ...     def update(self, step, weights, mask, gradients):
    ...         new = {}
    ...         for n, keep in mask.items():
    ...             w = weights[n].abs().masked_fill(~keep, float("inf")).flatten()
    ...             drop = w.argsort()[:int(keep.sum()) // 2]
    ...             new[n] = keep.flatten().index_fill(0, drop, False).view_as(keep)
    ...         return Mask(new)
    >>> keep = HalveAt().update(20, {"w": torch.tensor([3., -1., 0., 2.])},
    ...                         Mask({"w": torch.tensor([True, True, False, True])}), None)
    >>> keep["w"].tolist()
    [True, False, False, True]
    """

    #: Whether :meth:`update` needs the dense gradients of the step (costs a copy of the
    #: masked layers' gradients on the steps where it is due).
    gradients: bool = False

    @abstractmethod
    def due(self, step: int) -> bool:
        """Whether the mask changes once ``step`` steps are done."""

    @abstractmethod
    def update(self, step: int, weights: Tensors, mask: Mask, gradients: Tensors | None
               ) -> Mask:
        """The mask from now on, over the same parameters as ``mask`` (the current one)."""

    def state(self) -> tuple[Tensors, dict[str, Any]]:
        """What a checkpoint must keep to continue exactly (tensors, JSON-able values)."""
        return {}, {}

    def load(self, tensors: Tensors, meta: dict[str, Any]) -> None:
        """Continue from what :meth:`state` returned."""
        return  # no state by default (an override is optional, not abstract)


def checked(new: Any, current: Mask, step: int) -> Mask:
    """``new`` if it is a :class:`Mask` over ``current``'s parameters and shapes; else a
    :class:`~lth.errors.ModelError` that says what came back."""
    if not isinstance(new, Mask):
        raise ModelError(f"MaskUpdates.update at step {step} returned a "
                         f"{type(new).__name__}; it must return a lth.masks.Mask")
    if set(new) != set(current):
        raise ModelError(f"the mask update at step {step} is over parameters {sorted(new)}, "
                         f"the level's mask over {sorted(current)}; return a mask for "
                         "every parameter of the current one")
    for n, keep in current.items():
        if new[n].shape != keep.shape:
            raise ModelError(f"the mask update at step {step} gives {n} the shape "
                             f"{tuple(new[n].shape)}; the parameter has {tuple(keep.shape)}")
    return Mask(new.tensors(), order=current.names())
