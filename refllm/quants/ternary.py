"""The ternary formats TQ1_0 and TQ2_0 (BitNet b1.58 / TriLM): every weight is ``d * t`` with ``t`` in {-1, 0, +1}.

A super-block of 256 weights stores one fp16 scale ``d`` = the largest magnitude of the block, and one trit per
weight, ``t = lroundf(x / d)`` (halves away from zero, computed with the unrounded ``id = 1/d``).  The two formats
differ only in how the trits are packed:

* TQ2_0 — 2 bits per trit (``t + 1`` in 0 … 2), four to a byte: 2.0625 bits per weight, simple to decode;
* TQ1_0 — five trits per byte as a base-3 number scaled to 0 … 255 (3**5 = 243 ≤ 256), plus four trits in each of
  the last 4 bytes: 1.6875 bits per weight.  Decoding multiplies by a power of 3 modulo 256 to bring a trit to the
  top and reads it with ``(q * 3) >> 8``.

ggml ignores an importance matrix for both (``quantize_tq1_0``/``quantize_tq2_0`` call the ``_ref`` quantizers).

**NaN, ±inf and tiny blocks.**  ``lroundf`` of NaN, ±inf or a value beyond the ``long`` range is unspecified in C;
glibc on x86-64 (the reference build) returns ``LONG_MIN``, so ``lroundf(v) + 1`` stored into an ``int`` is 1 — the
trit 0.  That case is reached with finite input (a block whose largest magnitude is below 2**-128 has
``id = 1/d = inf``) and with NaN/inf input; :func:`lroundf` states glibc's behaviour, so refllm's bytes equal the
reference bytes for every input (``finite_only=False``).  ``MAX(amax, NaN)`` is NaN and the next element replaces it,
so after a NaN the scale can be smaller than an earlier element; ggml then packs trits out of range with ``uint8_t``
wrap-around, which refllm reproduces too.
"""

from __future__ import annotations

import numpy as np

from ..ggml_types import QK_K, GGMLType
from ..jit import kernel, parallel_kernel, prange
from .common import block_elements, load_fp16, store_fp16
from .registry import BlockFormat, Imatrix

_ZERO = np.float32(0.0)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_TWO_23 = np.float32(2.0**23)
_TWO_63 = np.float32(2.0**63)
_LONG_MIN = -(2**63)


@kernel
def lroundf(v):
    """C's ``lroundf`` as glibc computes it on x86-64: the nearest integer (halves away from zero) as an int64;
    NaN, ±inf and ``|v| >= 2**63`` give ``LONG_MIN`` (``-2**63``)."""
    if abs(v) < _TWO_23:
        i = np.int64(np.int32(v))  # trunc(v)
        f = v - np.float32(i)  # exact
        if f >= _HALF:
            return i + 1
        if f <= -_HALF:
            return i - 1
        return i
    if abs(v) < _TWO_63:
        return np.int64(v)  # already an integer
    return np.int64(_LONG_MIN)


@kernel
def trit_code(v):
    """``lroundf(v) + 1`` as ggml stores it (``int xi``), reduced to its low 8 bits: 0, 1, 2 for v in [-1.5, 1.5).

    Only the low 8 bits ever matter (the packing works in ``uint8_t``), which also keeps the arithmetic the same in
    compiled and in plain-Python mode.
    """
    return (lroundf(v) + 1) & 0xFF


@kernel
def tq_scale(x, xb):
    """``amax = MAX(amax, fabsf(x[j]))`` over the 256 weights of the block at ``xb`` (a NaN amax is replaced by the
    next element, as C's ``MAX`` macro does), and ``id = amax ? 1/amax : 0``."""
    amax = _ZERO
    for j in range(QK_K):
        v = abs(x[xb + j])
        amax = amax if amax > v else v
    id_ = _ONE / amax if amax != _ZERO else _ZERO
    return amax, id_


# ---------------------------------------------------------------------------------------------------------------------
# TQ1_0 — 256 weights in 54 bytes: 1.6875 bits per weight
#
#   byte  0 ........... 31  32 ......... 47  48 .. 51   52   53
#       +----------------+----------------+----------+---------+
#       | qs[0..31]      | qs[32..47]     | qh[0..3] |  d fp16 |
#       +----------------+----------------+----------+---------+
#         5 trits each:    5 trits each:    4 trits each
#         x[m + 32n]       x[160 + m + 16n] x[240 + j + 4n]        (n = 0 … 4, resp. 0 … 3; n = 0 most significant)
#
#   A byte holds q = ceil(256 * T / 243) with T = Σ t'_n 3^(4-n), t' = t + 1 in {0, 1, 2} (for qh, T is shifted
#   up by one trit: 4 trits, least significant trit 0).  Trit n of a byte is ((q * 3**n mod 256) * 3) >> 8.
#
#   x = d * t,   t = trit - 1 in {-1, 0, +1},   d = max |x| of the block
#
# Encode (quantize_row_tq1_0_ref): d = amax; t' = lroundf(x * (1/d)) + 1; pack 5 (or 4) trits per byte as above.
# ---------------------------------------------------------------------------------------------------------------------

_TQ1_0_BYTES = 54
_TQ1_0_QH = 48
_TQ1_0_D = 52


@kernel
def pack_trits(q):
    """The ceiling division ``(q * 256 + 242) / 243`` that spreads a base-3 number 0 … 242 over a byte."""
    return ((q * 256 + 242) // 243) & 0xFF


@kernel
def quantize_row_tq1_0_ref(x, y):
    """``quantize_row_tq1_0_ref``: one row of floats (length a multiple of 256) into TQ1_0 blocks."""
    for i in range(x.size // QK_K):
        xb = i * QK_K
        yb = i * _TQ1_0_BYTES
        d, id_ = tq_scale(x, xb)
        store_fp16(y, yb + _TQ1_0_D, d)
        # 32 bytes of 5 trits: elements m + 32n
        for m in range(32):
            q = 0
            for n in range(5):
                q = (q * 3 + trit_code(x[xb + m + 32 * n] * id_)) & 0xFF
            y[yb + m] = pack_trits(q)
        # 16 bytes of 5 trits: elements 160 + m + 16n
        for m in range(16):
            q = 0
            for n in range(5):
                q = (q * 3 + trit_code(x[xb + 160 + m + 16 * n] * id_)) & 0xFF
            y[yb + 32 + m] = pack_trits(q)
        # 4 bytes of 4 trits (shifted up by one trit): elements 240 + j + 4n
        for j in range(4):
            q = 0
            for n in range(4):
                q = (q * 3 + trit_code(x[xb + 240 + j + 4 * n] * id_)) & 0xFF
            q = (q * 3) & 0xFF
            y[yb + _TQ1_0_QH + j] = pack_trits(q)


_POW3 = np.array([1, 3, 9, 27, 81, 243], np.int32)


@kernel
def trit_value(byte, n):
    """Trit ``n`` (0 = most significant) of a TQ1_0 byte, as ``t' - 1`` in {-1, 0, 1}: ``((byte * 3**n mod 256) *
    3 >> 8) - 1``.  (For bytes a quantizer never writes, ``t'`` can be 0 … 2 all the same.)"""
    q = (np.int32(byte) * _POW3[n]) & 0xFF
    return ((q * 3) >> 8) - 1


@kernel
def dequantize_row_tq1_0(x, y):
    """``dequantize_row_tq1_0``: ``y = (t' - 1) * d`` for the trits in the order they were packed."""
    nb = x.size // _TQ1_0_BYTES
    qk = block_elements(y.size, nb)  # QK_K; a run-time trip count keeps the loops vectorizable (block_elements)
    for i in range(nb):
        xb = i * _TQ1_0_BYTES
        yb = i * QK_K
        d = load_fp16(x, xb + _TQ1_0_D)
        for n in range(5):
            for m in range(qk // 8):  # 32
                y[yb + 32 * n + m] = np.float32(trit_value(x[xb + m], n)) * d
        for n in range(5):
            for m in range(qk // 16):  # 16
                y[yb + 160 + 16 * n + m] = np.float32(trit_value(x[xb + 32 + m], n)) * d
        for n in range(4):
            for j in range(4):
                y[yb + 240 + 4 * n + j] = np.float32(trit_value(x[xb + _TQ1_0_QH + j], n)) * d


# ---------------------------------------------------------------------------------------------------------------------
# TQ2_0 — 256 weights in 66 bytes: 2.0625 bits per weight
#
#   byte  0 ............ 31  32 ............ 63  64   65
#       +-----------------+------------------+---------+
#       | qs[0..31]       | qs[32..63]       |  d fp16 |     bits 2l..2l+1 of qs[32h + m] = t' of x[128h + 32l + m]
#       +-----------------+------------------+---------+     (t' = t + 1 in {0, 1, 2}; h = 0, 1; l = 0 … 3)
#
#   x = d * (t' - 1),   d = max |x| of the block
#
# Encode (quantize_row_tq2_0_ref): d = amax; t' = lroundf(x * (1/d)) + 1, stored as (t' & 3) << 2l.
# ---------------------------------------------------------------------------------------------------------------------

_TQ2_0_BYTES = 66
_TQ2_0_D = 64


@kernel
def quantize_row_tq2_0_ref(x, y):
    """``quantize_row_tq2_0_ref``: one row of floats (length a multiple of 256) into TQ2_0 blocks."""
    for i in range(x.size // QK_K):
        xb = i * QK_K
        yb = i * _TQ2_0_BYTES
        d, id_ = tq_scale(x, xb)
        store_fp16(y, yb + _TQ2_0_D, d)
        for half in range(2):
            for m in range(32):
                q = 0
                for n in range(4):
                    q += (trit_code(x[xb + 128 * half + m + 32 * n] * id_) & 3) << (2 * n)
                y[yb + 32 * half + m] = q & 0xFF


@kernel
def dequantize_row_tq2_0(x, y):
    """``dequantize_row_tq2_0``: ``y = (((qs >> 2l) & 3) - 1) * d``."""
    nb = x.size // _TQ2_0_BYTES
    qk = block_elements(y.size, nb)  # QK_K; a run-time trip count keeps the loops vectorizable (block_elements)
    for i in range(nb):
        xb = i * _TQ2_0_BYTES
        yb = i * QK_K
        d = load_fp16(x, xb + _TQ2_0_D)
        for half in range(2):
            for l in range(4):
                for m in range(qk // 8):  # 32
                    q = (np.int32(x[xb + 32 * half + m]) >> (2 * l)) & 3
                    y[yb + 128 * half + 32 * l + m] = np.float32(q - 1) * d


# -- the row-parallel entry points (registry calling convention) ------------------------------------------------------


@parallel_kernel
def quantize_tq1_0(x, imatrix, out):
    """``quantize_tq1_0``: ``quantize_row_tq1_0_ref`` on every row (an importance matrix is ignored, as in ggml)."""
    for r in prange(x.shape[0]):
        quantize_row_tq1_0_ref(x[r], out[r])


@parallel_kernel
def quantize_tq2_0(x, imatrix, out):
    """``quantize_tq2_0``: ``quantize_row_tq2_0_ref`` on every row (an importance matrix is ignored, as in ggml)."""
    for r in prange(x.shape[0]):
        quantize_row_tq2_0_ref(x[r], out[r])


@parallel_kernel
def dequantize_tq1_0(q, out):
    for r in prange(q.shape[0]):
        dequantize_row_tq1_0(q[r], out[r])


@parallel_kernel
def dequantize_tq2_0(q, out):
    for r in prange(q.shape[0]):
        dequantize_row_tq2_0(q[r], out[r])


FORMATS = [
    BlockFormat(GGMLType.TQ1_0, quantize=quantize_tq1_0, dequantize=dequantize_tq1_0, imatrix=Imatrix.IGNORED,
                finite_only=False),
    BlockFormat(GGMLType.TQ2_0, quantize=quantize_tq2_0, dequantize=dequantize_tq2_0, imatrix=Imatrix.IGNORED,
                finite_only=False),
]
