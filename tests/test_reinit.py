from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lth.config import ReinitConfig
from lth.init import initialize
from lth.masks import Mask, prunable_names
from lth.reinitialization import REINIT_MODES, reinitialize
from lth.state import get_state


def setup(seed=0):
    model = nn.Sequential(nn.Linear(20, 50), nn.BatchNorm1d(50), nn.ReLU(), nn.Linear(50, 4))
    initialize(model, "default", seed)
    with torch.no_grad():  # BN statistics that differ from a fresh module
        model[1].running_mean.fill_(0.3)
    theta0 = get_state(model)
    g = torch.Generator().manual_seed(seed)
    mask = Mask({n: torch.rand(model.get_parameter(n).shape, generator=g) < 0.4
                 for n in prunable_names(model)})

    def fresh():
        return get_state(initialize(copy.deepcopy(model), "default", 99))

    return model, theta0, mask, fresh


def run(mode, same_sign=False, **kw):
    model, theta0, mask, fresh = setup()
    cfg = ReinitConfig(mode=mode, same_sign=same_sign, **kw)
    out = reinitialize(cfg, mask, theta0, theta0, fresh=fresh,
                       rng=lambda name: torch.Generator().manual_seed(5 + len(name)))
    return out, theta0, mask


@pytest.mark.parametrize("mode", REINIT_MODES)
@pytest.mark.parametrize("same_sign", [False, True])
def test_every_mode_zeroes_pruned_and_restores_unmasked(mode, same_sign):
    out, theta0, mask = run(mode, same_sign)
    for name, t in out.items():
        if name in set(mask):
            assert bool((t[~mask[name]] == 0).all())
            if same_sign:
                keep = mask[name] & (theta0[name] != 0)
                assert torch.equal(torch.sign(t[keep]), torch.sign(theta0[name][keep]))
        else:  # biases, BatchNorm weights and running statistics
            assert torch.equal(t, theta0[name]), name


def test_rewind_is_bit_exact():
    out, theta0, mask = run("rewind")
    for n in mask:
        assert torch.equal(out[n][mask[n]], theta0[n][mask[n]])


def test_jitter_absolute_and_relative():
    out, theta0, mask = run("jitter", jitter_sd=0.05)
    diff = torch.cat([(out[n] - theta0[n])[mask[n]] for n in mask])
    assert diff.std().item() == pytest.approx(0.05, rel=0.1)
    out, theta0, mask = run("jitter", jitter_sd=0.5, jitter_relative=True)
    n = "0.weight"
    diff = (out[n] - theta0[n])[mask[n]]
    assert diff.std().item() == pytest.approx(0.5 * theta0[n].std().item(), rel=0.1)


def test_random_draws_fresh_weights_from_the_initialiser():
    out, theta0, mask = run("random")
    n = "0.weight"
    kept = out[n][mask[n]]
    assert not torch.equal(kept, theta0[n][mask[n]])
    bound = 1 / 20 ** 0.5  # nn.Linear's default init is U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert kept.abs().max() <= bound and kept.std() == pytest.approx(bound / 3 ** 0.5, rel=0.1)


def test_reshuffle_keeps_the_multiset_and_moves_values():
    out, theta0, mask = run("reshuffle")
    for n in mask:
        a = out[n][mask[n]].sort().values
        b = theta0[n][mask[n]].sort().values
        assert torch.equal(a, b)
        assert not torch.equal(out[n][mask[n]], theta0[n][mask[n]])


def test_reshuffle_same_sign_permutes_within_sign_classes():
    out, theta0, mask = run("reshuffle", same_sign=True)
    for n in mask:
        pos = mask[n] & (theta0[n] > 0)
        assert torch.equal(out[n][pos].sort().values, theta0[n][pos].sort().values)


def test_constant_uses_each_layers_own_init_sd():
    out, theta0, mask = run("constant")
    for n in mask:
        kept = out[n][mask[n]]
        sd = theta0[n].std().item()
        assert torch.allclose(kept.abs(), torch.full_like(kept, sd))
        assert 0.3 < (kept > 0).float().mean() < 0.7  # seeded random signs
    sds = [theta0[n].std().item() for n in mask]
    assert sds[0] != pytest.approx(sds[1])  # so "per layer" is really tested
    out, _, mask = run("constant", constant=0.25)
    assert torch.allclose(out["3.weight"][mask["3.weight"]].abs(), torch.tensor(0.25))
