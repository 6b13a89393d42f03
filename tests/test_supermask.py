"""Learned supermasks (edge-popup, Bernoulli): gradients are straight-through, the weights
never change, the stored mask keeps the schedule's exact counts and is the one evaluated,
and an interrupted level resumes bit-identically."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import lth
from lth.masks import prunable_names
from lth.pruning import kept_count
from lth.pruning.supermask import SupermaskNet
from lth.seeding import derive_seed
from lth.train import evaluate

from .conftest import FAST_TRAIN

NAMES = ("1.weight", "3.weight", "5.weight")


def tiny() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 8),
                         nn.ReLU(), nn.Linear(8, 10))


def layerwise(model: nn.Module, density: float) -> list[tuple[tuple[str], int]]:
    return [((n,), kept_count(model.get_parameter(n).numel(), density)) for n in NAMES]


def effective_weight_grads(model, weights, x, y):
    """d loss / d w_eff at the effective weights ``weights`` (a direct computation)."""
    leaves = {n: w.detach().clone().requires_grad_(True) for n, w in weights.items()}
    loss = F.cross_entropy(torch.func.functional_call(model, leaves, (x,)), y)
    loss.backward()
    return {n: t.grad for n, t in leaves.items()}


def test_edge_popup_uses_the_top_k_scores_and_passes_gradients_straight_through(digits):
    model = tiny()
    net = SupermaskNet(copy.deepcopy(model), layerwise(model, 0.4), "edge_popup", seed=0,
                       level=1)
    x, y = digits.prepare(digits.x_train[:32]), digits.y_train[:32]
    F.cross_entropy(net(x), y).backward()
    masks, weights = {}, {}
    for n in NAMES:
        s = net.scores[n.replace(".", ":")].detach()
        k = kept_count(s.numel(), 0.4)
        top = torch.zeros(s.numel(), dtype=torch.bool)
        top[s.abs().flatten().topk(k).indices] = True
        masks[n] = top.view_as(s)
        weights[n] = model.get_parameter(n).detach() * masks[n]
    g = effective_weight_grads(model, weights, x, y)
    for n in NAMES:
        s = net.scores[n.replace(".", ":")]
        expected = g[n] * model.get_parameter(n).detach() * s.detach().sign()
        torch.testing.assert_close(s.grad, expected)
        assert torch.equal(net.exact_masks()[n], masks[n])  # no ties: the same top k
    assert not any(p.requires_grad for p in net.base.parameters())


def test_bernoulli_samples_the_mask_and_passes_gradients_to_the_probability(digits):
    model = tiny()
    net = SupermaskNet(copy.deepcopy(model), layerwise(model, 0.3), "bernoulli", seed=0,
                       level=1)
    with torch.no_grad():  # scores apart, so the probabilities differ
        for s in net.scores.values():
            s.add_(torch.randn(s.shape, generator=torch.Generator().manual_seed(1)))
    x, y = digits.prepare(digits.x_train[:32]), digits.y_train[:32]
    F.cross_entropy(net(x), y).backward()
    assert int(net.draws) == len(NAMES)
    weights, probs = {}, {}
    for g, n in enumerate(NAMES):  # the same draws: each seeded by its number
        probs[n] = (net.scores[n.replace(".", ":")].detach() + net.offsets[g]).sigmoid()
        # the offset holds the expected density at the schedule's 30%
        assert float(probs[n].sum()) == pytest.approx(kept_count(probs[n].numel(), 0.3),
                                                      rel=2e-3)
        draw = torch.Generator().manual_seed(derive_seed(net.sample_seed, g))
        weights[n] = model.get_parameter(n).detach() * torch.bernoulli(probs[n],
                                                                       generator=draw)
    g = effective_weight_grads(model, weights, x, y)
    for n in NAMES:
        p = probs[n]
        expected = g[n] * model.get_parameter(n).detach() * p * (1 - p)
        torch.testing.assert_close(net.scores[n.replace(".", ":")].grad, expected)


def test_initial_scores_start_on_the_schedule():
    model = tiny()
    bern = SupermaskNet(copy.deepcopy(model), layerwise(model, 0.25), "bernoulli", seed=0,
                        level=1)
    for s in bern.scores.values():
        torch.testing.assert_close(s.sigmoid(), torch.full_like(s, 0.25))
    a = SupermaskNet(copy.deepcopy(model), layerwise(model, 0.25), "edge_popup", seed=0,
                     level=1)
    b = SupermaskNet(copy.deepcopy(model), layerwise(model, 0.25), "edge_popup", seed=1,
                     level=1)
    for n in NAMES:
        s = a.scores[n.replace(".", ":")]
        assert s.abs().max() <= 1 / model.get_parameter(n)[0].numel() ** 0.5
        assert not torch.equal(s, b.scores[n.replace(".", ":")])  # seeded per run


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_training_masks_keep_exactly_k_per_group(scope):
    model = tiny()
    if scope == "layer":
        groups = layerwise(model, 0.3)
    else:
        size = sum(model.get_parameter(n).numel() for n in NAMES)
        groups = [(NAMES, kept_count(size, 0.3))]
    net = SupermaskNet(copy.deepcopy(model), groups, "edge_popup", seed=0, level=1)
    for names, k in groups:
        ranks = net._ranking(names)
        assert sum(int(m.sum()) for m in net._training_masks(names, k, ranks)) == k
        assert sum(int(net.exact_masks()[n].sum()) for n in names) == k
    assert net.mask().names() == list(NAMES)


@pytest.mark.parametrize("method", ["edge_popup", "bernoulli"])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_a_learned_supermask_run_never_changes_a_weight(digits, small_mlp, tmp_path, method,
                                                        scope):
    train = {**FAST_TRAIN, "duration": "300it", "eval_every": "100it"}
    prune = {"rate": 0.5, "schedule": "one_shot", "scope": scope, "supermask": method,
             "supermask_lr": 0.05 if method == "edge_popup" else 0.5}
    result = lth.LotteryModel(copy.deepcopy(small_mlp), digits, train=train, levels=2,
                              prune=prune).run(store=tmp_path)
    theta0 = result.run.theta0()
    names = prunable_names(small_mlp)
    sizes = {n: small_mlp.get_parameter(n).numel() for n in names}
    table = result.table().set_index("level")
    for level in (1, 2):
        start, final, mask = (result.weights(level, "start"), result.weights(level),
                              result.mask(level))
        assert all(torch.equal(start[n], theta0[n]) for n in theta0)  # rewound, unmasked
        for n in theta0:
            if n in names:
                assert torch.equal(final[n], theta0[n] * mask[n])  # bit for bit
            elif "running" not in n and "num_batches" not in n:
                assert torch.equal(final[n], theta0[n])
        if scope == "layer":
            assert mask.kept() == {n: kept_count(sizes[n], 0.5 ** level) for n in names}
        else:
            assert sum(mask.kept().values()) == kept_count(sum(sizes.values()), 0.5 ** level)
        # The stored mask is the one evaluated: the last test accuracy is the final
        # weights' own.
        model = copy.deepcopy(small_mlp)
        lth.set_state(model, final)
        own = evaluate(model, digits.x_test, digits.y_test, 256, digits.prepare)
        assert own["acc"] == table.loc[level, "final_test_acc"]  # exactly w · m
    assert (table.loc[[1, 2], "steps_to_mask"] == table.loc[[1, 2], "train_steps"]).all()
    gain = table["best_test_acc"] - table["start_test_acc"]
    assert gain.loc[[1, 2]].mean() > 0.1  # the scores learn (chance: 0.1)


def test_scores_train_at_their_own_learning_rate(digits, small_mlp, tmp_path):
    train = {**FAST_TRAIN, "duration": "40it", "eval_every": "20it"}
    runs = [lth.LotteryModel(copy.deepcopy(small_mlp), digits, train=train, levels=1,
                             prune={"rate": 0.5, "supermask": "edge_popup",
                                    "supermask_lr": lr}).run(store=tmp_path)
            for lr in (None, 0.05)]
    assert runs[0].path != runs[1].path
    assert runs[0].weights(0).keys() == runs[1].weights(0).keys()
    lr = [r.history().query("level == 1")["lr"].max() for r in runs]
    assert lr[0] == pytest.approx(lth.TrainConfig().lr) and lr[1] == pytest.approx(0.05)
    assert (runs[1].path / "level_000").exists()
    dense = [r.history().query("level == 0")["lr"].max() for r in runs]
    assert dense[0] == dense[1]  # the dense level trains at train.lr: one shared level 0


def test_an_interrupted_supermask_level_resumes_bit_identically(digits, small_mlp, tmp_path):
    train = {**FAST_TRAIN, "duration": "100it", "eval_every": "20it",
             "checkpoint_every": "20it"}
    make = lambda: lth.LotteryModel(copy.deepcopy(small_mlp), digits, train=train,  # noqa: E731
                                    levels=1, prune={"rate": 0.5, "supermask": "bernoulli",
                                                     "supermask_lr": 0.5})
    straight = make().run(store=tmp_path / "a")

    def stop(level, step, end):
        if level == 1 and step >= 60:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make().run(store=tmp_path / "b", progress=stop)
    assert any((tmp_path / "b").rglob("level_001/checkpoint.safetensors"))
    resumed = make().run(store=tmp_path / "b")
    assert straight.mask(1) == resumed.mask(1)
    a, b = straight.weights(1), resumed.weights(1)
    assert all(torch.equal(a[n], b[n]) for n in a)
    cols = ["step", "train_loss", "test_loss", "test_acc"]
    assert straight.history()[cols].equals(resumed.history()[cols])


@pytest.mark.parametrize("settings, match", [
    ({"prune": {"supermask": "edge_pop"}}, "did you mean 'edge_popup'"),
    ({"prune": {"supermask": "edge_popup", "criterion": "snip"}}, "criterion"),
    ({"prune": {"supermask": "edge_popup", "structure": "unit"}}, "structure"),
    ({"prune": {"supermask": "bernoulli", "supermask_lr": 0}}, "supermask_lr"),
    ({"prune": {"supermask_lr": 0.1}}, "only used with a learned supermask"),
    ({"prune": {"supermask": "bernoulli"}, "masks_from": "elsewhere"}, "masks_from"),
    ({"prune": {"supermask": "bernoulli"}, "earlybird": {"enabled": True}}, "earlybird"),
    ({"prune": {"supermask": "edge_popup"}, "reinit": {"mode": "finetune"}}, "zeros"),
    ({"prune": {"supermask": "edge_popup"}, "reinit": {"mode": "lr_rewind"}}, "zeros"),
])
def test_settings_a_supermask_cannot_use_are_refused(settings, match):
    with pytest.raises(lth.ConfigError, match=match):
        lth.ExperimentConfig.from_dict(settings)


def test_supermask_levels_train_alone_in_a_stacked_run(digits, small_mlp, tmp_path,
                                                       monkeypatch):
    from .test_stack import record_stack_sizes

    robust = lth.LotteryRobust(copy.deepcopy(small_mlp), digits, train=FAST_TRAIN, levels=1,
                               seeds=[0, 1], prune={"rate": 0.5, "supermask": "edge_popup"})
    alone = robust.run(store=tmp_path / "alone", executor="sequential", stack=1)
    sizes = record_stack_sizes(monkeypatch)
    stacked = robust.run(store=tmp_path / "stacked", executor="sequential", stack=2)
    assert sizes == [2]  # the dense levels stacked; the supermask levels did not
    for a, b in zip(alone.trials().run_dir, stacked.trials().run_dir, strict=True):
        assert lth.Result(a).mask(1) == lth.Result(b).mask(1)


def test_a_supermask_over_a_batchnorm_net_keeps_weights_and_gathers_statistics(digits,
                                                                              tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(),
                          nn.Linear(32, 10))
    result = lth.LotteryModel(model, digits, train=FAST_TRAIN, levels=1,
                              prune={"rate": 0.5, "supermask": "bernoulli",
                                     "supermask_lr": 0.5}).run(store=tmp_path)
    theta0, final, mask = result.run.theta0(), result.weights(1), result.mask(1)
    for n in theta0:
        if n in mask.names():
            assert torch.equal(final[n], theta0[n] * mask[n])
        elif "running" in n or "num_batches" in n:
            assert not torch.equal(final[n], theta0[n])  # statistics of the masked net
        else:
            assert torch.equal(final[n], theta0[n])  # BatchNorm's scale and shift: frozen
