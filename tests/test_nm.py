"""N:M masks (``prune.structure = "nm"``): exactly k kept in every group of M consecutive
weights along the input dimension, the IMP path from M:M down to N:M, the criterion's best
kept in each group, layers that cannot be grouped kept dense and reported."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import lth
from lth.config import PruneConfig
from lth.errors import ConfigError, ModelError
from lth.masks import layer_kinds
from lth.pruning import STRUCTURES, NMLayout, kept_count

from .conftest import FAST_TRAIN

NM = {"structure": "nm"}


def conv_net(first_in: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(first_in, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 12))


def per_group(t: torch.Tensor, m: int) -> torch.Tensor:
    """Kept count of every group, grouped by hand: Linear rows in runs of m inputs; conv
    m consecutive input channels at each (out, kh, kw)."""
    if t.dim() == 4:
        t = t.permute(0, 2, 3, 1)  # [out, kh, kw, in]
    return t.reshape(-1, m).sum(1)


def make_layout(cfg: PruneConfig, model: nn.Module, n_levels: int = 1) -> NMLayout:
    names = lth.prunable_names(model)
    return STRUCTURES["nm"].layout(cfg, model, names, None, [names[-1]], layer_kinds(model),
                                   n_levels=n_levels)


def test_every_group_keeps_exactly_n_and_ungroupable_layers_stay_dense():
    model = conv_net()
    names = lth.prunable_names(model)
    mask = lth.prune(model, lth.Mask.ones(model, names), init=lth.get_state(model), level=1,
                     prune={**NM, "rate": 0.5})
    assert mask["0.weight"].all()  # one input channel: kept dense
    for name in ("2.weight", "6.weight", "8.weight"):
        assert torch.equal(per_group(mask[name], 4), torch.full_like(
            per_group(mask[name], 4), 2))


def test_n_of_m_other_than_2_of_4():
    model = conv_net()
    names = lth.prunable_names(model)
    mask = lth.prune(model, lth.Mask.ones(model, names), init=lth.get_state(model), level=1,
                     prune={**NM, "nm": [1, 8], "rate": 0.9})
    for name in ("2.weight", "6.weight", "8.weight"):  # 8, 128 and 16 inputs: all in 8s
        assert set(per_group(mask[name], 8).tolist()) == {1}
    assert mask["0.weight"].all()


def test_imp_goes_from_3_of_4_to_2_of_4_masks_only_shrinking(digits, tmp_path):
    res = lth.LotteryModel(conv_net(), digits, train=FAST_TRAIN, prune={**NM, "rate": 0.2},
                           levels=4).run(store=tmp_path)
    ks = [max(2, kept_count(4, 0.8 ** level)) for level in range(5)]
    assert ks == [4, 3, 3, 2, 2]
    for level in range(1, 5):
        mask, before = res.mask(level), res.mask(level - 1)
        for name in ("2.weight", "6.weight", "8.weight"):
            assert set(per_group(mask[name], 4).tolist()) == {ks[level]}, (level, name)
            assert not (mask[name] & ~before[name]).any()
        assert mask["0.weight"].all()
    info = res.config()["structure"]
    assert info["nm"] == [2, 4] and info["layers"] == ["2.weight", "6.weight", "8.weight"]
    assert "0.weight" in info["kept_dense"]
    assert res.config()["rates"]["0.weight"] == 0.0


def test_one_shot_half_gives_exact_2_of_4_on_the_mlp(digits, small_mlp, tmp_path):
    res = lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, levels=1,
                           prune={**NM, "rate": 0.5, "schedule": "one_shot"}).run(
        store=tmp_path)
    mask = res.mask(1)
    for name, t in mask.items():
        assert set(per_group(t, 4).tolist()) == {2}, name
    assert mask.density() == 0.5


def test_kept_weights_are_each_groups_top_n_by_the_criterion():
    model = conv_net()
    names = lth.prunable_names(model)
    final = {k: torch.randn_like(v) for k, v in lth.get_state(model).items()}
    mask = lth.prune(model, lth.Mask.ones(model, names), init=lth.get_state(model), level=1,
                     final=final, prune={**NM, "rate": 0.5, "criterion": "large_final"})
    for name in ("2.weight", "6.weight", "8.weight"):
        w = final[name].abs()
        grouped = (w.permute(0, 2, 3, 1) if w.dim() == 4 else w).reshape(-1, 4)
        kept = (mask[name].permute(0, 2, 3, 1) if w.dim() == 4 else mask[name]).reshape(-1, 4)
        best = torch.zeros_like(kept).scatter_(1, grouped.topk(2, dim=1).indices, True)
        assert torch.equal(kept, best)


def test_pruned_weights_never_win_and_ties_are_seeded():
    model = conv_net()
    names = lth.prunable_names(model)
    state = lth.get_state(model)
    zeros = {k: torch.zeros_like(v) for k, v in state.items()}  # every score tied
    m1 = lth.prune(model, lth.Mask.ones(model, names), init=state, level=1, final=zeros,
                   prune={**NM, "rate": 0.2})
    m2 = lth.prune(model, m1, init=state, level=3, final=zeros, prune={**NM, "rate": 0.2})
    again = lth.prune(model, m1, init=state, level=3, final=zeros, prune={**NM, "rate": 0.2})
    other = lth.prune(model, m1, init=state, level=3, final=zeros, seed=1,
                      prune={**NM, "rate": 0.2})
    for name in ("2.weight", "6.weight"):
        assert set(per_group(m2[name], 4).tolist()) == {2}
        assert not (m2[name] & ~m1[name]).any()
        assert torch.equal(m2[name], again[name])
    assert any(not torch.equal(m2[n], other[n]) for n in ("2.weight", "6.weight"))


@pytest.mark.parametrize("criterion", ["snip", "synflow", "random"])
def test_any_criterion_gives_n_of_m(criterion, digits):
    model = conv_net()
    names = lth.prunable_names(model)
    mask = lth.prune(model, lth.Mask.ones(model, names), init=lth.get_state(model), level=1,
                     data=digits, prune={**NM, "rate": 0.5, "criterion": criterion})
    for name in ("2.weight", "6.weight", "8.weight"):
        assert set(per_group(mask[name], 4).tolist()) == {2}


def test_a_three_channel_conv_stays_dense_and_is_reported(caplog):
    with caplog.at_level(logging.INFO, logger="lth"):
        lay = make_layout(PruneConfig(**NM, rate=0.5), conv_net(first_in=3))
    assert lay.info()["structure"]["kept_dense"] == {
        "0.weight": "its input dimension (3) is not a multiple of M = 4"}
    assert lay.group_ids("0.weight") is None
    assert lay.rates["0.weight"] == 0.0 and lay.groups[0].kept(
        lth.pruning.SCHEDULES["geometric"], 3) == lay.groups[0].size
    assert sum("kept dense" in r.getMessage() for r in caplog.records) == 1


def test_group_ids_match_the_groups_and_the_counts():
    model = conv_net()
    lay = make_layout(PruneConfig(**NM, rate=0.5), model)
    names = lth.prunable_names(model)
    mask = lay.next_mask(PruneConfig(**NM, rate=0.5), 1, lth.Mask.ones(model, names),
                         lth.get_state(model), lth.get_state(model), torch.Generator())
    assert (lay.n, lay.m) == (2, 4)
    for name in ("2.weight", "6.weight", "8.weight"):
        ids = lay.group_ids(name)
        assert ids.shape == mask[name].shape and ids.dtype == torch.long
        assert torch.equal(torch.bincount(ids.flatten()), torch.full((ids.max() + 1,), 4))
        assert torch.equal(torch.bincount(ids[mask[name]]), torch.full((ids.max() + 1,), 2))
        # the ids follow the grouping by hand
        grouped = ids.permute(0, 2, 3, 1) if ids.dim() == 4 else ids
        assert torch.equal(grouped.reshape(-1, 4),
                           torch.arange(ids.numel() // 4)[:, None].expand(-1, 4))
    groups = {g.names[0]: g for g in lay.groups}
    schedule = lth.pruning.SCHEDULES["geometric"]
    assert groups["6.weight"].kept(schedule, 1) == 16 * 128 // 4 * 2
    assert int(mask["6.weight"].sum()) == groups["6.weight"].kept(schedule, 1)


def test_no_groupable_layer_is_one_model_error():
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(ModelError, match="no layer to group"):
        make_layout(PruneConfig(**NM), model)


@pytest.mark.parametrize(("settings", "key"), [
    ({**NM, "nm": [4, 4]}, "nm"), ({**NM, "nm": [0, 4]}, "nm"), ({**NM, "nm": [2, 128]}, "nm"),
    ({"nm": [1, 4]}, "nm"), ({**NM, "scope": "global"}, "scope"),
    ({**NM, "supermask": "edge_popup"}, "supermask")])
def test_config_problems(settings, key):
    with pytest.raises(ConfigError, match=rf"- {key}:"):
        PruneConfig(**settings)


def test_random_mask_copies_are_refused(digits, small_mlp, tmp_path):
    with pytest.raises(ConfigError, match="random_layer"):
        lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, levels=1, prune=NM,
                         masks_from=tmp_path, masks_from_mode="random_layer").run(
            store=tmp_path)
