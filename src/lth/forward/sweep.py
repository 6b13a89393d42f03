"""How much pre-training is enough? (Wolfe et al., "How much pre-training is enough to
discover a good subnetwork?"): train a dense MLP once, snapshot it at several iteration
counts, and prune each snapshot by greedy forward selection (:func:`select_neurons`).

Wolfe et al. bound the number of pre-training iterations of a two-layer net beyond which
forward selection finds a subnetwork with good training loss (a threshold growing with the
logarithm of the dataset size); :func:`pretraining_sweep` measures that curve.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig
from ..data import Data
from ..errors import ConfigError
from ..masks import Mask, prunable_names
from ..seeding import derive_seed
from ..state import get_state, set_state
from ..train import Callback, Span, train_level
from ..train.evaluate import evaluate
from .selection import ForwardSelection, mlp_parts, select_neurons, selection_batch

Tensors = dict[str, torch.Tensor]
EVAL_BATCH = 4096


class _Snapshots(Callback):
    """Keeps the weights (CPU copies) at some steps of training."""

    def __init__(self, wanted: set[int]):
        self.wanted, self.kept = wanted, {}

    def after_step(self, step: int, state: Callable[[], Tensors]) -> bool:
        if step in self.wanted:
            self.kept[step] = {k: v.detach().to("cpu", copy=True) for k, v in state().items()}
        return False


def train_steps(model: nn.Module, data: Data, steps: int, train: TrainConfig, *, seed: int,
                purpose: str = "pretrain", snapshots: Sequence[int] = ()) -> dict[int, Tensors]:
    """Train ``model`` in place for ``steps`` steps with lth's training loop (``train``'s
    optimizer, learning-rate schedule over ``steps``, the data order of a seed derived from
    ``(seed, purpose)``); returns the model's state (CPU copies) at each step in
    ``snapshots`` (0 = before the first update). Global RNG state is not used.

    >>> import lth
    >>> d = lth.load_digits()
    >>> net = lth.create_model("mlp", input_shape=d.input_shape, num_classes=10, hidden=[8])
    >>> sorted(train_steps(net, d, 5, TrainConfig(), seed=0, snapshots=[0, 5]))
    [0, 5]
    """
    wanted = set(int(s) for s in snapshots)
    if steps < 0 or any(not 0 <= s <= steps for s in wanted):
        raise ConfigError(f"snapshots {sorted(wanted)} must lie in [0, steps={steps}]")
    monitor = _Snapshots(wanted)
    if 0 in wanted:
        monitor.kept[0] = get_state(model)
    # Span.of checks the batch fits the data; this loop's own length replaces train's.
    span = replace(Span.of(train, len(data.y_train)), end=steps, eval_every=steps,
                   checkpoint_every=steps)
    if steps:
        names = prunable_names(model)
        train_level(model, data, train, Mask.ones(model, names), span,
                    seed=derive_seed(seed, purpose), level=0, callbacks=[monitor])
    return monitor.kept


def finetune(model: nn.Module, data: Data, steps: int, train: TrainConfig, *,
             seed: int) -> nn.Module:
    """A copy of ``model`` trained ``steps`` more steps (see :func:`train_steps`). Apply it
    to a selection's physically smaller net; :func:`lth.forward.expand` gives its masked
    form."""
    tuned = copy.deepcopy(model)
    train_steps(tuned, data, steps, train, seed=seed, purpose="finetune")
    tuned.eval()
    return tuned


def _scores(model: nn.Module, data: Data, prefix: str) -> dict[str, float]:
    out = {}
    for split in ("train", "test"):
        scores = evaluate(model, getattr(data, f"x_{split}"), getattr(data, f"y_{split}"),
                          EVAL_BATCH, data.prepare)
        out.update({f"{prefix}_{split}_loss": scores["loss"],
                    f"{prefix}_{split}_acc": scores["acc"]})
    return out


def _weights(model: nn.Module) -> int:
    return sum(lin.weight.numel() for lin in mlp_parts(model).linears)


def _check_iterations(iterations: Sequence[int]) -> list[int]:
    its = list(iterations)
    if not its or any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in its):
        raise ConfigError(f"pretrain_iterations={its!r}; give a non-empty list of "
                          "iteration counts >= 0, e.g. [0, 50, 100, 200, 500]")
    if len(set(its)) != len(its):
        raise ConfigError(f"pretrain_iterations={its!r} repeats a value; list each once")
    return sorted(its)


def pretraining_sweep(model: nn.Module, data: Data, iterations: Sequence[int],
                      train: TrainConfig, *, selection_size: int | None = 1000,
                      tol: float = 0.05, max_width: int | Sequence[int] | None = None,
                      finetune_steps: int = 0, finetune_lr: float | None = None, seed: int = 0,
                      progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Prune snapshots of one training run of ``model`` (left untouched) by forward
    selection; one row per pre-training iteration count.

    Columns: ``pretrain_iterations``; the dense net's ``dense_{train,test}_{loss,acc}`` and
    ``dense_selection_loss`` (on the selection batch); ``width_1`` ... (kept neurons per
    hidden layer; ``dense_width_1`` ... the dense widths), ``neurons``/``neurons_dense``,
    ``weights``/``weights_dense`` (Linear weights) and ``pct_weights``; the subnetwork's
    ``selection_loss`` and ``sub_{train,test}_{loss,acc}``; after ``finetune_steps`` steps
    of fine-tuning (NaN without) ``ft_{train,test}_{loss,acc}``; ``select_seconds``.
    ``table.attrs["traces"]`` maps each iteration count to the selection's per-layer loss
    traces.

    >>> import lth
    >>> d = lth.load_digits()
    >>> net = lth.create_model("mlp", input_shape=d.input_shape, num_classes=10, hidden=[16])
    >>> t = pretraining_sweep(net, d, [0, 20], TrainConfig(), selection_size=200, max_width=4)
    >>> t["pretrain_iterations"].tolist(), bool((t["width_1"] <= 4).all())
    ([0, 20], True)
    """
    its = _check_iterations(iterations)
    if finetune_steps < 0:
        raise ConfigError(f"finetune_steps={finetune_steps}; must be >= 0")
    say = progress or (lambda _msg: None)
    x, y = selection_batch(data, selection_size, seed)
    work = copy.deepcopy(model)
    t0 = time.perf_counter()
    states = train_steps(work, data, its[-1], train, seed=seed, snapshots=its)
    say(f"pre-trained {its[-1]} iterations in {time.perf_counter() - t0:.1f}s")
    tune_cfg = TrainConfig(**{**{k: getattr(train, k) for k in ("optimizer", "momentum",
                                                                 "weight_decay", "betas",
                                                                 "batch_size")},
                              "lr": finetune_lr or train.lr})
    rows, traces = [], {}
    dense_weights = _weights(work)
    for it in its:
        set_state(work, states[it])
        work.eval()
        t0 = time.perf_counter()
        sel = select_neurons(work, x, y, tol=tol, max_width=max_width)
        seconds = time.perf_counter() - t0
        row = _row(it, work, sel, data, x, y, dense_weights, seconds)
        if finetune_steps:
            tuned = finetune(sel.small, data, finetune_steps, tune_cfg, seed=seed)
            row.update(_scores(tuned, data, "ft"))
        else:
            row.update({f"ft_{s}_{m}": math.nan for s in ("train", "test")
                        for m in ("loss", "acc")})
        row["finetune_steps"] = finetune_steps
        rows.append(row)
        traces[it] = sel.losses
        say(f"{it:>6} it: widths {list(sel.kept_widths)}, subnetwork test acc "
            f"{row['sub_test_acc']:.4f} (dense {row['dense_test_acc']:.4f}), "
            f"{seconds:.1f}s")
    table = pd.DataFrame(rows)
    table.attrs["traces"] = traces
    return table


@torch.no_grad()
def _row(it: int, dense: nn.Module, sel: ForwardSelection, data: Data, x: torch.Tensor,
         y: torch.Tensor, dense_weights: int, seconds: float) -> dict[str, float]:
    small = sel.small.eval()
    row: dict[str, float] = {"pretrain_iterations": it}
    row.update(_scores(dense, data, "dense"))
    row["dense_selection_loss"] = sel.dense_loss
    for i, (kept, width) in enumerate(zip(sel.kept_widths, sel.widths, strict=True), start=1):
        row[f"width_{i}"] = kept
        row[f"dense_width_{i}"] = width
    row["neurons"] = sum(sel.kept_widths)
    row["neurons_dense"] = sum(sel.widths)
    row["weights"] = _weights(small)
    row["weights_dense"] = dense_weights
    row["pct_weights"] = 100.0 * row["weights"] / dense_weights
    row["selection_loss"] = float(F.cross_entropy(small(x), y))
    row.update(_scores(small, data, "sub"))
    row["select_seconds"] = seconds
    return row


__all__ = ["finetune", "pretraining_sweep", "train_steps"]
