from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lth.config import TrainConfig
from lth.errors import TrainingError
from lth.masks import Mask, prunable_names
from lth.train import OnEval, Span, batch_order, lr_function, train_level

from .conftest import states_equal


def pruned(model, fraction=0.6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Mask({n: torch.rand(model.get_parameter(n).shape, generator=g) > fraction
                 for n in prunable_names(model)})


OPTIMIZERS = [
    {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-3},
    {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2},
    {"optimizer": "adam", "lr": 1e-2, "weight_decay": 1e-3},
    {"optimizer": "adamw", "lr": 1e-2, "weight_decay": 0.1},
]


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: o["optimizer"])
def test_pruned_weights_stay_exactly_zero(digits, small_mlp, opt):
    model = small_mlp
    mask = pruned(model)
    cfg = TrainConfig(batch_size=32, **opt)
    span = Span(0, 40, 30, 10, 10**6)
    seen = []

    def check(step):  # after every evaluation, the weights must hold the mask exactly
        for n, keep in mask.items():
            seen.append(bool((model.get_parameter(n)[~keep] == 0).all()))

    before = {n: model.get_parameter(n).detach().clone() for n in mask}
    train_level(model, digits, cfg, mask, span, seed=0, level=1, callbacks=[OnEval(check)])
    assert seen and all(seen)
    mask.check(model)
    for n, keep in mask.items():  # and the survivors did train
        assert not torch.equal(model.get_parameter(n)[keep], before[n][keep])


def test_history_rows_and_early_values(digits, small_mlp):
    cfg = TrainConfig(batch_size=32, lr=5e-3)
    hist = train_level(small_mlp, digits, cfg, pruned(small_mlp, 0.0), Span(0, 50, 30, 20, 10**6),
                       seed=0, level=0)
    assert [r["step"] for r in hist] == [0, 20, 40, 50]
    assert all(0 <= r["test_acc"] <= 1 for r in hist)
    assert hist[-1]["test_acc"] > hist[0]["test_acc"] + 0.2  # it learns
    assert all(0 <= r["train_acc"] <= 1 for r in hist[1:])  # a fraction of examples
    assert hist[-1]["train_acc"] > 0.5


class Recorder:
    def __init__(self, stop_after=None):
        self.saved = None
        self.stop_after = stop_after

    def load(self):
        return self.saved

    def save(self, tensors, meta):
        self.saved = (copy.deepcopy(tensors), copy.deepcopy(meta))
        if self.stop_after is not None and meta["step"] >= self.stop_after:
            raise KeyboardInterrupt


@pytest.mark.parametrize("opt", OPTIMIZERS[:1] + OPTIMIZERS[2:3], ids=["sgd", "adam"])
def test_resume_from_checkpoint_is_bit_identical(digits, opt):
    torch.manual_seed(0)
    base = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.3), nn.ReLU(),
                         nn.Linear(32, 10))
    mask = pruned(base, 0.5)
    cfg = TrainConfig(batch_size=32, **opt)
    span = Span(0, 90, 30, 20, 25)  # checkpoints (25, 50, 75) fall between evaluations

    straight = copy.deepcopy(base)
    h1 = train_level(straight, digits, cfg, mask, span, seed=3, level=2)

    crashed = copy.deepcopy(base)
    ckpt = Recorder(stop_after=45)
    with pytest.raises(KeyboardInterrupt):
        train_level(crashed, digits, cfg, mask, span, seed=3, level=2, checkpoints=ckpt)
    assert ckpt.saved[1]["step"] == 50 and ckpt.saved[1]["sums"]["examples"] == 10 * 32
    resumed = copy.deepcopy(base)  # a fresh process: nothing but the checkpoint survives
    ckpt.stop_after = None
    h2 = train_level(resumed, digits, cfg, mask, span, seed=3, level=2, checkpoints=ckpt)
    assert h1 == h2
    assert states_equal(straight.state_dict(), resumed.state_dict())


def test_training_leaves_global_rng_alone(digits, small_mlp):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_level(small_mlp, digits, TrainConfig(batch_size=32), pruned(small_mlp),
                Span(0, 10, 30, 10, 10**6), seed=0, level=0)
    assert torch.equal(torch.rand(3), expected)


def test_batch_order_is_a_function_of_seed_and_epoch():
    a = batch_order(1, 4, 100, torch.device("cpu"))
    assert torch.equal(a, batch_order(1, 4, 100, torch.device("cpu")))
    assert not torch.equal(a, batch_order(1, 5, 100, torch.device("cpu")))
    assert sorted(a.tolist()) == list(range(100))


def test_lr_schedules():
    cos = lr_function(TrainConfig(lr=1.0, lr_schedule="cosine"), 100, 10)
    assert cos(0) == 1.0 and cos(50) == pytest.approx(0.5) and cos(100) == pytest.approx(0.0)
    step = lr_function(TrainConfig(lr=0.1, lr_schedule="step", milestones=("2ep", 50)), 100, 10)
    assert [step(s) for s in (19, 20, 49, 50)] == pytest.approx([0.1, 0.01, 0.01, 0.001])
    warm = lr_function(TrainConfig(lr=0.1, warmup="1ep"), 100, 10)
    assert warm(0) == pytest.approx(0.01) and warm(9) == pytest.approx(0.1)


def test_divergence_is_a_clear_error(digits, small_mlp):
    cfg = TrainConfig(optimizer="sgd", lr=1e30, batch_size=32)
    with pytest.raises(TrainingError, match="diverged at level 1.*lower train.lr"):
        train_level(small_mlp, digits, cfg, pruned(small_mlp), Span(0, 40, 30, 10, 10**6),
                    seed=0, level=1)


def test_mask_apply_zeroes_nan_weights():
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(float("nan"))
    mask = Mask({"weight": torch.tensor([[1, 0, 0], [0, 0, 1]], dtype=torch.bool)})
    mask.apply_(model)
    assert int((model.weight == 0).sum()) == 4
