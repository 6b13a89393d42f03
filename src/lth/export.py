"""The ticket out of a run, for use outside lth.

- ``state_dict``: the level's weights (pruned ones exactly zero) under the model's own
  names: ``model.load_state_dict(...)`` takes them.
- ``pruned``: the model with those weights and ``torch.nn.utils.prune.custom_from_mask``
  applied to each pruned parameter, so that it trains on as a pruned module (the mask is
  re-applied at every forward).
- ``small``: for runs that pruned whole units (``prune.structure = "unit"``), a physically
  smaller module: the dead neurons/channels removed from their layer, its bias and
  BatchNorm, and the inputs of the layers that read them. Its outputs equal the pruned
  model's (checked when it is built).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .errors import ConfigError, ModelError, explained_os_errors, unknown_name
from .masks import Mask, tensor_leaves
from .state import set_state

FORMATS = ("state_dict", "pruned", "small")


def pruned_module(model: nn.Module, weights: dict[str, torch.Tensor], mask: Mask
                  ) -> nn.Module:
    """A copy of ``model`` holding ``weights``, each of ``mask``'s parameters pruned with
    ``torch.nn.utils.prune.custom_from_mask``."""
    if hasattr(model, "lth_layer_kinds"):
        raise ModelError(f"{type(model).__name__} keeps its weights outside torch modules "
                         "(a Keras model), so torch's pruning hooks cannot mask them; export "
                         "format 'state_dict' instead")
    out = copy.deepcopy(model).cpu()
    set_state(out, weights)
    for name, keep in mask.items():
        owner, _, attr = name.rpartition(".")
        torch_prune.custom_from_mask(out.get_submodule(owner), attr, keep.cpu())
    return out


def small_module(model: nn.Module, weights: dict[str, torch.Tensor], mask: Mask,
                 units: list[dict[str, Any]], example: torch.Tensor) -> nn.Module:
    """A copy of ``model`` holding ``weights`` without the units ``mask`` removed;
    ``units``: the run's structure (its config's ``structure.units``); ``example``: an input
    batch on which the outputs are checked to equal the pruned model's."""
    dense = copy.deepcopy(model).cpu()
    set_state(dense, weights)
    mask.apply_(dense)
    out = copy.deepcopy(dense)
    for producer in units:
        keep = mask[producer["name"]].reshape(producer["units"], -1).any(1)
        alive = keep.nonzero().flatten()
        _keep_rows(out, producer["name"], alive)
        if producer["bias"]:
            _keep_rows(out, producer["bias"], alive)
        norms = producer["bn"] if isinstance(producer["bn"], list) else \
            [producer["bn"]] if producer["bn"] else []
        for norm in norms:
            _shrink_norm(out.get_submodule(norm), alive)
        for consumer in producer["consumers"]:
            block = consumer["columns_per_unit"]
            cols = (alive[:, None] * block + torch.arange(block)).flatten()
            _keep_columns(out, consumer["name"], cols)
    dense.eval()
    out.eval()
    with torch.no_grad():
        want, got = list(tensor_leaves(dense(example))), list(tensor_leaves(out(example)))
    if len(want) != len(got) or not all(torch.allclose(a, b, rtol=1e-4, atol=1e-5)
                                        for a, b in zip(want, got, strict=False)):
        raise ModelError("the smaller module's outputs differ from the pruned model's (an "
                         "activation that is not 0 at 0, such as a sigmoid, keeps removed "
                         "units alive); export format 'pruned' instead")
    return out


def _param_owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    owner, _, attr = name.rpartition(".")
    return model.get_submodule(owner), attr


def _keep_rows(model: nn.Module, name: str, rows: torch.Tensor) -> None:
    module, attr = _param_owner(model, name)
    old = getattr(module, attr)
    setattr(module, attr, nn.Parameter(old.detach()[rows].clone(),
                                       requires_grad=old.requires_grad))
    if attr == "weight":
        for field in ("out_features", "out_channels"):
            if hasattr(module, field):
                setattr(module, field, len(rows))


def _keep_columns(model: nn.Module, name: str, cols: torch.Tensor) -> None:
    module, attr = _param_owner(model, name)
    if getattr(module, "groups", 1) != 1:
        raise ModelError(f"{name} is a grouped convolution; its input channels cannot be "
                         "removed one by one; export format 'pruned' instead")
    old = getattr(module, attr)
    setattr(module, attr, nn.Parameter(old.detach()[:, cols].clone(),
                                       requires_grad=old.requires_grad))
    for field in ("in_features", "in_channels"):
        if hasattr(module, field):
            setattr(module, field, len(cols))


def _shrink_norm(norm: nn.Module, alive: torch.Tensor) -> None:
    for attr in ("weight", "bias"):
        t = getattr(norm, attr, None)
        if t is not None:
            setattr(norm, attr, nn.Parameter(t.detach()[alive].clone()))
    for attr in ("running_mean", "running_var"):
        t = getattr(norm, attr, None)
        if t is not None:
            setattr(norm, attr, t[alive].clone())
    norm.num_features = len(alive)


@explained_os_errors
def export(model: nn.Module | None, weights: dict[str, torch.Tensor], mask: Mask,
           fmt: str, *, units: list[dict[str, Any]] | None = None,
           example: torch.Tensor | None = None) -> dict[str, torch.Tensor] | nn.Module:
    """The ticket in format ``fmt`` (see the module docstring)."""
    if fmt not in FORMATS:
        raise ConfigError(unknown_name("export format", fmt, FORMATS))
    if fmt == "state_dict":
        return {k: v.clone() for k, v in weights.items()}
    if model is None:
        raise ConfigError(f"export format {fmt!r} builds a module: give the model the run "
                          "trained (Result.export(level, fmt, model=...))")
    if fmt == "pruned":
        return pruned_module(model, weights, mask)
    if not units:
        raise ConfigError("export format 'small' removes whole units; this run pruned single "
                          "weights (prune.structure = 'weight'): export 'pruned' instead")
    assert example is not None
    return small_module(model, weights, mask, units, example)


__all__ = ["FORMATS", "export", "pruned_module", "small_module"]
