"""Experiments: one IMP run (:class:`LotteryModel`) and its :class:`Result`."""

from .lottery_model import LotteryModel
from .result import Result, compare

__all__ = ["LotteryModel", "Result", "compare"]
