"""Criteria that score the network (SNIP, GraSP, SynFlow): each equals a direct computation
of its formula, SynFlow's rounds follow the exponential schedule, and runs use them."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import lth
from lth.masks import Mask, prunable_names
from lth.pruning import CRITERIA, select
from lth.pruning.network import NetworkInputs
from lth.seeding import generator

from .conftest import FAST_TRAIN


def tiny(bias: bool = True) -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 12, bias=bias), nn.ReLU(),
                         nn.Linear(12, 8, bias=bias), nn.ReLU(), nn.Linear(8, 10, bias=bias))


def batches_of(digits, n=2, size=16):
    x = digits.prepare(digits.x_train[:n * size])
    y = digits.y_train[:n * size]
    return [(x[i * size:(i + 1) * size], y[i * size:(i + 1) * size]) for i in range(n)]


def inputs(model, mask, batches):
    return NetworkInputs(model, mask, lambda: iter(batches), batches[0][0][:1],
                         lambda m, x: m(x), F.cross_entropy)


def some_mask(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(model.get_parameter(n).shape, generator=g) > 0.3
            for n in prunable_names(model)}


def masked_params(model, mask):
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    for n, keep in mask.items():
        params[n] = params[n] * keep
    return params


def mean_loss(model, batches):
    def f(params):
        return sum(F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)
                   for x, y in batches) / len(batches)
    return f


def test_snip_is_gradient_times_weight(digits):
    model, batches = tiny(), batches_of(digits)
    mask = some_mask(model)
    params = masked_params(model, mask)
    g = torch.func.grad(mean_loss(model, batches))(params)
    scored = copy.deepcopy(model)
    Mask.apply_(Mask(mask), scored)
    scores = CRITERIA["snip"](inputs(scored, mask, batches))
    assert scores.keys() == mask.keys()
    for n in mask:
        assert torch.allclose(scores[n], (g[n] * params[n]).abs(), rtol=1e-5, atol=1e-8)


def test_grasp_is_weight_times_hessian_gradient_product(digits):
    model, batches = tiny(), batches_of(digits)
    mask = some_mask(model, seed=1)
    params = masked_params(model, mask)
    f = mean_loss(model, batches)
    g = torch.func.grad(f)(params)
    # H g over the prunable weights (GraSP's weights; biases are held fixed), forward over
    # reverse: the tangent is g on the weights and 0 on everything else.
    tangent = {n: g[n] if n in mask else torch.zeros_like(g[n]) for n in g}
    _, hg = torch.func.jvp(torch.func.grad(f), (params,), (tangent,))
    scored = copy.deepcopy(model)
    Mask.apply_(Mask(mask), scored)
    scores = CRITERIA["grasp"](inputs(scored, mask, batches))
    for n in mask:
        assert torch.allclose(scores[n], params[n] * hg[n], rtol=1e-4, atol=1e-7)


def test_synflow_is_the_path_flow_of_the_absolute_network():
    """Bias-free: R = 1ᵀ|W3||W2||W1|1, so ∂R/∂|W1| = (|W2|ᵀ|W3|ᵀ1)1ᵀ and so on."""
    model = tiny(bias=False)
    mask = some_mask(model, seed=2)
    scored = copy.deepcopy(model)
    Mask.apply_(Mask(mask), scored)
    a1, a2, a3 = (scored.get_parameter(f"{i}.weight").detach().double().abs()
                  for i in (1, 3, 5))
    ones_in, ones_out = torch.ones(64, dtype=torch.float64), torch.ones(10, dtype=torch.float64)
    expected = {
        "1.weight": a1 * torch.outer(a2.T @ a3.T @ ones_out, ones_in),
        "3.weight": a2 * torch.outer(a3.T @ ones_out, a1 @ ones_in),
        "5.weight": a3 * torch.outer(ones_out, a2 @ a1 @ ones_in),
    }
    data_a = [(torch.randn(5, 1, 8, 8), torch.zeros(5, dtype=torch.long))]
    data_b = [(torch.zeros(5, 1, 8, 8), torch.ones(5, dtype=torch.long))]
    scores = CRITERIA["synflow"](inputs(copy.deepcopy(scored), mask, data_a))
    again = CRITERIA["synflow"](inputs(copy.deepcopy(scored), mask, data_b))
    for n, e in expected.items():
        assert torch.allclose(scores[n].double(), e.float().double(), rtol=1e-5)
        assert torch.equal(scores[n], again[n])  # data-free: only the input's shape counts
    assert all(p.dtype == torch.float32 for p in scored.parameters())  # the model untouched


def test_synflow_prunes_in_100_exponential_rounds(digits):
    """The final mask equals a hand-written loop: round r keeps the n·d^(r/100) survivors
    of best SynFlow score (rescored on the masked network), each layer on its own."""
    model = lth.initialize(tiny(), "default", seed=0)
    theta0 = lth.get_state(model)
    ones = lth.Mask.ones(model, prunable_names(model))
    cfg = {"criterion": "synflow", "rate": 0.9, "schedule": "one_shot"}
    got = lth.prune(model, ones, init=theta0, level=1, prune=cfg, data=digits)

    keep = {n: t.clone() for n, t in ones.items()}
    ties = generator(0, "prune", 1)  # the run's tie-breaking stream (dead units tie at 0)
    for r in range(1, 101):
        scored = copy.deepcopy(model)
        lth.set_state(scored, theta0)
        Mask.apply_(Mask(keep), scored)
        scores = CRITERIA["synflow"](inputs(scored, keep, batches_of(digits, 1)))
        for n, t in keep.items():
            final = lth.pruning.kept_count(t.numel(), 0.1)
            goal = round(t.numel() * (final / t.numel()) ** (r / 100))
            if goal < int(keep[n].sum()):
                keep.update(select({n: scores[n]}, {n: keep[n]}, goal, ties))
    for n in keep:
        assert torch.equal(got[n], keep[n]), n
        assert int(got[n].sum()) == lth.pruning.kept_count(got[n].numel(), 0.1)


def test_pruning_at_initialisation_in_a_run(digits, small_mlp, tmp_path):
    """schedule one_shot + snip: every level is SNIP at θ0 to its density, trained from θ0;
    the level's mask is lth.prune's with the run's seed and batch size."""
    cfg = {"criterion": "snip", "rate": 0.5, "schedule": "one_shot", "score_batches": 2}
    result = lth.LotteryModel(copy.deepcopy(small_mlp), digits, train=FAST_TRAIN, levels=2,
                              prune=cfg).run(store=tmp_path)
    theta0 = result.weights(0, "start")
    ones = lth.Mask.ones(small_mlp, prunable_names(small_mlp))
    for level in (1, 2):
        expected = lth.prune(small_mlp, ones, init=theta0, level=level, prune=cfg,
                             data=digits, batch_size=FAST_TRAIN["batch_size"], n_levels=2,
                             example=digits.prepare(digits.x_train[:2]))
        mask = result.mask(level)
        assert all(torch.equal(mask[n], expected[n]) for n in expected.names())
        start = result.weights(level, "start")
        assert all(torch.equal(start[n], theta0[n] * mask[n]) for n in expected.names())
    table = result.table()
    assert table.start_test_acc.notna().all()
    assert table.start_test_acc.iloc[0] == result.history(0).test_acc.iloc[0]
    fig = lth.report.figures.accuracy_vs_weights(lth.load(tmp_path).levels, metric="start")
    (line,) = [ln for ln in fig.axes[0].get_lines() if len(ln.get_ydata()) == 3]
    assert list(line.get_ydata()) == pytest.approx((table.start_test_acc * 100).tolist())


def test_network_criteria_need_data_and_refuse_early_bird(digits, small_mlp, tmp_path):
    ones = lth.Mask.ones(small_mlp, prunable_names(small_mlp))
    with pytest.raises(lth.ConfigError, match="scores the network.*data="):
        lth.prune(small_mlp, ones, init=lth.get_state(small_mlp), level=1,
                  prune={"criterion": "grasp"})
    with pytest.raises(lth.ConfigError, match="earlybird.*'snip'.*single weights"):
        lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, levels=2,
                         prune={"criterion": "snip"},
                         earlybird={"enabled": True, "every": "10it"}).run(store=tmp_path)
    with pytest.raises(lth.ConfigError, match="score_batches"):
        lth.ExperimentConfig.from_dict({"prune": {"score_batches": 0}})


@pytest.mark.parametrize("criterion", ["snip", "grasp", "synflow"])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_network_criteria_keep_exact_counts(digits, criterion, scope):
    model = lth.initialize(tiny(), "default", seed=0)
    theta0 = lth.get_state(model)
    mask = lth.Mask.ones(model, prunable_names(model))
    cfg = {"criterion": criterion, "scope": scope, "rate": 0.4, "output_rate": 0.2}
    for level in (1, 2):  # IMP-style: the second level prunes the first's survivors
        new = lth.prune(model, mask, init=theta0, level=level, prune=cfg, data=digits)
        assert new.is_subset_of(mask)
        kept, sizes = new.kept(), new.sizes()
        assert kept["5.weight"] == lth.pruning.kept_count(sizes["5.weight"], 0.8 ** level)
        hidden = ["1.weight", "3.weight"]
        if scope == "layer":
            assert all(kept[n] == lth.pruning.kept_count(sizes[n], 0.6 ** level)
                       for n in hidden)
        else:
            assert sum(kept[n] for n in hidden) == lth.pruning.kept_count(
                sum(sizes[n] for n in hidden), 0.6 ** level)
        mask = new


def test_synflow_keeps_the_range_of_deep_nets():
    """ResNet-56's path flows reach ~1e48: beyond float32, where every score would tie at
    inf and the selection would be a coin toss. Scores stay float64 through selection."""
    model = lth.initialize(lth.create_model("resnet56", input_shape=(3, 32, 32),
                                            num_classes=10), "default", seed=0)
    mask = {n: torch.ones_like(model.get_parameter(n), dtype=torch.bool)
            for n in prunable_names(model)}
    data = [(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))]
    scores = CRITERIA["synflow"](inputs(copy.deepcopy(model), mask, data))
    top = max(float(v.max()) for v in scores.values())
    assert top > torch.finfo(torch.float32).max and all(
        bool(torch.isfinite(v).all()) for v in scores.values())
    name = max(scores, key=lambda n: float(scores[n].max()))
    kept = select({name: scores[name]}, {name: mask[name]}, 1, generator(0, "t"))[name]
    assert kept.flatten()[scores[name].flatten().argmax()]  # the best one, not a tie
