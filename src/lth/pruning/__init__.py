"""Pruning: criteria (scores), selection (exact counts), schedules, structures and groups."""

from .allocation import ALLOCATIONS, Allocation, erdos_renyi_densities
from .criteria import CRITERIA, ScoreInputs, register_criterion, scores_network
from .nm import NMLayout, nm_select
from .plan import Group, check_final_counts, make_groups, next_mask, resolve_rates
from .schedules import SCHEDULES, Schedule, scheduled_density
from .selection import kept_count, random_like, select, top_k_indices
from .structured import Structure
from .structures import STRUCTURES, MaskLayout, MaskStructure, next_unit_mask

__all__ = ["ALLOCATIONS", "CRITERIA", "SCHEDULES", "STRUCTURES", "Allocation", "Group",
           "MaskLayout", "MaskStructure", "NMLayout", "Schedule", "ScoreInputs", "Structure",
           "check_final_counts", "erdos_renyi_densities", "kept_count", "make_groups",
           "next_mask", "next_unit_mask", "nm_select", "random_like", "register_criterion",
           "resolve_rates", "scheduled_density", "scores_network", "select", "top_k_indices"]
