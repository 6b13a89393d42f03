"""Layer allocations (``prune.allocation``): ER / ERK densities against their formula, the
cap at 1 and its redistribution, exact per-layer counts in runs, uniform as before."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lth
from lth.config import PruneConfig
from lth.errors import ConfigError
from lth.masks import layer_kinds
from lth.pruning import STRUCTURES, erdos_renyi_densities, kept_count, make_groups, next_mask
from lth.pruning.allocation import AllocatedGroup
from lth.pruning.schedules import SCHEDULES
from lth.seeding import generator

from .conftest import FAST_TRAIN

# a tiny first conv (cap binds), a larger conv, two Linear layers
SHAPES = {"0.weight": (4, 1, 3, 3), "2.weight": (8, 4, 3, 3), "6.weight": (32, 128),
          "8.weight": (10, 32)}


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))


def erk_raw(shape):
    return sum(shape) / math.prod(shape)


def er_raw(shape):
    return (shape[0] + shape[1]) / (shape[0] * shape[1])


@pytest.mark.parametrize(("kernel", "raw"), [(True, erk_raw), (False, er_raw)])
def test_densities_follow_the_formula_with_one_scale(kernel, raw):
    sizes = {n: math.prod(s) for n, s in SHAPES.items()}
    total = sum(sizes.values())
    # High enough a density that no layer is capped: d_i = ε · raw_i, ε from the total.
    density = 0.05
    eps = density * total / sum(raw(s) * sizes[n] for n, s in SHAPES.items())
    assert all(eps * raw(s) < 1 for s in SHAPES.values())
    got = erdos_renyi_densities(SHAPES, density, kernel=kernel)
    for n, s in SHAPES.items():
        assert got[n] == pytest.approx(eps * raw(s), rel=1e-12)


@pytest.mark.parametrize(("kernel", "raw"), [(True, erk_raw), (False, er_raw)])
def test_the_cap_binds_and_the_rest_share_the_excess(kernel, raw):
    sizes = {n: math.prod(s) for n, s in SHAPES.items()}
    total = sum(sizes.values())
    density = 0.3
    got = erdos_renyi_densities(SHAPES, density, kernel=kernel)
    assert got["0.weight"] == 1.0  # the tiny first conv: capped, kept dense
    # The others: one ε, solved over what the dense ones leave.
    dense = {n for n, d in got.items() if d == 1.0}
    rest = [n for n in SHAPES if n not in dense]
    eps = (density * total - sum(sizes[n] for n in dense)) / sum(
        raw(SHAPES[n]) * sizes[n] for n in rest)
    for n in rest:
        assert got[n] == pytest.approx(eps * raw(SHAPES[n]), rel=1e-12) and got[n] < 1
    for n in dense:
        assert eps * raw(SHAPES[n]) >= 1  # would exceed 1 at the final ε too
    # the layers together keep the target density
    assert sum(got[n] * sizes[n] for n in SHAPES) == pytest.approx(density * total)


def test_edge_densities():
    assert set(erdos_renyi_densities(SHAPES, 1.0).values()) == {1.0}
    assert set(erdos_renyi_densities(SHAPES, 0.0).values()) == {0.0}
    # Linear weights: ER and ERK agree
    linear = {k: s for k, s in SHAPES.items() if len(s) == 2}
    assert erdos_renyi_densities(linear, 0.2) == erdos_renyi_densities(linear, 0.2,
                                                                       kernel=False)


def layout(cfg: PruneConfig, model: nn.Module, n_levels: int = 3):
    names = lth.prunable_names(model)
    return STRUCTURES[cfg.structure].layout(cfg, model, names, None, [names[-1]],
                                            layer_kinds(model), n_levels=n_levels)


def test_layout_counts_are_the_allocated_ones_and_own_rates_stay():
    model = conv_net()
    cfg = PruneConfig(allocation="erk", rate=0.5, output_rate=0.1)
    lay = layout(cfg, model)
    schedule = SCHEDULES["geometric"]
    own = {"0.weight", "2.weight", "6.weight"}  # on the default rate; 8.weight has its own
    shapes = {n: SHAPES[n] for n in own}
    for g in lay.groups:
        (name,) = g.names
        for level in range(4):
            if name in own:
                d = erdos_renyi_densities(shapes, 0.5 ** level)[name]
                assert isinstance(g, AllocatedGroup)
            else:
                d = 0.9 ** level
            assert g.kept(schedule, level) == kept_count(g.size, d)
    # together the allocated layers keep the default rate's density, up to rounding
    size = sum(math.prod(s) for s in shapes.values())
    kept = sum(g.kept(schedule, 3) for g in lay.groups if g.names[0] in own)
    assert abs(kept - 0.125 * size) <= len(own)
    hash(lay.groups[0])  # groups stay hashable (dict keys of next_mask)


def test_target_schedule_reaches_its_target_with_erk():
    model = conv_net()
    cfg = PruneConfig(allocation="erk", schedule="target", target_sparsity=0.9)
    lay = layout(cfg, model, n_levels=4)
    total = sum(g.size for g in lay.groups)
    kept = sum(g.kept(SCHEDULES["target"], 4) for g in lay.groups)
    assert abs(kept - 0.1 * total) <= len(lay.groups)
    densities = [g.density(SCHEDULES["target"], 4) for g in lay.groups]
    assert len(set(densities)) == len(densities)  # each layer its own
    uniform = layout(PruneConfig(schedule="target", target_sparsity=0.9), model, n_levels=4)
    assert lay.rates == uniform.rates  # the same default rate, shared differently


def test_uniform_is_todays_grouping_and_masks():
    model = conv_net()
    names = lth.prunable_names(model)
    cfg = PruneConfig(allocation="uniform", rate=0.3, criterion="random")
    lay = layout(cfg, model)
    sizes = {n: model.get_parameter(n).numel() for n in names}
    assert lay.groups == make_groups("layer", dict.fromkeys(names, 0.3), sizes)
    state = lth.get_state(model)
    mask = lth.Mask.ones(model, names)
    got = lth.prune(model, mask, init=state, level=1, prune=cfg)
    want = next_mask(cfg, lay.groups, 1, mask, state, state, generator(0, "prune", 1))
    assert all(torch.equal(got[n], want[n]) for n in names)


def test_run_counts_are_exact_per_layer(digits, tmp_path):
    res = lth.LotteryModel(conv_net(), digits, train=FAST_TRAIN,
                           prune={"allocation": "erk", "rate": 0.5}, levels=2).run(
        store=tmp_path)
    sizes = {n: math.prod(s) for n, s in SHAPES.items()}
    for level in (1, 2):
        want = erdos_renyi_densities(SHAPES, 0.5 ** level)
        kept = res.mask(level).kept()
        assert kept == {n: kept_count(sizes[n], want[n]) for n in SHAPES}
    assert res.mask(2).kept()["0.weight"] == 36  # the tiny conv stays dense
    before = res.mask(1)
    assert all(not (res.mask(2)[n] & ~before[n]).any() for n in SHAPES)  # only shrinks


def test_uniform_run_keeps_the_schedules_counts(digits, small_mlp, tmp_path):
    res = lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, levels=1,
                           prune={"allocation": "uniform"}).run(store=tmp_path)
    assert res.mask(1).kept() == {n: kept_count(n_, 0.8)
                                  for n, n_ in res.mask(1).sizes().items()}
    assert "allocation" not in res.config()["identity"]["settings"]["prune"]


def test_learned_supermasks_keep_the_allocated_counts(digits, tmp_path):
    res = lth.LotteryModel(conv_net(), digits, train=FAST_TRAIN, levels=1,
                           prune={"allocation": "erk", "rate": 0.5, "supermask": "edge_popup"}
                           ).run(store=tmp_path)
    want = erdos_renyi_densities(SHAPES, 0.5)
    assert res.mask(1).kept() == {n: kept_count(math.prod(s), want[n])
                                  for n, s in SHAPES.items()}


@pytest.mark.parametrize("criterion", ["random", "snip", "large_init"])
def test_at_init_criteria_get_the_allocated_counts(criterion, digits):
    model = conv_net()
    names = lth.prunable_names(model)
    mask = lth.Mask.ones(model, names)
    cfg = {"allocation": "er", "rate": 0.5, "criterion": criterion}
    out = lth.prune(model, mask, init=lth.get_state(model), level=2, prune=cfg, data=digits)
    want = erdos_renyi_densities(SHAPES, 0.25, kernel=False)
    assert out.kept() == {n: kept_count(math.prod(SHAPES[n]), want[n]) for n in names}


@pytest.mark.parametrize("settings", [{"scope": "global"}, {"structure": "unit"},
                                      {"structure": "nm"}])
def test_refused_where_it_cannot_apply(settings):
    with pytest.raises(ConfigError) as err:
        PruneConfig(allocation="erk", **settings)
    assert str(err.value).count("allocation") >= 1
    assert "'erk'" in str(err.value)


def test_an_unknown_allocation_says_what_exists():
    with pytest.raises(ConfigError, match="erk"):
        PruneConfig(allocation="erk2")
