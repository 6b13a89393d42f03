"""Compiled CPU kernels for a ``Linear`` layer whose weight matrix is sparse with a fixed
pattern: the forward product, and in one pass the input gradient and the weight gradient
at the kept positions only (a sampled dense-dense product).

Contract
--------
- Activations are handled transposed, features by batch (``xT``: in × batch, ``yT``,
  ``gyT``: out × batch, ``gxT``: in × batch), C-contiguous float32, any batch size.
- The kept weights are a flat float32 array ``values`` in row-major order of the weight
  matrix (``weight[keep]``); their gradient ``gvalues`` has the same order. The order is
  what the optimizer state and checkpoints hold, so the kernels never change it.
- :class:`Pattern` is built once per mask (:meth:`Pattern.of`) and holds the index
  arrays the kernels walk: CSR (row pointers, column of each kept weight) and CSC (column
  pointers, row of each kept weight, and its position in ``values``).
- :func:`forward` overwrites ``yT``; :func:`backward` overwrites ``gvalues`` and, when
  given, ``gxT`` (it need not be zeroed).

How they are fast
-----------------
The batch is cut into panels of 64 lanes = four 16-float AVX-512 vectors (the last vector
of a panel is masked when the batch is not a multiple of 16, e.g. 60 = 16 + 16 + 16 + 12).
For one panel the whole output row lives in vector registers while the kernel walks the
kept weights of that row, so each kept weight costs four vector loads and four fused
multiply-adds and no load/store of the accumulator:

- forward, CSR order: ``yT[o] = bias[o] + Σ_k values[k] · xT[col[k]]``;
- backward, CSC order, one pass per input feature ``j``: the panel of ``xT[j]`` is held in
  registers, and for every kept weight ``k`` of column ``j`` (row ``o``) the panel of
  ``gyT[o]`` is loaded once and used twice: ``gxT[j] += values[k] · gyT[o]`` (a gather
  with register accumulation, no scatter) and ``gvalues[k] = xT[j] · gyT[o]`` (a dot
  product, reduced in registers);
- weight gradient alone (no ``gxT``), CSR order with ``gyT[o]`` held in registers.

Large batches (a convolution as a matmul) are walked in groups of 16 panels per output row
or input feature, so a row's slice is a contiguous 4 KiB; input features with no kept
weight get a zero gradient without reading ``xT``.

The vectors are LLVM ``<16 x float>`` values reached through the numba intrinsics of
:mod:`lth.train.simd` (``vload``, ``vfma``, ...). The kernels are compiled by numba on
first use (about 2 s for all three) and cached on disk (``cache=True``); ``fastmath``
lets the compiler reassociate the sums, so results equal the dense product up to float32
rounding. They need a CPU with AVX-512 to run at full speed; elsewhere LLVM splits the
vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from .simd import LANES, at, lanes, put, vadd, vfma, vfmav, vload, vmul, vsplat, vstore, vsum, vzero

_FLAGS = {"cache": True, "fastmath": True, "boundscheck": False, "error_model": "numpy",
          "nogil": True}

#: Lanes of one panel (four vectors).
PANEL = 4 * LANES
#: Lanes walked together, panel by panel, per output row or input feature.
GROUP = 16 * PANEL


@dataclass(frozen=True)
class Pattern:
    """Where a ``(out, in)`` weight matrix keeps weights.

    CSR: row pointers ``crow`` (int64, out + 1) and the column ``col`` (int32) of each
    kept weight, in row-major order (the order of ``values``). CSC: column pointers
    ``ccol`` (int64, in + 1), and for the kept weights in column-major order their row
    ``row`` (int32) and position ``perm`` (int32) in ``values``."""

    shape: tuple[int, int]
    crow: np.ndarray
    col: np.ndarray
    ccol: np.ndarray
    row: np.ndarray
    perm: np.ndarray

    @classmethod
    def of(cls, keep: np.ndarray) -> Pattern:
        """The pattern of a boolean ``(out, in)`` matrix."""
        keep = np.asarray(keep, dtype=bool)
        if keep.ndim != 2:
            raise ValueError(f"a pattern needs a 2-d mask, not shape {keep.shape}")
        n_out, n_in = keep.shape
        if keep.sum() >= 2 ** 31:
            raise ValueError("a pattern holds fewer than 2**31 kept weights")
        rows, cols = np.nonzero(keep)  # row-major
        crow = np.zeros(n_out + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_out), out=crow[1:])
        ccol = np.zeros(n_in + 1, dtype=np.int64)
        np.cumsum(np.bincount(cols, minlength=n_in), out=ccol[1:])
        order = np.argsort(cols, kind="stable")  # column-major, rows ascending
        return cls((int(n_out), int(n_in)), crow, cols.astype(np.int32),
                   ccol, rows[order].astype(np.int32), order.astype(np.int32))

    @property
    def nnz(self) -> int:
        return len(self.col)


def forward(p: Pattern, xT: np.ndarray, values: np.ndarray, bias: np.ndarray | None,
            yT: np.ndarray) -> None:
    """``yT = W @ xT (+ bias)`` into the preallocated ``yT`` (out × batch), overwritten."""
    _forward(xT, values, p.crow, p.col, bias if bias is not None else _NO_BIAS, yT)


def backward(p: Pattern, xT: np.ndarray, values: np.ndarray, gyT: np.ndarray,
             gvalues: np.ndarray, gxT: np.ndarray | None) -> None:
    """The weight gradient at the kept positions into ``gvalues`` and, when ``gxT`` is
    given (in × batch), the input gradient ``Wᵀ @ gyT`` into it; both are overwritten
    (``gxT`` need not be zeroed)."""
    if gxT is None:
        _weight_grad(xT, p.crow, p.col, gyT, gvalues)
    else:
        _backward(xT, values, p.ccol, p.row, p.perm, gyT, gvalues, gxT)


_NO_BIAS = np.zeros(0, dtype=np.float32)


# --- kernels ----------------------------------------------------------------------------
# Each walks the batch in panels of 64 lanes (masks m0..m3 for its four vectors) and,
# within a panel, the kept weights two at a time with two sets of accumulators, so that
# eight independent FMA chains hide the FMA latency.

@njit(**_FLAGS)
def _forward(xT, values, crow, col, bias, yT):  # pragma: no cover - compiled
    n_out, batch = yT.shape
    xf = xT.reshape(-1)
    yf = yT.reshape(-1)
    with_bias = bias.shape[0] > 0
    for q0 in range(0, batch, GROUP):
        for o in range(n_out):
            for p0 in range(q0, min(q0 + GROUP, batch), PANEL):
                m0 = lanes(batch - p0)
                m1 = lanes(batch - p0 - 16)
                m2 = lanes(batch - p0 - 32)
                m3 = lanes(batch - p0 - 48)
                a0 = vsplat(at(bias, o) if with_bias else np.float32(0))
                a1 = a0
                a2 = a0
                a3 = a0
                c0 = vzero()
                c1 = c0
                c2 = c0
                c3 = c0
                k = at(crow, o)
                end = at(crow, o + 1)
                while k + 1 < end:
                    w = at(values, k)
                    b = np.int64(at(col, k)) * batch + p0
                    v = at(values, k + 1)
                    c = np.int64(at(col, k + 1)) * batch + p0
                    a0 = vfma(w, vload(xf, b, m0), a0)
                    a1 = vfma(w, vload(xf, b + 16, m1), a1)
                    a2 = vfma(w, vload(xf, b + 32, m2), a2)
                    a3 = vfma(w, vload(xf, b + 48, m3), a3)
                    c0 = vfma(v, vload(xf, c, m0), c0)
                    c1 = vfma(v, vload(xf, c + 16, m1), c1)
                    c2 = vfma(v, vload(xf, c + 32, m2), c2)
                    c3 = vfma(v, vload(xf, c + 48, m3), c3)
                    k += 2
                if k < end:
                    w = at(values, k)
                    b = np.int64(at(col, k)) * batch + p0
                    a0 = vfma(w, vload(xf, b, m0), a0)
                    a1 = vfma(w, vload(xf, b + 16, m1), a1)
                    a2 = vfma(w, vload(xf, b + 32, m2), a2)
                    a3 = vfma(w, vload(xf, b + 48, m3), a3)
                r = o * batch + p0
                vstore(yf, r, vadd(a0, c0), m0)
                vstore(yf, r + 16, vadd(a1, c1), m1)
                vstore(yf, r + 32, vadd(a2, c2), m2)
                vstore(yf, r + 48, vadd(a3, c3), m3)


@njit(**_FLAGS)
def _backward(xT, values, ccol, row, perm, gyT, gvalues, gxT):  # pragma: no cover
    n_in, batch = xT.shape
    xf = xT.reshape(-1)
    gf = gyT.reshape(-1)
    gxf = gxT.reshape(-1)
    if batch == 0:
        gvalues[:] = 0
    for q0 in range(0, batch, GROUP):
        q1 = min(q0 + GROUP, batch)
        for j in range(n_in):
            if at(ccol, j) == at(ccol, j + 1):  # no kept weight: no input gradient
                gxT[j, q0:q1] = 0
                continue
            for p0 in range(q0, q1, PANEL):
                m0 = lanes(batch - p0)
                m1 = lanes(batch - p0 - 16)
                m2 = lanes(batch - p0 - 32)
                m3 = lanes(batch - p0 - 48)
                first = p0 == 0
                r = j * batch + p0
                x0 = vload(xf, r, m0)
                x1 = vload(xf, r + 16, m1)
                x2 = vload(xf, r + 32, m2)
                x3 = vload(xf, r + 48, m3)
                a0 = vzero()
                a1 = a0
                a2 = a0
                a3 = a0
                c0 = a0
                c1 = a0
                c2 = a0
                c3 = a0
                k = at(ccol, j)
                end = at(ccol, j + 1)
                while k + 1 < end:
                    p = np.int64(at(perm, k))
                    b = np.int64(at(row, k)) * batch + p0
                    q = np.int64(at(perm, k + 1))
                    c = np.int64(at(row, k + 1)) * batch + p0
                    w = at(values, p)
                    v = at(values, q)
                    g0 = vload(gf, b, m0)
                    g1 = vload(gf, b + 16, m1)
                    g2 = vload(gf, b + 32, m2)
                    g3 = vload(gf, b + 48, m3)
                    h0 = vload(gf, c, m0)
                    h1 = vload(gf, c + 16, m1)
                    h2 = vload(gf, c + 32, m2)
                    h3 = vload(gf, c + 48, m3)
                    a0 = vfma(w, g0, a0)
                    a1 = vfma(w, g1, a1)
                    a2 = vfma(w, g2, a2)
                    a3 = vfma(w, g3, a3)
                    c0 = vfma(v, h0, c0)
                    c1 = vfma(v, h1, c1)
                    c2 = vfma(v, h2, c2)
                    c3 = vfma(v, h3, c3)
                    d = vsum(vfmav(x3, g3, vfmav(x2, g2, vfmav(x1, g1, vmul(x0, g0)))))
                    e = vsum(vfmav(x3, h3, vfmav(x2, h2, vfmav(x1, h1, vmul(x0, h0)))))
                    if first:
                        put(gvalues, p, d)
                        put(gvalues, q, e)
                    else:
                        put(gvalues, p, at(gvalues, p) + d)
                        put(gvalues, q, at(gvalues, q) + e)
                    k += 2
                if k < end:
                    p = np.int64(at(perm, k))
                    b = np.int64(at(row, k)) * batch + p0
                    w = at(values, p)
                    g0 = vload(gf, b, m0)
                    g1 = vload(gf, b + 16, m1)
                    g2 = vload(gf, b + 32, m2)
                    g3 = vload(gf, b + 48, m3)
                    a0 = vfma(w, g0, a0)
                    a1 = vfma(w, g1, a1)
                    a2 = vfma(w, g2, a2)
                    a3 = vfma(w, g3, a3)
                    d = vsum(vfmav(x3, g3, vfmav(x2, g2, vfmav(x1, g1, vmul(x0, g0)))))
                    if first:
                        put(gvalues, p, d)
                    else:
                        put(gvalues, p, at(gvalues, p) + d)
                vstore(gxf, r, vadd(a0, c0), m0)
                vstore(gxf, r + 16, vadd(a1, c1), m1)
                vstore(gxf, r + 32, vadd(a2, c2), m2)
                vstore(gxf, r + 48, vadd(a3, c3), m3)


@njit(**_FLAGS)
def _weight_grad(xT, crow, col, gyT, gvalues):  # pragma: no cover - compiled
    n_out, batch = gyT.shape
    xf = xT.reshape(-1)
    gf = gyT.reshape(-1)
    if batch == 0:
        gvalues[:] = 0
    for q0 in range(0, batch, GROUP):
        for o in range(n_out):
            for p0 in range(q0, min(q0 + GROUP, batch), PANEL):
                m0 = lanes(batch - p0)
                m1 = lanes(batch - p0 - 16)
                m2 = lanes(batch - p0 - 32)
                m3 = lanes(batch - p0 - 48)
                first = p0 == 0
                r = o * batch + p0
                g0 = vload(gf, r, m0)
                g1 = vload(gf, r + 16, m1)
                g2 = vload(gf, r + 32, m2)
                g3 = vload(gf, r + 48, m3)
                for k in range(at(crow, o), at(crow, o + 1)):
                    b = np.int64(at(col, k)) * batch + p0
                    d = vsum(vfmav(g3, vload(xf, b + 48, m3),
                                     vfmav(g2, vload(xf, b + 32, m2),
                                            vfmav(g1, vload(xf, b + 16, m1),
                                                   vmul(g0, vload(xf, b, m0))))))
                    if first:
                        put(gvalues, k, d)
                    else:
                        put(gvalues, k, at(gvalues, k) + d)
