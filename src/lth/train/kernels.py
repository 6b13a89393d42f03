"""Compiled CPU kernels for a ``Linear`` layer whose weight matrix is sparse with a fixed
pattern: the forward product, and in one pass the input gradient and the weight gradient
at the kept positions only (a sampled dense-dense product).

Activations are handled transposed, features by batch (``xT``: in × batch, ``yT``:
out × batch, C-contiguous float32), so the innermost loops run over the batch with unit
stride. The kept weights are a flat array ``values`` in row-major order of the weight
matrix (``weight[keep]``), addressed through a :class:`Pattern` built once per mask.

The kernels are compiled by numba on first use and cached on disk, so no build step is
needed beyond ``pip install``; ``fastmath`` lets the compiler reassociate the sums, so
results equal the dense product up to floating-point rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

_FLAGS = {"cache": True, "fastmath": True, "boundscheck": False, "error_model": "numpy",
          "nogil": True}


@dataclass(frozen=True)
class Pattern:
    """Where a ``(out, in)`` weight matrix keeps weights: CSR row pointers ``crow``
    (int64, out + 1) and column indices ``col`` (int32, one per kept weight)."""

    shape: tuple[int, int]
    crow: np.ndarray
    col: np.ndarray

    @classmethod
    def of(cls, keep: np.ndarray) -> Pattern:
        """The pattern of a boolean ``(out, in)`` matrix."""
        rows, cols = np.nonzero(keep)
        crow = np.zeros(keep.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=keep.shape[0]), out=crow[1:])
        return cls((int(keep.shape[0]), int(keep.shape[1])), crow,
                   np.ascontiguousarray(cols, dtype=np.int32))

    @property
    def nnz(self) -> int:
        return len(self.col)


def forward(p: Pattern, xT: np.ndarray, values: np.ndarray, bias: np.ndarray | None,
            yT: np.ndarray) -> None:
    """``yT = W @ xT (+ bias)`` into the preallocated ``yT`` (out × batch)."""
    _forward(xT, values, p.crow, p.col, bias if bias is not None else _NO_BIAS, yT)


def backward(p: Pattern, xT: np.ndarray, values: np.ndarray, gyT: np.ndarray,
             gvalues: np.ndarray, gxT: np.ndarray | None) -> None:
    """The weight gradient at the kept positions into ``gvalues`` and, when ``gxT`` is
    given (in × batch, zeros on entry), the input gradient ``Wᵀ @ gyT`` added into it."""
    _backward(xT, values, p.crow, p.col, gyT, gvalues,
              gxT if gxT is not None else _NO_GRAD, gxT is not None)


_NO_BIAS = np.zeros(0, dtype=np.float32)
_NO_GRAD = np.zeros((0, 0), dtype=np.float32)


@njit(**_FLAGS)
def _forward(xT, values, crow, col, bias, yT):  # pragma: no cover - compiled
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


@njit(**_FLAGS)
def _backward(xT, values, crow, col, gyT, gvalues, gxT, input_grad):  # pragma: no cover
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
            if input_grad:
                w = values[k]
                gx = gxT[j]
                for b in range(batch):
                    gx[b] += w * g[b]
