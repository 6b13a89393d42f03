"""Sparse Linear kernels side by side: the forward product plus both backward products
(input gradient, weight gradient at the kept positions) of a layer with a fixed sparse
weight pattern, against the dense masked baseline, on one thread.

Contestants, each timed on one full fwd+bwd of one layer:

- ``dense``: MKL through torch, ``F.linear`` forward and the two backward matmuls on the
  full (masked) weight matrix: the baseline every ratio is taken against;
- ``torch_csr``: torch.sparse CSR ``@`` for the forward and for the input gradient (a CSR
  of the transposed pattern, its values gathered each step) and
  ``torch.sparse.sampled_addmm`` for the weight gradient;
- ``scipy``: scipy.sparse CSR for the forward and its transpose for the input gradient,
  the weight gradient as a numpy gather (``Σ_b gyT[row] * xT[col]``);
- ``numba_old``: the first numba kernels of ``lth.train.kernels`` (CSR, accumulator row
  loaded and stored per kept weight, input gradient scattered), kept here for comparison;
- ``numba``: the current ``lth.train.kernels``.

Shapes: LeNet-300-100's first two layers (300×784, 100×300, batch 60) and a conv layer
as a matmul (Conv-2's second conv: 64 filters × 64·3·3 inputs, 60 images × 16·16
positions). Timings alternate the contestants and keep the minimum of the repeats (the
machine is shared); ratios are dense time / contestant time (> 1: faster than dense);
GMAC/s counts the multiply-adds the contestant needs (3·nnz·batch sparse, 3·out·in·batch
dense). The last line is the whole table as JSON.

    PYTHONPATH=src python bench/sparse_kernels.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from numba import njit  # noqa: E402

from lth.train import kernels  # noqa: E402

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")

DENSITIES = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
SHAPES = {  # name: (out, in, columns)
    "lenet1 300x784": (300, 784, 60),
    "lenet2 100x300": (100, 300, 60),
    "conv 64x576": (64, 576, 60 * 16 * 16),
}


# --- the first numba kernels, as they were, for comparison -------------------------------

_OLD = {"cache": True, "fastmath": True, "boundscheck": False, "error_model": "numpy",
        "nogil": True}


@njit(**_OLD)
def _old_forward(xT, values, crow, col, bias, yT):  # pragma: no cover - compiled
    n_out, batch = yT.shape
    with_bias = bias.shape[0] > 0
    for o in range(n_out):
        acc = yT[o]
        start = bias[o] if with_bias else np.float32(0)
        for b in range(batch):
            acc[b] = start
        for k in range(crow[o], crow[o + 1]):
            w = values[k]
            x = xT[col[k]]
            for b in range(batch):
                acc[b] += w * x[b]


@njit(**_OLD)
def _old_backward(xT, values, crow, col, gyT, gvalues, gxT):  # pragma: no cover
    n_out, batch = gyT.shape
    for o in range(n_out):
        g = gyT[o]
        for k in range(crow[o], crow[o + 1]):
            j = col[k]
            x = xT[j]
            s = np.float32(0)
            for b in range(batch):
                s += g[b] * x[b]
            gvalues[k] = s
            w = values[k]
            gx = gxT[j]
            for b in range(batch):
                gx[b] += w * g[b]


# --- contestants: each returns a closure doing one fwd+bwd ----------------------------

def _dense(weight, keep, x, gy):
    w = torch.from_numpy(weight)
    xt, gyt = torch.from_numpy(x.T.copy()), torch.from_numpy(gy.T.copy())  # batch × feat
    b = torch.zeros(w.shape[0])

    def step():
        F.linear(xt, w, b)
        gyt @ w            # input gradient
        gyt.T @ xt         # weight gradient (the mask multiply left out: in dense's favour)
    return step


def _torch_csr(weight, keep, x, gy):
    p = kernels.Pattern.of(keep)
    values = torch.from_numpy(weight[keep])
    crow, col = torch.from_numpy(p.crow), torch.from_numpy(p.col.astype(np.int64))
    ccol, row = torch.from_numpy(p.ccol), torch.from_numpy(p.row.astype(np.int64))
    perm = torch.from_numpy(p.perm.astype(np.int64))
    xt, gyt = torch.from_numpy(x), torch.from_numpy(gy)  # feat × batch
    mask = torch.sparse_csr_tensor(crow, col, torch.zeros(p.nnz), keep.shape,
                                   check_invariants=False)
    out, inn = keep.shape

    def step():
        w = torch.sparse_csr_tensor(crow, col, values, (out, inn), check_invariants=False)
        w @ xt
        wt = torch.sparse_csr_tensor(ccol, row, values[perm], (inn, out),
                                     check_invariants=False)
        wt @ gyt
        torch.sparse.sampled_addmm(mask, gyt, xt.T, beta=0.0).values()
    return step


def _scipy(weight, keep, x, gy):
    p = kernels.Pattern.of(keep)
    w = sp.csr_matrix((weight[keep], p.col, p.crow), shape=keep.shape)
    wt = w.T  # a CSC view, no copy
    rows = np.repeat(np.arange(keep.shape[0]), np.diff(p.crow))
    col = p.col
    gv = np.empty(p.nnz, np.float32)
    chunk = max(1, (1 << 22) // max(1, x.shape[1]))  # gathered temporaries <= 2 x 16 MiB

    def step():
        w @ x
        wt @ gy
        for s in range(0, p.nnz, chunk):
            e = min(s + chunk, p.nnz)
            np.einsum("kb,kb->k", gy[rows[s:e]], x[col[s:e]], out=gv[s:e])
    return step


def _numba_arrays(weight, keep, x):
    """The pattern, kept values, output, gradients and a zero bias the numba kernels use."""
    values = weight[keep]
    return (kernels.Pattern.of(keep), values, np.empty((keep.shape[0], x.shape[1]), np.float32),
            np.empty_like(values), np.empty_like(x), np.zeros(keep.shape[0], np.float32))


def _numba_old(weight, keep, x, gy):
    p, values, y, gv, gx, bias = _numba_arrays(weight, keep, x)

    def step():
        _old_forward(x, values, p.crow, p.col, bias, y)
        gx[:] = 0
        _old_backward(x, values, p.crow, p.col, gy, gv, gx)
    return step


def _numba(weight, keep, x, gy):
    p, values, y, gv, gx, bias = _numba_arrays(weight, keep, x)

    def step():
        kernels.forward(p, x, values, bias, y)
        kernels.backward(p, x, values, gy, gv, gx)
    return step


CONTESTANTS = {"dense": _dense, "torch_csr": _torch_csr, "scipy": _scipy,
               "numba_old": _numba_old, "numba": _numba}


def _time(steps, budget_s):
    """Min seconds per call of each step, alternating them until the budget is spent."""
    for f in steps.values():  # warm up (and compile)
        f()
    once = {n: _one(f) for n, f in steps.items()}
    reps = max(2, min(200, int(budget_s / max(sum(once.values()), 1e-6))))
    best = dict(once)
    for _ in range(reps):
        for n, f in steps.items():
            best[n] = min(best[n], _one(f))
    return best


def _one(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def run(shapes, densities, budget_s, contestants):
    rng = np.random.default_rng(0)
    rows = []
    for name, (out, inn, cols) in shapes.items():
        x = rng.standard_normal((inn, cols)).astype(np.float32)
        gy = rng.standard_normal((out, cols)).astype(np.float32)
        for d in densities:
            keep = rng.random((out, inn)) < d
            weight = (rng.standard_normal((out, inn)) * keep).astype(np.float32)
            steps = {n: CONTESTANTS[n](weight, keep, x, gy) for n in contestants}
            best = _time(steps, budget_s)
            macs = {n: 3 * (out * inn if n == "dense" else int(keep.sum())) * cols
                    for n in contestants}
            rows.append({"shape": name, "batch": cols, "density": d,
                         "us": {n: round(best[n] * 1e6, 1) for n in contestants},
                         "gmacs": {n: round(macs[n] / best[n] / 1e9, 1) for n in contestants},
                         "vs_dense": {n: round(best["dense"] / best[n], 2)
                                      for n in contestants}})
            _print_row(rows[-1], contestants)
    return rows


def _print_row(r, contestants):
    cells = "  ".join(f"{n} {r['vs_dense'][n]:5.2f}x {r['gmacs'][n]:5.1f}" for n in contestants)
    print(f"{r['shape']:15s} n={r['batch']:<5d} d={r['density']:<5}  "
          f"dense {r['us']['dense']:8.1f}us | {cells}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer shapes, densities, repeats")
    ap.add_argument("--budget", type=float, default=None, help="seconds per table row")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        shapes = {"lenet1 300x784": SHAPES["lenet1 300x784"],
                  "conv 64x576": (64, 576, 60 * 16)}
        densities, budget = (1.0, 0.2, 0.1, 0.02), 0.5
    else:
        shapes, densities, budget = SHAPES, DENSITIES, 2.0
    budget = args.budget if args.budget is not None else budget
    contestants = list(CONTESTANTS)
    print("ratio = dense time / contestant time; GMAC/s on the MACs each needs "
          "(fwd + input grad + weight grad), 1 thread")
    rows = run(shapes, densities, budget, contestants)
    print(json.dumps({"bench": "sparse_kernels", "quick": args.quick, "rows": rows}))


if __name__ == "__main__":
    main()
