"""Structured masks over whole units: output neurons of a Linear, output channels of a ConvNd.

A unit is removed by masking its row / output channel in its layer (the *producer*) and
the input columns / channels that read it in the following layers (the *consumers*); the
bias and BatchNorm entries of dead units are zeroed by :meth:`Structure.zero_dead_`. Masks
stay weight-level :class:`~lth.masks.Mask` objects, so training, rewinding and storage
need nothing new: this module only finds the unit structure of a model (with
``torch.fx``) and converts between unit keep-vectors and weight masks.

With the producer rows and consumer columns masked, a network computes exactly what the
physically smaller network without those units computes; a dead unit's activation is
``f(0)`` (zero for ReLU-like activations after :meth:`Structure.zero_dead_`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from ..errors import ModelError
from ..masks import PRUNABLE_MODULES, Mask

HOWS = ("l1", "l2", "bn_gamma")

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
# Modules and ops that act on each value (or each channel) alone, so every unit maps to
# itself; dropout never mixes values either.
_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU,
    nn.SiLU, nn.Mish, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Dropout,
    nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)
_ELEMENTWISE_OPS = frozenset({
    "relu", "relu_", "relu6", "gelu", "tanh", "tanh_", "sigmoid", "sigmoid_", "leaky_relu",
    "leaky_relu_", "elu", "elu_", "selu", "celu", "silu", "mish", "hardtanh", "hardtanh_",
    "hardswish", "hardsigmoid", "softplus", "dropout", "dropout1d", "dropout2d", "dropout3d",
    "alpha_dropout", "clamp", "clamp_", "clip", "contiguous", "clone",
    # with scalars only (a second tensor operand is refused before these are looked up)
    "add", "add_", "iadd", "sub", "sub_", "isub", "mul", "mul_", "imul", "truediv", "div",
    "div_", "itruediv", "neg"})
_RESHAPE_OPS = frozenset({"flatten", "view", "reshape", "squeeze", "unsqueeze"})
_SHAPE_QUERIES = frozenset({"size", "dim", "numel", "getattr"})  # no values flow on
_POOL = re.compile(r"^(max|avg|adaptiveavg|adaptivemax)pool([123])d$")
_JOINS = {"add": "an addition (residual)", "iadd": "an addition (residual)",
          "sub": "a subtraction of another tensor", "mul": "a multiplication with another "
          "tensor", "imul": "a multiplication with another tensor", "cat": "a concatenation",
          "concat": "a concatenation", "stack": "a stack with other tensors"}


@dataclass(frozen=True)
class Producer:
    """One unit-prunable layer: its weight, units, bias, BatchNorms and consumers.

    ``consumers`` holds ``(weight name, block)``: unit ``c`` is read by the consumer's input
    columns / channels ``[c * block, (c + 1) * block)`` (``block > 1`` after a flatten).
    """

    name: str
    module: str
    units: int
    bias: str | None
    norms: tuple[str, ...]
    consumers: tuple[tuple[str, int], ...]


@dataclass
class _Found:
    """What the paths from one producer reached: BatchNorms and consumers."""

    norms: list[str]
    consumers: list[tuple[str, int]]


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if isinstance(meta, TensorMetadata) else None


def _op(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return type(modules[str(node.target)]).__name__
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target)).lstrip("_")
    return str(node.target)


def _reshaped(shape: tuple[int, ...], dim: int, block: int,
              new: tuple[int, ...]) -> tuple[int, int] | None:
    """Units' (dim, block) after a row-major reshape, or None if a unit stops being one
    contiguous block per outer index (e.g. flattening a Linear's (N, T, F) output)."""
    outer, inner = math.prod(shape[:dim]), math.prod(shape[dim + 1:])
    for d in range(len(new)):
        inner2 = math.prod(new[d + 1:])
        if (math.prod(new[:d]) == outer and new[d] * inner2 == shape[dim] * inner
                and (block * inner) % inner2 == 0):
            return d, block * inner // inner2
    return None


class Structure:
    """Unit structure of a model: for each *producer* (a prunable Linear/Conv weight whose
    units can be removed), its number of units, the BatchNorm that normalises its output,
    its bias, and the *consumer* weights that read its units (input columns / channels;
    after a flatten from a conv to a Linear, channel ``c`` is a block of ``H*W`` columns).

    >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> s = Structure.discover(model, ["0.weight", "2.weight"], torch.zeros(2, 4),
    ...                        output=["2.weight"])
    >>> s.producers, s.units
    (['0.weight'], {'0.weight': 3})
    >>> m = s.expand(Mask({"0.weight": torch.tensor([True, False, True])}),
    ...              ["0.weight", "2.weight"], {"0.weight": (3, 4), "2.weight": (2, 3)})
    >>> m.kept()
    {'0.weight': 8, '2.weight': 4}
    """

    def __init__(self, layers: Sequence[Producer], refused: dict[str, str] | None = None):
        self.layers: dict[str, Producer] = {p.name: p for p in layers}
        self.producers: list[str] = [p.name for p in layers]
        self.units: dict[str, int] = {p.name: p.units for p in layers}
        self.refused: dict[str, str] = dict(refused or {})

    @classmethod
    def discover(cls, model: nn.Module, names: Sequence[str], example: torch.Tensor,
                 output: Sequence[str], *, fixed: Sequence[str] = (),
                 strict: bool = True) -> Structure:
        """Find the producers among ``names`` by tracing ``model`` on ``example``.

        ``output`` and ``fixed`` weights are never producers (their units stay whole) but
        are consumers: their input columns of dead units are masked. A layer whose output
        reaches anything but unit-preserving ops and pruned consumers (a residual addition,
        a concatenation, the model output, an unknown op) is refused: ``strict`` raises one
        ModelError listing them all; ``strict=False`` keeps their units whole and records
        why in :attr:`refused`.
        """
        graph, modules = _trace(model, example)
        canon = {id(p): n for n, p in model.named_parameters()}
        owners: dict[str, list[str]] = {}
        for path, module in model.named_modules():
            for p in module.parameters(recurse=False):
                owners.setdefault(canon[id(p)], []).append(path)
        calls: dict[str, list[fx.Node]] = {}
        for node in graph.nodes:
            if node.op == "call_module":
                calls.setdefault(str(node.target), []).append(node)
        ctx = _Context(modules, canon, set(names), owners, calls)
        skip = set(output) | set(fixed)
        layers: list[Producer] = []
        problems: dict[str, str] = {}
        for name in names:
            paths = [t for t in calls if isinstance(modules[t], PRUNABLE_MODULES)
                     and canon.get(id(modules[t].weight)) == name]
            if name in skip or not paths:
                continue
            if len(owners[name]) > 1:
                problems[name] = (f"its weight is shared by {' and '.join(owners[name])} "
                                  "(weight tying)")
            elif len(paths) > 1 or len(calls[paths[0]]) > 1:
                problems[name] = "its layer is called more than once in forward"
            else:
                found = ctx.follow(calls[paths[0]][0], name)
                if isinstance(found, str):
                    problems[name] = found
                else:
                    layers.append(found)
        if problems and strict:
            lines = "\n".join(f"  {n}: {why}" for n, why in problems.items())
            raise ModelError(
                f"structured pruning cannot remove the units of {len(problems)} layer(s):\n"
                f"{lines}\nkeep their units whole (fixed = {list(problems)}; they are still "
                "masked where they read pruned units), exclude them with prune.exclude = "
                "[...] (then also the layers that feed them), or use structure = 'weight'")
        return cls(layers, problems)

    def unit_mask(self, mask: Mask) -> Mask:
        """Producer -> 1-D bool: a unit is alive iff any weight of its row/channel is kept."""
        return Mask({p: mask[p].reshape(self.units[p], -1).any(1).cpu()
                     for p in self.producers}, order=self.producers)

    def expand(self, units: Mask, names: Sequence[str],
               shapes: dict[str, torch.Size] | dict[str, tuple[int, ...]]) -> Mask:
        """Weight mask over ``names``: rows of dead units and the consumer columns that read
        them False, everything else True."""
        missing = [n for p in self.producers
                   for n in (p, *(c for c, _ in self.layers[p].consumers)) if n not in names]
        if missing:
            raise ModelError(f"expand needs every producer and consumer among the names; "
                             f"missing {sorted(set(missing))}")
        out = {n: torch.ones(tuple(shapes[n]), dtype=torch.bool) for n in names}
        for p in self.producers:
            keep = units[p].cpu().to(torch.bool)
            if keep.shape != (self.units[p],):
                raise ModelError(f"unit mask of {p} has shape {tuple(keep.shape)}; expected "
                                 f"({self.units[p]},)")
            out[p][~keep] = False
            for consumer, block in self.layers[p].consumers:
                out[consumer][:, ~keep.repeat_interleave(block)] = False
        return Mask(out, order=list(names))

    def scores(self, state: dict[str, torch.Tensor], how: str) -> dict[str, torch.Tensor]:
        """Per producer, one score per unit (higher = keep): ``l1`` / ``l2`` norm of the
        unit's weights in ``state``, or ``bn_gamma``: |gamma| of its BatchNorm."""
        if how not in HOWS:
            raise ModelError(f"unknown unit score {how!r}; known: {', '.join(HOWS)}")
        out: dict[str, torch.Tensor] = {}
        for p in self.producers:
            if how != "bn_gamma":
                rows = state[p].detach().float().cpu().reshape(self.units[p], -1)
                out[p] = rows.abs().sum(1) if how == "l1" else rows.norm(dim=1)
                continue
            norms = self.layers[p].norms
            if len(norms) != 1 or f"{norms[0]}.weight" not in state:
                why = ("has no BatchNorm" if not norms else f"has {len(norms)} BatchNorms"
                       if len(norms) > 1 else f"its BatchNorm {norms[0]} has no weight in "
                       "the state (affine=False?)")
                raise ModelError(f"unit score 'bn_gamma' needs one affine BatchNorm after "
                                 f"each layer; {p} {why}; use 'l1' or 'l2' for it")
            out[p] = state[f"{norms[0]}.weight"].detach().float().cpu().abs()
        return out

    @torch.no_grad()
    def zero_dead_(self, model: nn.Module, units: Mask) -> None:
        """Zero the bias entries and BatchNorm weight/bias of dead units, in place.

        Running statistics are left as they are: with gamma = beta = 0 they do not matter.
        """
        for p in self.producers:
            layer = self.layers[p]
            params = [model.get_parameter(layer.bias)] if layer.bias else []
            for norm in layer.norms:
                bn = model.get_submodule(norm)
                params += [t for t in (bn.weight, bn.bias) if t is not None]
            for t in params:
                t[~units[p].to(t.device, torch.bool)] = 0

    def describe(self) -> list[dict]:
        """One row per producer: name, units, bn, bias and consumers (for docs/reports)."""
        return [{"name": p.name, "units": p.units,
                 "bn": p.norms[0] if len(p.norms) == 1 else list(p.norms) or None,
                 "bias": p.bias,
                 "consumers": [{"name": c, "columns_per_unit": b} for c, b in p.consumers]}
                for p in self.layers.values()]

    def __repr__(self) -> str:
        return f"Structure({len(self.producers)} producers, {sum(self.units.values())} units)"


def _trace(model: nn.Module, example: torch.Tensor) -> tuple[fx.Graph, dict[str, nn.Module]]:
    """fx graph with shapes from one eval-mode, no-grad forward; training flags restored."""
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, ...)
        raise ModelError(f"structured pruning needs torch.fx to trace {type(model).__name__}, "
                         f"which failed ({type(exc).__name__}: {exc}); use structure = "
                         "'weight' for this model") from exc
    flags = {m: m.training for m in model.modules()}
    try:
        gm.eval()
        with torch.no_grad():
            ShapeProp(gm).propagate(example)
    except Exception as exc:  # a forward that fails while recording shapes
        raise ModelError(f"could not run {type(model).__name__} on an example of shape "
                         f"{tuple(example.shape)} to find its structure ({type(exc).__name__}:"
                         f" {exc}); use structure = 'weight'") from exc
    finally:
        for m, flag in flags.items():
            m.training = flag
    return gm.graph, dict(gm.named_modules())


@dataclass
class _Context:
    modules: dict[str, nn.Module]
    canon: dict[int, str]
    names: set[str]
    owners: dict[str, list[str]]
    calls: dict[str, list[fx.Node]]

    def follow(self, start: fx.Node, name: str) -> Producer | str:
        """The producer record of ``start``'s layer, or why its units cannot be removed."""
        module = self.modules[str(start.target)]
        shape = _shape(start)
        if shape is None:
            return "its output shape is unknown"
        spatial = 0 if isinstance(module, nn.Linear) else module.weight.dim() - 2
        # (node, dim, block): the units lie along `dim`, `block` entries each
        todo = [(start, len(shape) - spatial - 1, 1)]
        found = _Found([], [])
        seen: set[tuple[fx.Node, int, int]] = set()
        while todo:
            node, dim, block = todo.pop()
            if (node, dim, block) in seen:
                continue
            seen.add((node, dim, block))
            for user in node.users:
                step = self._step(node, user, dim, block, found)
                if isinstance(step, str):
                    return f"its output reaches {step}"
                if step is not None:
                    todo.append((user, *step))
        if not found.consumers:
            return "its output reaches no pruned layer"
        bias = getattr(module, "bias", None)
        return Producer(name, str(start.target), int(module.weight.shape[0]),
                        self.canon[id(bias)] if bias is not None else None,
                        tuple(dict.fromkeys(found.norms)),
                        tuple(dict.fromkeys(found.consumers)))

    def _step(self, node: fx.Node, user: fx.Node, dim: int, block: int,
              found: _Found) -> tuple[int, int] | str | None:
        """Units' (dim, block) in ``user``'s output; None where the path ends (a consumer
        or a shape query); a string saying what ``user`` is where it must stop."""
        if user.op == "output":
            return "the model output"
        op = _op(user, self.modules)
        if op in _SHAPE_QUERIES:
            return None
        if any(_shape(n) is not None for n in user.all_input_nodes if n is not node):
            return f"{_JOINS.get(op.rstrip('_'), f'{op!r} with another tensor')} ({user.name})"
        shape, new = _shape(node), _shape(user)
        if shape is None:
            return f"{op} ({user.name}) through a value of unknown shape"
        where = f"{op} ({user.target if user.op == 'call_module' else user.name})"
        module = self.modules.get(str(user.target)) if user.op == "call_module" else None
        channels = dim == 1 and block == 1
        if isinstance(module, PRUNABLE_MODULES):
            return self._consume(module, str(user.target), where, shape, dim, block, found)
        if new is None:
            return f"{where}, which gives no single tensor"
        pool = _POOL.match(op.lower().replace("_", ""))
        if isinstance(module, _NORMS) or pool:
            spatial = int(pool.group(2)) if pool else len(shape) - 2
            if not channels or len(shape) != spatial + 2:
                return f"{where}, which does not act on its units as channels"
            if module is not None and pool is None:
                found.norms.append(str(user.target))
            return dim, block
        if isinstance(module, _ELEMENTWISE_MODULES) or (module is None and op in
                                                         _ELEMENTWISE_OPS):
            return (dim, block) if new == shape else f"{where}, which changes its shape"
        if isinstance(module, nn.Flatten | nn.Unflatten) or (module is None and op in
                                                             _RESHAPE_OPS):
            moved = _reshaped(shape, dim, block, new)
            return moved if moved is not None else f"{where}, which mixes its units"
        return f"{where}, which structured pruning does not handle"

    def _consume(self, module: nn.Module, target: str, where: str, shape: tuple[int, ...],
                 dim: int, block: int, found: _Found) -> str | None:
        """Record ``module`` as a consumer, or say why it cannot be one."""
        weight = self.canon.get(id(module.weight))
        if weight not in self.names:
            return f"{where}, whose weight is not pruned (not among the prunable parameters)"
        if len(self.owners[weight]) > 1:
            return f"{where}, whose weight is shared with another module (weight tying)"
        if len(self.calls[target]) > 1:
            return f"{where}, which is called more than once"
        if isinstance(module, nn.Linear):
            if dim != len(shape) - 1:
                return f"{where} along a dimension other than its input features"
        elif getattr(module, "groups", 1) != 1:
            return f"{where}, a grouped convolution (groups={module.groups})"
        elif dim != 1 or block != 1 or len(shape) != module.weight.dim():
            return f"{where} along a dimension other than its input channels"
        found.consumers.append((weight, block))
        return None
