"""4-bit floating-point block formats: MXFP4 and NVFP4 (``ggml/src/ggml-quants.c``, ``ggml-impl.h``).

Both store every weight as an **E2M1** number — 1 sign bit, 2 exponent bits, 1 mantissa bit, the eight magnitudes
0, 0.5, 1, 1.5, 2, 3, 4, 6 — and share one scale among a group of weights.  ggml keeps the E2M1 values *doubled*
so they are small integers (``kvalues_mxfp4`` = 0, 1, 2, 3, 4, 6, 8, 12 and their negatives, index = the 4-bit
code) and halves the scale to compensate: a weight decodes as ``kvalues_mxfp4[code] * d`` with ``d`` the
"half" scale.

* **MXFP4** (OCP Microscaling): 32 weights share a power-of-two scale stored as an **E8M0** byte (an 8-bit biased
  exponent, no mantissa).
* **NVFP4** (NVIDIA): 16 weights share a scale stored as **UE4M3** (unsigned 8-bit float, 4 exponent bits bias 7,
  3 mantissa bits); four such sub-blocks make one 64-weight block.

Encoding is the same for both after the scale is chosen: each weight takes the code whose value ``kvalues*d`` is
nearest, the lowest code on ties (:func:`best_index_mxfp4`).  ggml ignores an importance matrix for both.

Numerics worth knowing (all reproduced here bit for bit):

* MXFP4's exponent is ``(uint8_t)(floorf(log2f(amax)) - 2 + 127)``.  ``log2f`` rounds, so an ``amax`` just below a
  power of two can already count as that power (:func:`log2f`).  For ``amax < 2**-125`` the value is negative and
  the conversion to ``uint8_t`` is undefined in C; x86-64 (``cvttss2si`` then the low byte) wraps it modulo 256,
  and so does :func:`quantize_mxfp4`.  For ``amax = inf`` it is undefined too, hence ``finite_only=True``.
* NVFP4's scale conversion clamps, saturates and maps NaN to 0, so its encoder is defined for every input,
  NaN and ±inf included (``finite_only=False``): a NaN weight is code 0 (every error is NaN, the first code wins).
"""

from __future__ import annotations

import math

import numpy as np

from ..ggml_types import GGMLType
from ..jit import float32_bits, float32_from_bits, kernel, parallel_kernel, prange
from .registry import BlockFormat, Imatrix

__all__ = ["KVALUES_MXFP4", "e8m0_to_fp32_half", "ue4m3_to_fp32", "fp32_to_ue4m3", "log2f", "best_index_mxfp4",
           "quantize_mxfp4", "dequantize_mxfp4", "quantize_nvfp4", "dequantize_nvfp4", "FORMATS"]

# ``kvalues_mxfp4`` (= ``kvalues_fp4``, ggml-common.h): the E2M1 values doubled, indexed by the 4-bit code
# (bit 3 = sign).  Code 8 is "-0" and decodes to +0.
KVALUES_MXFP4 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.int8)
_KVALUES_F32 = KVALUES_MXFP4.astype(np.float32)  # (float)kvalues_mxfp4[i], as C converts it in ``kv*d``

QK_MXFP4 = 32
MXFP4_BYTES = 17
QK_NVFP4 = 64
QK_NVFP4_SUB = 16
NVFP4_BYTES = 36

_ZERO = np.float32(0.0)
_HALF = np.float32(0.5)
_SIX = np.float32(6.0)
_EIGHT = np.float32(8.0)
_UE4M3_MAX = np.float32(448.0)
_TWO_POW_9 = np.float32(512.0)
_TWO_POW_MINUS_9 = np.float32(2.0**-9)


# -- scale formats ---------------------------------------------------------------------------------------------------

@kernel
def e8m0_to_fp32_half(e):
    """``ggml_e8m0_to_fp32_half``: half the value of an E8M0 exponent byte, ``2**(e - 128)``, for e = 0 … 255.

    e = 0, 1 give the subnormals 2**-128, 2**-127 (bits ``0x00200000 << e``); otherwise the bits are
    ``(e - 1) << 23``.  E8M0's NaN (0xFF) is not special-cased by ggml: it decodes as 2**127.
    """
    if e < 2:
        return float32_from_bits(0x00200000 << e)
    return float32_from_bits((e - 1) << 23)


@kernel
def _pow2(k):
    """2**k as a float32 for a normal exponent k (-126 … 127)."""
    return float32_from_bits((k + 127) << 23)


@kernel
def ue4m3_to_fp32(u):
    """``ggml_ue4m3_to_fp32``: HALF the value of a UE4M3 byte (unsigned, 4-bit exponent with bias 7, 3-bit mantissa).

    0 and 0x7F (UE4M3's NaN) decode to 0; exponent 0 is subnormal, ``man * 2**-9``; otherwise
    ``(1 + man/8) * 2**(exp-7)``.  The result is then multiplied by 0.5 (the doubled-kvalues convention).  Bit 7
    is ignored.  Every step is exact in float32.
    """
    if u == 0 or u == 0x7F:
        return _ZERO
    exp = (u >> 3) & 0xF
    man = u & 0x7
    if exp == 0:
        raw = np.float32(man) * _TWO_POW_MINUS_9
    else:
        raw = (np.float32(1.0) + np.float32(man) / _EIGHT) * _pow2(exp - 7)
    return raw * _HALF


@kernel
def fp32_to_ue4m3(x):
    """``ggml_fp32_to_ue4m3``: a non-negative float32 → UE4M3 byte.

    ``x <= 0`` and NaN → 0; x is clamped to 448 (the largest UE4M3).  Below 2**-6 the result is subnormal,
    ``man = (int)(x*512 + 0.5)`` clamped to 7 (0 if below 1).  Otherwise the top 3 fp32 mantissa bits plus the
    next bit (round half up), carrying into the exponent; exponent 15 and above give 0x7E.
    """
    if not (x > _ZERO):
        return 0
    if x > _UE4M3_MAX:
        x = _UE4M3_MAX
    bits = float32_bits(x)
    fp32_exp = ((bits >> 23) & 0xFF) - 127
    fp32_man = (bits >> 20) & 0x7
    ue4m3_exp = fp32_exp + 7
    if ue4m3_exp <= 0:
        man = int(x * _TWO_POW_9 + _HALF)
        if man > 7:
            man = 7
        if man < 1:
            return 0
        return man
    if ue4m3_exp >= 15:
        return 0x7E
    round_bit = (bits >> 19) & 1
    ue4m3_man = fp32_man + round_bit
    if ue4m3_man > 7:
        ue4m3_man = 0
        ue4m3_exp += 1
        if ue4m3_exp >= 15:
            return 0x7E
    return (ue4m3_exp << 3) | ue4m3_man


@kernel
def log2f(x):
    """C's ``log2f`` for a positive finite float32, as the float32 nearest to the exact base-2 logarithm.

    Computed as ``log2`` in float64, rounded to float32.  ggml only uses ``floorf(log2f(amax))``; that floor is
    identical to glibc's ``log2f`` for every positive finite float32 (checked exhaustively, all 2,139,095,039 of
    them, on glibc 2.36).  Note it is *not* the binary exponent: ``log2f(2**k * (1 - 2**-24))`` rounds to ``k``
    for k ≥ 3 and k ≤ -2, so its floor is k, not k - 1.
    """
    return np.float32(math.log2(np.float64(x)))


@kernel
def best_index_mxfp4(xs, d, codes, errs):
    """ggml's ``best_index_mxfp4(x, d)`` for every weight of ``xs``: ``codes[j]`` = the code i minimizing
    ``|kvalues_mxfp4[i]*d - xs[j]|``, the first one on ties (strict ``<``).

    So +0 (code 0) beats -0 (code 8), and a NaN weight (every error NaN) gets code 0.  The loops run candidate by
    candidate over all weights (``errs`` holds each weight's best error so far), which is the same sequence of
    comparisons per weight as ggml's, and lets the inner loop vectorize (the updates are written as selects, and
    ``codes`` should be int32 like ``errs``'s float32, so both fill the same vector lanes).
    """
    n = xs.shape[0]
    c = _KVALUES_F32[0] * d
    for j in range(n):
        codes[j] = 0
        errs[j] = abs(c - xs[j])
    for i in range(1, 16):
        c = _KVALUES_F32[i] * d
        for j in range(n):
            err = abs(c - xs[j])
            better = err < errs[j]
            codes[j] = i if better else codes[j]
            errs[j] = err if better else errs[j]


# -- MXFP4 -----------------------------------------------------------------------------------------------------------
#
#   block_mxfp4 (32 weights, 17 bytes, 4.25 bits per weight)
#
#   byte  0        1 ............................. 16
#        +--------+-----------------------------------+
#        |   e    | qs[16]: byte j = code(x[j]) in bits 0-3, code(x[j+16]) in bits 4-7
#        +--------+-----------------------------------+
#         E8M0: d = 2**(e-128) (half the block scale 2**(e-127))
#
#   x[j] = kvalues_mxfp4[code] * d
#
#   Encode (quantize_row_mxfp4_ref): amax = max |x| (NaN skipped); e = amax > 0 ?
#   (uint8_t)(floorf(log2f(amax)) - 2 + 127) : 0 — so the largest doubled value 12 = 1.5 * 8 lands near amax;
#   then each weight takes best_index_mxfp4(x, d).


@kernel
def _mxfp4_exponent(amax):
    """The E8M0 byte for a block whose largest |x| is ``amax``: ``(uint8_t)(floorf(log2f(amax)) - 2 + 127)``.

    The float → ``uint8_t`` conversion is x86-64's (``cvttss2si`` to 32 bits, keep the low byte), which wraps a
    negative exponent (``amax < 2**-125``) modulo 256 where C leaves it undefined.
    """
    if not (amax > _ZERO):
        return 0
    return (math.floor(log2f(amax)) - 2 + 127) & 0xFF


@parallel_kernel
def quantize_mxfp4(x, imatrix, out):
    """``quantize_row_mxfp4_ref`` on every row (``imatrix`` is ignored, as in ggml)."""
    nrows, n = x.shape
    nb = n // QK_MXFP4
    for r in prange(nrows):
        codes = np.empty(QK_MXFP4, np.int32)
        errs = np.empty(QK_MXFP4, np.float32)
        for i in range(nb):
            x0 = i * QK_MXFP4
            y0 = i * MXFP4_BYTES
            amax = _ZERO
            for j in range(QK_MXFP4):
                a = abs(x[r, x0 + j])
                if amax < a:
                    amax = a
            e = _mxfp4_exponent(amax)
            d = e8m0_to_fp32_half(e)
            out[r, y0] = e
            best_index_mxfp4(x[r, x0:x0 + QK_MXFP4], d, codes, errs)
            for j in range(QK_MXFP4 // 2):
                out[r, y0 + 1 + j] = codes[j] | (codes[QK_MXFP4 // 2 + j] << 4)


@parallel_kernel
def dequantize_mxfp4(q, out):
    """``dequantize_row_mxfp4``: ``y[j] = kvalues_mxfp4[qs[j] & 15] * d``, ``y[j+16] = kvalues_mxfp4[qs[j] >> 4] * d``
    (the int8 value converted to float first; ``d = e8m0_to_fp32_half(e)``)."""
    nrows = q.shape[0]
    nb = q.shape[1] // MXFP4_BYTES
    for r in prange(nrows):
        for i in range(nb):
            b = i * MXFP4_BYTES
            y0 = i * QK_MXFP4
            d = e8m0_to_fp32_half(np.int64(q[r, b]))
            for j in range(QK_MXFP4 // 2):
                byte = q[r, b + 1 + j]
                out[r, y0 + j] = _KVALUES_F32[byte & 0xF] * d
                out[r, y0 + QK_MXFP4 // 2 + j] = _KVALUES_F32[byte >> 4] * d


# -- NVFP4 -----------------------------------------------------------------------------------------------------------
#
#   block_nvfp4 (64 weights in 4 sub-blocks of 16, 36 bytes, 4.5 bits per weight)
#
#   byte  0    1    2    3    4 ........ 11   12 ....... 19   20 ....... 27   28 ....... 35
#        +----+----+----+----+-------------+---------------+---------------+---------------+
#        |d[0]|d[1]|d[2]|d[3]| qs, sub 0   | qs, sub 1     | qs, sub 2     | qs, sub 3     |
#        +----+----+----+----+-------------+---------------+---------------+---------------+
#         UE4M3 scales          sub-block s, byte j (0-7): code(x[16s+j]) in bits 0-3, code(x[16s+j+8]) in 4-7
#
#   x[16s + j] = kvalues_mxfp4[code] * ue4m3_to_fp32(d[s])      (ue4m3_to_fp32 already includes the 0.5)
#
#   Encode (quantize_row_nvfp4_ref), per sub-block of 16: amax = max |x| (NaN skipped);
#   d[s] = fp32_to_ue4m3(amax / 6) (6 = the largest E2M1 value); then best_index_mxfp4(x, ue4m3_to_fp32(d[s])).


@parallel_kernel
def quantize_nvfp4(x, imatrix, out):
    """``quantize_row_nvfp4_ref`` on every row (``imatrix`` is ignored, as in ggml)."""
    nrows, n = x.shape
    nb = n // QK_NVFP4
    half_sub = QK_NVFP4_SUB // 2
    for r in prange(nrows):
        codes = np.empty(QK_NVFP4_SUB, np.int32)
        errs = np.empty(QK_NVFP4_SUB, np.float32)
        for i in range(nb):
            y0 = i * NVFP4_BYTES
            for s in range(QK_NVFP4 // QK_NVFP4_SUB):
                x0 = i * QK_NVFP4 + s * QK_NVFP4_SUB
                amax = _ZERO
                for j in range(QK_NVFP4_SUB):
                    a = abs(x[r, x0 + j])
                    if amax < a:
                        amax = a
                ue = fp32_to_ue4m3(amax / _SIX)
                out[r, y0 + s] = ue
                d = ue4m3_to_fp32(ue)
                best_index_mxfp4(x[r, x0:x0 + QK_NVFP4_SUB], d, codes, errs)
                for j in range(half_sub):
                    out[r, y0 + 4 + s * half_sub + j] = codes[j] | (codes[half_sub + j] << 4)


@parallel_kernel
def dequantize_nvfp4(q, out):
    """``dequantize_row_nvfp4``: ``y[16s+j] = kvalues_mxfp4[code] * ue4m3_to_fp32(d[s])``."""
    nrows = q.shape[0]
    nb = q.shape[1] // NVFP4_BYTES
    half_sub = QK_NVFP4_SUB // 2
    for r in prange(nrows):
        for i in range(nb):
            b = i * NVFP4_BYTES
            for s in range(QK_NVFP4 // QK_NVFP4_SUB):
                d = ue4m3_to_fp32(np.int64(q[r, b + s]))
                y0 = i * QK_NVFP4 + s * QK_NVFP4_SUB
                qb = b + 4 + s * half_sub
                for j in range(half_sub):
                    byte = q[r, qb + j]
                    out[r, y0 + j] = _KVALUES_F32[byte & 0xF] * d
                    out[r, y0 + half_sub + j] = _KVALUES_F32[byte >> 4] * d


FORMATS = [
    BlockFormat(GGMLType.MXFP4, quantize=quantize_mxfp4, dequantize=dequantize_mxfp4, imatrix=Imatrix.IGNORED,
                finite_only=True),
    BlockFormat(GGMLType.NVFP4, quantize=quantize_nvfp4, dequantize=dequantize_nvfp4, imatrix=Imatrix.IGNORED,
                finite_only=False),
]
