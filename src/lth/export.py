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
- ``sparse``: the model with each sparse enough ``nn.Linear`` replaced by a
  :class:`lth.sparse_ticket.SparseLinear` (CSR weight, sparse kernels); outputs equal the
  pruned model's (checked when it is built). ``lth.sparse_ticket.save`` writes it as one
  safetensors file with the pruned weights compressed; :func:`load_ticket` (or the
  standalone ``sparse_ticket.load``) reads it back. docs/export.md has the file's layout
  and the measured speed.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .errors import ConfigError, ModelError, explained_os_errors, unknown_name
from .masks import PRUNABLE_MODULES, Mask, tensor_leaves
from .state import set_state

FORMATS = ("state_dict", "pruned", "small", "sparse")
MODEL_KEY = "lth_model"
"""Ticket metadata: the registry model to rebuild (``create_model``'s arguments, JSON)."""


def state_dict_of(model: nn.Module | None, weights: dict[str, torch.Tensor], mask: Mask
                  ) -> dict[str, torch.Tensor]:
    """``weights`` (pruned ones zero) under the keys of ``model.state_dict()``, so that
    ``model.load_state_dict`` takes them: lth's stored state holds a tied weight once and
    every buffer, also those a model leaves out of its ``state_dict`` (``persistent=False``,
    as Hugging Face models register ``position_ids``). Without ``model``: the stored keys."""
    if model is None or hasattr(model, "lth_layer_kinds"):  # a Keras model: its own names
        return {k: v.clone() for k, v in weights.items()}
    out = copy.deepcopy(model).cpu()
    set_state(out, weights)
    mask.apply_(out)
    return {k: v.detach().clone() for k, v in out.state_dict().items()}


def example_input(model: nn.Module, shape: list[int] | tuple[int, ...], dtype: str = "float32",
                  *, n: int = 8) -> torch.Tensor:
    """A seeded batch of ``n`` inputs of the run's kind on which an exported module's outputs
    are checked: floats for float and uint8 data (images are normalised floats when they
    reach the model), token ids below the smallest ``nn.Embedding`` of ``model`` for integer
    data (a float batch would fail in the embedding), booleans for bool data.

    >>> example_input(nn.Embedding(5, 2), [3], "int64").dtype
    torch.int64
    """
    g = torch.Generator().manual_seed(0)
    if dtype == "bool":
        return torch.randint(0, 2, (n, *shape), generator=g).bool()
    if dtype.startswith("int"):  # lth keeps integer inputs as int64 token ids
        sizes = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
        return torch.randint(0, min(sizes, default=2), (n, *shape), generator=g,
                             dtype=getattr(torch, dtype))
    return torch.randn(n, *shape, generator=g)


def _outputs_equal(a: nn.Module, b: nn.Module, example: torch.Tensor) -> bool:
    a.eval()
    b.eval()
    with torch.no_grad():
        want, got = list(tensor_leaves(a(example))), list(tensor_leaves(b(example)))
    return len(want) == len(got) and all(torch.allclose(x, y, rtol=1e-4, atol=1e-5)
                                         for x, y in zip(want, got, strict=False))


def _refuse_keras(model: nn.Module, fmt: str) -> None:
    if hasattr(model, "lth_layer_kinds"):
        raise ModelError(f"{type(model).__name__} keeps its weights outside torch modules "
                         f"(a Keras model), so export format {fmt!r} cannot replace its "
                         "layers; export format 'state_dict' instead")


def pruned_module(model: nn.Module, weights: dict[str, torch.Tensor], mask: Mask
                  ) -> nn.Module:
    """A copy of ``model`` holding ``weights``, each of ``mask``'s parameters pruned with
    ``torch.nn.utils.prune.custom_from_mask``."""
    _refuse_keras(model, "pruned")
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
    if not _outputs_equal(dense, out, example):
        raise ModelError("the smaller module's outputs differ from the pruned model's (an "
                         "activation that is not 0 at 0, such as a sigmoid, keeps removed "
                         "units alive); export format 'pruned' instead")
    return out


def sparse_module(model: nn.Module, weights: dict[str, torch.Tensor], mask: Mask,
                  example: torch.Tensor) -> nn.Module:
    """A copy of ``model`` holding ``weights`` (``mask``'s pruned ones zero), its sparse
    enough ``nn.Linear`` layers running sparse kernels (:func:`lth.sparse_ticket.sparsify`);
    ``example``: an input batch on which the outputs are checked to equal the pruned
    model's."""
    from .sparse_ticket import sparsify

    _refuse_keras(model, "sparse")
    dense = copy.deepcopy(model).cpu()
    set_state(dense, weights)
    mask.apply_(dense)
    kinds = {name: type(_param_owner(dense, name)[0]) for name in mask.names()}
    if not any(issubclass(k, PRUNABLE_MODULES) for k in kinds.values()):
        found = ", ".join(f"{n} ({k.__name__})" for n, k in kinds.items())
        raise ModelError(f"export format 'sparse' compresses the pruned weights of nn.Linear "
                         f"and nn.Conv layers; this run pruned none: {found}; export format "
                         "'state_dict' instead")
    out = sparsify(dense)
    if not _outputs_equal(dense, out, example):
        raise ModelError("the sparse ticket's outputs differ from the pruned model's; export "
                         "format 'pruned' instead, and report this model")
    return out


def model_metadata(spec: dict[str, Any] | None) -> dict[str, str]:
    """Ticket metadata that lets :func:`load_ticket` rebuild the model: ``spec`` holds
    ``create_model``'s arguments (``name``, ``input_shape``, ``num_classes``, ``options``);
    None (a model lth cannot rebuild): no entry."""
    return {} if spec is None else {MODEL_KEY: json.dumps(spec)}


@explained_os_errors
def load_ticket(path: str | os.PathLike[str], model: nn.Module | None = None,
                **kernels: Any) -> nn.Module:
    """The sparse ticket at ``path`` (``lth export RUN --format sparse``): in ``model``
    (the architecture it was exported from) or, by default, in the registry model its
    metadata names; ``kernels``: ``device``, ``max_density``, ``min_weights``,
    ``semi_structured`` (see :mod:`lth.sparse_ticket`)."""
    from .models import create_model
    from .sparse_ticket import load
    from .sparse_ticket import metadata as ticket_metadata

    if model is None:
        metadata = ticket_metadata(path)
        if MODEL_KEY not in metadata:
            raise ConfigError(f"{os.fspath(path)} does not name an lth model (it was exported "
                              "from a run made in Python); pass the model: "
                              "lth.load_ticket(path, model=<the architecture>)")
        spec = json.loads(metadata[MODEL_KEY])
        model = create_model(spec["name"], input_shape=tuple(spec["input_shape"]),
                             num_classes=spec["num_classes"], **spec["options"])
    return load(path, model, **kernels)


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
        return state_dict_of(model, weights, mask)
    if model is None:
        raise ConfigError(f"export format {fmt!r} builds a module: give the model the run "
                          "trained (Result.export(level, fmt, model=...))")
    if fmt == "pruned":
        return pruned_module(model, weights, mask)
    if fmt == "sparse":
        assert example is not None
        return sparse_module(model, weights, mask, example)
    if not units:
        raise ConfigError("export format 'small' removes whole units; this run pruned single "
                          "weights (prune.structure = 'weight'): export 'pruned' instead")
    assert example is not None
    return small_module(model, weights, mask, units, example)


__all__ = ["FORMATS", "example_input", "export", "load_ticket", "model_metadata", "pruned_module",
           "small_module", "sparse_module", "state_dict_of"]
