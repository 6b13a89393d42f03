"""Training with sparse kernels (``train.kernels``, lth.train.sparse) against the
dense-masked trainer: the same numbers up to float rounding, exact masks, exact resume."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lth
from lth.config import TrainConfig
from lth.errors import ConfigError
from lth.masks import Mask, prunable_names
from lth.train import Job, OnEval, Span, stack_key, train_level
from lth.train.job import AUTO_DENSITY, AUTO_MIN_WEIGHTS, sparse_layers
from lth.train.sparse import CHUNK, SparseLinearTraining, feeds_a_linear

from .conftest import states_equal
from .test_train import OPTIMIZERS, Recorder

# Step outputs and weights after a level: the kernels sum in another order than MKL's
# dense product, so single-precision values agree to about 1e-6 of their size per step;
# after a short level (60 steps) the weights differ by at most TOLERANCE (absolute).
TOLERANCE = 1e-5


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Dropout(0.1),
                         nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10))


def keeping(model: nn.Module, density: float, seed: int = 0) -> Mask:
    g = torch.Generator().manual_seed(seed)
    return Mask({n: torch.rand(model.get_parameter(n).shape, generator=g) < density
                 for n in prunable_names(model)})


def trained(kernels: str, mask: Mask, digits, steps: int = 60, **train) -> tuple:
    model = net()
    cfg = TrainConfig(batch_size=32, kernels=kernels, **train)
    hist = train_level(model, digits, cfg, mask, Span(0, steps, 30, 20, 10**6), seed=1,
                       level=1)
    return model, hist


def test_step_outputs_equal_the_dense_product_up_to_rounding(digits):
    dense = net()
    mask = keeping(dense, 0.3)
    mask.apply_(dense)
    sparse = copy.deepcopy(dense)
    owners = {n.rpartition(".")[0]: keep for n, keep in mask.items()}
    layers = {o: SparseLinearTraining(sparse.get_submodule(o), keep)
              for o, keep in owners.items()}
    x, y = digits.x_train[:60], digits.y_train[:60]
    outs = []
    for model in (dense, sparse):
        model.eval()  # no dropout: both see the same network
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        outs.append((model(x), loss))
    assert torch.allclose(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # evaluation: no autograd, the rows in chunks
        rows = digits.x_test
        assert len(rows) > CHUNK and len(rows) % CHUNK
        assert torch.allclose(dense(rows), sparse(rows), rtol=1e-5, atol=1e-6)
    for owner, layer in layers.items():
        keep = mask[f"{owner}.weight"]
        want = dense.get_submodule(owner).weight.grad[keep]
        assert torch.allclose(layer.values.grad, want, rtol=1e-4, atol=1e-6)
        assert torch.allclose(sparse.get_submodule(owner).bias.grad,
                              dense.get_submodule(owner).bias.grad, rtol=1e-4, atol=1e-6)
        layer.remove()
    assert states_equal(dense.state_dict(), sparse.state_dict())  # written back exactly


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: o["optimizer"])
def test_a_seeded_level_matches_the_dense_masked_trainer(digits, opt):
    mask = keeping(net(), 0.05)
    dense, h_dense = trained("dense", mask, digits, **opt)
    sparse, h_sparse = trained("sparse", mask, digits, **opt)
    for n, keep in mask.items():  # pruned weights exactly 0, the survivors trained alike
        w = sparse.get_parameter(n)
        assert (w[~keep] == 0).all()
        assert torch.allclose(w, dense.get_parameter(n), atol=TOLERANCE)
    assert [r["step"] for r in h_sparse] == [r["step"] for r in h_dense]
    for a, b in zip(h_dense[1:], h_sparse[1:], strict=True):
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=0.01)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)


def test_the_module_is_left_as_it_was(digits):
    mask = keeping(net(), 0.05)
    model, _ = trained("sparse", mask, digits)
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert all(p.grad is None or p.grad.shape == p.shape for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_callbacks_read_the_dense_weights_while_it_trains(digits):
    mask = keeping(net(), 0.05)
    model = net()
    seen = []

    def look(step):  # a callback reading the weights reads the trained dense matrices
        seen.append(model[1].weight.detach().clone())

    cfg = TrainConfig(batch_size=32, kernels="sparse")
    train_level(model, digits, cfg, mask, Span(0, 40, 30, 20, 10**6), seed=1, level=1,
                callbacks=[OnEval(look)])
    assert len(seen) == 3 and not torch.equal(seen[1], seen[0])
    assert torch.equal(seen[-1], model[1].weight.detach())


@pytest.mark.parametrize("opt", OPTIMIZERS[:1] + OPTIMIZERS[2:3], ids=["sgd", "adam"])
def test_resume_within_the_sparse_path_is_bit_identical(digits, opt):
    base = net()
    mask = keeping(base, 0.08)
    cfg = TrainConfig(batch_size=32, kernels="sparse", **opt)
    span = Span(0, 90, 30, 20, 25)
    straight = copy.deepcopy(base)
    h1 = train_level(straight, digits, cfg, mask, span, seed=3, level=2)
    ckpt = Recorder(stop_after=45)
    with pytest.raises(KeyboardInterrupt):
        train_level(copy.deepcopy(base), digits, cfg, mask, span, seed=3, level=2,
                    checkpoints=ckpt)
    saved = {k: v for k, v in ckpt.saved[0].items() if k.startswith("optim.exp_avg")
             or k.startswith("optim.momentum")}
    assert saved and all(v.shape == base.get_parameter(k.split(".", 2)[2]).shape
                         for k, v in saved.items())  # the dense trainer's format
    ckpt.stop_after = None
    resumed = copy.deepcopy(base)
    h2 = train_level(resumed, digits, cfg, mask, span, seed=3, level=2, checkpoints=ckpt)
    assert h1 == h2
    assert states_equal(straight.state_dict(), resumed.state_dict())


def test_a_dense_checkpoint_resumes_sparse(digits):
    base = net()
    mask = keeping(base, 0.08)
    span = Span(0, 90, 30, 20, 25)
    dense_cfg = TrainConfig(batch_size=32, kernels="dense")
    straight = copy.deepcopy(base)
    train_level(straight, digits, dense_cfg, mask, span, seed=3, level=2)
    ckpt = Recorder(stop_after=45)
    with pytest.raises(KeyboardInterrupt):
        train_level(copy.deepcopy(base), digits, dense_cfg, mask, span, seed=3, level=2,
                    checkpoints=ckpt)
    ckpt.stop_after = None
    resumed = copy.deepcopy(base)
    train_level(resumed, digits, TrainConfig(batch_size=32, kernels="sparse"), mask, span,
                seed=3, level=2, checkpoints=ckpt)
    for n, keep in mask.items():
        w = resumed.get_parameter(n)
        assert (w[~keep] == 0).all()
        assert torch.allclose(w, straight.get_parameter(n), atol=TOLERANCE)


def job(model, mask, digits, **train) -> Job:
    return Job(model, digits, TrainConfig(**train), mask, Span(0, 10, 30, 10, 10**6), 0, 1)


def test_which_layers_train_sparse(digits):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16),
                          nn.ReLU(), nn.Linear(16, 10))
    names = prunable_names(model)
    sizes = [model.get_parameter(n).numel() for n in names]
    assert sizes[0] >= AUTO_MIN_WEIGHTS > max(sizes[1:])

    def keeping_each(*densities: float) -> Mask:
        return Mask({n: torch.rand(model.get_parameter(n).shape) < d
                     for n, d in zip(names, densities, strict=True)})

    sparse_first = keeping_each(AUTO_DENSITY * 0.8, 0.05, 0.05)
    assert list(sparse_layers(job(model, sparse_first, digits))) == [names[0]]
    assert sparse_layers(job(model, keeping_each(AUTO_DENSITY * 1.2, 0.05, 0.05), digits)) == {}
    assert sparse_layers(job(model, sparse_first, digits, kernels="dense")) == {}
    assert list(sparse_layers(job(model, sparse_first, digits, kernels="sparse"))) == names
    assert sparse_layers(job(model, keeping(model, 1.0), digits, kernels="sparse")) == {}
    assert sparse_layers(job(model, sparse_first, digits, precision="bf16")) == {}
    changing = job(model, sparse_first, digits)
    changing.mask_updates = object()  # a mask that changes while it trains: dense
    assert sparse_layers(changing) == {}
    # A trial with sparse layers trains on its own rather than stacked.
    a, b = job(model, sparse_first, digits), job(model, sparse_first, digits)
    assert stack_key(a) != stack_key(b)
    c, d = (job(model, sparse_first, digits, kernels="dense") for _ in range(2))
    assert stack_key(c) == stack_key(d)


def test_kernels_the_config_cannot_use_are_refused():
    with pytest.raises(ConfigError, match="kernels"):
        TrainConfig(kernels="csr")
    with pytest.raises(ConfigError, match="kernels.*cpu"):
        TrainConfig(kernels="sparse", device="cuda")
    with pytest.raises(ConfigError, match="kernels.*fixed mask"):
        lth.ExperimentConfig.from_dict({"train": {"kernels": "sparse"},
                                        "mask_updates": {"method": "set"}})


def test_kernels_are_recorded_but_not_part_of_identity(tmp_path, digits):
    model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10)

    def run(kernels: str) -> lth.Result:
        train = {"duration": "40it", "eval_every": "20it", "batch_size": 32,
                 "kernels": kernels}
        return lth.LotteryModel(copy.deepcopy(model), digits, train=train, levels=1,
                                prune={"rate": 0.97, "output_rate": 0.5}
                                ).run(store=tmp_path / kernels)

    dense, sparse = run("dense"), run("sparse")
    assert dense.path.name == sparse.path.name  # one experiment, whichever kernels ran it
    assert sparse.summary(1)["sparse_kernels"] == prunable_names(model)
    assert dense.summary(1)["sparse_kernels"] == [] == sparse.summary(0)["sparse_kernels"]
    a, b = dense.table(), sparse.table()
    assert list(a["pct_remaining"]) == list(b["pct_remaining"])
    assert a["final_test_acc"].tolist() == pytest.approx(b["final_test_acc"].tolist(),
                                                         abs=0.02)


def test_outputs_stay_transposed_only_where_nothing_downstream_can_tell():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32),
                          nn.Dropout(0.1), nn.Linear(32, 16), nn.Tanh(), nn.Flatten(),
                          nn.Linear(16, 10))
    assert feeds_a_linear(model, model[1])  # through a ReLU into a Linear
    assert not feeds_a_linear(model, model[3])  # dropout draws in memory order
    assert not feeds_a_linear(model, model[5])  # Flatten views its input
    assert not feeds_a_linear(model, model[8])  # the model's output

    class Custom(nn.Module):  # code of its own between the layers: row-major
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.b(self.a(x).view(-1, 8))

    custom = Custom()
    assert not feeds_a_linear(custom, custom.a)


def test_an_interrupted_level_leaves_the_module_as_it_was(digits):
    model, mask = net(), keeping(net(), 0.08)
    cfg = TrainConfig(batch_size=32, kernels="sparse")
    with pytest.raises(KeyboardInterrupt):
        train_level(model, digits, cfg, mask, Span(0, 90, 30, 20, 25), seed=3, level=2,
                    checkpoints=Recorder(stop_after=20))
    assert all("forward" not in m.__dict__ for m in model.modules())
    for n, keep in mask.items():  # it holds the weights it had trained to
        w = model.get_parameter(n)
        assert (w[~keep] == 0).all() and not torch.equal(w[keep], net().get_parameter(n)[keep])
