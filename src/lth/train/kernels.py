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

The vectors are LLVM ``<16 x float>`` values reached through a few numba intrinsics
(``_vload`` etc. below): numba runs no SLP vectoriser and its loop vectoriser would
vectorise the loop over kept weights (with gathers) rather than over the batch, so the
vector code is written out. The kernels are compiled by numba on first use (about 2 s
for all three) and cached on disk (``cache=True``); ``fastmath`` lets the compiler
reassociate the sums, so results equal the dense product up to float32 rounding. They
need a CPU with AVX-512 to run at full speed; elsewhere LLVM splits the vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, models, register_model

_FLAGS = {"cache": True, "fastmath": True, "boundscheck": False, "error_model": "numpy",
          "nogil": True}

#: Lanes of one vector, and of one panel (four vectors).
LANES = 16
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


# --- vector intrinsics ------------------------------------------------------------------
# A numba type for an LLVM <16 x float> (and one for a <16 x i1> lane mask), and the few
# operations the kernels need. Array arguments must be 1-d float32 (or index) arrays;
# indices are element offsets, unchecked.

_F32 = ir.FloatType()
_I32 = ir.IntType(32)
_VEC = ir.VectorType(_F32, LANES)
_MASK = ir.VectorType(ir.IntType(1), LANES)
_IVEC = ir.VectorType(_I32, LANES)


class _VecType(types.Type):
    def __init__(self):
        super().__init__(name="f32x16")


class _MaskType(types.Type):
    def __init__(self):
        super().__init__(name="mask16")


_vec = _VecType()
_mask = _MaskType()


@register_model(_VecType)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC)


@register_model(_MaskType)
class _MaskModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _MASK)


def _declare(builder, name, ret, args):
    mod = builder.module
    if name in mod.globals:
        return mod.globals[name]
    return ir.Function(mod, ir.FunctionType(ret, args), name)


def _address(context, builder, arrty, arr, idx):
    data = context.make_array(arrty)(context, builder, value=arr).data
    return builder.gep(data, [idx])


def _splat(builder, x):
    v = builder.insert_element(ir.Constant(_VEC, ir.Undefined), x, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(_VEC, ir.Undefined),
                                  ir.Constant(_IVEC, [0] * LANES))


def _fma(builder, a, b, c):
    return builder.call(_declare(builder, "llvm.fma.v16f32", _VEC, [_VEC] * 3), [a, b, c])


def _is_f32_array(arr):
    return isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype == types.float32


@intrinsic
def _at(typingctx, arr, idx):
    """``arr[idx]`` without the negative-index wraparound numba adds for signed ints."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1):
        return None

    def codegen(context, builder, sig, args):
        return builder.load(_address(context, builder, sig.args[0], args[0], args[1]))
    return arr.dtype(arr, types.intp), codegen


@intrinsic
def _put(typingctx, arr, idx, x):
    """``arr[idx] = x``, no wraparound."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1):
        return None

    def codegen(context, builder, sig, args):
        x = context.cast(builder, args[2], sig.args[2], sig.args[0].dtype)
        builder.store(x, _address(context, builder, sig.args[0], args[0], args[1]))
        return context.get_dummy_value()
    return types.none(arr, types.intp, arr.dtype), codegen


@intrinsic
def _lanes(typingctx, n):
    """The mask of the first ``n`` lanes (all for ``n >= 16``, none for ``n <= 0``)."""
    def codegen(context, builder, sig, args):
        n = args[0]
        big = ir.Constant(n.type, LANES)
        n = builder.trunc(builder.select(builder.icmp_signed(">", n, big), big, n), _I32)
        v = builder.insert_element(ir.Constant(_IVEC, ir.Undefined), n, ir.Constant(_I32, 0))
        v = builder.shuffle_vector(v, ir.Constant(_IVEC, ir.Undefined),
                                   ir.Constant(_IVEC, [0] * LANES))
        return builder.icmp_signed("<", ir.Constant(_IVEC, list(range(LANES))), v)
    return _mask(types.int64), codegen


@intrinsic
def _vzero(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_VEC, [0.0] * LANES)
    return _vec(), codegen


@intrinsic
def _vsplat(typingctx, x):
    def codegen(context, builder, sig, args):
        return _splat(builder, args[0])
    return _vec(types.float32), codegen


@intrinsic
def _vload(typingctx, arr, idx, mask):
    """``arr[idx:idx + 16]``, lanes outside ``mask`` 0 (and not read)."""
    if not _is_f32_array(arr):
        return None

    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, sig.args[0], args[0], args[1])
        fn = _declare(builder, "llvm.masked.load.v16f32.p0", _VEC,
                      [ptr.type, _I32, _MASK, _VEC])
        return builder.call(fn, [ptr, ir.Constant(_I32, 4), args[2],
                                 ir.Constant(_VEC, [0.0] * LANES)])
    return _vec(arr, types.intp, _mask), codegen


@intrinsic
def _vstore(typingctx, arr, idx, v, mask):
    """``arr[idx:idx + 16] = v`` on the lanes in ``mask``."""
    if not _is_f32_array(arr):
        return None

    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, sig.args[0], args[0], args[1])
        fn = _declare(builder, "llvm.masked.store.v16f32.p0", ir.VoidType(),
                      [_VEC, ptr.type, _I32, _MASK])
        builder.call(fn, [args[2], ptr, ir.Constant(_I32, 4), args[3]])
        return context.get_dummy_value()
    return types.none(arr, types.intp, _vec, _mask), codegen


@intrinsic
def _vfma(typingctx, w, v, acc):
    """``acc + w * v`` for a scalar ``w``."""
    def codegen(context, builder, sig, args):
        return _fma(builder, _splat(builder, args[0]), args[1], args[2])
    return _vec(types.float32, _vec, _vec), codegen


@intrinsic
def _vfmav(typingctx, a, b, acc):
    """``acc + a * b``."""
    def codegen(context, builder, sig, args):
        return _fma(builder, args[0], args[1], args[2])
    return _vec(_vec, _vec, _vec), codegen


@intrinsic
def _vmul(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], args[1])
    return _vec(_vec, _vec), codegen


@intrinsic
def _vadd(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])
    return _vec(_vec, _vec), codegen


@intrinsic
def _vsum(typingctx, v):
    """The sum of the 16 lanes, by halving."""
    def codegen(context, builder, sig, args):
        x, n = args[0], LANES
        while n > 1:
            h, undef = n // 2, ir.Constant(ir.VectorType(_F32, n), ir.Undefined)
            lo = builder.shuffle_vector(x, undef, ir.Constant(ir.VectorType(_I32, h),
                                                              list(range(h))))
            hi = builder.shuffle_vector(x, undef, ir.Constant(ir.VectorType(_I32, h),
                                                              list(range(h, n))))
            x, n = builder.fadd(lo, hi), h
        return builder.extract_element(x, ir.Constant(_I32, 0))
    return types.float32(_vec), codegen


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
                m0 = _lanes(batch - p0)
                m1 = _lanes(batch - p0 - 16)
                m2 = _lanes(batch - p0 - 32)
                m3 = _lanes(batch - p0 - 48)
                a0 = _vsplat(_at(bias, o) if with_bias else np.float32(0))
                a1 = a0
                a2 = a0
                a3 = a0
                c0 = _vzero()
                c1 = c0
                c2 = c0
                c3 = c0
                k = _at(crow, o)
                end = _at(crow, o + 1)
                while k + 1 < end:
                    w = _at(values, k)
                    b = np.int64(_at(col, k)) * batch + p0
                    v = _at(values, k + 1)
                    c = np.int64(_at(col, k + 1)) * batch + p0
                    a0 = _vfma(w, _vload(xf, b, m0), a0)
                    a1 = _vfma(w, _vload(xf, b + 16, m1), a1)
                    a2 = _vfma(w, _vload(xf, b + 32, m2), a2)
                    a3 = _vfma(w, _vload(xf, b + 48, m3), a3)
                    c0 = _vfma(v, _vload(xf, c, m0), c0)
                    c1 = _vfma(v, _vload(xf, c + 16, m1), c1)
                    c2 = _vfma(v, _vload(xf, c + 32, m2), c2)
                    c3 = _vfma(v, _vload(xf, c + 48, m3), c3)
                    k += 2
                if k < end:
                    w = _at(values, k)
                    b = np.int64(_at(col, k)) * batch + p0
                    a0 = _vfma(w, _vload(xf, b, m0), a0)
                    a1 = _vfma(w, _vload(xf, b + 16, m1), a1)
                    a2 = _vfma(w, _vload(xf, b + 32, m2), a2)
                    a3 = _vfma(w, _vload(xf, b + 48, m3), a3)
                r = o * batch + p0
                _vstore(yf, r, _vadd(a0, c0), m0)
                _vstore(yf, r + 16, _vadd(a1, c1), m1)
                _vstore(yf, r + 32, _vadd(a2, c2), m2)
                _vstore(yf, r + 48, _vadd(a3, c3), m3)


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
            if _at(ccol, j) == _at(ccol, j + 1):  # no kept weight: no input gradient
                gxT[j, q0:q1] = 0
                continue
            for p0 in range(q0, q1, PANEL):
                m0 = _lanes(batch - p0)
                m1 = _lanes(batch - p0 - 16)
                m2 = _lanes(batch - p0 - 32)
                m3 = _lanes(batch - p0 - 48)
                first = p0 == 0
                r = j * batch + p0
                x0 = _vload(xf, r, m0)
                x1 = _vload(xf, r + 16, m1)
                x2 = _vload(xf, r + 32, m2)
                x3 = _vload(xf, r + 48, m3)
                a0 = _vzero()
                a1 = a0
                a2 = a0
                a3 = a0
                c0 = a0
                c1 = a0
                c2 = a0
                c3 = a0
                k = _at(ccol, j)
                end = _at(ccol, j + 1)
                while k + 1 < end:
                    p = np.int64(_at(perm, k))
                    b = np.int64(_at(row, k)) * batch + p0
                    q = np.int64(_at(perm, k + 1))
                    c = np.int64(_at(row, k + 1)) * batch + p0
                    w = _at(values, p)
                    v = _at(values, q)
                    g0 = _vload(gf, b, m0)
                    g1 = _vload(gf, b + 16, m1)
                    g2 = _vload(gf, b + 32, m2)
                    g3 = _vload(gf, b + 48, m3)
                    h0 = _vload(gf, c, m0)
                    h1 = _vload(gf, c + 16, m1)
                    h2 = _vload(gf, c + 32, m2)
                    h3 = _vload(gf, c + 48, m3)
                    a0 = _vfma(w, g0, a0)
                    a1 = _vfma(w, g1, a1)
                    a2 = _vfma(w, g2, a2)
                    a3 = _vfma(w, g3, a3)
                    c0 = _vfma(v, h0, c0)
                    c1 = _vfma(v, h1, c1)
                    c2 = _vfma(v, h2, c2)
                    c3 = _vfma(v, h3, c3)
                    d = _vsum(_vfmav(x3, g3, _vfmav(x2, g2, _vfmav(x1, g1, _vmul(x0, g0)))))
                    e = _vsum(_vfmav(x3, h3, _vfmav(x2, h2, _vfmav(x1, h1, _vmul(x0, h0)))))
                    if first:
                        _put(gvalues, p, d)
                        _put(gvalues, q, e)
                    else:
                        _put(gvalues, p, _at(gvalues, p) + d)
                        _put(gvalues, q, _at(gvalues, q) + e)
                    k += 2
                if k < end:
                    p = np.int64(_at(perm, k))
                    b = np.int64(_at(row, k)) * batch + p0
                    w = _at(values, p)
                    g0 = _vload(gf, b, m0)
                    g1 = _vload(gf, b + 16, m1)
                    g2 = _vload(gf, b + 32, m2)
                    g3 = _vload(gf, b + 48, m3)
                    a0 = _vfma(w, g0, a0)
                    a1 = _vfma(w, g1, a1)
                    a2 = _vfma(w, g2, a2)
                    a3 = _vfma(w, g3, a3)
                    d = _vsum(_vfmav(x3, g3, _vfmav(x2, g2, _vfmav(x1, g1, _vmul(x0, g0)))))
                    if first:
                        _put(gvalues, p, d)
                    else:
                        _put(gvalues, p, _at(gvalues, p) + d)
                _vstore(gxf, r, _vadd(a0, c0), m0)
                _vstore(gxf, r + 16, _vadd(a1, c1), m1)
                _vstore(gxf, r + 32, _vadd(a2, c2), m2)
                _vstore(gxf, r + 48, _vadd(a3, c3), m3)


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
                m0 = _lanes(batch - p0)
                m1 = _lanes(batch - p0 - 16)
                m2 = _lanes(batch - p0 - 32)
                m3 = _lanes(batch - p0 - 48)
                first = p0 == 0
                r = o * batch + p0
                g0 = _vload(gf, r, m0)
                g1 = _vload(gf, r + 16, m1)
                g2 = _vload(gf, r + 32, m2)
                g3 = _vload(gf, r + 48, m3)
                for k in range(_at(crow, o), _at(crow, o + 1)):
                    b = np.int64(_at(col, k)) * batch + p0
                    d = _vsum(_vfmav(g3, _vload(xf, b + 48, m3),
                                     _vfmav(g2, _vload(xf, b + 32, m2),
                                            _vfmav(g1, _vload(xf, b + 16, m1),
                                                   _vmul(g0, _vload(xf, b, m0))))))
                    if first:
                        _put(gvalues, k, d)
                    else:
                        _put(gvalues, k, _at(gvalues, k) + d)
