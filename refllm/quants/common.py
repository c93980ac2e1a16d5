"""Number formats and helpers shared by every block format, written as ggml computes them.

All kernels here work in float32 the way C does: every product and sum is rounded to float32 separately (no FMA, no
reordering — see :mod:`refllm.jit`).  In Numba code that needs care: a float32 mixed with a Python float literal or
an int64 is computed in float64.  So constants are ``np.float32(...)`` and integers are converted with
``np.float32(i)`` before they meet a float32.
"""

from __future__ import annotations

import numpy as np

from ..jit import float32_bits, float32_from_bits, kernel



def _ggml_fp16_to_fp32_table() -> np.ndarray:
    """``ggml_compute_fp16_to_fp32`` (ggml-impl.h) for all 65,536 half bit patterns, computed as ggml computes it.

    Normal numbers, infinities and NaNs are made by a float32 multiply (by 2**-112), which also quiets a
    signalling NaN — so this differs from a plain IEEE conversion (numpy's) for the half sNaNs 0x7C01…0x7DFF and
    their negatives.  Subnormals come from a float32 subtraction; both are exact for every other value.
    """
    w = np.arange(65536, dtype=np.uint32) << 16
    sign = w & 0x80000000
    two_w = (w + w) & 0xFFFFFFFF
    with np.errstate(invalid="ignore"):  # NaN * 2**-112 is the point, not an accident
        normalized = (((two_w >> 4) + (0xE0 << 23)) & 0xFFFFFFFF).view(np.float32) * np.float32(2.0**-112)
    denormalized = ((two_w >> 17) | (126 << 23)).view(np.float32) - np.float32(0.5)
    magnitude = np.where(two_w < (1 << 27), denormalized.view(np.uint32), normalized.view(np.uint32))
    return (sign | magnitude).view(np.float32)


# GGML_FP16_TO_FP32 as a table: the decoder of every fp16 scale and value in every block format.
FP16_TO_FP32 = _ggml_fp16_to_fp32_table()

_SCALE_TO_INF = np.float32(2.0**112)
_SCALE_TO_ZERO = np.float32(2.0**-110)


@kernel
def fp16_to_fp32(h):
    """``GGML_FP16_TO_FP32``: the float32 value of IEEE half-precision bits ``h``."""
    return FP16_TO_FP32[h]


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


_ROUND_MAGIC = np.float32(12582912.0)  # 1.5 * 2**23


@kernel
def nearest_int(fval):
    """ggml's ``nearest_int``: round half to even by adding 1.5·2**23 and reading the low mantissa bits.

    Only defined for |fval| <= 4194303 (ggml asserts this in debug builds and returns garbage otherwise).
    """
    val = fval + _ROUND_MAGIC
    i = float32_bits(val)
    return (i & 0x007FFFFF) - 0x00400000
