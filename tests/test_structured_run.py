"""Structured (unit) pruning inside IMP runs: whole neurons and channels, exact unit counts,
the trained pruned net equal to the physically smaller one, early-bird over units."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import lth
from lth.pruning import kept_count

from .conftest import FAST_TRAIN

UNIT = {"structure": "unit", "rate": 0.5}


def conv_bn(digits) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 10))


def run(model, data, store, prune, levels=2, **kw):
    return lth.LotteryModel(model, data, train=FAST_TRAIN, prune=prune, levels=levels,
                            **kw).run(store=store)


def test_mlp_units_pruned_whole_and_equal_to_the_smaller_net(digits, small_mlp, tmp_path):
    res = run(small_mlp, digits, tmp_path, UNIT)
    for level, (n1, n2) in [(1, (16, 8)), (2, (8, 4))]:
        mask, final = res.mask(level), res.weights(level)
        rows1, rows2 = mask["1.weight"].any(1), mask["3.weight"].any(1)
        assert (int(rows1.sum()), int(rows2.sum())) == (n1, n2)
        # whole rows and columns only: every kept row keeps exactly the live inputs
        assert torch.equal(mask["1.weight"], rows1[:, None].expand(-1, 64))
        assert torch.equal(mask["3.weight"], rows2[:, None] & rows1[None, :])
        assert torch.equal(mask["5.weight"], rows2[None, :].expand(10, -1))
        assert torch.all(final["1.bias"][~rows1] == 0) and torch.all(final["3.bias"][~rows2] == 0)
        small = nn.Sequential(nn.Flatten(), nn.Linear(64, n1), nn.ReLU(), nn.Linear(n1, n2),
                              nn.ReLU(), nn.Linear(n2, 10))
        with torch.no_grad():
            small[1].weight.copy_(final["1.weight"][rows1])
            small[1].bias.copy_(final["1.bias"][rows1])
            small[3].weight.copy_(final["3.weight"][rows2][:, rows1])
            small[3].bias.copy_(final["3.bias"][rows2])
            small[5].weight.copy_(final["5.weight"][:, rows2])
            small[5].bias.copy_(final["5.bias"])
        big = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                               hidden=(32, 16))
        big.load_state_dict(final)
        x = digits.prepare(digits.x_test[:200])
        assert torch.allclose(big(x), small(x), atol=1e-5)
    info = res.config()
    assert [u["name"] for u in info["structure"]["units"]] == ["1.weight", "3.weight"]


def test_conv_channels_with_batchnorm_gamma_scores(digits, tmp_path):
    model = conv_bn(digits)
    res = run(model, digits, tmp_path, {**UNIT, "unit_score": "bn_gamma"}, levels=1)
    mask, final, start = res.mask(1), res.weights(0), res.weights(1, "start")
    alive0 = mask["0.weight"].flatten(1).any(1)
    assert int(alive0.sum()) == 4
    # the 4 channels kept are those with the largest |gamma| after level 0
    assert set(torch.topk(final["1.weight"].abs(), 4).indices.tolist()) == set(
        alive0.nonzero().flatten().tolist())
    # the next conv lost those input channels; the Linear lost 16 columns per dead channel
    assert torch.equal(mask["4.weight"].any(0).flatten(1).any(1), alive0)
    alive4 = mask["4.weight"].flatten(1).any(1)
    assert torch.equal(mask["8.weight"][0], alive4.repeat_interleave(16))
    for key in ("0.bias", "1.weight", "1.bias"):
        assert torch.all(start[key][~alive0] == 0)
        assert torch.all(res.weights(1)[key][~alive0] == 0)  # still zero after training
    for key in ("5.weight", "5.bias"):
        assert torch.all(res.weights(1)[key][~alive4] == 0)


def test_global_scope_counts_units_over_layers(digits, small_mlp, tmp_path):
    res = run(small_mlp, digits, tmp_path, {**UNIT, "scope": "global", "rate": 0.3}, levels=1)
    mask = res.mask(1)
    kept = int(mask["1.weight"].any(1).sum()) + int(mask["3.weight"].any(1).sum())
    assert kept == kept_count(48, 0.7)


def test_early_bird_over_units(digits, tmp_path):
    res = run(conv_bn(digits), digits, tmp_path, UNIT, levels=1,
              earlybird={"enabled": True, "every": "5it", "epsilon": 0.2, "bn_l1": True})
    rec = json.loads((res.path / "level_000" / "earlybird.json").read_text())
    assert rec["decisions"] == 16  # distances over the 8 + 8 channels, not the weights


def test_residual_layers_kept_whole_and_recorded(digits, tmp_path):
    from .test_experiment import AnyNet

    res = run(AnyNet(), digits, tmp_path, {**UNIT, "exclude": ["tied_*"]}, levels=1)
    kept_whole = res.config()["structure"]["kept_whole"]
    assert "block.conv2.weight" in kept_whole and "addition" in kept_whole["block.conv2.weight"]
    assert "block.conv1.weight" in [u["name"] for u in res.config()["structure"]["units"]]


def test_structured_settings_errors(digits, small_mlp, tmp_path):
    with pytest.raises(lth.ConfigError, match="output_rate"):
        run(small_mlp, digits, tmp_path, {**UNIT, "output_rate": 0.1})
    with pytest.raises(lth.ConfigError, match="unit_score"):
        run(small_mlp, digits, tmp_path, {**UNIT, "criterion": "movement"})
    with pytest.raises(lth.ModelError, match="bn_gamma"):
        run(small_mlp, digits, tmp_path, {**UNIT, "unit_score": "bn_gamma"})
    with pytest.raises(lth.ConfigError, match="structure"):
        lth.PruneConfig(structure="channel")


def test_bn_l1_shrinks_gammas_while_searching(digits, tmp_path):
    # 12 checks fill the whole 60 steps: both runs train in full whatever the masks do
    eb = {"enabled": True, "every": "5it", "queue": 12, "epsilon": 0.0, "bn_l1_strength": 0.05}
    plain = run(conv_bn(digits), digits, tmp_path / "a", UNIT, levels=1, earlybird=eb)
    slim = run(conv_bn(digits), digits, tmp_path / "b", UNIT, levels=1,
               earlybird={**eb, "bn_l1": True})
    gamma = [k for k in plain.weights(0) if k.endswith(("1.weight", "5.weight"))]
    total = {name: sum(float(r.weights(0)[k].abs().sum()) for k in gamma)
             for name, r in (("plain", plain), ("slim", slim))}
    assert total["slim"] < 0.97 * total["plain"]  # Adam: at most lr per step each
    assert plain.table()["train_steps"].tolist() == slim.table()["train_steps"].tolist() == [60] * 2


def test_global_scope_never_empties_a_layer(digits, small_mlp, tmp_path):
    # Raw L1 norms favour the 64-input layer: unchecked, the 16-unit layer would empty.
    res = run(small_mlp, digits, tmp_path, {**UNIT, "scope": "global", "rate": 0.3}, levels=3)
    for level in (1, 2, 3):
        mask = res.mask(level)
        kept = [int(mask[n].any(1).sum()) for n in ("1.weight", "3.weight")]
        assert min(kept) >= 1 and sum(kept) == kept_count(48, 0.7 ** level)
    with pytest.raises(lth.ConfigError, match="fewer than one per layer"):
        run(small_mlp, digits, tmp_path, {**UNIT, "scope": "global", "rate": 0.85}, levels=2)


def test_unit_settings_that_cannot_apply_are_refused(digits, small_mlp, tmp_path):
    with pytest.raises(lth.ConfigError, match="unit_score.*only used with structure"):
        lth.PruneConfig(unit_score="l2")
    with pytest.raises(lth.ConfigError, match="no layer whose units can be removed"):
        run(small_mlp, digits, tmp_path, {**UNIT, "layer_rates": {"5.*": 0.1}})
    weights = run(small_mlp, digits, tmp_path / "w", {"rate": 0.5}, levels=1)
    with pytest.raises(lth.ConfigError, match="remove single weights, not units"):
        run(small_mlp, digits, tmp_path / "u", UNIT, levels=1, masks_from=weights.path)
    units = run(small_mlp, digits, tmp_path / "u", UNIT, levels=1)
    reused = run(small_mlp, digits, tmp_path / "u2", UNIT, levels=1, masks_from=units.path,
                 reinit={"mode": "random"})
    assert reused.mask(1) == units.mask(1)
    # the masks cost what they cost in the run they come from
    assert list(reused.table()["steps_to_mask"]) == list(units.table()["steps_to_mask"])
