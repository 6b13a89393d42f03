"""One IMP step at a time, for notebooks: the functions the IMP loop runs, with its seeds.

``LotteryModel`` is these steps plus planning, storage and resuming; called with the same
settings and seed they give the same numbers bit for bit::

    theta0 = lth.get_state(model)                      # after lth.initialize(...)
    mask = lth.Mask.ones(model, lth.prunable_names(model))
    lth.fit(model, data, mask=mask, seed=0, level=0, train={"duration": "2000it"})
    mask = lth.prune(model, mask, init=theta0, level=1, prune={"rate": 0.2})
    lth.reinit(model, mask, theta0=theta0, level=1)    # rewind the survivors to θ0
    lth.fit(model, data, mask=mask, seed=0, level=1, train={"duration": "2000it"})
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from .config import PruneConfig, ReinitConfig, TrainConfig
from .config_schema import as_section
from .data import Data
from .init import fresh_draw
from .masks import Mask, layer_kinds, output_layer
from .pruning import STRUCTURES, MaskLayout
from .pruning.network import ScoringNetwork
from .reinitialization import REINIT_MODES, reinitialize
from .seeding import derive_seed, generator
from .state import get_state, set_state
from .tasks import Task, get_task
from .train import MaskUpdates, Span, torch_threads, train_level

State = dict[str, torch.Tensor]


def prune(model: nn.Module, mask: Mask, *, init: State, level: int,
          prune: PruneConfig | dict | None = None, seed: int = 0,
          example: torch.Tensor | None = None, final: State | None = None,
          n_levels: int | None = None, data: Data | None = None, batch_size: int = 60,
          task: str | Task = "classification", output: int | str | None = None,
          layout: MaskLayout | None = None) -> Mask:
    """The mask of ``level``: ``mask``'s survivors pruned by the criterion on ``init`` (where
    training began: θ0, or the rewind point) and ``final`` (default: the model's weights
    now), each layer to its scheduled density. ``example``: an input batch, to find the
    output layer for ``output_rate`` (default: the last prunable parameter); ``n_levels``:
    the run's last level, for schedules whose rates depend on it (``target``). Criteria
    that score the network (``snip``, ``grasp``, ``synflow``) read ``data``'s training split
    in batches of ``batch_size`` under ``task``'s loss (on the model's ``output``), as a run
    with ``train.batch_size`` would. ``layout``: the groups and rates a run planned (by
    default those of ``prune`` for the model's masked weights; ``structure = "unit"``
    traces the model on ``example`` to find its units)."""
    cfg = as_section(PruneConfig, prune, "prune")
    network = None if data is None else ScoringNetwork.of(
        model, data, batch_size=batch_size, n_batches=cfg.score_batches, seed=seed,
        level=level, task=get_task(task), output=output)
    if layout is None:
        names = list(mask.names())
        out = output_layer(model, names, example) if example is not None else [names[-1]]
        layout = STRUCTURES[cfg.structure].layout(cfg, model, names, example, out,
                                                  layer_kinds(model),
                                                  n_levels=n_levels or level,
                                                  check_counts=False)
    return layout.next_mask(cfg, level, mask, init,
                            final if final is not None else get_state(model),
                            generator(seed, "prune", level), network)


def reinit(model: nn.Module, mask: Mask, *, theta0: State, level: int,
           reinit: ReinitConfig | dict | None = None, seed: int = 0,
           rewind: State | None = None, initializer: str = "default",
           layout: MaskLayout | None = None) -> State:
    """Set ``model`` to the start of ``level``: the survivors of ``mask`` reinitialised by
    ``reinit.mode`` (rewound to ``rewind``, default θ0; or kept as trained, for the modes
    that keep the trained weights: ``lr_rewind`` / ``finetune``), the pruned weights zero,
    and what ``layout`` removes with them (the bias and BatchNorm of removed units).
    Returns that state."""
    cfg = as_section(ReinitConfig, reinit, "reinit")
    base = get_state(model) if REINIT_MODES[cfg.mode].keeps_trained else (
        rewind if rewind is not None else theta0)
    start = reinitialize(
        cfg, mask, base, theta0,
        fresh=lambda: fresh_draw(model, initializer, derive_seed(seed, "reinit-draw", level)),
        rng=lambda name: generator(seed, "reinit", level, name))
    set_state(model, start)
    if layout is not None:
        layout.finish_start_(model, mask)
        start = get_state(model)
    return start


def apply_mask(model: nn.Module, mask: Mask) -> nn.Module:
    """Zero ``model``'s pruned weights in place; returns the model."""
    mask.apply_(model)
    return model


def fit(model: nn.Module, data: Data, *, mask: Mask, seed: int = 0, level: int = 0,
        train: TrainConfig | dict | None = None, start: int = 0,
        task: str | Task | None = None, output: int | str | None = None,
        mask_updates: MaskUpdates | None = None) -> pd.DataFrame:
    """Train ``model`` on ``data`` from step ``start`` to the end of ``train.duration``,
    ``mask`` enforced at every step; returns the evaluation curves. The data order and
    dropout draws are those of ``level`` of a run with ``seed``. ``mask_updates``: a mask
    that changes at the steps it says (:class:`lth.train.MaskUpdates`); the curves then
    count the updates applied (``mask_updates``)."""
    cfg = as_section(TrainConfig, train, "train")
    span = Span.of(cfg, len(data.y_train), start)
    with torch_threads(cfg.threads):  # as a run does: the same thread count, the same sums
        history = train_level(model, data.to(next(model.parameters()).device), cfg, mask,
                              span, seed=seed, level=level, task=get_task(task), output=output,
                              mask_updates=mask_updates)
    return pd.DataFrame(history)
