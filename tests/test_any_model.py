"""Models beyond Linear/Conv stacks: raw parameters, attention, lazy modules; and the
quantile the init/final criteria take."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

import lth
from lth.masks import output_layer
from lth.pruning.criteria import ScoreInputs, _quantile_ratio, pruned_count

from .conftest import FAST_TRAIN


class RawThenHead(nn.Module):
    """A raw parameter used with F.linear before a Linear head."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(32, 64) * 0.1)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(F.relu(F.linear(x.flatten(1), self.w)))


def test_the_output_layer_is_where_the_forward_pass_ends(digits):
    model = RawThenHead()
    assert output_layer(model, ["w", "head.weight"], digits.x_train[:2]) == ["head.weight"]
    plan = lth.LotteryModel(model, digits, prune={"include": ["w"], "output_rate": 0.5},
                            initializer="keep").check()
    assert plan.rates == {"w": 0.2, "head.weight": 0.5}


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        h = self.embed(x.view(len(x), 8, 8))
        h, _ = self.attn(h, h, h)
        return self.head(h.mean(1))


def test_attention_is_redrawn_per_seed_with_its_own_initialiser():
    a = lth.initialize(Attention(), "default", seed=1)
    b = lth.initialize(Attention(), "default", seed=2)
    assert not torch.equal(a.attn.in_proj_weight, b.attn.in_proj_weight)
    assert torch.equal(a.attn.out_proj.bias, torch.zeros(16))  # as MultiheadAttention draws it
    assert torch.equal(a.attn.in_proj_bias, torch.zeros(48))


class Unreset(nn.Module):
    """A parameter no initialiser draws: the same θ0 for every seed."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(10, 64))

    def forward(self, x):
        return F.linear(x.flatten(1), self.w)


def test_a_parameter_no_initialiser_draws_is_named(digits, caplog):
    with caplog.at_level(logging.WARNING, logger="lth"):
        lth.LotteryModel(Unreset(), digits, prune={"include": ["w"]}).check()
    assert "no initialiser redraws w" in caplog.text


def test_lazy_modules_take_their_shapes_from_the_data(digits, tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.LazyLinear(16), nn.ReLU(), nn.LazyLinear(10))
    result = lth.LotteryModel(model, digits, levels=1, train=FAST_TRAIN).run(store=tmp_path)
    assert result.mask(1).sizes() == {"1.weight": 64 * 16, "3.weight": 160}


def test_the_quantile_is_taken_at_the_count_being_pruned():
    """large_init_large_final's ratio uses the k-th smallest survivor with k = the number
    pruned; float rounding made it k + 1 in about a fifth of (alive, keep) pairs."""
    g = torch.Generator().manual_seed(0)
    wrong = 0
    for alive in range(5, 400, 7):
        for keep in range(1, alive):
            fraction = 1.0 - keep / alive
            wrong += pruned_count(fraction, alive) != alive - keep
    assert wrong == 0
    init, final = torch.randn(100, generator=g), torch.randn(100, generator=g)
    s = ScoreInputs(init, final, torch.ones(100, dtype=torch.bool), 1.0 - 80 / 100, g)
    k = 20
    want = float(init.abs().kthvalue(k).values) / float(final.abs().kthvalue(k).values)
    assert _quantile_ratio(s) == want


def test_bias_init_zeros_matches_the_papers_lenet(digits, small_mlp):
    from lth.config import load_config

    zeros = lth.LotteryModel(small_mlp, digits, initializer="xavier_normal", bias_init="zeros")
    default = lth.LotteryModel(small_mlp, digits, initializer="xavier_normal")
    theta0, before = zeros.check().theta0, default.check().theta0
    biases = [n for n in theta0 if n.endswith("bias")]
    assert biases and all(not theta0[n].any() for n in biases)
    assert all(before[n].any() for n in biases)  # PyTorch's uniform draw otherwise
    assert all(torch.equal(theta0[n], before[n]) for n in theta0 if n.endswith("weight"))
    assert zeros.spec() != default.spec()
    cfg = load_config("configs/lenet_mnist.toml")
    assert cfg.model.bias_init == "zeros"


def test_stepping_by_hand_gives_the_imp_loops_numbers(digits, small_mlp, tmp_path):
    import copy

    from .conftest import states_equal

    settings = {"prune": {"rate": 0.3, "output_rate": 0.1}, "reinit": {"mode": "jitter"}}
    result = lth.LotteryModel(small_mlp, digits, levels=2, train=FAST_TRAIN,
                              **settings).run(store=tmp_path)
    model = copy.deepcopy(small_mlp)
    theta0 = result.run.theta0()
    lth.set_state(model, theta0)
    mask = lth.Mask.ones(model, lth.prunable_names(model))
    curves = lth.fit(model, digits, mask=mask, level=0, train=FAST_TRAIN)
    assert states_equal(lth.get_state(model), result.weights(0))
    assert curves.test_acc.tolist() == result.history(0).test_acc.tolist()
    began = theta0
    for level in (1, 2):
        mask = lth.prune(model, mask, init=began, level=level, prune=settings["prune"])
        assert mask == result.mask(level)
        began = lth.reinit(model, mask, theta0=theta0, level=level, reinit=settings["reinit"])
        assert states_equal(began, result.weights(level, "start"))
        lth.fit(model, digits, mask=mask, level=level, train=FAST_TRAIN)
        assert states_equal(lth.get_state(model), result.weights(level))


class ReadsTheHeadsDtype(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(64, 16), nn.Linear(16, 10)

    def forward(self, x):
        y = self.head(torch.relu(self.body(x.flatten(1))))
        return torch.relu(y).to(self.body.weight.dtype)  # a read, not a use


def test_reading_a_weights_dtype_is_not_using_it(digits):
    model = ReadsTheHeadsDtype()
    assert output_layer(model, ["body.weight", "head.weight"], digits.x_train[:2]) == [
        "head.weight"]


def test_binary_and_negative_whole_number_labels():
    import numpy as np

    x = np.random.default_rng(0).normal(size=(20, 3))
    binary = lth.from_arrays(x[:15], x[:15, 0] > 0, x[15:], x[15:, 0] > 0)
    assert binary.y_train.dtype == torch.int64 and binary.num_classes == 2
    scores = lth.from_arrays(x[:15], np.round(x[:15, 0] * 3), x[15:], np.round(x[15:, 0] * 3))
    assert scores.y_train.dtype == torch.float32  # negative whole numbers: targets, not classes


def test_a_mask_for_another_model_names_the_parameter(small_mlp):
    import pytest

    other = lth.Mask.ones(nn.Sequential(nn.Flatten(), nn.Linear(64, 7)), ["1.weight"])
    with pytest.raises(lth.ModelError, match=r"mask of 1.weight has shape \(7, 64\)"):
        lth.apply_mask(small_mlp, other)
    with pytest.raises(lth.ModelError, match="parameter 'head.weight'"):
        lth.apply_mask(small_mlp, lth.Mask({"head.weight": torch.ones(3, dtype=torch.bool)}))
