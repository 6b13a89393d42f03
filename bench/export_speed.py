"""CPU inference latency and file size of the sparse ticket (``lth export --format sparse``)
against the dense masked model, at 10%, 5% and 2% of weights kept.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/export_speed.py [--quick]

Masks: layer-wise magnitude pruning of a freshly initialised model, the same density in
every prunable layer (speed depends on the counts, not on training). One torch thread;
contestants alternate within every round; each number is the median over rounds of the
mean latency of a block of calls. Sizes: the sparse ticket's safetensors file against the
dense ``state_dict`` saved with safetensors. The ticket is ``load``'s (``nn.Sequential``
fused into ``SparseChain``); ``unfused`` (``fuse=False``: a module call per layer) is the
ticket before fusion; ``script``: the dense and the unfused model under ``torch.jit.script``
(no Python between layers). The profile at 5% times each step of the fused batch-1 call
alone, on its real input: what is left is the module call and the chain's checks.
The last line is one JSON object: dense / sparse ratios (higher: the ticket is better).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

import lth
from lth import sparse_ticket

MODELS = {"lenet_300_100": (1, 28, 28), "conv2": (3, 32, 32)}
DENSITIES = (0.1, 0.05, 0.02)


def masked(name: str, density: float) -> nn.Module:
    torch.manual_seed(0)
    model = lth.create_model(name, input_shape=MODELS[name], num_classes=10).eval()
    with torch.no_grad():
        for p in (model.get_parameter(n) for n in lth.prunable_names(model)):
            k = max(1, round(density * p.numel()))
            cut = p.abs().flatten().kthvalue(p.numel() - k + 1).values
            p.mul_(p.abs() >= cut)
    return model


def latencies(contestants: dict[str, Callable[[torch.Tensor], object]], x: torch.Tensor, *,
              budget_s: float) -> dict[str, float]:
    """Median seconds per call of each contestant, alternating their order every round."""
    with torch.no_grad():
        for m in contestants.values():
            for _ in range(3):
                m(x)
        t0 = time.perf_counter()
        for m in contestants.values():
            m(x)
        once = max(time.perf_counter() - t0, 1e-6)
        block = max(1, int(2e-3 / once * len(contestants)))  # ~2 ms a block of calls
        rounds = max(7, min(400, int(budget_s / (once * block))))
        times: dict[str, list[float]] = {k: [] for k in contestants}
        names = list(contestants)
        for r in range(rounds):
            for name in names if r % 2 else names[::-1]:
                m = contestants[name]
                t0 = time.perf_counter()
                for _ in range(block):
                    m(x)
                times[name].append((time.perf_counter() - t0) / block)
    return {k: statistics.median(v) for k, v in times.items()}


def scripted(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():  # deprecated in torch 2.x; here only a measuring tool
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(model)


def kernels(density: float, budget_s: float) -> list[str]:
    """Candidate kernels side by side at batch 1: LeNet's first layer (300 x 784) and
    conv2's second convolution (64 -> 64, 3x3, 32 x 32 input)."""
    from scipy.sparse import csr_matrix
    from torch.nn import functional as F

    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    torch.manual_seed(0)
    w = torch.randn(300, 784) * (torch.rand(300, 784) < density)
    b, x = torch.randn(300), torch.randn(1, 784)
    c64 = w.to_sparse_csr()
    c32 = sparse_ticket.csr(sparse_ticket.compress(w), (300, 784))
    coo, bsr = w.to_sparse(), w.to_sparse_bsr((2, 2))
    sp, xn = csr_matrix(w.numpy()), x[0].numpy()
    rows = torch.repeat_interleave(torch.arange(300), c64.crow_indices().diff())
    cols, vals, b1 = c64.col_indices(), c64.values(), b.unsqueeze(1)
    candidates = {
        "dense F.linear": lambda: F.linear(x, w, b),
        "CSR int64 addmm": lambda: torch.addmm(b1, c64, x.t()),
        "CSR int32 addmm": lambda: torch.addmm(b1, c32, x.t()),
        "CSR int32 addmv (ticket)": lambda: torch.addmv(b, c32, x[0]),
        "COO addmm": lambda: torch.addmm(b1, coo, x.t()),
        "BSR 2x2 addmm": lambda: torch.addmm(b1, bsr, x.t()),
        "scipy csr @ numpy": lambda: sp @ xn,
        "gather + index_add": lambda: b.index_add(0, rows, x[0, cols] * vals),
        "embedding_bag": lambda: F.embedding_bag(cols, x.t(), c64.crow_indices()[:-1],
                                                 mode="sum", per_sample_weights=vals),
    }
    cw = torch.randn(64, 64, 3, 3) * (torch.rand(64, 64, 3, 3) < density)
    cb, cx = torch.randn(64), torch.randn(1, 64, 32, 32)
    cc = sparse_ticket.csr(sparse_ticket.compress(cw), (64, 576))
    candidates["conv: dense conv2d"] = lambda: F.conv2d(cx, cw, cb, padding=1)
    candidates["conv: unfold + CSR addmm"] = lambda: torch.addmm(
        cb.unsqueeze(1), cc, F.unfold(cx, 3, padding=1)[0]).reshape(1, 64, 32, 32)
    candidates["conv: unfold alone"] = lambda: F.unfold(cx, 3, padding=1)
    lines = []
    for name, fn in candidates.items():
        t = latencies({name: _Call(fn)}, x, budget_s=budget_s)[name]
        lines.append(f"    {name:<26} {t * 1e6:8.1f} us")
    return lines


class _Call(nn.Module):
    def __init__(self, fn) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn()


def _name(f) -> str:  # type: ignore[no-untyped-def]
    if isinstance(f, partial):
        w = f.args[1]
        kind = "CSR" if w.layout == torch.sparse_csr else "dense"
        out = ", out=" if "out" in f.keywords else ""
        return f"addmv {kind} {w.shape[0]}x{w.shape[1]}{out}"
    return getattr(f, "__name__", type(f).__name__)


def chain_profile(ticket: nn.Module, x: torch.Tensor) -> list[str]:
    """Batch-1 time of each step of the ticket's fused call alone, on its real input."""
    chain = next(m for m in ticket.modules() if type(m) is sparse_ticket.SparseChain)
    if chain is not ticket:  # conv2: its classifier; its input from the layers before
        with torch.no_grad():
            x = ticket.pool(ticket.features(x))
    with torch.no_grad():
        whole = latencies({"call": chain}, x, budget_s=0.5)["call"]
        steps = chain._plan[1][0]._steps()  # the run's batch-1 kernel calls
        ops = [("reshape(-1)", lambda h: h.reshape(-1)), *((_name(f), f) for f in steps),
               ("[None]", lambda h: h[None])]
        lines, total, h = [], 0.0, x
        for name, f in ops:
            t = latencies({name: lambda _, f=f, h=h: f(h)}, x, budget_s=0.3)[name]
            total += t
            lines.append(f"    {name:<28} {t * 1e6:6.1f} us")
            h = f(h)
    lines.append(f"    {'sum of the steps':<28} {total * 1e6:6.1f} us")
    lines.append(f"    {'whole chain call':<28} {whole * 1e6:6.1f} us (the rest: the module "
                 "call, the chain's checks and loops)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short budgets (a smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # shared 2-core machine: one thread, like the issue asks
    budget = 0.5 if args.quick else 3.0
    out: dict[str, dict[str, dict[str, float]]] = {}
    tmp = Path(tempfile.mkdtemp())
    print(f"torch {torch.__version__}, 1 thread; candidate kernels at batch 1, 5% of "
          "weights:")
    print("\n".join(kernels(0.05, budget / 6)))
    print("latency in us (dense / sparse ticket)")
    for name, shape in MODELS.items():
        out[name] = {}
        for density in DENSITIES:
            dense = masked(name, density)
            sparse_ticket.save(dense, tmp / "ticket.safetensors")
            save_file({k: v.contiguous() for k, v in dense.state_dict().items()},
                      str(tmp / "dense.safetensors"))
            ticket = sparse_ticket.load(tmp / "ticket.safetensors", dense).eval()
            unfused = sparse_ticket.load(tmp / "ticket.safetensors", dense, fuse=False).eval()
            size = (tmp / "dense.safetensors").stat().st_size / \
                (tmp / "ticket.safetensors").stat().st_size
            row = {"size": size}
            for batch in (1, 256):
                x = torch.randn(batch, *shape)
                with torch.no_grad():
                    assert torch.allclose(ticket(x), dense(x), rtol=1e-4, atol=1e-4)
                contestants = {"dense": dense, "sparse": ticket, "unfused": unfused}
                if batch == 1:  # TorchScript: the same models without Python between layers
                    contestants.update({"dense script": scripted(dense),
                                        "sparse script": scripted(unfused)})
                # conv2 at batch 256 takes ~0.5 s a call: a smaller budget keeps the run short
                t = latencies(contestants, x, budget_s=budget if batch == 1 else budget / 2)
                row[f"b{batch}"] = t["dense"] / t["sparse"]
                print(f"{name} {density:.0%} batch {batch:>3}: {t['dense'] * 1e6:9.1f} / "
                      f"{t['sparse'] * 1e6:9.1f}  x{row[f'b{batch}']:.2f}  (unfused "
                      f"{t['unfused'] * 1e6:.1f}: x{t['dense'] / t['unfused']:.2f})")
                if batch == 1:
                    row["b1_script"] = t["dense script"] / t["sparse script"]
                    print(f"{name} {density:.0%} batch   1 script (unfused): "
                          f"{t['dense script'] * 1e6:9.1f} / {t['sparse script'] * 1e6:9.1f}  "
                          f"x{row['b1_script']:.2f}")
                if batch == 1 and density == 0.05:
                    print("  batch-1 time of each step of the fused call alone:")
                    print("\n".join(chain_profile(ticket, x)))
            print(f"{name} {density:.0%} file: "
                  f"{(tmp / 'dense.safetensors').stat().st_size / 1e3:.1f} kB / "
                  f"{(tmp / 'ticket.safetensors').stat().st_size / 1e3:.1f} kB  x{size:.2f}")
            out[name][f"{density:g}"] = {k: round(v, 2) for k, v in row.items()}
    sys.stdout.flush()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
