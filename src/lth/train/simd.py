"""Numba intrinsics for 16-float vectors: an LLVM ``<16 x float>`` type (and a
``<16 x i1>`` lane mask) with the few operations the sparse kernels
(:mod:`lth.train.kernels`) are written in — masked loads and stores, broadcasts, fused
multiply-adds, a horizontal sum. Numba runs no SLP vectoriser, and its loop vectoriser
would vectorise a sparse kernel over the kept weights (with gathers) rather than over the
batch, so the vector code is spelled out with these.

Array arguments must be 1-d float32 (or index) arrays; indices are element offsets,
unchecked.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic, models, register_model

LANES = 16  # lanes of one vector

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
def at(typingctx, arr, idx):
    """``arr[idx]`` without the negative-index wraparound numba adds for signed ints."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1):
        return None

    def codegen(context, builder, sig, args):
        return builder.load(_address(context, builder, sig.args[0], args[0], args[1]))
    return arr.dtype(arr, types.intp), codegen


@intrinsic
def put(typingctx, arr, idx, x):
    """``arr[idx] = x``, no wraparound."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1):
        return None

    def codegen(context, builder, sig, args):
        x = context.cast(builder, args[2], sig.args[2], sig.args[0].dtype)
        builder.store(x, _address(context, builder, sig.args[0], args[0], args[1]))
        return context.get_dummy_value()
    return types.none(arr, types.intp, arr.dtype), codegen


@intrinsic
def lanes(typingctx, n):
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
def vzero(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_VEC, [0.0] * LANES)
    return _vec(), codegen


@intrinsic
def vsplat(typingctx, x):
    def codegen(context, builder, sig, args):
        return _splat(builder, args[0])
    return _vec(types.float32), codegen


@intrinsic
def vload(typingctx, arr, idx, mask):
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
def vstore(typingctx, arr, idx, v, mask):
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
def vfma(typingctx, w, v, acc):
    """``acc + w * v`` for a scalar ``w``."""
    def codegen(context, builder, sig, args):
        return _fma(builder, _splat(builder, args[0]), args[1], args[2])
    return _vec(types.float32, _vec, _vec), codegen


@intrinsic
def vfmav(typingctx, a, b, acc):
    """``acc + a * b``."""
    def codegen(context, builder, sig, args):
        return _fma(builder, args[0], args[1], args[2])
    return _vec(_vec, _vec, _vec), codegen


@intrinsic
def vmul(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], args[1])
    return _vec(_vec, _vec), codegen


@intrinsic
def vadd(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])
    return _vec(_vec, _vec), codegen


@intrinsic
def vsum(typingctx, v):
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
