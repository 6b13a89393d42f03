from __future__ import annotations

import pytest
import torch
from torch import nn

import lth
from lth.masks import Mask, layer_kinds, output_layer, prunable_names


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.b = nn.Linear(6, 6)
        self.b.weight = self.a.weight  # one weight used by two layers
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(torch.relu(self.b(torch.relu(self.a(x)))))


def test_default_prunable_are_linear_and_conv_weights():
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.Flatten(),
                          nn.Linear(8, 5), nn.Embedding(3, 2))
    assert prunable_names(model) == ["0.weight", "3.weight"]
    kinds = layer_kinds(model)
    assert kinds["0.weight"] == "conv" and kinds["3.weight"] == "linear"
    assert kinds["1.weight"] == "other"


def test_include_and_exclude_patterns():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    assert prunable_names(model, include=["*.bias"]) == ["0.weight", "0.bias", "1.weight",
                                                         "1.bias"]
    assert prunable_names(model, exclude=["1.*"]) == ["0.weight"]
    with pytest.raises(lth.ModelError, match="matches no parameter"):
        prunable_names(model, include=["nothing.*"])
    with pytest.raises(lth.ModelError, match="no prunable parameters"):
        prunable_names(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)))


def test_shared_weight_is_one_mask_entry():
    model = Tied()
    assert prunable_names(model) == ["a.weight", "head.weight"]


def test_output_layer_follows_the_forward_pass_not_definition_order():
    class Backwards(nn.Module):
        def __init__(self):
            super().__init__()
            self.out = nn.Linear(5, 2)  # defined first, used last
            self.inp = nn.Linear(3, 5)

        def forward(self, x):
            return self.out(torch.relu(self.inp(x)))

    model = Backwards()
    names = prunable_names(model)
    assert output_layer(model, names, torch.zeros(2, 3)) == ["out.weight"]


def test_mask_density_apply_and_subset():
    model = nn.Linear(4, 2)
    mask = Mask({"weight": torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)})
    assert mask.kept() == {"weight": 3} and mask.density() == 3 / 8
    mask.apply_(model)
    assert int((model.weight != 0).sum()) == 3
    mask.check(model)
    ones = Mask.ones(model, ["weight"])
    assert mask.is_subset_of(ones) and not ones.is_subset_of(mask)
    with torch.no_grad():
        model.weight[0, 1] = 1.0
    with pytest.raises(AssertionError):
        mask.check(model)
