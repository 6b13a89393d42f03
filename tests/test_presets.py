"""Every preset in configs/ validates and builds its model for its dataset's input."""

from __future__ import annotations

from pathlib import Path

import pytest

import lth
from lth.config import load_config
from lth.masks import prunable_names

ROOT = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(p for p in ROOT.glob("*.toml")
                 if not p.name.startswith(("session_", "forward_")))
SESSIONS = sorted(ROOT.glob("session_*.toml"))
FORWARD = sorted(ROOT.glob("forward_*.toml"))
SHAPES = {"digits": ((1, 8, 8), 10), "mnist": ((1, 28, 28), 10),
          "fashion_mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10),
          "cifar100": ((3, 32, 32), 100)}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_preset_is_valid_and_builds(path):
    cfg = load_config(path)
    assert path.read_text().lstrip().startswith("#"), "presets say where numbers come from"
    shape, classes = SHAPES[cfg.data.name]
    model = lth.create_model(cfg.model.name, input_shape=shape, num_classes=classes,
                             **cfg.model.options)
    assert prunable_names(model)


@pytest.mark.parametrize("path", FORWARD, ids=lambda p: p.stem)
def test_forward_sweep_preset_is_valid(path):
    from lth.forward import load_forward_config

    cfg = load_forward_config(path)
    assert path.read_text().lstrip().startswith("#")
    assert cfg.data.name in SHAPES and list(cfg.train.pretrain_iterations)


def test_paper_hyperparameters_are_in_the_presets():
    by_name = {p.stem: load_config(p) for p in CONFIGS}
    lenet = by_name["lenet_mnist"]
    assert (lenet.train.lr, lenet.train.batch_size, lenet.train.duration) == (
        1.2e-3, 60, "50000it")
    assert (lenet.prune.rate, lenet.prune.output_rate, lenet.data.val_size) == (0.2, 0.1, 5000)
    for n, lr, it, conv in ((2, 2e-4, "20000it", 0.1), (4, 3e-4, "25000it", 0.1),
                            (6, 3e-4, "30000it", 0.15)):
        c = by_name[f"conv{n}_cifar10"]
        assert (c.train.lr, c.train.duration, c.prune.conv_rate, c.prune.output_rate) == (
            lr, it, conv, 0.1)
    vgg = by_name["vgg19_cifar10"]
    assert (vgg.train.lr, vgg.train.warmup, vgg.train.milestones, vgg.prune.scope) == (
        0.1, "10000it", ("56000it", "84000it"), "global")
    res = by_name["resnet20_cifar10"]
    assert (res.train.lr, res.train.warmup, res.train.batch_size, res.prune.output_rate) == (
        0.03, "20000it", 128, 0.0)


@pytest.mark.parametrize("path", SESSIONS, ids=lambda p: p.stem)
def test_session_presets_parse(path):
    session = lth.LotterySession.from_config(path, seeds=[0, 1])
    assert len({t.variant for t in session.trials}) >= 2
    assert all(t.masks_of is None or t.masks_of.rsplit("-", 1)[1] == t.key.rsplit("-", 1)[1]
               for t in session.trials)  # a control uses the masks of its own seed
