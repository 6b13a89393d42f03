"""The ticket out: plain weights, a torch.nn.utils.prune module that trains on as a pruned
module, and a physically smaller module with equal outputs (unit pruning)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import lth
from lth.cli import main
from lth.export import pruned_module

from .conftest import FAST_TRAIN

TOML = ('name = "t"\nn_levels = 2\n[model]\nname = "mlp"\nhidden = [32, 16]\n'
        '[data]\nname = "digits"\n[train]\nduration = "60it"\neval_every = "20it"\n'
        'batch_size = 32\n')


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    out = {}
    for name, extra in (("weights", ""), ("units", '[prune]\nstructure = "unit"\nrate = 0.5\n')):
        toml = root / f"{name}.toml"
        toml.write_text(TOML.replace('name = "t"', f'name = "{name}"') + extra)
        assert main(["run", str(toml), "--store", str(root / "s"), "--quiet"]) == 0
        (out[name],) = (root / "s").glob(f"{name}-*")
    return out


def test_state_dict_loads_into_the_plain_model(runs, tmp_path, digits):
    result = lth.Result(runs["weights"])
    assert main(["export", str(result.path), "--out", str(tmp_path / "t.safetensors")]) == 0
    weights = load_file(str(tmp_path / "t.safetensors"))
    model = result.model()
    model.load_state_dict(weights)
    mask = result.mask(2)
    assert all(not weights[n][~mask[n]].any() for n in mask.names())
    assert weights.keys() == result.weights(2).keys()


def test_pruned_module_trains_on_as_a_pruned_module(runs, tmp_path, digits):
    result = lth.Result(runs["weights"])
    assert main(["export", str(result.path), "--level", "1", "--format", "pruned",
                 "--out", str(tmp_path / "m.pt")]) == 0
    module = torch.load(tmp_path / "m.pt", weights_only=False)
    mask = result.mask(1)
    assert torch.equal(module.get_submodule("1").weight_mask.bool(), mask["1.weight"])
    x = digits.x_test[:16]
    plain = result.model()
    plain.load_state_dict(result.weights(1))
    assert torch.allclose(module(x), plain(x))
    opt = torch.optim.SGD(module.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(module(x), digits.y_test[:16]).backward()
        opt.step()
    assert not module.get_submodule("1").weight[~mask["1.weight"]].any()


def test_small_module_is_smaller_with_equal_outputs(runs, tmp_path, digits):
    result = lth.Result(runs["units"])
    small = result.export(2, "small")
    dense = result.model()
    dense.load_state_dict(result.weights(2))
    x = digits.x_test
    assert torch.allclose(small.eval()(x), dense.eval()(x), atol=1e-5)
    n_small = sum(p.numel() for p in small.parameters())
    assert n_small < 0.4 * sum(p.numel() for p in dense.parameters())
    assert small.get_submodule("1").out_features == 8  # 32 units, halved twice
    assert main(["export", str(result.path), "--format", "small",
                 "--out", str(tmp_path / "s.pt")]) == 0
    with pytest.raises(lth.ConfigError, match="single weights.*'pruned'"):
        lth.Result(runs["weights"]).export(2, "small")


def test_small_conv_with_batchnorm(digits, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    result = lth.LotteryModel(model, digits, levels=1, train=FAST_TRAIN,
                              prune={"structure": "unit", "rate": 0.5}).run(store=tmp_path)
    small = result.export(1, "small", model=model)
    dense = pruned_module(model, result.weights(1), result.mask(1))
    x = digits.x_test[:64]
    assert torch.allclose(small.eval()(x), dense.eval()(x), atol=1e-5)
    assert small.get_submodule("1").num_features == 4
    assert small.get_submodule("7").in_features == 4 * 4 * 4


def test_export_errors_name_the_fix(runs, tmp_path, digits, small_mlp, capsys):
    assert main(["export", str(runs["weights"]), "--format", "smal", "--out",
                 str(tmp_path / "x")]) == 2
    assert "did you mean 'small'" in capsys.readouterr().err
    assert main(["export", str(runs["weights"]), "--level", "7", "--out",
                 str(tmp_path / "x")]) == 2
    assert "finished: [0, 1, 2]" in capsys.readouterr().err
    python_run = lth.LotteryModel(small_mlp, digits, levels=1, train=FAST_TRAIN).run(
        store=tmp_path / "p")
    with pytest.raises(lth.ConfigError, match="made from Python.*model="):
        python_run.export(1, "pruned")
    assert isinstance(python_run.export(1, "pruned", model=small_mlp), nn.Module)
