"""Layer allocations: how the layers on the default rate share its density.

``prune.allocation`` names an :class:`Allocation` in :data:`ALLOCATIONS`:

- ``uniform``: every layer keeps the schedule's density (the paper's rule);
- ``er`` / ``erk``: Erdős–Rényi(-Kernel) as in RigL (Evci et al. 2020): a layer's density
  is proportional to ``(n_in + n_out) / (n_in · n_out)`` (ER) or to the sum of its
  weight's dimensions over their product (ERK, which counts the kernel too), scaled by one
  factor so that the layers together keep the schedule's density
  (:func:`erdos_renyi_densities`).

An allocation applies in layer scope to the layers on the default rate; a layer with a
rate of its own (``output_rate``, ``layer_rates``, ``conv_rate`` / ``linear_rate``) keeps
it. At level ℓ the layers on the default rate together keep ``schedule.density(rate, ℓ)``
of their weights, each layer ``kept_count`` of its size at its allocated density
(:class:`AllocatedGroup`). A new allocation is a subclass overriding
:meth:`Allocation.densities`, registered under a name.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config_schema import Problem
from ..registry import Registry, instances_of
from .plan import Group
from .schedules import Schedule

if TYPE_CHECKING:
    from ..config import PruneConfig

Shape = tuple[int, ...]


def erdos_renyi_densities(shapes: Mapping[str, Sequence[int]], density: float, *,
                          kernel: bool = True) -> dict[str, float]:
    """Per-layer densities that keep ``density`` of all the layers' weights together.

    A weight of shape ``[n_out, n_in, *kernel]`` gets ``ε · sum(shape) / prod(shape)``
    (``kernel=True``, ERK) or ``ε · (n_out + n_in) / (n_out · n_in)`` (ER; a Linear weight
    ``[out, in]`` gets the same under both; a 1-D weight counts ``n_in = 1``). A layer whose
    density would exceed 1 is kept dense and ε is solved again over the others, until
    none exceeds 1, so the total stays ``density`` of all weights.

    >>> d = erdos_renyi_densities({"conv": (4, 1, 3, 3), "fc": (10, 64)}, 0.5)
    >>> d["conv"], round(d["fc"], 4)  # the small conv would get 1.22: kept dense instead
    (1.0, 0.4719)
    >>> round((36 * d["conv"] + 640 * d["fc"]) / 676, 6)
    0.5
    """
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    if density >= 1 or not sizes:
        return {n: 1.0 for n in shapes}
    if density <= 0:
        return {n: 0.0 for n in shapes}
    raw = {n: _erdos_renyi(tuple(s), kernel) for n, s in shapes.items()}
    budget = density * sum(sizes.values())
    dense: set[str] = set()
    while True:
        rest = [n for n in shapes if n not in dense]
        eps = (budget - sum(sizes[n] for n in dense)) / sum(raw[n] * sizes[n] for n in rest)
        # Setting a layer dense frees budget (ε only grows): all over 1 now stay over 1.
        over = {n for n in rest if eps * raw[n] > 1}
        if not over:
            return {n: 1.0 if n in dense else min(1.0, eps * raw[n]) for n in shapes}
        dense |= over


def _erdos_renyi(shape: Shape, kernel: bool) -> float:
    dims = shape if kernel else shape[:2]
    if len(dims) < 2:
        dims = (*dims, 1)  # a vector: one input
    return sum(dims) / math.prod(dims)


@dataclass(frozen=True)
class Allocation:
    """Gives each layer on the default rate its density from the layers' shapes and the
    density they keep together (:meth:`densities`). ``uniform``: every layer keeps that
    density, so the groups stay as they are."""

    uniform = False

    def densities(self, shapes: Mapping[str, Shape], density: float) -> dict[str, float]:
        """Each layer's density such that all of them keep ``density`` together."""
        raise NotImplementedError

    def allocate(self, groups: Sequence[Group], shapes: Mapping[str, Shape]) -> list[Group]:
        """``groups`` (one per layer) with the layers of ``shapes`` (those on the default
        rate) counted at their allocated density."""
        shared = tuple((n, tuple(s)) for n, s in shapes.items())
        return [AllocatedGroup(g.names, g.rate, g.size, allocation=self, shared=shared)
                if g.names[0] in shapes else g for g in groups]

    def problems(self, cfg: PruneConfig) -> list[Problem]:
        if cfg.scope != "layer":
            return [("allocation", f"{cfg.allocation!r} gives each layer its own density; "
                                   f"it needs scope = 'layer' (got {cfg.scope!r}): set "
                                   "scope = 'layer' or allocation = 'uniform'")]
        return []


@dataclass(frozen=True)
class Uniform(Allocation):
    uniform = True

    def densities(self, shapes: Mapping[str, Shape], density: float) -> dict[str, float]:
        return {n: density for n in shapes}

    def allocate(self, groups: Sequence[Group], shapes: Mapping[str, Shape]) -> list[Group]:
        return list(groups)

    def problems(self, cfg: PruneConfig) -> list[Problem]:
        return []


@dataclass(frozen=True)
class ErdosRenyi(Allocation):
    """ERK (``kernel=True``) or ER: :func:`erdos_renyi_densities`."""

    kernel: bool = True

    def densities(self, shapes: Mapping[str, Shape], density: float) -> dict[str, float]:
        return erdos_renyi_densities(shapes, density, kernel=self.kernel)


@dataclass(frozen=True)
class AllocatedGroup(Group):
    """One layer whose density is its share, under ``allocation``, of the density the
    layers of ``shared`` (name, shape) keep together at the group's rate."""

    allocation: Allocation
    shared: tuple[tuple[str, Shape], ...]

    def density(self, schedule: Schedule, level: int) -> float:
        together = schedule.density(self.rate, level)
        return _densities(self.allocation, self.shared, together)[self.names[0]]


@functools.lru_cache(maxsize=1024)  # every group of a level asks for the same densities
def _densities(allocation: Allocation, shared: tuple[tuple[str, Shape], ...],
               density: float) -> dict[str, float]:
    return allocation.densities(dict(shared), density)


ALLOCATIONS: Registry[Allocation] = Registry("allocation", entry=instances_of(Allocation))
UNIFORM = ALLOCATIONS.register(Uniform(), name="uniform")
ALLOCATIONS.register(ErdosRenyi(kernel=False), name="er")
ALLOCATIONS.register(ErdosRenyi(kernel=True), name="erk")
ALLOCATIONS.mark_builtin()


__all__ = ["ALLOCATIONS", "UNIFORM", "AllocatedGroup", "Allocation", "ErdosRenyi", "Uniform",
           "erdos_renyi_densities"]
