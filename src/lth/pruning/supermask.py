"""Learned supermasks: masks trained over frozen weights, no weight ever changing.

Every prunable weight gets a score; a pruning group (a layer, or the layers pruned together
in global scope) keeps ``k`` weights, ``k`` from the run's density schedule. Two methods:

- ``edge_popup`` (Ramanujan et al., 2020): the forward pass uses the ``k`` weights of
  highest ``|score|``. The backward pass treats the mask as the identity (straight-through),
  so ``d loss / d score = d loss / d w_eff · w · sign(score)``. Scores start uniform in
  ±1/√fan_in.
- ``bernoulli`` (Zhou et al., 2019): each weight is kept with probability
  ``p = sigmoid(score + b)``; training samples a mask every step and passes the gradient
  straight through the sample to the probability: ``d loss / d score = d loss / d w_eff ·
  w · σ'(score + b)``. Zhou et al. leave the density free; here ``b``, one offset per group
  (a buffer, not trained), is re-solved before every sample so that the expected density
  ``mean(p)`` stays the group's scheduled ``d`` (Newton steps from the last ``b``):
  training then samples masks of the density it is evaluated at. Scores start at
  ``logit(d)``.

Evaluation, and the mask a level stores, keep exactly ``k`` weights per group: the highest
scores, ties broken by a seeded order (the counting rule of :mod:`lth.pruning.selection`).
For ``bernoulli`` these are the weights most likely kept: a fixed mask at the scheduled
density, so that every method is compared at the same density.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..config_schema import Problem
from ..masks import Mask
from ..registry import Registry, instances_of
from ..reinitialization import REINIT_MODES
from ..seeding import derive_seed, generator
from .selection import select
from .structures import STRUCTURES

if TYPE_CHECKING:
    from ..config import ExperimentConfig, PruneConfig

METHODS = ("edge_popup", "bernoulli")

NEWTON_STEPS = 4  # per training step, from the last offset


def _key(name: str) -> str:
    return name.replace(".", ":")  # parameter names may not contain dots


class SupermaskNet(nn.Module):
    """``model`` with its parameters frozen and a trainable score per prunable weight.

    ``groups``: (parameter names, weights kept) for each pruning group; a group that keeps
    all its weights gets no scores. The training loop trains the scores like any parameters
    (they are this module's only trainable ones); :meth:`mask` is the learned mask.
    """

    stackable = False  # the forward pass selects per trial: not vmapped (lth.train.stack_key)

    def __init__(self, model: nn.Module, groups: Sequence[tuple[Sequence[str], int]],
                 method: str, *, seed: int, level: int):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown supermask method {method!r}; one of {METHODS}")
        self.base, self.method = model, method
        for p in model.parameters():
            p.requires_grad_(False)
        grouped = {n for names, _ in groups for n in names}
        self.names = [n for n, _ in model.named_parameters() if n in grouped]
        self.groups = [(tuple(names), k) for names, k in groups
                       if k < sum(model.get_parameter(n).numel() for n in names)]
        self.scores = nn.ParameterDict()
        for names, k in self.groups:
            size = sum(model.get_parameter(n).numel() for n in names)
            for n in names:
                self.scores[_key(n)] = nn.Parameter(self._initial(n, k / size, seed, level))
        device = next(iter(model.parameters())).device
        # bernoulli: each group's offset b, holding its expected density on schedule, and
        # the samples drawn so far (each draw seeded by its number: resumable on any device)
        self.register_buffer("offsets", torch.zeros(len(self.groups), device=device))
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))
        self.sample_seed = derive_seed(seed, "supermask-sample", level)
        self.tie_seed = derive_seed(seed, "supermask-ties", level)
        self._eval_masks: dict[str, torch.Tensor] | None = None

    def _initial(self, name: str, density: float, seed: int, level: int) -> torch.Tensor:
        w = self.base.get_parameter(name)
        if self.method == "bernoulli":
            return torch.full_like(w, math.log(density / (1 - density)))
        bound = 1 / math.sqrt(max(1, w[0].numel()))
        g = generator(seed, "supermask-scores", level, name)
        s = torch.rand(w.shape, generator=g, dtype=w.dtype) * (2 * bound) - bound
        return s.to(w.device)

    def _ranking(self, names: Sequence[str], offset: float | torch.Tensor = 0.0
                 ) -> list[torch.Tensor]:
        """Per tensor, what the group ranks by (and the gradient flows through): |score|,
        or the keep probability sigmoid(score + offset)."""
        s = [self.scores[_key(n)] for n in names]
        if self.method == "edge_popup":
            return [t.abs() for t in s]
        return [(t + offset).sigmoid() for t in s]

    @torch.no_grad()
    def _hold_density(self, g: int, names: Sequence[str], k: int) -> torch.Tensor:
        """Group ``g``'s offset b with sum(sigmoid(score + b)) = k: Newton's method from the
        last b, a fixed number of steps (no host sync on a GPU; the scores move little
        between two steps, so the last b is close)."""
        flat = torch.cat([self.scores[_key(n)].detach().flatten() for n in names])
        b = self.offsets[g].to(flat.dtype)
        for _ in range(NEWTON_STEPS):
            p = (flat + b).sigmoid()
            b = b - ((p.sum() - k) / (p * (1 - p)).sum().clamp_min(1e-12)).clamp(-4.0, 4.0)
        self.offsets[g] = b
        return b

    def _sample(self, probabilities: torch.Tensor) -> torch.Tensor:
        """A Bernoulli mask drawn with its own seeded generator (the draw's number is
        checkpointed with the module: a resumed level draws the same masks, CPU or GPU)."""
        g = torch.Generator(device=probabilities.device)
        g.manual_seed(derive_seed(self.sample_seed, int(self.draws)))
        self.draws += 1
        return torch.bernoulli(probabilities, generator=g)

    def exact_masks(self) -> dict[str, torch.Tensor]:
        """Each group's top-k weights by score, ties seeded: the masks evaluation uses and
        the level stores."""
        g = torch.Generator().manual_seed(self.tie_seed)
        out: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for names, k in self.groups:
                ranks = {n: r.detach().cpu() for n, r in zip(names, self._ranking(names),
                                                             strict=True)}
                alive = {n: torch.ones_like(r, dtype=torch.bool) for n, r in ranks.items()}
                chosen = select(ranks, alive, k, g)
                out.update({n: m.to(self.scores[_key(n)].device) for n, m in chosen.items()})
        return out

    def train(self, mode: bool = True) -> SupermaskNet:
        # Scores change only in training mode: an evaluation computes its masks once.
        self._eval_masks = None if mode else self.exact_masks()
        return super().train(mode)

    def _training_masks(self, names: Sequence[str], k: int, ranks: list[torch.Tensor]
                        ) -> list[torch.Tensor]:
        if self.method == "bernoulli":
            return [self._sample(r.detach()) for r in ranks]
        flat = torch.cat([r.detach().flatten() for r in ranks])
        kth = torch.kthvalue(flat, flat.numel() - k + 1).values  # k highest: >= kth (no ties
        return [(r.detach() >= kth).to(r.dtype) for r in ranks]  # among continuous scores)

    def forward(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - the model's own
        if not self.training and self._eval_masks is None:
            self._eval_masks = self.exact_masks()
        exact = None if self.training else self._eval_masks
        weights: dict[str, torch.Tensor] = {}
        for g, (names, k) in enumerate(self.groups):
            hold = self.method == "bernoulli" and exact is None
            ranks = self._ranking(names, self._hold_density(g, names, k) if hold else 0.0)
            masks = (self._training_masks(names, k, ranks) if exact is None
                     else [exact[n].to(r.dtype) for n, r in zip(names, ranks, strict=True)])
            for n, m, r in zip(names, masks, ranks, strict=True):
                # Forward: exactly w · m. Training's backward: straight through m to what
                # it was chosen by (r - r.detach() is exactly 0, with r's gradient).
                w = self.base.get_parameter(n)
                weights[n] = w * (m + (r - r.detach())) if self.training else w * m
        return torch.func.functional_call(self.base, weights, args, kwargs)

    def mask(self) -> Mask:
        """The learned mask over every prunable parameter (groups kept whole: all ones)."""
        exact = self.exact_masks()
        return Mask({n: exact[n].cpu() if n in exact
                     else torch.ones_like(self.base.get_parameter(n), dtype=torch.bool,
                                          device="cpu")
                     for n in self.names}, order=self.names)


@dataclass(frozen=True)
class Supermask:
    """What ``prune.supermask`` names: ``none`` (masks come from pruning), or a method that
    learns each pruned level's mask (:class:`Learned`). The engine asks :attr:`learns`, and
    for a pruned level of a supermask that learns, trains :meth:`network`."""

    learns = False

    def network(self, model: nn.Module, groups: Sequence[tuple[Sequence[str], int]], *,
                seed: int, level: int) -> nn.Module:
        """``model`` frozen, with what learns a mask keeping ``groups``' counts; its
        ``mask()`` is the learned mask and ``base`` the frozen model."""
        raise NotImplementedError(f"{type(self).__name__} learns no mask")

    def problems(self, cfg: PruneConfig) -> list[Problem]:
        if cfg.supermask_lr is not None:
            return [("supermask_lr", "only used with a learned supermask (prune.supermask)")]
        return []

    def experiment_problems(self, cfg: ExperimentConfig) -> list[Problem]:
        return []


@dataclass(frozen=True)
class Learned(Supermask):
    """A supermask learned by ``method`` (``edge_popup`` or ``bernoulli``, see the module
    docstring) over each pruned level's frozen start."""

    method: str
    learns = True

    def network(self, model: nn.Module, groups: Sequence[tuple[Sequence[str], int]], *,
                seed: int, level: int) -> SupermaskNet:
        return SupermaskNet(model, groups, self.method, seed=seed, level=level)

    def problems(self, cfg: PruneConfig) -> list[Problem]:
        p: list[Problem] = []
        if cfg.structure in STRUCTURES and not STRUCTURES[cfg.structure].of_single_weights:
            p.append(("supermask", "learns masks of single weights; use structure = 'weight'"))
        if cfg.supermask_lr is not None and not cfg.supermask_lr > 0:
            p.append(("supermask_lr", f"got {cfg.supermask_lr!r}; must be > 0"))
        if cfg.criterion != type(cfg).criterion:
            p.append(("supermask", f"the mask is learned, so prune.criterion = "
                                   f"{cfg.criterion!r} is unused; remove it"))
        return p

    def experiment_problems(self, cfg: ExperimentConfig) -> list[Problem]:
        p: list[Problem] = []
        if cfg.masks_from is not None:
            p.append(("prune.supermask", "learns its own masks; masks_from gives masks "
                                         "already made: use one or the other"))
        if cfg.earlybird.enabled:
            p.append(("prune.supermask", "learns masks over frozen weights; an early-bird "
                                         "search prunes trained weights: disable earlybird"))
        mode = cfg.reinit.mode
        if mode in REINIT_MODES and REINIT_MODES[mode].keeps_trained:
            fresh = [n for n, m in REINIT_MODES.items() if not m.keeps_trained]
            p.append(("reinit.mode", f"{mode!r} keeps the previous level's pruned weights, "
                                     "whose zeros a learned supermask would keep; use "
                                     f"{', '.join(fresh)}"))
        return p


SUPERMASKS: Registry[Supermask] = Registry("supermask", entry=instances_of(Supermask))
SUPERMASKS.register(Supermask(), name="none")
for _method in METHODS:
    SUPERMASKS.register(Learned(_method), name=_method)
SUPERMASKS.mark_builtin()
