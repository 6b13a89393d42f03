"""Experiments: one IMP run (:class:`LotteryModel`), sessions of variants
(:class:`LotterySession`), repeated trials over seeds (:class:`LotteryRobust`)."""

from .group import GroupResult, TrialGroup
from .lottery_model import LotteryModel
from .result import Result, compare
from .session import LotteryRobust, LotterySession, parse_seeds
from .trials import Outcome, Trial

__all__ = ["GroupResult", "LotteryModel", "LotteryRobust", "LotterySession", "Outcome",
           "Result", "Trial", "TrialGroup", "compare", "parse_seeds"]
