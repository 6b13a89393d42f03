"""The sparse ticket (export format ``sparse``, ``lth.sparse_ticket``): compressed weights
with the smallest index types, one safetensors file, outputs equal to the dense masked
model's, a module file that needs only torch and safetensors, and the CLI end to end."""

from __future__ import annotations

import ast
import copy
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import lth
from lth import sparse_ticket
from lth.cli import main
from lth.export import export, sparse_module
from lth.sparse_ticket import SparseChain, SparseLinear, TicketError

TOML = ('name = "sp"\nn_levels = 2\n[model]\nname = "mlp"\nhidden = [256]\n'
        '[prune]\nrate = 0.7\n[data]\nname = "digits"\n[train]\nduration = "20it"\n'
        'eval_every = "20it"\nbatch_size = 32\n')


def masked(model: nn.Module, density: float, seed: int = 0) -> nn.Module:
    """``model`` with a random mask of ``density`` on every prunable weight."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in lth.prunable_names(model):
            p = model.get_parameter(name)
            p.mul_(torch.rand(p.shape, generator=g) < density)
    return model.eval()


def lenet() -> nn.Module:
    torch.manual_seed(0)
    return masked(lth.create_model("lenet_300_100", input_shape=(1, 28, 28), num_classes=10),
                  0.05)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sparse")
    (root / "sp.toml").write_text(TOML)
    assert main(["run", str(root / "sp.toml"), "--store", str(root / "s"), "--quiet"]) == 0
    (out,) = (root / "s").glob("sp-*")
    return out


def dense_of(result: lth.Result, level: int) -> nn.Module:
    model = result.model()
    model.load_state_dict(result.weights(level))
    return model.eval()


def test_file_round_trip_with_the_smallest_index_types(tmp_path):
    model = lenet()
    with torch.no_grad():  # more than 32767 nonzeros: int32 row pointers
        model.get_parameter("1.weight").copy_(masked(nn.Linear(784, 300), 0.2).weight)
    path = tmp_path / "t.safetensors"
    sparse_ticket.save(model, path)
    with safe_open(str(path), framework="pt") as f:
        dtypes = {k: f.get_tensor(k).dtype for k in f.keys()}
    assert dtypes["1.weight.indices"] == torch.int16  # 784 inputs
    assert dtypes["1.weight.indptr"] == torch.int32  # ~47,000 nonzeros
    assert dtypes["3.weight.indptr"] == torch.int16  # ~1,500 nonzeros
    assert dtypes["5.weight.indices"] == torch.int8  # 100 inputs
    assert dtypes["1.bias"] == torch.float32 and "1.weight" not in dtypes
    state, _ = sparse_ticket.read(path)
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_a_dense_weight_stays_dense_in_the_file(tmp_path):
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    sparse_ticket.save(model, tmp_path / "t.safetensors")
    state, meta = sparse_ticket.read(tmp_path / "t.safetensors")
    assert '"compressed": {}' in meta["sparse_ticket"]
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name,shape", [("lenet_300_100", (1, 28, 28)), ("conv2", (3, 32, 32))])
def test_outputs_equal_the_dense_masked_model(name, shape, tmp_path):
    torch.manual_seed(0)
    model = masked(lth.create_model(name, input_shape=shape, num_classes=10), 0.05)
    sparse_ticket.save(model, tmp_path / "t.safetensors")
    save_file(model.state_dict(), str(tmp_path / "dense.safetensors"))
    ratio = (tmp_path / "dense.safetensors").stat().st_size / \
        (tmp_path / "t.safetensors").stat().st_size
    assert ratio > 8
    ticket = sparse_ticket.load(tmp_path / "t.safetensors", model).eval()
    assert any(isinstance(m, SparseLinear) for m in ticket.modules())
    with torch.no_grad():
        for batch in (1, 5):
            x = torch.randn(batch, *shape)
            assert torch.allclose(ticket(x), model(x), rtol=1e-5, atol=1e-5)


def test_a_conv_model_with_batchnorm_and_a_linear_without_bias():
    torch.manual_seed(0)
    model = masked(nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 8 * 8, 64, bias=False), nn.ReLU(), nn.Linear(64, 10)), 0.05)
    model[1].running_mean.uniform_(-1, 1)
    ticket = sparse_ticket.sparsify(model, min_weights=0)
    assert isinstance(ticket[4], SparseLinear) and isinstance(ticket[0], nn.Conv2d)
    assert "4.bias" not in ticket.state_dict()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(ticket(x), model(x), atol=1e-5)
        assert torch.allclose(ticket(x[:1]), model(x[:1]), atol=1e-5)
        # any leading dimensions, like nn.Linear
        assert torch.allclose(ticket[4](torch.ones(2, 3, 512)), model[4](torch.ones(2, 3, 512)),
                              atol=1e-5)


def test_kernels_follow_the_density_rule():
    ticket = sparse_ticket.sparsify(lenet())
    assert [type(m).__name__ for m in ticket] == [
        "Flatten", "SparseLinear", "ReLU", "SparseLinear", "ReLU", "Linear"]  # 1,000 weights
    dense = sparse_ticket.sparsify(lenet(), max_density=0.01)
    assert not any(isinstance(m, SparseLinear) for m in dense.modules())


def test_a_ticket_copies_and_pickles(tmp_path):
    ticket = sparse_ticket.sparsify(lenet())
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        want = ticket(x)
        assert torch.equal(copy.deepcopy(ticket)(x), want)
        torch.save(ticket, tmp_path / "t.pt")
        assert torch.equal(torch.load(tmp_path / "t.pt", weights_only=False)(x), want)
        assert torch.equal(ticket.to("cpu")(x), want)


def fused_runs(chain: nn.Module) -> list[list[str]]:
    """The children each fused run of a SparseChain covers (built by its first call)."""
    with torch.no_grad():
        steps = chain._build()[1]
    return [[type(m).__name__ for m in s.modules] for s in steps
            if not isinstance(s, nn.Module)]


def same(a: nn.Module, b: nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad():
        return torch.allclose(a(x), b(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,shape", [("lenet_300_100", (1, 28, 28)), ("conv2", (3, 32, 32))])
def test_sequentials_fuse_into_one_chain_with_the_same_state(name, shape, tmp_path):
    torch.manual_seed(0)
    model = masked(lth.create_model(name, input_shape=shape, num_classes=10), 0.05)
    ticket = sparse_ticket.sparsify(model)
    chain = ticket if name == "lenet_300_100" else ticket.classifier
    assert type(chain) is SparseChain and isinstance(chain, nn.Sequential)
    assert fused_runs(chain) == [["Flatten", "SparseLinear", "ReLU", "SparseLinear", "ReLU",
                                  "Linear"]]
    if name == "conv2":  # its convolutions: no SparseLinear, a plain Sequential
        assert type(ticket.features) is nn.Sequential and type(ticket) is not SparseChain
    assert ticket.state_dict().keys() == sparse_ticket.sparsify(model, fuse=False
                                                                ).state_dict().keys()
    for batch in (1, 2, 256):
        x = torch.randn(batch, *shape)
        assert same(ticket, model, x)
        with torch.inference_mode():
            assert torch.allclose(ticket(x), model(x), rtol=1e-5, atol=1e-5)
        y = ticket(x)  # gradients on: the modules run
        assert y.is_contiguous() and torch.allclose(y, model(x), rtol=1e-5, atol=1e-5)
    sparse_ticket.save(ticket, tmp_path / "t.safetensors")  # the same file as the dense one's
    sparse_ticket.save(model, tmp_path / "d.safetensors")
    assert sparse_ticket.read(tmp_path / "t.safetensors")[0].keys() == \
        sparse_ticket.read(tmp_path / "d.safetensors")[0].keys()
    loaded = sparse_ticket.load(tmp_path / "t.safetensors", model).eval()
    assert any(type(m) is SparseChain for m in loaded.modules())
    assert same(loaded, model, torch.randn(1, *shape))


def test_tanh_dropout_and_other_children_in_a_chain():
    torch.manual_seed(0)
    model = masked(nn.Sequential(
        nn.Linear(64, 200), nn.Tanh(), nn.Dropout(0.5), nn.Linear(200, 100), nn.GELU(),
        nn.Identity(), nn.Linear(100, 10), nn.Sigmoid(), nn.LayerNorm(10), nn.Linear(10, 3)),
        0.05)
    with torch.no_grad():  # small layers kept dense
        for i in (6, 9):
            model[i].weight.normal_()
    ticket = sparse_ticket.sparsify(model)
    assert fused_runs(ticket) == [["SparseLinear", "Tanh", "Dropout", "SparseLinear", "GELU",
                                   "Identity", "Linear", "Sigmoid"], ["Linear"]]  # LayerNorm
    x = torch.randn(5, 64)
    for batch in (x[:1], x, x.reshape(5, 1, 64)):  # 3-D: nn.Linear's last dimension
        assert same(ticket, model, batch)
    ticket[2].train()  # a Dropout in training mode: the modules run it
    with torch.no_grad():
        assert not torch.allclose(ticket(x), model(x))
    ticket.eval()[1] = nn.ReLU()  # a replaced child is seen at the next call
    model[1] = nn.ReLU()
    assert same(ticket, model, x) and same(ticket, model, x[:1])
    with torch.no_grad():  # weights reassigned: refresh()
        ticket[9].weight = nn.Parameter(torch.zeros(3, 10))
        ticket.refresh()
        assert torch.equal(ticket(x), ticket[9].bias.expand(5, 3))


def test_a_custom_model_stays_unfused_and_chains_move_and_share_threads():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(784, 300), nn.Linear(300, 10)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x.flatten(1))))

    torch.manual_seed(0)
    custom = masked(Custom(), 0.05)
    ticket = sparse_ticket.sparsify(custom)
    assert type(ticket.fc1) is SparseLinear
    assert not any(type(m) is SparseChain for m in ticket.modules())
    assert same(ticket, custom, torch.randn(1, 1, 28, 28))
    model, chain = lenet(), sparse_ticket.sparsify(lenet())
    x = torch.randn(1, 1, 28, 28)
    with torch.inference_mode():  # buffers made here serve outside inference mode too
        chain(x)
    with torch.no_grad():
        want = model(x)
        assert torch.allclose(chain(x), want, atol=1e-5)
        assert torch.allclose(chain.double()(x.double()), want.double(), atol=1e-5)
        chain.float()
    results, inputs = {}, [torch.randn(1, 1, 28, 28) for _ in range(4)]

    def call(i):
        with torch.no_grad():
            results[i] = [chain(inputs[i]) for _ in range(200)]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with torch.no_grad():
        for i, ys in results.items():  # each thread its own buffers: no output mixed up
            assert all(torch.allclose(y, model(inputs[i]), atol=1e-5) for y in ys)
        for p in model.parameters():  # new values of the same masks, loaded in place
            p.mul_(2)
    chain.load_state_dict(sparse_ticket.sparsify(model).state_dict())
    assert same(chain, model, x) and same(chain, model, inputs[0].expand(3, 1, 28, 28))


def test_the_module_file_needs_only_torch_and_safetensors(tmp_path):
    source = Path(sparse_ticket.__file__)
    tops = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            tops |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import needs the lth package"
            tops.add((node.module or "").split(".")[0])
    assert tops - set(sys.stdlib_module_names) == {"torch", "safetensors"}
    sparse_ticket.save(lenet(), tmp_path / "t.safetensors")
    (tmp_path / "sparse_ticket.py").write_bytes(source.read_bytes())
    code = ("import sys; sys.path.insert(0, '.'); import torch, sparse_ticket\n"
            "model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 300), "
            "torch.nn.ReLU(), torch.nn.Linear(300, 100), torch.nn.ReLU(), "
            "torch.nn.Linear(100, 10))\n"
            "t = sparse_ticket.load('t.safetensors', model)\n"
            "print(type(t[1]).__name__, t(torch.zeros(1, 1, 28, 28)).shape[1], "
            "any(m == 'lth' or m.startswith('lth.') for m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["SparseLinear", "10", "False"]


def test_cli_export_sparse_end_to_end(run_dir, tmp_path, digits, capsys):
    out = tmp_path / "ticket.safetensors"
    assert main(["export", str(run_dir), "--format", "sparse", "--out", str(out)]) == 0
    assert "lth.load_ticket" in capsys.readouterr().out
    assert main(["export", str(run_dir), "--out", str(tmp_path / "dense.safetensors")]) == 0
    assert out.stat().st_size * 4 < (tmp_path / "dense.safetensors").stat().st_size
    result = lth.Result(run_dir)
    dense = dense_of(result, 2)
    x = digits.x_test[:64]
    for ticket in (lth.load_ticket(out), sparse_ticket.load(out, result.model())):
        assert isinstance(ticket.get_submodule("1"), SparseLinear)  # 64 x 256 at 9%
        with torch.no_grad():
            assert torch.allclose(ticket.eval()(x), dense(x), atol=1e-5)
            assert torch.allclose(ticket(x[:1]), dense(x[:1]), atol=1e-5)


def test_result_export_sparse(run_dir, digits):
    result = lth.Result(run_dir)
    assert type(result.export(1, "sparse").get_submodule("1")) is nn.Linear  # 30%: dense
    ticket = result.export(2, "sparse")
    assert isinstance(ticket.get_submodule("1"), SparseLinear)
    with torch.no_grad():
        assert torch.allclose(ticket(digits.x_test), dense_of(result, 2)(digits.x_test),
                              atol=1e-5)


def test_bad_input_names_the_fix(run_dir, tmp_path, small_mlp):
    class KerasLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(4, 4))

        def lth_layer_kinds(self):
            return {"w": "dense"}

    keras_like = KerasLike()
    mask = lth.Mask({"w": torch.ones(4, 4, dtype=torch.bool)})
    with pytest.raises(lth.ModelError, match="Keras.*'state_dict' instead"):
        export(keras_like, {"w": torch.ones(4, 4)}, mask, "sparse", example=torch.ones(1, 4))

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(4, 4))

        def forward(self, x):
            return x @ self.w

    with pytest.raises(lth.ModelError, match=r"pruned none: w \(Custom\).*'state_dict'"):
        sparse_module(Custom(), {"w": torch.ones(4, 4)}, mask, torch.ones(1, 4))
    out = tmp_path / "t.safetensors"
    sparse_ticket.save(lenet(), out)
    with pytest.raises(TicketError, match="does not fit Sequential.*architecture"):
        sparse_ticket.load(out, small_mlp)
    with pytest.raises(lth.ConfigError, match="pass the model"):
        lth.load_ticket(out)
    save_file({"a": torch.ones(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(TicketError, match="not a sparse ticket.*--format sparse"):
        sparse_ticket.load(tmp_path / "plain.safetensors", small_mlp)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_2_4_masks_run_semi_structured_on_cuda(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 128))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            w = layer.weight
            keep = w.abs().reshape(w.shape[0], -1, 4).topk(2, -1).indices
            mask = torch.zeros_like(w).reshape(w.shape[0], -1, 4).scatter_(-1, keep, 1.0)
            w.mul_(mask.reshape(w.shape))
    assert sparse_ticket.is_2_4(model[0].weight)
    sparse_ticket.save(model, tmp_path / "t.safetensors")
    dense = model.half().cuda().eval()
    ticket = sparse_ticket.load(tmp_path / "t.safetensors", dense, device="cuda",
                                semi_structured=True)
    from torch.sparse import SparseSemiStructuredTensor

    assert isinstance(ticket[0].weight, SparseSemiStructuredTensor)
    x = torch.randn(64, 128, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        assert torch.allclose(ticket(x), dense(x), rtol=1e-2, atol=1e-2)
