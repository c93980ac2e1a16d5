"""Number formats and C behaviour shared by the block formats, written as ggml (and C on x86-64) computes them.

All kernels here work in float32 the way C does: every product and sum is rounded to float32 separately (no FMA, no
reordering — see :mod:`refllm.jit`).  In Numba code that needs care: a float32 mixed with a Python float literal or
an int64 is computed in float64.  So constants are ``np.float32(...)`` and integers are converted with
``np.float32(i)`` before they meet a float32.

* half and bfloat16 conversions: :func:`fp16_to_fp32` (and its table :data:`FP16_TO_FP32`), :func:`fp32_to_fp16`,
  :func:`fp32_to_bf16`, :func:`bf16_to_fp32`;
* little-endian fields of a block: :func:`load_u16`, :func:`store_u16`, :func:`load_u32`, :func:`store_u32`,
  :func:`load_fp16`, :func:`store_fp16`, and :func:`load_u16_2d`, :func:`load_u32_2d` for kernels that address
  ``q[r, k]``;
* C's rounding and conversions: :func:`nearest_int` (ggml's), :func:`roundf`, :func:`c_float_to_int`,
  :func:`int8_of`, and :func:`add_first_nan` (which NaN an x86-64 addition returns);
* :func:`block_elements`, the run-time block length that keeps a decoder's loops vectorizable.
"""

from __future__ import annotations

import numpy as np

from ..jit import float32_bits, float32_from_bits, kernel

# -- half precision (ggml-impl.h) --------------------------------------------------------------------------------------

_EXP_OFFSET = 0xE0 << 23
_EXP_SCALE = np.float32(2.0**-112)
_MAGIC_MASK = 126 << 23
_MAGIC_BIAS = np.float32(0.5)


@kernel
def fp16_to_fp32(h):
    """``GGML_FP16_TO_FP32`` = ``ggml_compute_fp16_to_fp32`` (ggml-impl.h): the float32 value of the half bits ``h``,
    computed as ggml computes it.

    Normal halves, infinities and NaNs: exponent and mantissa moved into a float32 whose exponent is 112 too large,
    times 2**-112 (exact; the multiply also quiets a signalling NaN, so the half sNaNs 0x7C01…0x7DFF and their
    negatives decode differently from a plain IEEE conversion such as numpy's).  Subnormal halves: the mantissa under
    the exponent of 0.5, minus 0.5 (exact).  This is what ggml-quants.c runs for every block scale, and what
    :func:`load_fp16` runs; per block it is as fast as a load from the 256 KB table :data:`FP16_TO_FP32`.
    """
    w = np.int64(h) << 16
    sign = w & 0x80000000
    two_w = (w + w) & 0xFFFFFFFF
    normalized_value = float32_from_bits((two_w >> 4) + _EXP_OFFSET) * _EXP_SCALE
    denormalized_value = float32_from_bits((two_w >> 17) | _MAGIC_MASK) - _MAGIC_BIAS
    if two_w < (1 << 27):
        return float32_from_bits(sign | float32_bits(denormalized_value))
    return float32_from_bits(sign | float32_bits(normalized_value))


def _fp16_to_fp32_table() -> np.ndarray:
    """:func:`fp16_to_fp32` for all 65,536 half bit patterns: the same float32 operations, on numpy arrays.

    The kernel itself is not run here because importing refllm.quants would then start Numba (about half a second);
    ``test_fp16_table_is_the_kernel`` checks that both give the same bits for every half.
    """
    w = np.arange(65536, dtype=np.uint32) << 16
    sign = w & 0x80000000
    two_w = (w + w) & 0xFFFFFFFF
    with np.errstate(invalid="ignore"):  # NaN * 2**-112 of a signalling NaN is the point, not an accident
        normalized = (((two_w >> 4) + _EXP_OFFSET) & 0xFFFFFFFF).view(np.float32) * _EXP_SCALE
    denormalized = ((two_w >> 17) | _MAGIC_MASK).view(np.float32) - _MAGIC_BIAS
    magnitude = np.where(two_w < (1 << 27), denormalized.view(np.uint32), normalized.view(np.uint32))
    return (sign | magnitude).view(np.float32)


# GGML_FP16_TO_FP32 as a table (ggml-cpu's ggml_table_f32_f16): for the F16 row decoder, which converts one half
# per element, and the row-parallel decoders that read their scale as q[r, k] (low_bit, i_quants).
FP16_TO_FP32 = _fp16_to_fp32_table()

_SCALE_TO_INF = np.float32(2.0**112)
_SCALE_TO_ZERO = np.float32(2.0**-110)


@kernel
def fp32_to_fp16(f):
    """``GGML_FP32_TO_FP16`` (``ggml_compute_fp32_to_fp16``, ggml-impl.h): float32 → half bits, as a uint16.

    Round to nearest even, subnormals kept, overflow to ±inf, NaN → sign | 0x7E00.  The rounding is done by the FPU:
    scaling |f| by 2**112 and back by 2**-110 and adding a power of two lines the half's last mantissa bit up with
    the float32's, so the float32 addition rounds exactly where the half would.
    """
    base = (abs(f) * _SCALE_TO_INF) * _SCALE_TO_ZERO
    w = float32_bits(f)
    shl1_w = (w + w) & 0xFFFFFFFF
    sign = w & 0x80000000
    bias = shl1_w & 0xFF000000
    if bias < 0x71000000:
        bias = 0x71000000
    base = float32_from_bits((bias >> 1) + 0x07800000) + base
    bits = float32_bits(base)
    exp_bits = (bits >> 13) & 0x00007C00
    mantissa_bits = bits & 0x00000FFF
    nonsign = exp_bits + mantissa_bits
    if shl1_w > 0xFF000000:
        nonsign = 0x7E00
    return np.uint16((sign >> 16) | nonsign)


@kernel
def fp32_to_bf16(f):
    """``GGML_FP32_TO_BF16``: round to nearest even; NaN is made quiet (``(bits >> 16) | 64``)."""
    u = float32_bits(f)
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return np.uint16((u >> 16) | 64)
    return np.uint16(((u + (0x7FFF + ((u >> 16) & 1))) & 0xFFFFFFFF) >> 16)


@kernel
def bf16_to_fp32(h):
    """``GGML_BF16_TO_FP32``: the bf16 bits are the top half of the float32."""
    return float32_from_bits(np.int64(h) << 16)


# -- little-endian fields of a block (the struct members of ggml-common.h) ---------------------------------------------
# ``b`` is a 1-D uint8 array (a row, or one block of it) and ``o`` a byte offset into it.


@kernel
def load_u16(b, o):
    """A ``uint16_t`` member: the little-endian uint16 at byte offset ``o`` of ``b``, as an int32."""
    return np.int32(b[o]) | (np.int32(b[o + 1]) << 8)


@kernel
def store_u16(b, o, h):
    """Write ``h`` (0 … 65535) little-endian at byte offset ``o`` of ``b``."""
    b[o] = h & 0xFF
    b[o + 1] = (h >> 8) & 0xFF


@kernel
def load_u32(b, o):
    """A ``uint32_t`` member: the little-endian uint32 at byte offset ``o`` of ``b``, as a non-negative int64."""
    return (np.int64(b[o]) | (np.int64(b[o + 1]) << 8) | (np.int64(b[o + 2]) << 16)
            | (np.int64(b[o + 3]) << 24))


@kernel
def store_u32(b, o, w):
    """Write ``w`` (0 … 2**32-1) little-endian at byte offset ``o`` of ``b``."""
    b[o] = w & 0xFF
    b[o + 1] = (w >> 8) & 0xFF
    b[o + 2] = (w >> 16) & 0xFF
    b[o + 3] = (w >> 24) & 0xFF


@kernel
def load_u16_2d(q, r, o):
    """:func:`load_u16` of row ``r`` of a 2-D uint8 array, addressed as ``q[r, o]`` (as an int64).

    For the row-parallel kernels that index ``q[r, ...]`` directly: a row view ``q[r]`` inside their loop nest keeps
    LLVM from vectorizing it (measured up to 3× slower decoders).
    """
    return np.int64(q[r, o]) | (np.int64(q[r, o + 1]) << 8)


@kernel
def load_u32_2d(q, r, o):
    """:func:`load_u32` of row ``r`` of a 2-D uint8 array, addressed as ``q[r, o]`` (see :func:`load_u16_2d`)."""
    return (np.int64(q[r, o]) | (np.int64(q[r, o + 1]) << 8) | (np.int64(q[r, o + 2]) << 16)
            | (np.int64(q[r, o + 3]) << 24))


@kernel
def load_fp16(b, o):
    """A ``ggml_half`` member read as C reads ``GGML_FP16_TO_FP32(y->d)``: the float32 value of the half at ``o``."""
    return fp16_to_fp32(load_u16(b, o))


@kernel
def store_fp16(b, o, f):
    """``y->d = GGML_FP32_TO_FP16(f)``: store ``f`` as a half at byte offset ``o``; returns the value stored,
    ``GGML_FP16_TO_FP32(y->d)``, which is what ggml's encoders go on computing with."""
    h = np.int32(fp32_to_fp16(f))
    store_u16(b, o, h)
    return fp16_to_fp32(h)


# -- C's rounding and conversions --------------------------------------------------------------------------------------

_ROUND_MAGIC = np.float32(12582912.0)  # 1.5 * 2**23


@kernel
def nearest_int(fval):
    """ggml's ``nearest_int``: round half to even by adding 1.5·2**23 and reading the low mantissa bits.

    Only defined for |fval| <= 4194303 (ggml asserts this in debug builds and returns garbage otherwise).
    """
    val = fval + _ROUND_MAGIC
    i = float32_bits(val)
    return (i & 0x007FFFFF) - 0x00400000


_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_TWO_23 = np.float32(2.0**23)
_INT32_MIN_F = np.float32(-(2.0**31))
_INT32_LIMIT_F = np.float32(2.0**31)


@kernel
def roundf(v):
    """C's ``roundf``: the nearest integer as a float32, halves rounded away from zero (not to even); NaN and ±inf
    unchanged, and a zero result keeps the sign of ``v``.

    Not ``floor(|v| + 0.5)``, which is wrong for 0.49999997 (the sum rounds up to 1.0): the fraction of ``|v|`` is
    compared with 0.5 after an exact truncation (exact for ``|v| < 2**23``; larger floats are integers already).  The
    truncation goes through int32, which vectorizes.
    """
    a = abs(v)
    if not (a < _TWO_23):  # already an integer, or ±inf, or NaN
        return v
    t = np.float32(np.int32(a))  # trunc(|v|)
    if a - t >= _HALF:
        t = t + _ONE
    if float32_bits(v) >> 31:
        return -t
    return t


@kernel
def c_float_to_int(v):
    """C's ``(int)v`` for a float32 ``v`` as the x86-64 reference computes it (``cvttss2si``): truncation toward
    zero; NaN, ±inf and values outside the int32 range give ``-2**31`` (x86's "integer indefinite"), where C leaves
    the result undefined.  Returns an int32 (a 32-bit conversion vectorizes, a 64-bit one does not).

    The narrower casts ``(int8_t)v`` and ``(uint8_t)v`` compile to this followed by keeping the low 8 bits
    (:func:`int8_of`, ``& 0xFF``), so for the out-of-range cases they give 0.
    """
    if v >= _INT32_MIN_F and v < _INT32_LIMIT_F:
        return np.int32(v)
    return np.int32(-2147483648)


@kernel
def int8_of(i):
    """C's conversion of an int to ``int8_t``: the low 8 bits, read as a signed number."""
    return ((i + 128) & 0xFF) - 128


@kernel
def add_first_nan(a, b):
    """C's ``a + b`` as x86-64 computes it, including *which* NaN comes out: when both are NaN the result is ``a``'s
    (``addss`` returns its first operand).  LLVM treats a float addition as commutative and may emit ``b + a``, which
    is the same number in every other case, so the rule is written out here.  Used where two NaNs can meet: the
    decoders' ``q*d + m`` with an fp16 NaN in both ``d`` and ``m``.
    """
    return a if a != a else a + b


# -- loops that vectorize ----------------------------------------------------------------------------------------------


@kernel
def block_elements(n, nb):
    """``n // nb``: the number of elements per block of a row of ``n`` elements in ``nb`` blocks, computed at run
    time on purpose (the caller knows it is a constant such as 32 or 256).

    Numba runs LLVM without its SLP vectorizer, and LLVM's full unroller turns a loop with a small constant trip count
    (16, 32) into straight-line scalar code before the loop vectorizer sees it.  With the trip count a run-time value
    the loop stays a loop and is vectorized (2-3× faster decoders).  The arithmetic is unchanged.
    """
    return n // nb if nb > 0 else 0
