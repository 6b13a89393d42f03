"""Structured (unit) masks: discovery, expansion, and equality with physically smaller nets."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import lth
from lth.errors import ModelError
from lth.masks import Mask, output_layer, prunable_names
from lth.pruning.selection import select
from lth.pruning.structured import Structure

torch.set_num_threads(1)  # shared 2-core box


def conv_bn_net() -> nn.Sequential:
    """Conv-BN-ReLU-Pool twice, Flatten, two Linear layers; 3x8x8 inputs."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(24, 12), nn.ReLU(), nn.Linear(12, 10))


class FunctionalNet(nn.Module):
    """F.relu, F.max_pool2d, view(x.size(0), -1), torch.relu: no activation modules."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 5, 3, padding=1)
        self.fc = nn.Linear(5 * 3 * 3, 7)
        self.out = nn.Linear(7, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.out(torch.relu(self.fc(x.view(x.size(0), -1))))


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return lth.create_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[32, 16])


def discover(model: nn.Module, example: torch.Tensor, **kwargs) -> Structure:
    names = prunable_names(model)
    return Structure.discover(model, names, example, output_layer(model, names, example),
                              **kwargs)


def shapes(model: nn.Module) -> dict[str, torch.Size]:
    return {n: p.shape for n, p in model.named_parameters()}


def random_units(structure: Structure, seed: int) -> Mask:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for p, n in structure.units.items():
        keep = torch.rand(n, generator=g) < 0.6
        keep[torch.randint(n, (1,), generator=g)] = True  # at least one unit survives
        out[p] = keep
    return Mask(out)


def masked_copy(model: nn.Module, structure: Structure, units: Mask) -> nn.Module:
    """The model with the expanded mask applied and dead units' bias/BN zeroed, eval mode."""
    pruned = copy.deepcopy(model)
    names = prunable_names(model)
    structure.expand(units, names, shapes(model)).apply_(pruned)
    structure.zero_dead_(pruned, units)
    return pruned.eval()


def linear(src: nn.Linear, rows: torch.Tensor | None, cols: torch.Tensor | None) -> nn.Linear:
    w = src.weight.detach()
    w = w if rows is None else w[rows]
    w = w if cols is None else w[:, cols]
    out = nn.Linear(w.shape[1], w.shape[0])
    out.weight.data.copy_(w)
    out.bias.data.copy_(src.bias.detach() if rows is None else src.bias.detach()[rows])
    return out


def conv(src: nn.Conv2d, rows: torch.Tensor, cols: torch.Tensor | None) -> nn.Conv2d:
    w = src.weight.detach()[rows]
    w = w if cols is None else w[:, cols]
    out = nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1, bias=src.bias is not None)
    out.weight.data.copy_(w)
    if src.bias is not None:
        out.bias.data.copy_(src.bias.detach()[rows])
    return out


def batchnorm(src: nn.BatchNorm2d, keep: torch.Tensor) -> nn.BatchNorm2d:
    out = nn.BatchNorm2d(int(keep.sum()))
    for key in ("weight", "bias", "running_mean", "running_var"):
        getattr(out, key).data.copy_(getattr(src, key).detach()[keep])
    return out


def randomize_bn(model: nn.Module) -> None:
    """Nontrivial gamma/beta and running statistics (a few train-mode forwards)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g))
        model.train()
        for _ in range(3):
            model(torch.randn(16, 3, 8, 8, generator=g) * 2 + 1)
    model.eval()


# --- discovery ----------------------------------------------------------------------------


def test_discover_mlp():
    s = discover(mlp(), torch.randn(2, 1, 8, 8))
    assert s.producers == ["1.weight", "3.weight"]
    assert s.units == {"1.weight": 32, "3.weight": 16}
    assert [row["consumers"] for row in s.describe()] == [
        [{"name": "3.weight", "columns_per_unit": 1}],
        [{"name": "5.weight", "columns_per_unit": 1}]]
    assert all(row["bn"] is None for row in s.describe())
    assert s.describe()[0]["bias"] == "1.bias"


def test_discover_conv_bn_flatten_linear():
    s = discover(conv_bn_net(), torch.randn(2, 3, 8, 8))
    assert s.producers == ["0.weight", "4.weight", "9.weight"]
    rows = {r["name"]: r for r in s.describe()}
    assert rows["0.weight"]["bn"] == "1" and rows["4.weight"]["bn"] == "5"
    assert rows["4.weight"]["bias"] is None
    # channel c of the last conv is the block [4c, 4c + 4) of the 2x2-pooled flatten
    assert rows["4.weight"]["consumers"] == [{"name": "9.weight", "columns_per_unit": 4}]
    assert rows["9.weight"]["consumers"] == [{"name": "11.weight", "columns_per_unit": 1}]


def test_discover_functional_relu_and_view():
    s = discover(FunctionalNet(), torch.randn(2, 2, 6, 6))
    assert s.producers == ["conv.weight", "fc.weight"]
    assert s.layers["conv.weight"].consumers == (("fc.weight", 9),)
    assert s.layers["fc.weight"].consumers == (("out.weight", 1),)


@pytest.mark.parametrize(("name", "options", "last"), [
    ("conv2", {}, ("features.2.weight", "classifier.1.weight", 16 * 16)),
    ("vgg11_bn", {"width": 0.125}, ("features.25.weight", "classifier.1.weight", 1)),
])
def test_discover_registry_models(name, options, last):
    model = lth.create_model(name, input_shape=(3, 32, 32), num_classes=10, **options)
    s = discover(model, torch.randn(2, 3, 32, 32))
    names = prunable_names(model)
    assert s.producers == names[:-1]  # every layer but the output layer
    producer, consumer, block = last
    assert s.layers[producer].consumers == ((consumer, block),)
    assert all(r["bn"] is not None for r in s.describe()[:-1]) == name.endswith("_bn")


def test_discover_restores_modes_and_statistics():
    model = conv_bn_net().train()
    model[1].eval()
    before = model[1].running_mean.clone(), model[5].running_mean.clone()
    Structure.discover(model, prunable_names(model), torch.randn(4, 3, 8, 8), ["11.weight"])
    assert model.training and not model[1].training and model[5].training
    assert torch.equal(model[1].running_mean, before[0])
    assert torch.equal(model[5].running_mean, before[1])


# --- equality with physically smaller networks -------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masked_mlp_equals_smaller_mlp(seed):
    model = mlp().eval()
    s = discover(model, torch.randn(2, 1, 8, 8))
    units = random_units(s, seed)
    k1, k2 = units["1.weight"], units["3.weight"]
    small = nn.Sequential(nn.Flatten(), linear(model[1], k1, None), nn.ReLU(),
                          linear(model[3], k2, k1), nn.ReLU(), linear(model[5], None, k2))
    x = torch.randn(32, 1, 8, 8)
    assert torch.allclose(masked_copy(model, s, units)(x), small(x), atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masked_conv_bn_net_equals_smaller_net(seed):
    model = conv_bn_net()
    randomize_bn(model)
    s = discover(model, torch.randn(2, 3, 8, 8))
    units = random_units(s, seed)
    k0, k4, k9 = units["0.weight"], units["4.weight"], units["9.weight"]
    cols = (k4.nonzero().squeeze(1)[:, None] * 4 + torch.arange(4)).flatten()
    small = nn.Sequential(
        conv(model[0], k0, None), batchnorm(model[1], k0), nn.ReLU(), nn.MaxPool2d(2),
        conv(model[4], k4, k0), batchnorm(model[5], k4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), linear(model[9], k9, cols), nn.ReLU(), linear(model[11], None, k9)).eval()
    x = torch.randn(32, 3, 8, 8)
    assert torch.allclose(masked_copy(model, s, units)(x), small(x), atol=1e-6)


def activation(model: nn.Module, index: int, x: torch.Tensor) -> torch.Tensor:
    return model[: index + 1](x)


def test_dead_units_are_exactly_zero_after_zero_dead():
    model = mlp().eval()
    s = discover(model, torch.randn(2, 1, 8, 8))
    units = random_units(s, 3)
    with torch.no_grad():
        model[1].bias.fill_(0.5)  # a dead unit would still fire without zero_dead_
    x = torch.randn(8, 1, 8, 8)
    pruned = masked_copy(model, s, units)
    assert torch.all(activation(pruned, 2, x)[:, ~units["1.weight"]] == 0)
    assert torch.all(activation(pruned, 4, x)[:, ~units["3.weight"]] == 0)

    net = conv_bn_net()
    randomize_bn(net)
    s = discover(net, torch.randn(2, 3, 8, 8))
    units = random_units(s, 4)
    x = torch.randn(8, 3, 8, 8)
    unzeroed = copy.deepcopy(net).eval()
    s.expand(units, prunable_names(net), shapes(net)).apply_(unzeroed)
    assert torch.any(activation(unzeroed, 1, x)[:, ~units["0.weight"]] != 0)
    pruned = masked_copy(net, s, units)
    assert torch.all(activation(pruned, 2, x)[:, ~units["0.weight"]] == 0)
    assert torch.all(activation(pruned, 6, x)[:, ~units["4.weight"]] == 0)


# --- unit masks <-> weight masks ----------------------------------------------------------


def test_expand_round_trip_whole_rows_and_columns():
    net = conv_bn_net()
    s = discover(net, torch.randn(2, 3, 8, 8))
    names = prunable_names(net)
    for seed in range(5):
        units = random_units(s, seed)
        mask = s.expand(units, names, shapes(net))
        assert s.unit_mask(mask) == units
        for n in names:  # kept = (kept rows) x (kept columns), whole kernels
            kernels = mask[n].flatten(2) if mask[n].dim() > 2 else mask[n][..., None]
            assert torch.equal(kernels.all(2), kernels.any(2))
            grid = kernels.any(2)
            assert torch.equal(grid, grid.any(1)[:, None] & grid.any(0)[None, :])
        cols = mask["9.weight"].reshape(12, 6, 4)  # columns pruned as whole 4-blocks
        assert torch.equal(cols.all(2), cols.any(2))
        assert torch.equal(cols.any(2).any(0), units["4.weight"])
        assert torch.equal(mask["11.weight"].all(0), units["9.weight"])
        assert torch.equal(mask["4.weight"].flatten(2).all(2).any(0), units["0.weight"])


def test_expand_counts_one_linear_row():
    model = mlp()
    s = discover(model, torch.randn(2, 1, 8, 8))
    units = s.unit_mask(Mask.ones(model, s.producers))
    units["1.weight"][7] = False
    mask = s.expand(units, prunable_names(model), shapes(model))
    full = Mask.ones(model, prunable_names(model)).kept()
    assert full["1.weight"] - mask.kept()["1.weight"] == 64  # its in_features
    assert full["3.weight"] - mask.kept()["3.weight"] == 16  # one column of the consumer
    assert mask.kept()["5.weight"] == full["5.weight"]
    assert not mask["3.weight"][:, 7].any() and mask["3.weight"][:, 6].all()


def test_unit_alive_while_any_weight_kept():
    model = mlp()
    s = discover(model, torch.randn(2, 1, 8, 8))
    weights = Mask.ones(model, prunable_names(model)).tensors()
    weights["1.weight"][3, :] = False
    weights["1.weight"][4, 1:] = False
    units = s.unit_mask(Mask(weights))
    assert not units["1.weight"][3] and units["1.weight"][4]
    assert int(units["1.weight"].sum()) == 31 and bool(units["3.weight"].all())


def test_expand_leaves_unrelated_names_whole():
    model = nn.Linear(4, 2)  # the output layer reads the raw input: nothing to remove
    s = Structure.discover(model, ["weight"], torch.randn(2, 4), ["weight"])
    assert s.producers == [] and s.expand(Mask({}), ["weight"], shapes(model)).density() == 1
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    s = Structure.discover(model, ["0.weight", "2.weight"], torch.randn(2, 4), ["2.weight"],
                           fixed=["0.weight"])
    assert s.producers == []
    assert s.expand(Mask({}), ["0.weight", "2.weight"], shapes(model)).density() == 1


# --- scores -------------------------------------------------------------------------------


def test_scores_l1_l2_by_hand():
    model = mlp()
    s = discover(model, torch.randn(2, 1, 8, 8))
    state = model.state_dict()
    l1, l2 = s.scores(state, "l1"), s.scores(state, "l2")
    w = state["3.weight"]
    for i in range(16):
        assert abs(float(l1["3.weight"][i]) - sum(abs(float(v)) for v in w[i])) < 1e-5
        assert abs(float(l2["3.weight"][i]) - sum(float(v) ** 2 for v in w[i]) ** 0.5) < 1e-5
    net = conv_bn_net()
    s = discover(net, torch.randn(2, 3, 8, 8))
    w = net.state_dict()["4.weight"]
    assert torch.allclose(s.scores(net.state_dict(), "l1")["4.weight"],
                          torch.stack([w[c].abs().sum() for c in range(6)]))


def test_scores_bn_gamma():
    net = conv_bn_net()
    randomize_bn(net)
    with torch.no_grad():
        net[1].weight[0] = -3.0
    s = discover(net, torch.randn(2, 3, 8, 8))
    state = net.state_dict()
    with pytest.raises(ModelError, match=r"9\.weight has no BatchNorm"):
        s.scores(state, "bn_gamma")
    conv_only = Structure([s.layers["0.weight"], s.layers["4.weight"]])
    gamma = conv_only.scores(state, "bn_gamma")
    assert torch.equal(gamma["0.weight"], net[1].weight.detach().abs())
    assert gamma["0.weight"][0] == 3.0
    with pytest.raises(ModelError, match="unknown unit score"):
        s.scores(state, "l3")


def test_select_keeps_exact_unit_count():
    net = conv_bn_net()
    s = discover(net, torch.randn(2, 3, 8, 8))
    scores = s.scores(net.state_dict(), "l2")
    alive = s.unit_mask(Mask.ones(net, prunable_names(net)))
    g = torch.Generator().manual_seed(0)
    for k in (1, 5, 13):
        chosen = select(scores, alive.tensors(), k, g)
        assert sum(int(t.sum()) for t in chosen.values()) == k
        assert all(t.shape == (s.units[p],) for p, t in chosen.items())
    one = select({"4.weight": scores["4.weight"]}, {"4.weight": alive["4.weight"]}, 2, g)
    top = scores["4.weight"].topk(2).indices
    assert one["4.weight"].nonzero().squeeze(1).sort().values.tolist() == sorted(top.tolist())


# --- refusals -----------------------------------------------------------------------------


RESIDUAL = ["stem.0.weight", "stages.1.0.shortcut.0.weight", "stages.2.0.shortcut.0.weight"] + [
    f"stages.{i}.{j}.body.3.weight" for i in range(3) for j in range(3)]


def test_resnet_refuses_residual_layers_only():
    model = lth.create_model("resnet20", input_shape=(3, 16, 16), num_classes=10, width=0.25)
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ModelError) as err:
        discover(model, x)
    message = str(err.value)
    assert all(f"{n}: its output reaches an addition (residual)" in message for n in RESIDUAL)
    assert "body.0.weight" not in message and "structure = 'weight'" in message
    # The first conv of each block only feeds the second: with the residual layers kept
    # whole (still consumers), those first convs are producers.
    s = discover(model, x, fixed=RESIDUAL)
    firsts = [f"stages.{i}.{j}.body.0.weight" for i in range(3) for j in range(3)]
    assert s.producers == firsts
    assert s.layers[firsts[0]].consumers == (("stages.0.0.body.3.weight", 1),)
    loose = discover(model, x, strict=False)
    assert loose.producers == firsts and sorted(loose.refused) == sorted(RESIDUAL)
    # Without the second convs among the pruned names the first convs cannot be masked.
    with pytest.raises(ModelError, match=r"body\.0\.weight: .*whose weight is not pruned"):
        Structure.discover(model, [*firsts, "fc.weight"], x, ["fc.weight"])


class Cat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([self.a(x), self.b(x)], 1))


class Both(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.out = nn.Linear(4, 3), nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.a(x)
        return h, self.out(h)


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.b(F.relu(self.a(x))))


class Branchy(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() > 0 else -x


class Sequence3d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.out = nn.Linear(4, 3), nn.Linear(15, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.a(x).flatten(1))


@pytest.mark.parametrize(("model", "shape", "match"), [
    (Cat(), (2, 4), r"a\.weight: its output reaches a concatenation"),
    (Both(), (2, 4), r"a\.weight: its output reaches the model output"),
    (Tied(), (2, 4), r"a\.weight: its weight is shared by a and b \(weight tying\)"),
    (nn.Sequential(nn.Conv2d(2, 4, 1), nn.Conv2d(4, 4, 1, groups=2), nn.Flatten(),
                   nn.Linear(4, 2)), (2, 2, 1, 1), r"0\.weight: .*grouped convolution"),
    (nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 2)), (2, 4),
     r"0\.weight: .*LayerNorm \(1\), which structured pruning does not handle"),
    (Sequence3d(), (2, 5, 4), r"a\.weight: .*flatten .*which mixes its units"),
])
def test_refusals_name_layer_and_reason(model, shape, match):
    with pytest.raises(ModelError, match=match):
        discover(model, torch.randn(*shape))


def test_untraceable_model_is_a_model_error():
    with pytest.raises(ModelError, match=r"torch\.fx .*structure = 'weight'"):
        Structure.discover(Branchy(), ["w"], torch.randn(2, 4), [])
