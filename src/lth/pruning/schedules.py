"""Density schedules: how much of each group a level keeps, and what it is pruned from.

A schedule is a small frozen object the engine asks, never a name it compares:

- :meth:`Schedule.density`: the fraction of a group's original weights kept at a level;
- :meth:`Schedule.source_level`: the level whose trained weights give a level its mask;
- :meth:`Schedule.mask_sources`: the levels whose training chose a level's mask (its cost);
- :meth:`Schedule.searches`: whether a level's weights choose another level's mask (the
  levels an early-bird search runs in);
- :attr:`Schedule.rates_depend_on_levels`: whether the rates follow from ``n_levels`` (then
  ``n_levels`` is part of a run's identity).

Built in (registered in :data:`SCHEDULES` by name):

- ``geometric``: prune ``rate`` of the *surviving* weights each level, d = (1 - rate)^ℓ
  (the paper's and OpenLTH's rule);
- ``target``: geometric with the default rate solved so that all prunable weights reach
  ``target_sparsity`` at the last level;
- ``linear``: prune ``rate`` of the *original* weights each level, d = 1 - ℓ·rate (the
  reference Keras API's rule);
- ``one_shot``: geometric densities, but every level prunes the dense (level-0) network at
  once: each level is an independent one-shot ticket at its density.

A new schedule is a subclass registered under a name:

>>> @dataclass(frozen=True)
... class Halving(Schedule):
...     def density(self, rate, level):
...         return 0.5 ** level
>>> _ = SCHEDULES.register(Halving(), name="halving")
>>> SCHEDULES["halving"].density(0.2, 3), SCHEDULES["halving"].source_level(3)
(0.125, 2)
>>> del SCHEDULES["halving"]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config_schema import Problem, check_fraction
from ..errors import ConfigError
from ..registry import Registry, instances_of

if TYPE_CHECKING:
    from ..config import PruneConfig


@dataclass(frozen=True)
class Schedule:
    """Iterative pruning: level ℓ prunes level ℓ - 1's trained survivors. Subclasses
    override :meth:`density` (and whatever else differs)."""

    rates_depend_on_levels = False

    def density(self, rate: float, level: int) -> float:
        """Fraction of a group's original weights kept after ``level`` pruning rounds."""
        raise NotImplementedError

    def source_level(self, level: int) -> int:
        """The level whose trained weights give ``level`` (>= 1) its mask and kept weights;
        what follows from it (:meth:`mask_sources`, :meth:`searches`, :meth:`pruned_from`)
        is derived, so a schedule overrides this one alone."""
        return level - 1

    def mask_sources(self, level: int) -> list[int]:
        """The levels whose training chose ``level``'s mask (none for the dense level): its
        source, the source's source, ... down to level 0."""
        out = []
        while level > 0:
            level = self.source_level(level)
            out.append(level)
        return sorted(out)

    def pruned_from(self, level: int, n_levels: int) -> int | None:
        """The first level (up to ``n_levels``) pruned from ``level``'s trained weights."""
        return next((later for later in range(level + 1, n_levels + 1)
                     if self.source_level(later) == level), None)

    def searches(self, level: int, n_levels: int) -> bool:
        """Whether ``level``'s trained weights choose another level's mask."""
        return self.pruned_from(level, n_levels) is not None

    def default_rate(self, cfg: PruneConfig, own_rates: dict[str, float | None],
                     sizes: dict[str, int], n_levels: int) -> float:
        """The rate of the layers without a rate of their own (``None`` in ``own_rates``)."""
        return cfg.rate

    def problems(self, cfg: PruneConfig) -> list[Problem]:
        """What is wrong with ``cfg``'s settings for this schedule."""
        if cfg.target_sparsity is not None:
            return [("target_sparsity", "only used with schedule = 'target'")]
        return []

    def __call__(self, rate: float, level: int) -> float:
        return self.density(rate, level)


@dataclass(frozen=True)
class Geometric(Schedule):
    def density(self, rate: float, level: int) -> float:
        return (1.0 - rate) ** level


@dataclass(frozen=True)
class Linear(Schedule):
    def density(self, rate: float, level: int) -> float:
        return max(0.0, 1.0 - rate * level)


@dataclass(frozen=True)
class Target(Geometric):
    """Geometric, with the default rate 1 - (d / d_fixed)^(1/n_levels) solved so that every
    prunable weight together keeps 1 - ``target_sparsity`` at the last level while the
    layers with rates of their own keep theirs (up to each group's rounding)."""

    rates_depend_on_levels = True

    def default_rate(self, cfg: PruneConfig, own_rates: dict[str, float | None],
                     sizes: dict[str, int], n_levels: int) -> float:
        if n_levels < 1:
            return cfg.rate
        assert cfg.target_sparsity is not None  # problems() requires it
        free = sum(sizes[n] for n, r in own_rates.items() if r is None)
        fixed = sum(sizes[n] * (1 - r) ** n_levels for n, r in own_rates.items()
                    if r is not None)
        total = sum(sizes.values())
        if free == 0:
            raise ConfigError("prune.schedule = 'target' needs at least one layer on the "
                              "default rate; every layer has its own rate (output/layer/type "
                              "rates)")
        density = ((1 - cfg.target_sparsity) * total - fixed) / free
        if not 0 < density <= 1:
            raise ConfigError(f"prune.target_sparsity = {cfg.target_sparsity} cannot be "
                              f"reached in {n_levels} levels while the layers with their own "
                              f"rates keep {fixed / total:.1%} of all weights; lower those "
                              "rates or the target")
        return 1.0 - density ** (1.0 / n_levels)

    def problems(self, cfg: PruneConfig) -> list[Problem]:
        if cfg.target_sparsity is None:
            return [("target_sparsity", "required when schedule = 'target' "
                                        "(e.g. target_sparsity = 0.9)")]
        p: list[Problem] = []
        check_fraction(p, "target_sparsity", cfg.target_sparsity, open_hi=True)
        return p


@dataclass(frozen=True)
class OneShot(Geometric):
    """Every level is pruned from the dense level's trained weights at once."""

    def source_level(self, level: int) -> int:
        return 0


@dataclass(frozen=True)
class FunctionSchedule(Schedule):
    """A plain function ``(rate, level) -> density`` registered as a schedule: iterative."""

    function: Callable[[float, int], float]

    def density(self, rate: float, level: int) -> float:
        return self.function(rate, level)


SCHEDULES: Registry[Schedule] = Registry("schedule", entry=instances_of(
    Schedule, wrap=FunctionSchedule, what=" or a function (rate, level) -> density"))
for _name, _schedule in (("geometric", Geometric()), ("target", Target()),
                         ("linear", Linear()), ("one_shot", OneShot())):
    SCHEDULES.register(_schedule, name=_name)
SCHEDULES.mark_builtin()


def scheduled_density(schedule: str, rate: float, level: int) -> float:
    """Fraction of a group's original weights kept after ``level`` pruning rounds.

    >>> scheduled_density("geometric", 0.5, 2), scheduled_density("linear", 0.25, 2)
    (0.25, 0.5)
    """
    return SCHEDULES[schedule].density(rate, level)


__all__ = ["SCHEDULES", "FunctionSchedule", "Geometric", "Linear", "OneShot", "Schedule", "Target",
           "scheduled_density"]
