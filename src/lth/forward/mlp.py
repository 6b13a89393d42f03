"""MLPs as data for neuron pruning: an ``nn.Sequential`` MLP split into its Linear layers
and elementwise activations (:func:`mlp_parts`), and the pruned models of a choice of kept
neurons per hidden layer: physically smaller (:func:`shrink`), masked in the dense shape
(:func:`expand`), and the keep-mask of the latter (:func:`kept_mask`).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError, ModelError
from ..masks import Mask

# Elementwise modules that may sit between Linear layers (they act per neuron, so a
# batched candidate axis passes through them unchanged).
_NOT_ELEMENTWISE = (nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Softmax2d, nn.GLU,
                    nn.MultiheadAttention)
_ELEMENTWISE_EXTRA = (nn.Identity, nn.Dropout, nn.AlphaDropout)


@dataclass(frozen=True)
class MLPParts:
    """A ``Sequential`` MLP in pieces: parameter-free ``prefix`` modules (e.g. Flatten),
    the ``linears`` in order, the elementwise modules after each (``acts``), and the
    child names of the linears."""

    prefix: tuple[tuple[str, nn.Module], ...]
    linears: tuple[nn.Linear, ...]
    acts: tuple[tuple[tuple[str, nn.Module], ...], ...]
    names: tuple[str, ...]

    @property
    def widths(self) -> tuple[int, ...]:
        """Widths of the hidden layers (every Linear but the output layer)."""
        return tuple(lin.out_features for lin in self.linears[:-1])

    def act(self, i: int, z: torch.Tensor) -> torch.Tensor:
        for _, m in self.acts[i]:
            z = m(z)
        return z


def _elementwise(m: nn.Module) -> bool:
    if isinstance(m, _NOT_ELEMENTWISE):
        return False
    return isinstance(m, _ELEMENTWISE_EXTRA) or type(m).__module__ == \
        "torch.nn.modules.activation"


def mlp_parts(model: nn.Module) -> MLPParts:
    """Split an MLP (``nn.Sequential`` of Linear layers and elementwise activations, after
    optional parameter-free input modules such as ``Flatten``) into :class:`MLPParts`.

    >>> mlp_parts(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))).widths
    (3,)
    """
    if not isinstance(model, nn.Sequential):
        raise ModelError(f"forward selection needs an nn.Sequential MLP; got "
                         f"{type(model).__name__} (build one with lth.create_model('mlp', ...))")
    prefix: list = []
    linears: list[nn.Linear] = []
    acts: list[list] = []
    names: list[str] = []
    for name, m in model.named_children():
        if isinstance(m, nn.Linear):
            if linears and m.in_features != linears[-1].out_features:
                raise ModelError(f"layer {name} takes {m.in_features} inputs but the Linear "
                                 f"before it has {linears[-1].out_features} outputs")
            linears.append(m)
            acts.append([])
            names.append(name)
        elif any(True for _ in m.parameters()):
            raise ModelError(f"layer {name} ({type(m).__name__}) has parameters; forward "
                             "selection handles Linear layers with parameter-free "
                             "elementwise activations between them")
        elif not linears:
            prefix.append((name, m))
        elif _elementwise(m):
            acts[-1].append((name, m))
        else:
            raise ModelError(f"layer {name} ({type(m).__name__}) after the first Linear is "
                             "not an elementwise activation (ReLU, Tanh, Dropout, ...)")
    if len(linears) < 2:
        raise ModelError(f"the model has {len(linears)} Linear layer(s); forward selection "
                         "needs at least one hidden layer (Linear -> activation -> Linear)")
    return MLPParts(tuple(prefix), tuple(linears), tuple(tuple(a) for a in acts), tuple(names))


def _index(kept: Sequence[Sequence[int]], i: int, device: torch.device) -> torch.Tensor | None:
    return torch.tensor(list(kept[i]), dtype=torch.long, device=device) \
        if 0 <= i < len(kept) else None


def _blocks(parts: MLPParts, kept: Sequence[Sequence[int]]):
    """Per Linear layer, the (rows, columns) that survive: kept neurons of its own hidden
    layer (all rows for the output layer) by kept neurons of the layer before (all inputs
    for the first layer)."""
    prev = None
    for i, lin in enumerate(parts.linears):
        dev = lin.weight.device
        rows = _index(kept, i, dev)
        rows = torch.arange(lin.out_features, device=dev) if rows is None else rows
        cols = torch.arange(lin.in_features, device=dev) if prev is None else prev
        yield rows, cols
        prev = rows


def _check_kept(parts: MLPParts, kept: Sequence[Sequence[int]]) -> None:
    if len(kept) != len(parts.widths):
        raise ConfigError(f"kept has {len(kept)} layer(s) of indices; the model has "
                          f"{len(parts.widths)} hidden layer(s)")
    for i, (k, w) in enumerate(zip(kept, parts.widths, strict=True)):
        if len(set(k)) != len(k) or any(not 0 <= j < w for j in k):
            raise ConfigError(f"kept[{i}] must hold distinct neuron indices in [0, {w})")


def shrink(model: nn.Module, kept: Sequence[Sequence[int]]) -> nn.Sequential:
    """A physically smaller copy of an MLP keeping neurons ``kept[i]`` of hidden layer ``i``
    (trained weights kept; module names as in ``model``)."""
    parts = mlp_parts(model)
    _check_kept(parts, kept)
    layers = [(n, copy.deepcopy(m)) for n, m in parts.prefix]
    prev = None
    for i, lin in enumerate(parts.linears):
        rows = _index(kept, i, lin.weight.device)
        w = lin.weight.detach()
        w = w if rows is None else w[rows]
        w = w if prev is None else w[:, prev]
        # skip_init: no reset_parameters, so torch's global RNG is left alone.
        new = nn.utils.skip_init(nn.Linear, w.shape[1], w.shape[0], bias=lin.bias is not None,
                                 device=w.device, dtype=w.dtype)
        with torch.no_grad():
            new.weight.copy_(w)
            if lin.bias is not None:
                new.bias.copy_(lin.bias if rows is None else lin.bias[rows])
        layers.append((parts.names[i], new))
        layers += [(n, copy.deepcopy(m)) for n, m in parts.acts[i]]
        prev = rows
    return nn.Sequential(OrderedDict(layers))


def expand(small: nn.Module, model: nn.Module, kept: Sequence[Sequence[int]]) -> nn.Sequential:
    """The masked form of ``small`` (from :func:`shrink`, maybe fine-tuned): a copy of
    ``model`` whose kept weights are ``small``'s and whose pruned ones are exactly zero."""
    parts, sparts = mlp_parts(model), mlp_parts(small)
    _check_kept(parts, kept)
    masked = copy.deepcopy(model)
    mparts = mlp_parts(masked)
    with torch.no_grad():
        for (rows, cols), lin, src in zip(_blocks(mparts, kept), mparts.linears,
                                          sparts.linears, strict=True):
            lin.weight.zero_()
            lin.weight[rows.unsqueeze(1), cols.unsqueeze(0)] = src.weight.to(rows.device)
            if lin.bias is not None:
                lin.bias.zero_()
                lin.bias[rows] = src.bias.to(rows.device)
    return masked


def kept_mask(model: nn.Module, kept: Sequence[Sequence[int]]) -> Mask:
    """Keep-mask of every Linear weight of ``model`` for the neurons ``kept`` per hidden
    layer: the rows of kept neurons, restricted to the columns of kept inputs."""
    parts = mlp_parts(model)
    _check_kept(parts, kept)
    tensors = {}
    for (rows, cols), lin, name in zip(_blocks(parts, kept), parts.linears, parts.names,
                                       strict=True):
        keep = torch.zeros_like(lin.weight, dtype=torch.bool)
        keep[rows.unsqueeze(1), cols.unsqueeze(0)] = True
        tensors[f"{name}.weight"] = keep
    return Mask(tensors)


__all__ = ["MLPParts", "expand", "kept_mask", "mlp_parts", "shrink"]
