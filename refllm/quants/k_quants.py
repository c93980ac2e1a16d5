"""The K-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (weights) and Q8_K (activations), exactly as ggml computes them.

A K-quant row is cut into *super-blocks* of ``QK_K = 256`` elements.  Each super-block stores one or two fp16
super-scales (``d``, and ``dmin`` for the types with an offset) and, per *sub-block* of 16 or 32 elements, a small
integer scale (and min) that multiplies them.  The elements themselves are 2 to 6-bit integers ``q``:

* "type-1" (scale and min, unsigned ``q``): Q2_K, Q4_K, Q5_K — ``x = (d * sc) * q - (dmin * m)``;
* "type-0" (scale only, ``q`` centred on zero): Q3_K, Q6_K — ``x = (d * sc) * (q - 2**(bits-1))``;
* Q8_K — float32 ``d`` and int8 ``q`` per 256 elements plus the sums of each 16 ``q`` (``bsums``); it is what the
  K-quant dot products multiply the weights with, not a storage format.

Encoding, for every weight type, is two-level:

1. per sub-block, a search for the best float scale (and min) and the integer levels ``L`` for it
   (:func:`make_qkx2_quants`, :func:`make_q3_quants`, :func:`make_qx_quants`; with an importance matrix
   :func:`make_qkx3_quants` / :func:`make_qx_quants` with weights);
2. the sub-block scales (and mins) are themselves quantized to 4, 6 or 8 bits against the fp16 super-scale
   (a plain ``max / 2**bits`` without imatrix, :func:`make_qp_quants` / :func:`make_qx_quants` with one), and then
   every element is *requantized* with the scales as they will be decoded — the fp16-rounded super-scale times
   the integer sub-scale.  A sub-block whose decoded scale is exactly 0 keeps the levels of step 1.

``ggml_quantize_chunk`` runs ``quantize_row_qX_K_ref`` when no importance matrix is given and
``quantize_row_qX_K_impl`` row by row when one is; both are here under ggml's names, and ``quantize_qX_K`` (ggml's
name for that dispatch) is the row-parallel kernel of the registry.  Every float operation is a float32 operation
in C's order (see :mod:`refllm.quants.common`), so the bytes are ggml's.

Range.  The encoders give ggml's bytes for every finite input, including magnitudes where ggml's arithmetic
overflows (``x²`` above ~1.8e19 is inf, sums of huge values become inf or NaN, ``nearest_int`` of those returns its
bit-trick value): that is deterministic IEEE arithmetic, reproduced exactly.  The output is then meaningless — a
huge-valued block decodes to garbage, in ggml as here.  NaN and ±inf input is rejected (``finite_only``).

Speed.  The scale searches (:mod:`refllm.quants.search`, shared with the legacy formats) are reformulated so that
LLVM vectorizes them without changing a bit; the decoders do their bit work in int32.
"""

from __future__ import annotations

import numpy as np

from ..ggml_types import QK_K, GGMLType
from ..jit import float32_bits, float32_from_bits, kernel, parallel_kernel, prange
from .common import int8_of, load_fp16, load_u32, nearest_int, store_fp16, store_u16, store_u32
from .registry import BlockFormat, Imatrix
from .search import GROUP_MAX_EPS, make_q3_quants, make_qkx2_quants, make_qkx3_quants, make_qp_quants, make_qx_quants

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)
_TWO = np.float32(2.0)
_F_QK_K = np.float32(QK_K)
# int32 constants for the decoders: int32 arithmetic on the bytes lets LLVM vectorize the inner loops
_I1, _I2, _I3, _I4, _I15, _I32, _I128 = (np.int32(v) for v in (1, 2, 3, 4, 15, 32, 128))

# Q2_K parameters (quantize_row_q2_K_ref / _impl)
_Q2_RMIN, _Q2_RDELTA = np.float32(-0.5), np.float32(0.1)
_Q2_SCALE = np.float32(15.0)  # "q4scale": 4-bit sub-scales and mins
# Q4_K / Q5_K parameters
_Q4_RMIN, _Q4_RDELTA = np.float32(-1.0), np.float32(0.1)
_Q5_RMIN, _Q5_RDELTA = np.float32(-0.5), np.float32(0.1)
_F_32 = np.float32(32.0)
_F_63 = np.float32(63.0)
# the importance-matrix search (make_qkx3_quants) of Q2_K, Q4_K, Q5_K
_QKX3_RMIN, _QKX3_RDELTA = np.float32(-0.9), np.float32(0.05)
# Q3_K, Q6_K, Q8_K
_M32 = np.float32(-32.0)
_M128 = np.float32(-128.0)
_M127 = np.float32(-127.0)

# bytes per super-block
Q2_K_BYTES = 84
Q3_K_BYTES = 110
Q4_K_BYTES = 144
Q5_K_BYTES = 176
Q6_K_BYTES = 210
Q8_K_BYTES = 292


# ======================================================================================================================
# Helpers of the K-quant layouts (the scale searches are in refllm.quants.search)
# ======================================================================================================================


@kernel
def get_scale_min_k4(j, q):
    """Sub-block ``j``'s 6-bit scale and min from the 12-byte field ``q`` of Q4_K / Q5_K: ``(sc, m)``.

    ::

        j < 4:  sc = q[j] & 63                          m = q[j+4] & 63
        j >= 4: sc = (q[j+4] & 0xF) | (q[j-4] >> 6) << 4  m = (q[j+4] >> 4) | (q[j] >> 6) << 4
    """
    if j < 4:
        return np.int64(q[j]) & 63, np.int64(q[j + 4]) & 63
    return ((np.int64(q[j + 4]) & 0xF) | ((np.int64(q[j - 4]) >> 6) << 4),
            (np.int64(q[j + 4]) >> 4) | ((np.int64(q[j]) >> 6) << 4))


@kernel
def set_scale_min_k4(j, q, ls, lm):
    """Pack sub-block ``j``'s 6-bit ``ls`` and ``lm`` into ``q`` (the inverse of :func:`get_scale_min_k4`).

    Called for ``j = 0 … 7`` in order on a zeroed field, as ggml does (bits above 6 are dropped by the uint8 stores).
    """
    if j < 4:
        q[j] = ls & 0xFF
        q[j + 4] = lm & 0xFF
    else:
        q[j + 4] = ((ls & 0xF) | ((lm & 0xF) << 4)) & 0xFF
        q[j - 4] = (np.int64(q[j - 4]) | ((ls >> 4) << 6)) & 0xFF
        q[j] = (np.int64(q[j]) | ((lm >> 4) << 6)) & 0xFF


@kernel
def pack_2bit(L, qs):
    """``qs[32h + l] = L[128h+l] | L[128h+l+32] << 2 | L[128h+l+64] << 4 | L[128h+l+96] << 6`` (Q2_K, Q3_K)."""
    for h in range(2):
        for l in range(32):
            j = 128 * h + l
            qs[32 * h + l] = (np.int64(L[j]) | (np.int64(L[j + 32]) << 2) | (np.int64(L[j + 64]) << 4)
                              | (np.int64(L[j + 96]) << 6)) & 0xFF


# ======================================================================================================================
# Q2_K
# ======================================================================================================================
#
#   block_q2_K (84 bytes per 256 weights = 2.625 bits per weight)
#
#   offset  0                16                                 80       82       84
#           +----------------+----------------------------------+--------+--------+
#           | scales[16]     | qs[64]                           | d fp16 | dmin   |
#           | lo nibble: sc  | 2-bit q, 4 per byte              |        | fp16   |
#           | hi nibble: m   |                                  |        |        |
#           +----------------+----------------------------------+--------+--------+
#
#   16 sub-blocks of 16 weights; sub-block j = elements 16j … 16j+15 uses scales[j].
#   Element e = 128h + 32k + l (h < 2, k < 4, l < 32) is bits 2k, 2k+1 of qs[32h + l].
#   x[e] = (d * (scales[e/16] & 0xF)) * q - (dmin * (scales[e/16] >> 4))
#
#   Encode (reference): per sub-block make_qkx2_quants(16, nmax=3, weights |x|, rmin -0.5, rdelta 0.1, 15 steps,
#   mean absolute error) gives a scale and a min; d = max scale / 15 and dmin = max min / 15 (fp16), the 4-bit
#   sub-scales and sub-mins are nearest_int(15 * s / max); then every element is requantized with the decoded
#   scales: q = clamp(nearest_int((x + dmin*m) / (d*sc)), 0, 3), skipped where d*sc == 0.
#   With an imatrix: weights qw * sqrt(σ² + x²) (σ² = Σx²/256), make_qkx3_quants(…, -0.9, 0.05, 36 steps, squared
#   error), and make_qp_quants picks the 4-bit sub-scales and mins and d, dmin.


@kernel
def _requantize_q2_K(x, L, scales, d_all, dmin_all):
    for j in range(QK_K // 16):
        sc = np.int64(scales[j])
        d = d_all * np.float32(sc & 0xF)
        if d == 0:
            continue  # keep the levels of the first search
        dm = dmin_all * np.float32(sc >> 4)
        for ii in range(16):
            l = nearest_int((x[16 * j + ii] + dm) / d)
            L[16 * j + ii] = max(0, min(3, l))


@kernel
def quantize_row_q2_K_ref(x, y):
    """ggml ``quantize_row_q2_K_ref``: float32 ``x`` (a multiple of 256) → Q2_K bytes ``y`` (no importance matrix)."""
    nb = x.size // QK_K
    L = np.empty(QK_K, np.uint8)
    Laux = np.empty(16, np.uint8)
    weights = np.empty(16, np.float32)
    mins = np.empty(QK_K // 16, np.float32)
    scales = np.empty(QK_K // 16, np.float32)
    for i in range(nb):
        xb = x[i * QK_K:(i + 1) * QK_K]
        yb = y[i * Q2_K_BYTES:(i + 1) * Q2_K_BYTES]
        max_scale = _ZERO  # as the min is subtracted, the scales are non-negative
        max_min = _ZERO
        for j in range(QK_K // 16):
            xs = xb[16 * j:16 * j + 16]
            for l in range(16):
                weights[l] = abs(xs[l])
            scales[j], mins[j] = make_qkx2_quants(16, 3, xs, weights, L[16 * j:16 * j + 16], Laux,
                                                  _Q2_RMIN, _Q2_RDELTA, 15, True)
            if scales[j] > max_scale:
                max_scale = scales[j]
            if mins[j] > max_min:
                max_min = mins[j]
        ysc = yb[0:16]
        if max_scale > 0:
            iscale = _Q2_SCALE / max_scale
            for j in range(QK_K // 16):
                ysc[j] = nearest_int(iscale * scales[j]) & 0xFF
            d = store_fp16(yb, 80, max_scale / _Q2_SCALE)
        else:
            for j in range(QK_K // 16):
                ysc[j] = 0
            d = store_fp16(yb, 80, _ZERO)
        if max_min > 0:
            iscale = _Q2_SCALE / max_min
            for j in range(QK_K // 16):
                ysc[j] = (np.int64(ysc[j]) | (nearest_int(iscale * mins[j]) << 4)) & 0xFF
            dmin = store_fp16(yb, 82, max_min / _Q2_SCALE)
        else:
            dmin = store_fp16(yb, 82, _ZERO)
        _requantize_q2_K(xb, L, ysc, d, dmin)
        pack_2bit(L, yb[16:80])


@kernel
def quantize_row_q2_K_impl(x, y, quant_weights):
    """ggml ``quantize_row_q2_K_impl``: one row with importance weights ``quant_weights`` (same length as ``x``)."""
    nb = x.size // QK_K
    L = np.empty(QK_K, np.uint8)
    Laux = np.empty(16, np.uint8)
    mins = np.empty(QK_K // 16, np.float32)
    scales = np.empty(QK_K // 16, np.float32)
    sw = np.empty(QK_K // 16, np.float32)
    weight = np.empty(16, np.float32)
    Ls = np.empty(QK_K // 16, np.uint8)
    Lm = np.empty(QK_K // 16, np.uint8)
    for i in range(nb):
        xb = x[i * QK_K:(i + 1) * QK_K]
        yb = y[i * Q2_K_BYTES:(i + 1) * Q2_K_BYTES]
        sumx2 = _ZERO
        for j in range(QK_K):
            sumx2 += xb[j] * xb[j]
        sigma2 = sumx2 / _F_QK_K
        for j in range(QK_K // 16):
            xs = xb[16 * j:16 * j + 16]
            qw = quant_weights[i * QK_K + 16 * j:i * QK_K + 16 * j + 16]
            for l in range(16):
                weight[l] = qw[l] * np.sqrt(sigma2 + xs[l] * xs[l])
            s = _ZERO
            for l in range(16):
                s += weight[l]
            sw[j] = s
            scales[j], mins[j] = make_qkx3_quants(16, 3, xs, weight, L[16 * j:16 * j + 16], Laux,
                                                  _QKX3_RMIN, _QKX3_RDELTA, 36, False)
        dm = make_qp_quants(QK_K // 16, 15, scales, Ls, sw)
        mm = make_qp_quants(QK_K // 16, 15, mins, Lm, sw)
        dm = store_fp16(yb, 80, dm)
        mm = store_fp16(yb, 82, mm)
        ysc = yb[0:16]
        for j in range(QK_K // 16):
            ysc[j] = (np.int64(Ls[j]) | (np.int64(Lm[j]) << 4)) & 0xFF
        _requantize_q2_K(xb, L, ysc, dm, mm)
        pack_2bit(L, yb[16:80])


@kernel
def dequantize_row_q2_K(x, y):
    """ggml ``dequantize_row_q2_K``: ``y[e] = (d * (sc & 0xF)) * q - (dmin * (sc >> 4))``, ``sc = scales[e/16]``."""
    nb = y.size // QK_K
    dl = np.empty(QK_K // 16, np.float32)
    ml = np.empty(QK_K // 16, np.float32)
    for i in range(nb):
        b = x[i * Q2_K_BYTES:(i + 1) * Q2_K_BYTES]
        o = y[i * QK_K:(i + 1) * QK_K]
        d = load_fp16(b, 80)
        dmin = load_fp16(b, 82)
        for j in range(QK_K // 16):
            sc = np.int64(b[j])
            dl[j] = d * np.float32(sc & 0xF)
            ml[j] = dmin * np.float32(sc >> 4)
        for h in range(2):
            q = b[16 + 32 * h:48 + 32 * h]
            for k in range(4):
                shift = np.int32(2 * k)
                j = 8 * h + 2 * k  # sub-blocks j (l < 16) and j + 1 (l >= 16)
                ob = o[128 * h + 32 * k:128 * h + 32 * k + 32]
                for l in range(32):
                    dlj = dl[j] if l < 16 else dl[j + 1]
                    mlj = ml[j] if l < 16 else ml[j + 1]
                    ob[l] = dlj * np.float32((np.int32(q[l]) >> shift) & _I3) - mlj


# ======================================================================================================================
# Q3_K
# ======================================================================================================================
#
#   block_q3_K (110 bytes per 256 weights = 3.4375 bits per weight)
#
#   offset  0              32                   96               108      110
#           +--------------+--------------------+----------------+--------+
#           | hmask[32]    | qs[64]             | scales[12]     | d fp16 |
#           | bit 2 of q   | bits 0-1 of q      | 16 x 6 bits    |        |
#           +--------------+--------------------+----------------+--------+
#
#   Element e = 128h + 32k + l: low 2 bits at bits 2k of qs[32h + l] (as Q2_K), the high bit is bit (4h + k) of
#   hmask[l] (set = +4).  q3 = low | high << 2 in 0…7; the signed value is q3 - 4.
#   Sub-block j's 6-bit scale: low nibble of scales[j] (j < 8) or high nibble of scales[j-8] (j >= 8), top 2 bits
#   at bits 2*(j/4) of scales[8 + j%4].
#   x[e] = (d * (sc - 32)) * (q3 - 4)
#
#   Encode (reference): per sub-block make_q3_quants(16, nmax=4) (weights x², coordinate descent); the scale of
#   largest |s| sets d = fp16(1 / (-32 / s_max)), sub-scales clamp(nearest_int(-32/s_max * s), -32, 31) + 32;
#   requantize q = clamp(nearest_int(x / (d*sc)), -4, 3) + 4 where d*sc != 0.
#   With an imatrix: weights qw * sqrt(2Σx²/256 + x²), make_qx_quants(16, 4, …) per sub-block and
#   make_qx_quants(16, 32, scales, weights = Σ sub-block weights) for the 6-bit scales and d.


@kernel
def _q3_K_scale(scales, j):
    """Sub-block ``j``'s scale from Q3_K's 12-byte field, as a signed value ``sc - 32`` in ``[-32, 31]``."""
    if j < 8:
        lo = np.int64(scales[j]) & 0xF
    else:
        lo = np.int64(scales[j - 8]) >> 4
    hi = (np.int64(scales[8 + j % 4]) >> (2 * (j // 4))) & 3
    return (lo | (hi << 4)) - 32


@kernel
def _q3_K_set_scale(scales, j, l):
    """Pack the 6-bit value ``l`` (0…63) of sub-block ``j`` into the zeroed 12-byte field, in ggml's order."""
    if j < 8:
        scales[j] = l & 0xF
    else:
        scales[j - 8] = (np.int64(scales[j - 8]) | ((l & 0xF) << 4)) & 0xFF
    l >>= 4
    scales[j % 4 + 8] = (np.int64(scales[j % 4 + 8]) | (l << (2 * (j // 4)))) & 0xFF


@kernel
def _finish_q3_K(x, L, y, d_all):
    """Requantize with the stored scales (``L`` signed+4 in 0…7), then write hmask and qs."""
    scales = y[96:108]
    for j in range(QK_K // 16):
        d = d_all * np.float32(_q3_K_scale(scales, j))
        if d == 0:
            continue  # keep the levels of the first search
        for ii in range(16):
            l = nearest_int(x[16 * j + ii] / d)
            L[16 * j + ii] = max(-4, min(3, l)) + 4
    # ggml: for element j, if L[j] > 3 { hmask[j % 32] |= 1 << (j / 32); L[j] -= 4 } — L is in 0…7 here, so that
    # is bit 2 of L into the mask and L & 3 into qs, written without branches
    hmask = y[0:32]
    for m in range(32):
        hmask[m] = 0
    for b in range(8):
        for m in range(32):
            lv = np.int32(L[32 * b + m])
            hmask[m] = np.int32(hmask[m]) | ((lv >> _I2) << np.int32(b))
            L[32 * b + m] = lv & _I3
    pack_2bit(L, y[32:96])


@kernel
def quantize_row_q3_K_ref(x, y):
    """ggml ``quantize_row_q3_K_ref``: float32 ``x`` → Q3_K bytes ``y`` (no importance matrix)."""
    nb = x.size // QK_K
    L = np.empty(QK_K, np.int8)
    scales = np.empty(QK_K // 16, np.float32)
    for i in range(nb):
        xb = x[i * QK_K:(i + 1) * QK_K]
        yb = y[i * Q3_K_BYTES:(i + 1) * Q3_K_BYTES]
        max_scale = _ZERO
        amax = _ZERO
        for j in range(QK_K // 16):
            scales[j] = make_q3_quants(16, 4, xb[16 * j:16 * j + 16], L[16 * j:16 * j + 16], True)
            scale = abs(scales[j])
            if scale > amax:
                amax = scale
                max_scale = scales[j]
        ysc = yb[96:108]
        for j in range(12):
            ysc[j] = 0
        if max_scale != 0:
            iscale = _M32 / max_scale
            for j in range(QK_K // 16):
                l = int8_of(nearest_int(iscale * scales[j]))  # C: int8_t l = nearest_int(...)
                l = max(-32, min(31, l)) + 32
                _q3_K_set_scale(ysc, j, l)
            d = store_fp16(yb, 108, _ONE / iscale)
        else:
            d = store_fp16(yb, 108, _ZERO)
        _finish_q3_K(xb, L, yb, d)


@kernel
def quantize_row_q3_K_impl(x, y, quant_weights):
    """ggml ``quantize_row_q3_K_impl``: one row with importance weights ``quant_weights``."""
    nb = x.size // QK_K
    L = np.empty(QK_K, np.int8)
    scales = np.empty(QK_K // 16, np.float32)
    weight = np.empty(16, np.float32)
    sw = np.empty(QK_K // 16, np.float32)
    Ls = np.empty(QK_K // 16, np.int8)
    for i in range(nb):
        xb = x[i * QK_K:(i + 1) * QK_K]
        yb = y[i * Q3_K_BYTES:(i + 1) * Q3_K_BYTES]
        sumx2 = _ZERO
        for j in range(QK_K):
            sumx2 += xb[j] * xb[j]
        sigma2 = (_TWO * sumx2) / _F_QK_K
        for j in range(QK_K // 16):
            xs = xb[16 * j:16 * j + 16]
            qw = quant_weights[i * QK_K + 16 * j:i * QK_K + 16 * j + 16]
            for l in range(16):
                weight[l] = qw[l] * np.sqrt(sigma2 + xs[l] * xs[l])
            sumw = _ZERO
            for l in range(16):
                sumw += weight[l]
            sw[j] = sumw
            scales[j] = make_qx_quants(16, 4, xs, L[16 * j:16 * j + 16], 1, weight)
        ysc = yb[96:108]
        for j in range(12):
            ysc[j] = 0
        d_block = make_qx_quants(QK_K // 16, 32, scales, Ls, 1, sw)
        for j in range(QK_K // 16):
            _q3_K_set_scale(ysc, j, np.int64(Ls[j]))
        d = store_fp16(yb, 108, d_block)
        _finish_q3_K(xb, L, yb, d)


@kernel
def dequantize_row_q3_K(x, y):
    """ggml ``dequantize_row_q3_K``: ``y[e] = (d * (sc - 32)) * (q3 - 4)``, ``q3 = low2 | hmask_bit << 2``."""
    nb = y.size // QK_K
    dl = np.empty(QK_K // 16, np.float32)
    for i in range(nb):
        b = x[i * Q3_K_BYTES:(i + 1) * Q3_K_BYTES]
        o = y[i * QK_K:(i + 1) * QK_K]
        d_all = load_fp16(b, 108)
        scales = b[96:108]
        for j in range(QK_K // 16):
            dl[j] = d_all * np.float32(_q3_K_scale(scales, j))
        hm = b[0:32]
        for h in range(2):
            q = b[32 + 32 * h:64 + 32 * h]
            for k in range(4):
                shift = np.int32(2 * k)
                hshift = np.int32(4 * h + k)
                j = 8 * h + 2 * k  # sub-blocks j (l < 16) and j + 1 (l >= 16)
                ob = o[128 * h + 32 * k:128 * h + 32 * k + 32]
                for l in range(32):
                    dlj = dl[j] if l < 16 else dl[j + 1]
                    low = (np.int32(q[l]) >> shift) & _I3
                    high = (np.int32(hm[l]) >> hshift) & _I1
                    ob[l] = dlj * np.float32(low - _I4 + _I4 * high)


# ======================================================================================================================
# Q4_K
# ======================================================================================================================
#
#   block_q4_K (144 bytes per 256 weights = 4.5 bits per weight)
#
#   offset  0        2        4                    16                                     144
#           +--------+--------+--------------------+--------------------------------------+
#           | d fp16 | dmin   | scales[12]         | qs[128]                              |
#           |        | fp16   | 8 x (6-bit sc,     | 4-bit q, 2 per byte                  |
#           |        |        |      6-bit m)      |                                      |
#           +--------+--------+--------------------+--------------------------------------+
#
#   8 sub-blocks of 32; (sc, m) of sub-block j: get_scale_min_k4.  Element 64c + l (l < 32) is the low nibble of
#   qs[32c + l], element 64c + 32 + l its high nibble.
#   x[e] = (d * sc) * q - (dmin * m)
#
#   Encode (reference): per sub-block weights av_x + |x| (av_x = rms of the sub-block), make_qkx2_quants(32, 15,
#   rmin -1, rdelta 0.1, 20 steps, squared error); d = max scale / 63, dmin = max min / 63 (fp16), 6-bit
#   sub-scales min(63, (uint8)nearest_int(63 * s / max)); requantize q = clamp(nearest_int((x + dmin*m)/(d*sc)),
#   0, 15) where d*sc != 0.
#   With an imatrix: weights qw * sqrt(2Σx²/256 + x²), make_qkx3_quants(32, 15, -0.9, 0.05, 36 steps) and
#   make_qp_quants(8, 63) for the 6-bit scales and mins with d and dmin.


@kernel
def _requantize_qK(x, L, scales, d_all, dmin_all, nmax):
    """Q4_K / Q5_K requantization of the 8 sub-blocks with the stored scales (skipped where ``d*sc == 0``)."""
    for j in range(QK_K // 32):
        sc, m = get_scale_min_k4(j, scales)
        d = d_all * np.float32(sc)
        if d == 0:
            continue  # keep the levels of the first search
        dm = dmin_all * np.float32(m)
        for ii in range(32):
            l = nearest_int((x[32 * j + ii] + dm) / d)
            L[32 * j + ii] = max(0, min(nmax, l))


@kernel
def _quantize_block_qK_ref(xb, yb, L, Laux, weights, mins, scales, nmax, rmin, rdelta, nstep):
    """The scale part of ``quantize_row_q4_K_ref`` / ``q5_K_ref`` for one super-block: fills d, dmin, scales, L."""
    max_scale = _ZERO  # as the min is subtracted, the scales are non-negative
    max_min = _ZERO
    for j in range(QK_K // 32):
        xs = xb[32 * j:32 * j + 32]
        sum_x2 = _ZERO
        for l in range(32):
            sum_x2 += xs[l] * xs[l]
        av_x = np.sqrt(sum_x2 / _F_32)
        for l in range(32):
            weights[l] = av_x + abs(xs[l])
        scales[j], mins[j] = make_qkx2_quants(32, nmax, xs, weights, L[32 * j:32 * j + 32], Laux,
                                              rmin, rdelta, nstep, False)
        if scales[j] > max_scale:
            max_scale = scales[j]
        if mins[j] > max_min:
            max_min = mins[j]
    inv_scale = _F_63 / max_scale if max_scale > 0 else _ZERO
    inv_min = _F_63 / max_min if max_min > 0 else _ZERO
    ysc = yb[4:16]
    for j in range(QK_K // 32):
        ls = min(63, nearest_int(inv_scale * scales[j]) & 0xFF)  # C: uint8_t ls = nearest_int(...); MIN(63, ls)
        lm = min(63, nearest_int(inv_min * mins[j]) & 0xFF)
        set_scale_min_k4(j, ysc, ls, lm)
    d = store_fp16(yb, 0, max_scale / _F_63)
    dmin = store_fp16(yb, 2, max_min / _F_63)
    _requantize_qK(xb, L, ysc, d, dmin, nmax)


@kernel
def _quantize_block_qK_impl(xb, qwb, yb, L, Laux, weights, mins, scales, sw, Ls, Lm, nmax, max_level):
    """The scale part of ``quantize_row_q4_K_impl`` / ``q5_K_impl`` for one super-block (with importance weights).

    ``make_qp_quants`` can return levels above 63 (a negative scale wraps in the uint8 ``Ls``).  Q5_K clamps them
    with ``MIN(63, ls)`` (``max_level=63``); Q4_K stores the uint8 as it is (``max_level=255``), and the packing
    keeps what fits.
    """
    sum_x2 = _ZERO
    for l in range(QK_K):
        sum_x2 += xb[l] * xb[l]
    sigma2 = (_TWO * sum_x2) / _F_QK_K
    for j in range(QK_K // 32):
        xs = xb[32 * j:32 * j + 32]
        qw = qwb[32 * j:32 * j + 32]
        for l in range(32):
            weights[l] = qw[l] * np.sqrt(sigma2 + xs[l] * xs[l])
        sumw = _ZERO
        for l in range(32):
            sumw += weights[l]
        sw[j] = sumw
        scales[j], mins[j] = make_qkx3_quants(32, nmax, xs, weights, L[32 * j:32 * j + 32], Laux,
                                              _QKX3_RMIN, _QKX3_RDELTA, 36, False)
    d_block = make_qp_quants(QK_K // 32, 63, scales, Ls, sw)
    m_block = make_qp_quants(QK_K // 32, 63, mins, Lm, sw)
    ysc = yb[4:16]
    for j in range(QK_K // 32):
        set_scale_min_k4(j, ysc, min(max_level, np.int64(Ls[j])), min(max_level, np.int64(Lm[j])))
    d = store_fp16(yb, 0, d_block)
    dmin = store_fp16(yb, 2, m_block)
    _requantize_qK(xb, L, ysc, d, dmin, nmax)


@kernel
def _pack_q4_K(L, qs):
    for c in range(4):
        for l in range(32):
            qs[32 * c + l] = np.int64(L[64 * c + l]) | (np.int64(L[64 * c + 32 + l]) << 4)


@kernel
def quantize_row_q4_K_ref(x, y):
    """ggml ``quantize_row_q4_K_ref``: float32 ``x`` → Q4_K bytes ``y`` (no importance matrix)."""
    nb = x.size // QK_K
    L = np.empty(QK_K, np.uint8)
    Laux = np.empty(32, np.uint8)
    weights = np.empty(32, np.float32)
    mins = np.empty(QK_K // 32, np.float32)
    scales = np.empty(QK_K // 32, np.float32)
    for i in range(nb):
        yb = y[i * Q4_K_BYTES:(i + 1) * Q4_K_BYTES]
        _quantize_block_qK_ref(x[i * QK_K:(i + 1) * QK_K], yb, L, Laux, weights, mins, scales, 15,
                               _Q4_RMIN, _Q4_RDELTA, 20)
        _pack_q4_K(L, yb[16:144])


@kernel
def quantize_row_q4_K_impl(x, y, quant_weights):
    """ggml ``quantize_row_q4_K_impl``: one row with importance weights ``quant_weights``."""
    nb = x.size // QK_K
    L = np.empty(QK_K, np.uint8)
    Laux = np.empty(32, np.uint8)
    weights = np.empty(32, np.float32)
    mins = np.empty(QK_K // 32, np.float32)
    scales = np.empty(QK_K // 32, np.float32)
    sw = np.empty(QK_K // 32, np.float32)
    Ls = np.empty(QK_K // 32, np.uint8)
    Lm = np.empty(QK_K // 32, np.uint8)
    for i in range(nb):
        yb = y[i * Q4_K_BYTES:(i + 1) * Q4_K_BYTES]
        _quantize_block_qK_impl(x[i * QK_K:(i + 1) * QK_K], quant_weights[i * QK_K:(i + 1) * QK_K], yb,
                                L, Laux, weights, mins, scales, sw, Ls, Lm, 15, 255)
        _pack_q4_K(L, yb[16:144])


@kernel
def dequantize_row_q4_K(x, y):
    """ggml ``dequantize_row_q4_K``: ``y[e] = (d * sc) * q - (dmin * m)`` with (sc, m) of sub-block e/32."""
    nb = y.size // QK_K
    for i in range(nb):
        b = x[i * Q4_K_BYTES:(i + 1) * Q4_K_BYTES]
        o = y[i * QK_K:(i + 1) * QK_K]
        d = load_fp16(b, 0)
        dmin = load_fp16(b, 2)
        scales = b[4:16]
        for c in range(4):
            sc, m = get_scale_min_k4(2 * c, scales)
            d1 = d * np.float32(sc)
            m1 = dmin * np.float32(m)
            sc, m = get_scale_min_k4(2 * c + 1, scales)
            d2 = d * np.float32(sc)
            m2 = dmin * np.float32(m)
            q = b[16 + 32 * c:48 + 32 * c]
            o1 = o[64 * c:64 * c + 32]
            o2 = o[64 * c + 32:64 * c + 64]
            for l in range(32):
                v = np.int32(q[l])
                o1[l] = d1 * np.float32(v & _I15) - m1
                o2[l] = d2 * np.float32(v >> _I4) - m2


# ======================================================================================================================
# Q5_K
# ======================================================================================================================
#
#   block_q5_K (176 bytes per 256 weights = 5.5 bits per weight)
#
#   offset  0        2        4              16              48                              176
#           +--------+--------+--------------+---------------+-------------------------------+
#           | d fp16 | dmin   | scales[12]   | qh[32]        | qs[128]                       |
#           |        | fp16   | as Q4_K      | bit 4 of q    | bits 0-3 of q, as Q4_K        |
#           +--------+--------+--------------+---------------+-------------------------------+
#
#   Element 64c + l (l < 32): low nibble of qs[32c + l], bit 2c of qh[l] adds 16;
#   element 64c + 32 + l: high nibble of qs[32c + l], bit 2c+1 of qh[l] adds 16.
#   x[e] = (d * sc) * q - (dmin * m), q in 0…31
#
#   Encode: as Q4_K with nmax = 31; the reference search uses rmin -0.5, rdelta 0.1, 15 steps.


@kernel
def _pack_q5_K(L, y):
    qh = y[16:48]
    ql = y[48:176]
    for j in range(32):
        qh[j] = 0
    # ggml: if L > 15 { L -= 16; set the qh bit } — L is in 0…31, so that is bit 4 of L, written without branches
    for c in range(4):
        for j in range(32):
            l1 = np.int32(L[64 * c + j])
            l2 = np.int32(L[64 * c + j + 32])
            qh[j] = np.int32(qh[j]) | ((l1 >> _I4) << np.int32(2 * c)) | ((l2 >> _I4) << np.int32(2 * c + 1))
            ql[32 * c + j] = (l1 & _I15) | ((l2 & _I15) << _I4)


@kernel
def quantize_row_q5_K_ref(x, y):
    """ggml ``quantize_row_q5_K_ref``: float32 ``x`` → Q5_K bytes ``y`` (no importance matrix)."""
    nb = x.size // QK_K
    L = np.empty(QK_K, np.uint8)
    Laux = np.empty(32, np.uint8)
    weights = np.empty(32, np.float32)
    mins = np.empty(QK_K // 32, np.float32)
    scales = np.empty(QK_K // 32, np.float32)
    for i in range(nb):
        yb = y[i * Q5_K_BYTES:(i + 1) * Q5_K_BYTES]
        _quantize_block_qK_ref(x[i * QK_K:(i + 1) * QK_K], yb, L, Laux, weights, mins, scales, 31,
                               _Q5_RMIN, _Q5_RDELTA, 15)
        _pack_q5_K(L, yb)


@kernel
def quantize_row_q5_K_impl(x, y, quant_weights):
    """ggml ``quantize_row_q5_K_impl``: one row with importance weights ``quant_weights``."""
    nb = x.size // QK_K
    L = np.empty(QK_K, np.uint8)
    Laux = np.empty(32, np.uint8)
    weights = np.empty(32, np.float32)
    mins = np.empty(QK_K // 32, np.float32)
    scales = np.empty(QK_K // 32, np.float32)
    sw = np.empty(QK_K // 32, np.float32)
    Ls = np.empty(QK_K // 32, np.uint8)
    Lm = np.empty(QK_K // 32, np.uint8)
    for i in range(nb):
        yb = y[i * Q5_K_BYTES:(i + 1) * Q5_K_BYTES]
        _quantize_block_qK_impl(x[i * QK_K:(i + 1) * QK_K], quant_weights[i * QK_K:(i + 1) * QK_K], yb,
                                L, Laux, weights, mins, scales, sw, Ls, Lm, 31, 63)
        _pack_q5_K(L, yb)


@kernel
def dequantize_row_q5_K(x, y):
    """ggml ``dequantize_row_q5_K``: ``y[e] = (d * sc) * (nibble + 16*qh_bit) - (dmin * m)``."""
    nb = y.size // QK_K
    for i in range(nb):
        b = x[i * Q5_K_BYTES:(i + 1) * Q5_K_BYTES]
        o = y[i * QK_K:(i + 1) * QK_K]
        d = load_fp16(b, 0)
        dmin = load_fp16(b, 2)
        scales = b[4:16]
        qh = b[16:48]
        for c in range(4):
            sc, m = get_scale_min_k4(2 * c, scales)
            d1 = d * np.float32(sc)
            m1 = dmin * np.float32(m)
            sc, m = get_scale_min_k4(2 * c + 1, scales)
            d2 = d * np.float32(sc)
            m2 = dmin * np.float32(m)
            ql = b[48 + 32 * c:80 + 32 * c]
            o1 = o[64 * c:64 * c + 32]
            o2 = o[64 * c + 32:64 * c + 64]
            s1 = np.int32(2 * c)
            s2 = np.int32(2 * c + 1)
            for l in range(32):
                v = np.int32(ql[l])
                hb = np.int32(qh[l])
                o1[l] = d1 * np.float32((v & _I15) | (((hb >> s1) & _I1) << _I4)) - m1
                o2[l] = d2 * np.float32((v >> _I4) | (((hb >> s2) & _I1) << _I4)) - m2


# ======================================================================================================================
# Q6_K
# ======================================================================================================================
#
#   block_q6_K (210 bytes per 256 weights = 6.5625 bits per weight)
#
#   offset  0                            128               192                208      210
#           +----------------------------+-----------------+------------------+--------+
#           | ql[128]                    | qh[64]          | scales[16] int8  | d fp16 |
#           | bits 0-3 of q, 2 per byte  | bits 4-5 of q,  |                  |        |
#           |                            | 4 per byte      |                  |        |
#           +----------------------------+-----------------+------------------+--------+
#
#   Element e = 128h + 32k + l (k < 4, l < 32): low nibble (k = 0, 1) or high nibble (k = 2, 3) of
#   ql[64h + 32(k%2) + l], bits 2k, 2k+1 of qh[32h + l]; q in 0…63; scale scales[e/16] (signed).
#   x[e] = (d * sc) * (q - 32)
#
#   Encode: per sub-block of 16, make_qx_quants(16, nmax=32, weights x²) — or weights = the raw imatrix values
#   when one is given (no σ² term); the scale of largest |s| sets d = fp16(1 / (-128 / s_max)) and the int8
#   sub-scales min(127, nearest_int(-128/s_max * s)); requantize q = clamp(nearest_int(x / (d*sc)), -32, 31) + 32
#   where d*sc != 0.  A super-block whose scales are all below 1e-15 is all zero bytes.


@kernel
def _quantize_block_q6_K(xb, qwb, yb, L, scales):
    """One super-block of ``quantize_row_q6_K_ref`` (empty ``qwb``) or ``quantize_row_q6_K_impl``."""
    max_scale = _ZERO
    max_abs_scale = _ZERO
    for ib in range(QK_K // 16):
        qw = qwb[16 * ib:16 * ib + 16] if qwb.size > 0 else qwb
        scale = make_qx_quants(16, 32, xb[16 * ib:16 * ib + 16], L[16 * ib:16 * ib + 16], 1, qw)
        scales[ib] = scale
        abs_scale = abs(scale)
        if abs_scale > max_abs_scale:
            max_abs_scale = abs_scale
            max_scale = scale
    if max_abs_scale < GROUP_MAX_EPS:
        for k in range(Q6_K_BYTES):
            yb[k] = 0
        return
    iscale = _M128 / max_scale
    d_all = store_fp16(yb, 208, _ONE / iscale)
    ysc = yb[192:208]
    for ib in range(QK_K // 16):
        ysc[ib] = min(127, nearest_int(iscale * scales[ib])) & 0xFF  # int8 (two's complement)
    for j in range(QK_K // 16):
        d = d_all * np.float32(int8_of(np.int64(ysc[j])))
        if d == 0:
            continue  # keep the levels of the first search
        for ii in range(16):
            l = nearest_int(xb[16 * j + ii] / d)
            L[16 * j + ii] = max(-32, min(31, l)) + 32
    for h in range(2):
        ql = yb[64 * h:64 * h + 64]
        qh = yb[128 + 32 * h:160 + 32 * h]
        Lh = L[128 * h:128 * h + 128]
        for l in range(32):
            q1 = np.int64(Lh[l]) & 0xF
            q2 = np.int64(Lh[l + 32]) & 0xF
            q3 = np.int64(Lh[l + 64]) & 0xF
            q4 = np.int64(Lh[l + 96]) & 0xF
            ql[l] = q1 | (q3 << 4)
            ql[l + 32] = q2 | (q4 << 4)
            qh[l] = ((np.int64(Lh[l]) >> 4) | ((np.int64(Lh[l + 32]) >> 4) << 2) | ((np.int64(Lh[l + 64]) >> 4) << 4)
                     | ((np.int64(Lh[l + 96]) >> 4) << 6))


@kernel
def quantize_row_q6_K_ref(x, y):
    """ggml ``quantize_row_q6_K_ref``: float32 ``x`` → Q6_K bytes ``y`` (no importance matrix)."""
    nb = x.size // QK_K
    L = np.empty(QK_K, np.int8)
    scales = np.empty(QK_K // 16, np.float32)
    no_weights = np.empty(0, np.float32)
    for i in range(nb):
        _quantize_block_q6_K(x[i * QK_K:(i + 1) * QK_K], no_weights, y[i * Q6_K_BYTES:(i + 1) * Q6_K_BYTES],
                             L, scales)


@kernel
def quantize_row_q6_K_impl(x, y, quant_weights):
    """ggml ``quantize_row_q6_K_impl``: one row with importance weights ``quant_weights`` (used as they are)."""
    nb = x.size // QK_K
    L = np.empty(QK_K, np.int8)
    scales = np.empty(QK_K // 16, np.float32)
    for i in range(nb):
        _quantize_block_q6_K(x[i * QK_K:(i + 1) * QK_K], quant_weights[i * QK_K:(i + 1) * QK_K],
                             y[i * Q6_K_BYTES:(i + 1) * Q6_K_BYTES], L, scales)


@kernel
def dequantize_row_q6_K(x, y):
    """ggml ``dequantize_row_q6_K``: ``y[e] = (d * sc) * (q - 32)`` with the signed scale ``scales[e/16]``."""
    nb = y.size // QK_K
    dl = np.empty(QK_K // 16, np.float32)
    for i in range(nb):
        b = x[i * Q6_K_BYTES:(i + 1) * Q6_K_BYTES]
        o = y[i * QK_K:(i + 1) * QK_K]
        d = load_fp16(b, 208)
        for j in range(QK_K // 16):
            dl[j] = d * np.float32(int8_of(np.int64(b[192 + j])))  # int8 scale
        for h in range(2):
            qh = b[128 + 32 * h:160 + 32 * h]
            for k in range(4):
                ql = b[64 * h + 32 * (k % 2):64 * h + 32 * (k % 2) + 32]
                lshift = np.int32(4 * (k // 2))
                hshift = np.int32(2 * k)
                j = 8 * h + 2 * k  # sub-blocks j (l < 16) and j + 1 (l >= 16)
                ob = o[128 * h + 32 * k:128 * h + 32 * k + 32]
                for l in range(32):
                    dlj = dl[j] if l < 16 else dl[j + 1]
                    low = (np.int32(ql[l]) >> lshift) & _I15
                    high = (np.int32(qh[l]) >> hshift) & _I3
                    ob[l] = dlj * np.float32((low | (high << _I4)) - _I32)


# ======================================================================================================================
# Q8_K
# ======================================================================================================================
#
#   block_q8_K (292 bytes per 256 values = 9.125 bits per value)
#
#   offset  0          4                                        260                    292
#           +----------+----------------------------------------+----------------------+
#           | d        | qs[256] int8                           | bsums[16] int16 LE   |
#           | float32  |                                        | Σ of each 16 qs      |
#           +----------+----------------------------------------+----------------------+
#
#   x[e] = d * qs[e]
#
#   Encode (quantize_row_q8_K_ref): max = the first value of largest |x| (with its sign), iscale = -127 / max,
#   qs = min(127, nearest_int(iscale * x)), d = 1 / iscale (so d < 0 when max > 0 and the max maps to -127).
#   An all-zero super-block is all zero bytes (ggml writes d and qs and leaves bsums unwritten).


@kernel
def _first_absmax_q8_K(xb):
    """The first element of largest ``|x|``: ``(max, amax)`` as ggml's ``if (ax > amax)`` scan gives them.

    Written as two vectorizable integer passes: for finite float32, ``|x|`` orders like its bits with the sign
    cleared, so the largest bits give ``amax`` and the first element with those bits is ``max``.
    """
    amax_bits = np.int64(0)
    for j in range(QK_K):
        amax_bits = max(amax_bits, float32_bits(xb[j]) & 0x7FFFFFFF)
    for j in range(QK_K):
        if float32_bits(xb[j]) & 0x7FFFFFFF == amax_bits:
            return xb[j], float32_from_bits(amax_bits)
    return _ZERO, _ZERO  # unreachable for finite input


@kernel
def quantize_row_q8_K_ref(x, y):
    """ggml ``quantize_row_q8_K_ref``: float32 ``x`` (finite, a multiple of 256) → Q8_K bytes ``y``, with bsums."""
    nb = x.size // QK_K
    q = np.empty(QK_K, np.int32)
    for i in range(nb):
        xb = x[i * QK_K:(i + 1) * QK_K]
        yb = y[i * Q8_K_BYTES:(i + 1) * Q8_K_BYTES]
        max_, amax = _first_absmax_q8_K(xb)
        if amax == 0:
            for k in range(Q8_K_BYTES):
                yb[k] = 0
            continue
        iscale = _M127 / max_
        qs = yb[4:4 + QK_K]
        for j in range(QK_K):
            v = int8_of(min(127, nearest_int(iscale * xb[j])))  # C: int8_t qs = MIN(127, v)
            q[j] = v
            qs[j] = v & 0xFF
        for j in range(QK_K // 16):
            store_u16(yb, 260 + 2 * j, q[16 * j:16 * j + 16].sum())  # bsums[j]: int16
        store_u32(yb, 0, float32_bits(_ONE / iscale))  # d: float32


@kernel
def dequantize_row_q8_K(x, y):
    """ggml ``dequantize_row_q8_K``: ``y[e] = d * qs[e]`` (float32 ``d``, int8 ``qs``; bsums are not read)."""
    nb = y.size // QK_K
    for i in range(nb):
        b = x[i * Q8_K_BYTES:(i + 1) * Q8_K_BYTES]
        o = y[i * QK_K:(i + 1) * QK_K]
        d = float32_from_bits(load_u32(b, 0))
        qs = b[4:4 + QK_K]
        for j in range(QK_K):
            o[j] = d * np.float32((np.int32(qs[j]) ^ _I128) - _I128)  # int8 value of the byte


# ======================================================================================================================
# The row-parallel kernels of the registry (ggml's quantize_qX_K: _ref without imatrix, _impl row by row with one)
# ======================================================================================================================


@parallel_kernel
def quantize_q2_K(x, imatrix, out):
    for r in prange(x.shape[0]):
        if imatrix.size == 0:
            quantize_row_q2_K_ref(x[r], out[r])
        else:
            quantize_row_q2_K_impl(x[r], out[r], imatrix)


@parallel_kernel
def quantize_q3_K(x, imatrix, out):
    for r in prange(x.shape[0]):
        if imatrix.size == 0:
            quantize_row_q3_K_ref(x[r], out[r])
        else:
            quantize_row_q3_K_impl(x[r], out[r], imatrix)


@parallel_kernel
def quantize_q4_K(x, imatrix, out):
    for r in prange(x.shape[0]):
        if imatrix.size == 0:
            quantize_row_q4_K_ref(x[r], out[r])
        else:
            quantize_row_q4_K_impl(x[r], out[r], imatrix)


@parallel_kernel
def quantize_q5_K(x, imatrix, out):
    for r in prange(x.shape[0]):
        if imatrix.size == 0:
            quantize_row_q5_K_ref(x[r], out[r])
        else:
            quantize_row_q5_K_impl(x[r], out[r], imatrix)


@parallel_kernel
def quantize_q6_K(x, imatrix, out):
    for r in prange(x.shape[0]):
        if imatrix.size == 0:
            quantize_row_q6_K_ref(x[r], out[r])
        else:
            quantize_row_q6_K_impl(x[r], out[r], imatrix)


@parallel_kernel
def quantize_q8_K(x, imatrix, out):
    for r in prange(x.shape[0]):
        quantize_row_q8_K_ref(x[r], out[r])


@parallel_kernel
def dequantize_q2_K(q, out):
    for r in prange(q.shape[0]):
        dequantize_row_q2_K(q[r], out[r])


@parallel_kernel
def dequantize_q3_K(q, out):
    for r in prange(q.shape[0]):
        dequantize_row_q3_K(q[r], out[r])


@parallel_kernel
def dequantize_q4_K(q, out):
    for r in prange(q.shape[0]):
        dequantize_row_q4_K(q[r], out[r])


@parallel_kernel
def dequantize_q5_K(q, out):
    for r in prange(q.shape[0]):
        dequantize_row_q5_K(q[r], out[r])


@parallel_kernel
def dequantize_q6_K(q, out):
    for r in prange(q.shape[0]):
        dequantize_row_q6_K(q[r], out[r])


@parallel_kernel
def dequantize_q8_K(q, out):
    for r in prange(q.shape[0]):
        dequantize_row_q8_K(q[r], out[r])


FORMATS = [
    BlockFormat(GGMLType.Q2_K, quantize=quantize_q2_K, dequantize=dequantize_q2_K, imatrix=Imatrix.OPTIONAL,
                finite_only=True),
    BlockFormat(GGMLType.Q3_K, quantize=quantize_q3_K, dequantize=dequantize_q3_K, imatrix=Imatrix.OPTIONAL,
                finite_only=True),
    BlockFormat(GGMLType.Q4_K, quantize=quantize_q4_K, dequantize=dequantize_q4_K, imatrix=Imatrix.OPTIONAL,
                finite_only=True),
    BlockFormat(GGMLType.Q5_K, quantize=quantize_q5_K, dequantize=dequantize_q5_K, imatrix=Imatrix.OPTIONAL,
                finite_only=True),
    BlockFormat(GGMLType.Q6_K, quantize=quantize_q6_K, dequantize=dequantize_q6_K, imatrix=Imatrix.OPTIONAL,
                finite_only=True),
    BlockFormat(GGMLType.Q8_K, quantize=quantize_q8_K, dequantize=dequantize_q8_K, imatrix=Imatrix.NONE,
                finite_only=True),
]
