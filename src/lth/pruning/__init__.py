"""Pruning: criteria (scores), selection (exact counts), schedules and groups."""

from .criteria import CRITERIA, ScoreInputs, register_criterion
from .plan import (
                   SCHEDULES,
                   Group,
                   check_final_counts,
                   make_groups,
                   next_mask,
                   next_unit_mask,
                   prune_step,
                   resolve_rates,
                   scheduled_density,
)
from .selection import kept_count, random_like, select, top_k_indices
from .structured import Structure

__all__ = ["CRITERIA", "SCHEDULES", "Group", "ScoreInputs", "Structure", "check_final_counts",
           "kept_count", "make_groups", "next_mask", "next_unit_mask", "prune_step",
           "random_like", "register_criterion", "resolve_rates", "scheduled_density", "select",
           "top_k_indices"]
