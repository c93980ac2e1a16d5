"""SIMD building blocks for the K-quant dot products, named after the x86 intrinsics of ggml's AVX2 kernels.

The ``ggml`` mode's Q4_K and Q6_K kernels (:mod:`refllm.model.ggml_kernels`) are written as ggml's ``__AVX2__``
loops are: 32 weight bytes against 32 activation bytes with ``maddubs`` (pairs of u8 × i8 products summed to int16),
``madd`` with the sub-block scales (pairs of int16 products summed to int32: eight int32 lanes), ``fmadd_ps`` into
eight float lanes, ``hsum_float_8`` at the end.  This module provides those blocks.

Each block is a plain Python function on NumPy vectors.  That body *defines* what the block computes, and it is what
runs with ``NUMBA_DISABLE_JIT=1``.  Compiled, the same name is an ``@overload`` that emits the operation as LLVM
vector IR, kept in registers: generic IR (``<32 x i8>``, ``<16 x i16>``, ``<8 x i32>``, ``<8 x float>`` …) that LLVM
lowers to the instructions ggml names, except ``maddubs`` and ``madd``, which call ``llvm.x86.avx2.pmadd.ub.sw`` /
``llvm.x86.{avx2,sse2}.pmadd.wd`` when the target has AVX2 (:data:`AVX2`; from their generic IR LLVM makes slower
widening sequences) and the generic IR otherwise.  ``tests/test_model_ggml_fast.py`` checks every compiled block
against its Python definition.

A vector is a 1-D NumPy array — uint8 / int8 [32], int16 [16] or [8], int32 / float32 [8] or [4] — and, compiled, a
:class:`Vec`.  ``&``, ``|``, ``<<``, ``>>`` (logical for unsigned lanes, arithmetic for signed) and ``+``, ``-``
(wrapping) apply lane by lane with a vector or a scalar, as NumPy's do.  Loads read little-endian lanes from a
C-contiguous 1-D uint8 array at a byte offset; compiled they are not bounds-checked (the callers validate shapes at
their public edge).  Like every kernel, blocks take no ``fastmath``: the float blocks round as their x86
instructions do.

Numba's cache does not notice changes here: after editing this module, delete the ``__pycache__`` of the kernels
that use it.
"""

from __future__ import annotations

import operator

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, models, overload, register_model

from .jit import fma32

__all__ = [
    "AVX2",
    "Vec",
    "broadcast_epi16_halves",
    "cvtepi8_epi16",
    "cvtepi32_ps",
    "cvtepu8_epi16_set_epi32",
    "extracti128_hi",
    "fmadd_ps",
    "hadd_epi16_halves",
    "hsum_epi32",
    "hsum_float_4",
    "hsum_float_8",
    "loadu_i8",
    "loadu_i16",
    "loadu_u8",
    "madd",
    "maddubs",
    "repeat_epi16_hi",
    "setzero_epi32",
    "setzero_ps",
    "storeu",
]


def _target_has_avx2() -> bool:
    """Whether Numba's generated code may use AVX2 (it compiles for the host CPU unless ``NUMBA_CPU_NAME`` /
    ``NUMBA_CPU_FEATURES`` say otherwise)."""
    if numba.config.CPU_FEATURES is not None:
        return "+avx2" in numba.config.CPU_FEATURES.split(",")
    if numba.config.CPU_NAME is not None and numba.config.CPU_NAME != "host":
        return False
    return bool(llvm.get_host_cpu_features().get("avx2", False))


AVX2 = _target_has_avx2()


class Vec(types.Type):
    """``count`` lanes of the Numba scalar type ``dtype`` in one LLVM vector value."""

    def __init__(self, dtype, count):
        self.dtype = dtype
        self.count = count
        super().__init__(name=f"Vec({dtype} x {count})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _ir(fe_type))


def _ir(vec):
    lane = ir.FloatType() if vec.dtype == types.float32 else ir.IntType(vec.dtype.bitwidth)
    return ir.VectorType(lane, vec.count)


_I32 = ir.IntType(32)
U8x32, I8x32 = Vec(types.uint8, 32), Vec(types.int8, 32)
I16x16, I16x8 = Vec(types.int16, 16), Vec(types.int16, 8)
I32x8, I32x4 = Vec(types.int32, 8), Vec(types.int32, 4)
F32x8, F32x4 = Vec(types.float32, 8), Vec(types.float32, 4)


def _shuffle(builder, a, b, idx):
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_I32, len(idx)), [ir.Constant(_I32, i) for i in idx]))


def _splat(builder, value, vty):
    one = builder.insert_element(ir.Constant(vty, ir.Undefined), value, ir.Constant(_I32, 0))
    return _shuffle(builder, one, one, [0] * vty.count)


def _int(context, builder, value, ty, bits):
    return builder.trunc(context.cast(builder, value, ty, types.int64), ir.IntType(bits))


# -- loads, stores, constants -----------------------------------------------------------------------------------------

def _typed_load(vec, src_bytes, widen=None):
    def make(typingctx, x, off):
        if not (isinstance(x, types.Array) and x.dtype == types.uint8 and x.ndim == 1 and x.layout == "C"
                and isinstance(off, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            raw = ir.VectorType(ir.IntType(8 * src_bytes // vec.count), vec.count)
            data = context.make_array(sig.args[0])(context, builder, args[0]).data
            ptr = builder.gep(data, [context.cast(builder, args[1], sig.args[1], types.intp)])
            value = builder.load(builder.bitcast(ptr, raw.as_pointer()), align=1)
            return value if widen is None else widen(builder, value, _ir(vec))

        return vec(x, off), codegen
    return make


def loadu_u8(x, off):
    """``_mm256_loadu_si256`` read as 32 unsigned bytes: ``x[off : off + 32]``."""
    return x[off:off + 32].copy()


def loadu_i8(x, off):
    """``_mm256_loadu_si256`` read as 32 signed bytes."""
    return x[off:off + 32].view(np.int8).copy()


def loadu_i16(x, off):
    """``_mm256_loadu_si256`` read as 16 little-endian int16."""
    return x[off:off + 32].view(np.int16).copy()


def cvtepi8_epi16(x, off):
    """``_mm256_cvtepi8_epi16(_mm_loadu_si128(x + off))``: 16 signed bytes widened to int16."""
    return x[off:off + 16].view(np.int8).astype(np.int16)


_loadu_u8 = intrinsic(_typed_load(U8x32, 32))
_loadu_i8 = intrinsic(_typed_load(I8x32, 32))
_loadu_i16 = intrinsic(_typed_load(I16x16, 32))
_cvtepi8_epi16 = intrinsic(_typed_load(I16x16, 16, lambda builder, v, vty: builder.sext(v, vty)))
overload(loadu_u8)(lambda x, off: lambda x, off: _loadu_u8(x, off))
overload(loadu_i8)(lambda x, off: lambda x, off: _loadu_i8(x, off))
overload(loadu_i16)(lambda x, off: lambda x, off: _loadu_i16(x, off))
overload(cvtepi8_epi16)(lambda x, off: lambda x, off: _cvtepi8_epi16(x, off))


def storeu(out, off, v):
    """``out[off : off + len(v)] = v`` (``out`` a 1-D array of ``v``'s lane type)."""
    out[off:off + v.shape[0]] = v


@intrinsic
def _storeu(typingctx, out, off, v):
    if not (isinstance(out, types.Array) and isinstance(v, Vec) and out.dtype == v.dtype and out.ndim == 1
            and out.layout == "C"):
        return None

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        ptr = builder.gep(data, [context.cast(builder, args[1], sig.args[1], types.intp)])
        builder.store(args[2], builder.bitcast(ptr, _ir(sig.args[2]).as_pointer()), align=1)
        return context.get_dummy_value()

    return types.none(out, off, v), codegen


overload(storeu)(lambda out, off, v: lambda out, off, v: _storeu(out, off, v))


def setzero_epi32(n):
    """``n`` (8 or 4) int32 zeros: ``_mm256_setzero_si256`` / ``_mm_setzero_si128``."""
    return np.zeros(n, np.int32)


def setzero_ps(n):
    """``n`` (8 or 4) float32 zeros: ``_mm256_setzero_ps`` / ``_mm_setzero_ps``."""
    return np.zeros(n, np.float32)


def _zeros(dtype):
    def make(typingctx, n):
        if not (isinstance(n, types.IntegerLiteral) and n.literal_value in (4, 8)):
            return None
        vec = Vec(dtype, n.literal_value)
        return vec(n), lambda context, builder, sig, args: ir.Constant(_ir(vec), None)
    return make


_setzero_epi32, _setzero_ps = intrinsic(_zeros(types.int32)), intrinsic(_zeros(types.float32))
overload(setzero_epi32)(lambda n: lambda n: _setzero_epi32(n))
overload(setzero_ps)(lambda n: lambda n: _setzero_ps(n))


def cvtepu8_epi16_set_epi32(u0, u1, u2, u3):
    """``_mm256_cvtepu8_epi16(_mm_set_epi32(u3, u2, u1, u0))``: the 16 bytes of four uint32 words (little-endian),
    widened to int16."""
    return np.array([u0, u1, u2, u3], np.uint32).view(np.uint8).astype(np.int16)


@intrinsic
def _cvtepu8_epi16_set_epi32(typingctx, u0, u1, u2, u3):
    if not all(isinstance(u, types.Integer) for u in (u0, u1, u2, u3)):
        return None

    def codegen(context, builder, sig, args):
        words = ir.Constant(ir.VectorType(_I32, 4), ir.Undefined)
        for k in range(4):
            word = _int(context, builder, args[k], sig.args[k], 32)
            words = builder.insert_element(words, word, ir.Constant(_I32, k))
        return builder.zext(builder.bitcast(words, ir.VectorType(ir.IntType(8), 16)), _ir(I16x16))

    return I16x16(u0, u1, u2, u3), codegen


overload(cvtepu8_epi16_set_epi32)(
    lambda u0, u1, u2, u3: lambda u0, u1, u2, u3: _cvtepu8_epi16_set_epi32(u0, u1, u2, u3))


# -- shuffles ---------------------------------------------------------------------------------------------------------

def broadcast_epi16_halves(v, lo, hi):
    """Lanes 0…7 all ``v[lo]``, lanes 8…15 all ``v[hi]`` (ggml's ``get_scale_shuffle`` byte shuffles of the scales,
    here on 16-bit lanes)."""
    return np.array([v[lo]] * 8 + [v[hi]] * 8, np.int16)


@intrinsic
def _broadcast_epi16_halves(typingctx, v, lo, hi):
    if not (v == I16x16 and isinstance(lo, types.Integer) and isinstance(hi, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        half = ir.VectorType(ir.IntType(16), 8)
        a = _splat(builder, builder.extract_element(args[0], _int(context, builder, args[1], sig.args[1], 32)), half)
        b = _splat(builder, builder.extract_element(args[0], _int(context, builder, args[2], sig.args[2], 32)), half)
        return _shuffle(builder, a, b, range(16))

    return I16x16(v, lo, hi), codegen


overload(broadcast_epi16_halves)(lambda v, lo, hi: lambda v, lo, hi: _broadcast_epi16_halves(v, lo, hi))


def hadd_epi16_halves(v):
    """``_mm_hadd_epi16`` of the two 128-bit halves of ``v``: ``v[2k] + v[2k+1]`` (k = 0…7), wrapping."""
    return v[0::2] + v[1::2]


@intrinsic
def _hadd_epi16_halves(typingctx, v):
    if v != I16x16:
        return None

    def codegen(context, builder, sig, args):
        return builder.add(_shuffle(builder, args[0], args[0], range(0, 16, 2)),
                           _shuffle(builder, args[0], args[0], range(1, 16, 2)))

    return I16x8(v), codegen


overload(hadd_epi16_halves)(lambda v: lambda v: _hadd_epi16_halves(v))


def extracti128_hi(v):
    """``_mm256_extracti128_si256(v, 1)``: lanes 8…15 of 16 int16 lanes."""
    return v[8:].copy()


@intrinsic
def _extracti128_hi(typingctx, v):
    if v != I16x16:
        return None
    return I16x8(v), lambda context, builder, sig, args: _shuffle(builder, args[0], args[0], range(8, 16))


overload(extracti128_hi)(lambda v: lambda v: _extracti128_hi(v))


# -- the integer multiply-adds ----------------------------------------------------------------------------------------

def maddubs(u, s):
    """``_mm256_maddubs_epi16``: ``u[2m]·s[2m] + u[2m+1]·s[2m+1]`` (unsigned × signed bytes), saturated to int16."""
    p = u.astype(np.int32) * s.astype(np.int32)
    return np.clip(p[0::2] + p[1::2], -32768, 32767).astype(np.int16)


@intrinsic
def _maddubs(typingctx, u, s):
    if not (u == U8x32 and s == I8x32):
        return None

    def codegen(context, builder, sig, args):
        if AVX2:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_ir(I16x16), [_ir(I8x32)] * 2),
                                                "llvm.x86.avx2.pmadd.ub.sw")
            return builder.call(fn, args)
        wide = ir.VectorType(_I32, 32)
        p = builder.mul(builder.zext(args[0], wide), builder.sext(args[1], wide))
        total = builder.add(_shuffle(builder, p, p, range(0, 32, 2)), _shuffle(builder, p, p, range(1, 32, 2)))
        lo = ir.Constant(total.type, [ir.Constant(_I32, -32768)] * 16)
        hi = ir.Constant(total.type, [ir.Constant(_I32, 32767)] * 16)
        total = builder.select(builder.icmp_signed("<", total, lo), lo, total)
        total = builder.select(builder.icmp_signed(">", total, hi), hi, total)
        return builder.trunc(total, _ir(I16x16))

    return I16x16(u, s), codegen


overload(maddubs)(lambda u, s: lambda u, s: _maddubs(u, s))


def madd(a, b):
    """``_mm256_madd_epi16`` / ``_mm_madd_epi16``: ``a[2k]·b[2k] + a[2k+1]·b[2k+1]`` of int16 lanes as int32
    (wrapping: only ``a = b = −32768`` in both products overflows)."""
    p = a.astype(np.int64) * b.astype(np.int64)
    return (p[0::2] + p[1::2]).astype(np.int32)


@intrinsic
def _madd(typingctx, a, b):
    if not (a == b and a in (I16x16, I16x8)):
        return None
    out = I32x8 if a == I16x16 else I32x4

    def codegen(context, builder, sig, args):
        if AVX2:
            name = "llvm.x86.avx2.pmadd.wd" if a == I16x16 else "llvm.x86.sse2.pmadd.wd"
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_ir(out), [_ir(a)] * 2), name)
            return builder.call(fn, args)
        wide = ir.VectorType(_I32, a.count)
        p = builder.mul(builder.sext(args[0], wide), builder.sext(args[1], wide))
        return builder.add(_shuffle(builder, p, p, range(0, a.count, 2)), _shuffle(builder, p, p, range(1, a.count, 2)))

    return out(a, b), codegen


overload(madd)(lambda a, b: lambda a, b: _madd(a, b))


# -- float lanes ------------------------------------------------------------------------------------------------------

def cvtepi32_ps(v):
    """``_mm256_cvtepi32_ps`` / ``_mm_cvtepi32_ps``: int32 lanes to float32 (round to nearest even)."""
    return v.astype(np.float32)


@intrinsic
def _cvtepi32_ps(typingctx, v):
    if v not in (I32x8, I32x4):
        return None
    out = Vec(types.float32, v.count)
    return out(v), lambda context, builder, sig, args: builder.sitofp(args[0], _ir(out))


overload(cvtepi32_ps)(lambda v: lambda v: _cvtepi32_ps(v))


def fmadd_ps(d, v, acc):
    """``_mm256_fmadd_ps(_mm256_set1_ps(d), v, acc)`` (or ``_mm_``): ``d·v[k] + acc[k]`` rounded once to float32."""
    return np.array([fma32(np.float32(d), v[k], acc[k]) for k in range(v.shape[0])], np.float32)


@intrinsic
def _fmadd_ps(typingctx, d, v, acc):
    if not (d == types.float32 and v == acc and v in (F32x8, F32x4)):
        return None

    def codegen(context, builder, sig, args):
        vty = _ir(v)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3), f"llvm.fma.v{v.count}f32")
        return builder.call(fn, [_splat(builder, args[0], vty), args[1], args[2]])

    return v(d, v, acc), codegen


overload(fmadd_ps)(lambda d, v, acc: lambda d, v, acc: _fmadd_ps(d, v, acc))


def _lane(v, k):
    return v[k]


@intrinsic
def _lane_ir(typingctx, v, k):
    if not (isinstance(v, Vec) and isinstance(k, types.IntegerLiteral)):
        return None

    def codegen(context, builder, sig, args):
        return builder.extract_element(args[0], ir.Constant(_I32, sig.args[1].literal_value))

    return v.dtype(v, k), codegen


overload(_lane)(lambda v, k: (lambda v, k: v[k]) if isinstance(v, types.Array) else (lambda v, k: _lane_ir(v, k)))


def hsum_float_8(v):
    """x86's ``hsum_float_8``: ``((v0 + v4) + (v2 + v6)) + ((v1 + v5) + (v3 + v7))`` in float32 (of a vector, or
    of the first eight elements of a float32 array)."""
    return (((_lane(v, 0) + _lane(v, 4)) + (_lane(v, 2) + _lane(v, 6)))
            + ((_lane(v, 1) + _lane(v, 5)) + (_lane(v, 3) + _lane(v, 7))))


def hsum_float_4(v):
    """``_mm_add_ss(t, _mm_movehdup_ps(t))`` of ``t = _mm_add_ps(v, _mm_movehl_ps(v, v))``:
    ``(v0 + v2) + (v1 + v3)`` in float32."""
    return (_lane(v, 0) + _lane(v, 2)) + (_lane(v, 1) + _lane(v, 3))


def hsum_epi32(v):
    """The sum of the 8 int32 lanes, wrapping (as int32 adds in any order: integer sums are exact)."""
    return np.sum(v, dtype=np.int32)


@intrinsic
def _hsum_epi32(typingctx, v):
    if v != I32x8:
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        v4 = builder.add(_shuffle(builder, v, v, range(4)), _shuffle(builder, v, v, range(4, 8)))
        v2 = builder.add(_shuffle(builder, v4, v4, range(2)), _shuffle(builder, v4, v4, range(2, 4)))
        return builder.add(builder.extract_element(v2, ir.Constant(_I32, 0)),
                           builder.extract_element(v2, ir.Constant(_I32, 1)))

    return types.int32(v), codegen


overload(hsum_float_8)(lambda v: hsum_float_8 if v == F32x8 or v == types.float32[::1] else None)
overload(hsum_float_4)(lambda v: hsum_float_4 if v == F32x4 else None)
overload(hsum_epi32)(lambda v: lambda v: _hsum_epi32(v))


# -- lane-wise operators ----------------------------------------------------------------------------------------------

def _operator(op, make):
    @intrinsic
    def vec_op(typingctx, a, b):
        if not (isinstance(a, Vec) and (b == a or isinstance(b, types.Integer))):
            return None

        def codegen(context, builder, sig, args):
            rhs = args[1]
            if not isinstance(sig.args[1], Vec):
                vty = _ir(sig.args[0])
                rhs = _splat(builder, _int(context, builder, rhs, sig.args[1], vty.element.width), vty)
            return make(builder, sig.args[0].dtype.signed, args[0], rhs)

        return a(a, b), codegen

    overload(op)(lambda a, b: (lambda a, b: vec_op(a, b)) if isinstance(a, Vec) else None)


_operator(operator.and_, lambda b, signed, x, y: b.and_(x, y))
_operator(operator.or_, lambda b, signed, x, y: b.or_(x, y))
_operator(operator.add, lambda b, signed, x, y: b.add(x, y))
_operator(operator.sub, lambda b, signed, x, y: b.sub(x, y))
_operator(operator.lshift, lambda b, signed, x, y: b.shl(x, y))
_operator(operator.rshift, lambda b, signed, x, y: b.ashr(x, y) if signed else b.lshr(x, y))


def repeat_epi16_hi(v):
    """Lanes 8…15 of ``v``, each twice: lane ``k`` is ``v[8 + k // 2]`` (the mins of Q4_K's eight sub-blocks of 32
    against the sixteen block sums of 16)."""
    return np.repeat(v[8:], 2)


@intrinsic
def _repeat_epi16_hi(typingctx, v):
    if v != I16x16:
        return None
    return I16x16(v), lambda context, builder, sig, args: _shuffle(builder, args[0], args[0],
                                                                    [8 + k // 2 for k in range(16)])


overload(repeat_epi16_hi)(lambda v: lambda v: _repeat_epi16_hi(v))
