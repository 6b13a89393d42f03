"""Masks: which weights survive, as data keyed by each parameter's fully qualified name.

Masks live outside the module, so a pruned model keeps its plain ``state_dict`` keys and
rewinding is a plain copy. By default the prunable parameters are the ``weight`` of every
``Linear`` and ``Conv1d/2d/3d``; name patterns (``fnmatch``) add or remove parameters.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .errors import ModelError

PRUNABLE_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _canonical_names(model: nn.Module) -> dict[int, str]:
    """id(parameter) -> its first name; a weight shared by two layers has one name."""
    return {id(p): name for name, p in model.named_parameters()}


def _declared_kinds(model: nn.Module) -> dict[str, str]:
    """Weights that modules declare Linear- or Conv-like (``lth_layer_kinds()``, e.g. the
    kernels of a Keras model): prunable by default, with their kind."""
    out = {}
    for prefix, module in model.named_modules():
        declared = getattr(module, "lth_layer_kinds", None)
        if callable(declared):
            out.update({f"{prefix}.{n}" if prefix else n: k for n, k in declared().items()})
    return out


def layer_kinds(model: nn.Module) -> dict[str, str]:
    """Parameter name -> 'conv', 'linear' or 'other', from the module(s) that own it."""
    canon = _canonical_names(model)
    kinds = {name: "other" for name in canon.values()}
    kinds.update(_declared_kinds(model))
    for module in model.modules():
        kind = ("conv" if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d)
                else "linear" if isinstance(module, nn.Linear) else None)
        if kind is None:
            continue
        for p in module.parameters(recurse=False):
            if kinds[canon[id(p)]] == "other":
                kinds[canon[id(p)]] = kind
    return kinds


def prunable_names(model: nn.Module, include: Sequence[str] = (),
                   exclude: Sequence[str] = ()) -> list[str]:
    """Names of the parameters that will be masked, in ``named_parameters`` order.

    >>> prunable_names(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    ['0.weight', '2.weight']
    """
    canon = _canonical_names(model)
    chosen = {canon[id(m.weight)] for m in model.modules()
              if isinstance(m, PRUNABLE_MODULES) and isinstance(m.weight, nn.Parameter)}
    chosen |= set(_declared_kinds(model))
    all_names = list(canon.values())
    for pattern in include:
        hits = fnmatch.filter(all_names, pattern)
        if not hits:
            raise ModelError(f"prune.include pattern {pattern!r} matches no parameter; "
                             f"parameters are: {', '.join(all_names[:20])}")
        chosen.update(hits)
    for pattern in exclude:
        hits = fnmatch.filter(all_names, pattern)
        if not hits:
            raise ModelError(f"prune.exclude pattern {pattern!r} matches no parameter; "
                             f"parameters are: {', '.join(all_names[:20])}")
        chosen.difference_update(hits)
    names = [n for n in all_names if n in chosen]
    if not names:
        raise ModelError(
            f"{type(model).__name__} has no prunable parameters (no Linear/Conv weight "
            "left after include/exclude); name some with prune.include = ['*.weight']")
    return names


class _ParameterUse(TorchFunctionMode):
    """Records, in order, which watched parameters each torch function call reads."""

    def __init__(self, watched: dict[int, str]):
        super().__init__()
        self.watched, self.calls = watched, []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if getattr(func, "__name__", "") == "__get__" and not torch.is_tensor(result):
            return result  # reading .dtype or .shape is not using the weights
        used = [self.watched[id(t)] for t in tensor_leaves((args, kwargs)) if id(t) in self.watched]
        if used:
            self.calls.append(used)
        return result


def tensor_leaves(tree: Any) -> Iterable[Any]:
    """Every tensor in nested lists, tuples and dicts (a model's output, a call's args)."""
    if isinstance(tree, list | tuple):
        for item in tree:
            yield from tensor_leaves(item)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from tensor_leaves(item)
    elif torch.is_tensor(tree):
        yield tree


def output_layer(model: nn.Module, names: Sequence[str], example: torch.Tensor) -> list[str]:
    """The prunable parameters the forward pass reads last (in one call: an LSTM's input
    and hidden weights together).

    Found by running ``example`` through the model while recording which prunable
    parameters each torch call reads, so that a parameter used directly in ``forward``
    (``F.linear(x, self.w)``) counts where it is used, not where its module ends; falls
    back to the last prunable parameter if none is seen.
    """
    canon = _canonical_names(model)
    wanted = set(names)
    watched = {id(p): canon[id(p)] for p in model.parameters() if canon[id(p)] in wanted}
    modes = [(m, m.training) for m in model.modules()]  # restored module by module
    recorder = _ParameterUse(watched)
    try:
        model.eval()
        with torch.no_grad(), recorder:
            model(example)
    finally:
        for m, mode in modes:
            m.training = mode
    if not recorder.calls:
        return [names[-1]]
    last = set(recorder.calls[-1])
    return [n for n in names if n in last]


class Mask:
    """Boolean keep-masks keyed by parameter name (``True`` = the weight survives).

    >>> m = Mask.ones(nn.Linear(3, 2), ["weight"])
    >>> m.density(), m.kept()
    (1.0, {'weight': 6})
    """

    def __init__(self, tensors: dict[str, torch.Tensor], order: Iterable[str] | None = None):
        """``order``: key order to keep (files store keys sorted; the model's order is
        the one every report and per-layer loop should follow)."""
        names = list(order) if order is not None else list(tensors)
        if set(names) != set(tensors):
            raise ModelError(f"mask tensors {sorted(tensors)} do not match the prunable "
                             f"parameters {sorted(names)}")
        self._t = {name: tensors[name].to(torch.bool) for name in names}

    @classmethod
    def ones(cls, model: nn.Module, names: Iterable[str]) -> Mask:
        return cls({n: torch.ones_like(model.get_parameter(n), dtype=torch.bool) for n in names})

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._t[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._t)

    def __len__(self) -> int:
        return len(self._t)

    def items(self):
        return self._t.items()

    def names(self) -> list[str]:
        return list(self._t)

    def kept(self) -> dict[str, int]:
        return {n: int(t.sum()) for n, t in self._t.items()}

    def sizes(self) -> dict[str, int]:
        return {n: t.numel() for n, t in self._t.items()}

    def densities(self) -> dict[str, float]:
        return {n: int(t.sum()) / max(t.numel(), 1) for n, t in self._t.items()}

    def density(self) -> float:
        total = sum(self.sizes().values())
        return sum(self.kept().values()) / total if total else 1.0

    def to(self, device: str | torch.device) -> Mask:
        return Mask({n: t.to(device) for n, t in self._t.items()})

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self._t)

    def is_subset_of(self, other: Mask) -> bool:
        """True when every weight kept here is also kept in ``other`` (masks only shrink)."""
        return self._t.keys() == set(other) and all(
            not bool((t & ~other[n].to(t.device)).any()) for n, t in self._t.items())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mask) and self._t.keys() == set(other) and all(
            torch.equal(t, other[n].to(t.device)) for n, t in self._t.items())

    @torch.no_grad()
    def apply_(self, model: nn.Module) -> None:
        """Zero every pruned weight of ``model`` in place (NaN or inf included)."""
        for name, keep in self._t.items():
            p = self._parameter(model, name)
            p.masked_fill_(~keep.to(p.device), 0)

    def _parameter(self, model: nn.Module, name: str) -> torch.Tensor:
        """``model``'s parameter ``name``, which must have this mask's shape."""
        try:
            p = model.get_parameter(name)
        except AttributeError:
            raise ModelError(f"the mask has a parameter {name!r} that "
                             f"{type(model).__name__} does not; was it made for another "
                             "model?") from None
        if p.shape != self._t[name].shape:
            raise ModelError(f"the mask of {name} has shape {tuple(self._t[name].shape)}, the "
                             f"model's parameter {tuple(p.shape)}; was it made for another "
                             "model?")
        return p

    def check(self, model: nn.Module) -> None:
        """Raise if a pruned weight of ``model`` is not exactly zero."""
        for name, keep in self._t.items():
            p = model.get_parameter(name).detach()
            if bool((p[~keep.to(p.device)] != 0).any()):
                raise AssertionError(f"pruned weights of {name} are not zero")

    def __repr__(self) -> str:
        return f"Mask({len(self)} tensors, density={self.density():.4f})"
