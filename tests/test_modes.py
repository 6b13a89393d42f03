"""Modes are objects the engine asks: a schedule's source level decides everything that
follows from it, a misspelled mode keeps its other checks, lth.prune honours the structure."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import lth
from lth.pruning import SCHEDULES
from lth.pruning.schedules import Geometric

TRAIN = {"duration": "20it", "eval_every": "20it", "batch_size": 32}


@dataclasses.dataclass(frozen=True)
class EverySecond(Geometric):
    """Level ℓ is pruned from level ℓ - 2 (level 1 from the dense level)."""

    def source_level(self, level):
        return max(0, level - 2)


def test_what_follows_from_a_schedules_source_level():
    s = EverySecond()
    assert [s.mask_sources(level) for level in range(5)] == [[], [0], [0], [0, 1], [0, 2]]
    assert [s.pruned_from(level, 4) for level in range(5)] == [1, 3, 4, None, None]
    assert [s.searches(level, 4) for level in range(5)] == [True, True, True, False, False]
    one_shot = SCHEDULES["one_shot"]
    assert [one_shot.searches(level, 3) for level in range(4)] == [True, False, False, False]
    assert one_shot.mask_sources(3) == [0] and one_shot.pruned_from(0, 3) == 1


def test_a_user_schedule_prunes_from_its_source_level(digits):
    SCHEDULES.register(EverySecond(), name="every_second")
    try:
        model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                                 hidden=[8])
        runs = {name: lth.LotteryModel(model, digits, train=TRAIN, levels=3, name=name,
                                       prune={"schedule": name}).run(store=None)
                for name in ("every_second", "one_shot")}
    finally:
        del SCHEDULES["every_second"]
    every, one = runs["every_second"], runs["one_shot"]
    # level 2 is pruned from the dense level, with level 2's tie-breaking: one-shot's mask
    assert every.mask(2).tensors().keys() == one.mask(2).tensors().keys()
    assert all(torch.equal(every.mask(2)[n], one.mask(2)[n]) for n in every.mask(2).names())
    assert not torch.equal(every.mask(3)["1.weight"], one.mask(3)["1.weight"])
    assert every.table().steps_to_mask.tolist() == [0, 20, 20, 40]  # level 3: levels 0, 1


@pytest.mark.parametrize("prune, problems", [
    ({"schedule": "targett", "target_sparsity": 0.5},
     ["prune.schedule: got 'targett'", "prune.target_sparsity: only used with schedule"]),
    ({"supermask": "edgepopup", "supermask_lr": -1.0},
     ["prune.supermask: got 'edgepopup'", "prune.supermask_lr: got -1.0; must be > 0"]),
])
def test_a_misspelled_mode_keeps_the_checks_of_its_kind(prune, problems):
    with pytest.raises(lth.ConfigError) as err:
        lth.ExperimentConfig.from_dict({"prune": prune})
    for problem in problems:
        assert problem in str(err.value)


def test_lth_prune_removes_whole_units_with_structure_unit(digits):
    model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                             hidden=[8])
    mask = lth.Mask.ones(model, lth.prunable_names(model))
    theta0 = lth.get_state(model)
    x = digits.x_train[:2]
    with pytest.raises(lth.ConfigError, match="give an input batch"):
        lth.prune(model, mask, init=theta0, level=1, prune={"structure": "unit", "rate": 0.5})
    units = lth.prune(model, mask, init=theta0, level=1, example=x,
                      prune={"structure": "unit", "rate": 0.5})
    rows = units["1.weight"].all(1)
    assert int(rows.sum()) == 4 and not units["1.weight"][~rows].any()  # whole rows
    assert torch.equal(units["3.weight"].all(0), rows)  # the columns reading them
