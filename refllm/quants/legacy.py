"""The legacy block formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q8_1: 32 elements per block, one or two fp16 numbers.

These are ggml's first quantization formats.  A block of 32 consecutive weights stores a scale ``d`` (and for the
``_1`` types an offset ``m``) as IEEE half precision, followed by one small integer ``q`` per weight:

* ``Q4_0``, ``Q5_0``, ``Q8_0``: symmetric, ``x = d * (q - 8)``, ``d * (q - 16)``, ``d * q`` (q8 is signed);
* ``Q4_1``, ``Q5_1``: with an offset, ``x = d * q + m``;
* ``Q8_1``: ``Q8_0`` plus ``s = d * Σq``, the activation format that llama.cpp's Q4_1 and Q5_1 dot products use
  (ggml has no decoder for it; see :func:`dequantize_row_q8_1`).

Q8_0 and Q8_1 are also the *activation* formats of the legacy dot products (a float row is quantized to Q8_0 or Q8_1
before it meets Q4_0…Q5_1 weights), which is why their row functions are written to be fast and are usable on their
own from other kernels: :func:`quantize_row_q8_0_ref`, :func:`quantize_row_q8_1_ref` take one 1-D float32 row and
fill one 1-D uint8 row.

Encoding without an importance matrix is ggml's ``quantize_row_<type>_ref``: one pass over the block finds the
scale, a second pass divides (multiplies by the **unrounded** ``id = 1/d``, not by the fp16-rounded scale) and
rounds.  The rounding conventions differ per type and are part of the format:

* Q4_0, Q4_1, Q5_0, Q5_1 add ``8.5`` / ``0.5`` / ``16.5`` / ``0.5`` and **truncate** (``(int8_t)`` / ``(uint8_t)``
  casts), then clamp with ``MIN(15, …)`` / ``MIN(31, …)`` (Q5_1 has no clamp);
* Q8_0, Q8_1 use ``roundf`` (halves away from zero).

With an importance matrix (``quantize_q4_0`` … ``quantize_q5_1`` of ``ggml_quantize_chunk``) Q4_0/Q5_0 run the
weighted scale search ``make_qx_quants`` and Q4_1/Q5_1 the weighted scale-and-min search ``make_qkx3_quants`` (the
searches of :mod:`refllm.quants.search`, shared with the K-quants as in ggml), both with weights
``qw[j] * sqrt(sigma2 + x[j]**2)`` (``sigma2`` = mean of ``x**2`` over the whole row).  Q8_0 ignores the importance
matrix.

**C conversions out of range.**  ggml's casts ``(int8_t)f``, ``(uint8_t)f`` and the store of ``roundf(f)`` into an
``int8_t`` are undefined in C when ``f`` is NaN, ±inf or too large.  They are reached with finite input too: in a
block of tiny values (magnitudes below about 1e-37) ``d`` can be so small that ``1/d`` overflows to ``inf``, and
``x * id`` is then ±inf, or NaN for ``x = 0``.  The reference build is x86-64, where gcc compiles them to
``cvttss2si``/``cvttps2dq`` followed by keeping the low byte; those instructions return 0x80000000 ("integer
indefinite") for NaN and out-of-range values, so the byte is 0.  :func:`~refllm.quants.common.c_float_to_int` states
that behaviour explicitly, so refllm's bytes equal the reference bytes for every finite input — and, for Q8_0 and
Q8_1, for NaN and ±inf too.

**NaN and ±inf.**  Q8_0 and Q8_1 are matched bit for bit (``finite_only=False``): ``MAX(amax, NaN)`` is NaN, the
next element replaces it, a NaN or infinite ``d`` is stored as an fp16 NaN/inf and every NaN product is converted
to the byte 0 as above.  Q4_0…Q5_1 reject NaN and ±inf (``finite_only=True``): on the importance-matrix path several
NaNs meet in one addition, and which payload (and sign, which reaches the stored fp16 NaN) survives depends on the
operand order the C compiler picked, not on the C source.

**Speed.**  The hot loops take their trip count as a run-time value
(:func:`~refllm.quants.common.block_elements`), which lets LLVM vectorize them without changing the arithmetic (and
so the bits) of ggml; the scale searches are vectorized in :mod:`refllm.quants.search`.
"""

from __future__ import annotations

import numpy as np

from ..ggml_types import GGMLType
from ..jit import kernel, parallel_kernel, prange
from .common import (
    add_first_nan,
    block_elements,
    c_float_to_int,
    int8_of,
    load_fp16,
    load_u32,
    roundf,
    store_fp16,
    store_u32,
)
from .registry import BlockFormat, Imatrix
from .search import make_qkx3_quants, make_qx_quants

QK4_0 = 32
QK4_1 = 32
QK5_0 = 32
QK5_1 = 32
QK8_0 = 32
QK8_1 = 32

_ZERO = np.float32(0.0)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_FLT_MAX = np.float32(np.finfo(np.float32).max)


# -- the importance-matrix weights (the scale searches are in refllm.quants.search) -----------------------------------


@kernel
def imatrix_weights(x, quant_weights, weight):
    """The per-element weights of the legacy importance-matrix paths: ``qw[j] * sqrtf(sigma2 + x[j]²)``.

    ``sigma2 = (Σ x²) / n_per_row`` over the whole row (summed in order, in float32).  Fills ``weight`` (same length
    as the row).
    """
    n = x.size
    sum_x2 = _ZERO
    for j in range(n):
        sum_x2 += x[j] * x[j]
    sigma2 = sum_x2 / np.float32(n)
    for j in range(n):
        weight[j] = quant_weights[j] * np.sqrt(sigma2 + x[j] * x[j])


# ---------------------------------------------------------------------------------------------------------------------
# Q4_0 — 32 weights in 18 bytes: 4.5 bits per weight
#
#   byte  0    1    2    3         17
#       +---------+----+----+ ... +----+
#       |  d fp16 |qs0 |qs1 |     |qs15|      qs[j] = q[j] | q[j+16] << 4   (q in 0 … 15)
#       +---------+----+----+ ... +----+
#
#   x[j] = d * (q[j] - 8)
#
# Encode (quantize_row_q4_0_ref): max = the first element of largest |x| (with its sign); d = max / -8, so that max
# itself maps to q = 0; q = MIN(15, (int8_t)(x*id + 8.5)) — truncation, i.e. rounding half up, with the unrounded
# id = 1/d.  With an importance matrix (quantize_row_q4_0_impl): d and q from make_qx_quants(nmax=8).
# ---------------------------------------------------------------------------------------------------------------------

_Q4_0_BYTES = 18
_EIGHT_HALF = np.float32(8.5)
_MINUS_8 = np.float32(-8.0)


@kernel
def quantize_row_q4_0_ref(x, y):
    """``quantize_row_q4_0_ref``: one row of floats ``x`` (length a multiple of 32) into Q4_0 blocks ``y``."""
    nb = y.size // _Q4_0_BYTES
    qk = block_elements(x.size, nb)  # QK4_0
    for i in range(nb):
        xb = i * QK4_0
        yb = i * _Q4_0_BYTES
        amax = _ZERO
        max_ = _ZERO
        for j in range(qk):
            v = x[xb + j]
            if amax < abs(v):
                amax = abs(v)
                max_ = v
        d = max_ / _MINUS_8
        id_ = _ONE / d if d != _ZERO else _ZERO
        store_fp16(y, yb, d)
        for j in range(qk // 2):
            xi0 = min(15, int8_of(c_float_to_int(x[xb + j] * id_ + _EIGHT_HALF))) & 0xFF
            xi1 = min(15, int8_of(c_float_to_int(x[xb + qk // 2 + j] * id_ + _EIGHT_HALF))) & 0xFF
            y[yb + 2 + j] = (xi0 | (xi1 << 4)) & 0xFF


@kernel
def quantize_row_q4_0_impl(x, y, quant_weights):
    """``quantize_row_q4_0_impl`` with an importance matrix: per block ``d = make_qx_quants(32, 8, x, L, 1, w)``."""
    weight = np.empty(x.size, np.float32)
    imatrix_weights(x, quant_weights, weight)
    nb = y.size // _Q4_0_BYTES
    qk = block_elements(x.size, nb)  # QK4_0
    L = np.empty(QK4_0, np.int32)
    for ib in range(nb):
        xb = ib * QK4_0
        yb = ib * _Q4_0_BYTES
        d = make_qx_quants(qk, 8, x[xb:xb + QK4_0], L, 1, weight[xb:xb + QK4_0])
        store_fp16(y, yb, d)
        for j in range(16):
            y[yb + 2 + j] = (L[j] | (L[j + 16] << 4)) & 0xFF


@kernel
def dequantize_row_q4_0(x, y):
    """``dequantize_row_q4_0``: ``y[j] = (q[j] - 8) * d``."""
    nb = x.size // _Q4_0_BYTES
    qk = block_elements(y.size, nb)  # QK4_0
    for i in range(nb):
        xb = i * _Q4_0_BYTES
        yb = i * QK4_0
        d = load_fp16(x, xb)
        for j in range(qk // 2):
            b = np.int32(x[xb + 2 + j])
            y[yb + j] = np.float32((b & 0x0F) - 8) * d
            y[yb + qk // 2 + j] = np.float32((b >> 4) - 8) * d


# ---------------------------------------------------------------------------------------------------------------------
# Q4_1 — 32 weights in 20 bytes: 5 bits per weight
#
#   byte  0    1    2    3    4    5         19
#       +---------+---------+----+----+ ... +----+
#       |  d fp16 |  m fp16 |qs0 |qs1 |     |qs15|      qs[j] = q[j] | q[j+16] << 4   (q in 0 … 15)
#       +---------+---------+----+----+ ... +----+
#
#   x[j] = d * q[j] + m
#
# Encode (quantize_row_q4_1_ref): m = min(x), d = (max(x) - min(x)) / 15; q = MIN(15, (int8_t)((x - m)*id + 0.5)),
# with the unrounded id = 1/d.  With an importance matrix (quantize_row_q4_1_impl): d and -m from
# make_qkx3_quants(nmax=15, rmin=-0.9, rdelta=0.05, nstep=36).
# ---------------------------------------------------------------------------------------------------------------------

_Q4_1_BYTES = 20
_FIFTEEN = np.float32(15.0)
_RMIN = np.float32(-0.9)
_RDELTA = np.float32(0.05)


@kernel
def quantize_row_q4_1_ref(x, y):
    """``quantize_row_q4_1_ref``: one row of floats into Q4_1 blocks."""
    nb = y.size // _Q4_1_BYTES
    qk = block_elements(x.size, nb)  # QK4_1
    for i in range(nb):
        xb = i * QK4_1
        yb = i * _Q4_1_BYTES
        min_ = _FLT_MAX
        max_ = -_FLT_MAX
        for j in range(qk):
            v = x[xb + j]
            if v < min_:
                min_ = v
            if v > max_:
                max_ = v
        d = (max_ - min_) / _FIFTEEN
        id_ = _ONE / d if d != _ZERO else _ZERO
        store_fp16(y, yb, d)
        store_fp16(y, yb + 2, min_)
        for j in range(qk // 2):
            xi0 = min(15, int8_of(c_float_to_int((x[xb + j] - min_) * id_ + _HALF))) & 0xFF
            xi1 = min(15, int8_of(c_float_to_int((x[xb + qk // 2 + j] - min_) * id_ + _HALF))) & 0xFF
            y[yb + 4 + j] = (xi0 | (xi1 << 4)) & 0xFF


@kernel
def quantize_row_q4_1_impl(x, y, quant_weights):
    """``quantize_row_q4_1_impl`` with an importance matrix: per block ``make_qkx3_quants(32, 15, …)``."""
    weight = np.empty(x.size, np.float32)
    imatrix_weights(x, quant_weights, weight)
    nb = y.size // _Q4_1_BYTES
    qk = block_elements(x.size, nb)  # QK4_1
    L = np.empty(QK4_1, np.int32)
    Laux = np.empty(QK4_1, np.int32)
    for ib in range(nb):
        xb = ib * QK4_1
        yb = ib * _Q4_1_BYTES
        d, the_min = make_qkx3_quants(qk, 15, x[xb:xb + QK4_1], weight[xb:xb + QK4_1], L, Laux, _RMIN,
                                      _RDELTA, 36, False)
        store_fp16(y, yb, d)
        store_fp16(y, yb + 2, -the_min)
        for j in range(16):
            y[yb + 4 + j] = (L[j] | (L[j + 16] << 4)) & 0xFF


@kernel
def dequantize_row_q4_1(x, y):
    """``dequantize_row_q4_1``: ``y[j] = q[j] * d + m`` (for NaN scales see
    :func:`~refllm.quants.common.add_first_nan`)."""
    nb = x.size // _Q4_1_BYTES
    qk = block_elements(y.size, nb)  # QK4_1
    for i in range(nb):
        xb = i * _Q4_1_BYTES
        yb = i * QK4_1
        d = load_fp16(x, xb)
        m = load_fp16(x, xb + 2)
        for j in range(qk // 2):
            b = np.int32(x[xb + 4 + j])
            y[yb + j] = add_first_nan(np.float32(b & 0x0F) * d, m)
            y[yb + qk // 2 + j] = add_first_nan(np.float32(b >> 4) * d, m)


# ---------------------------------------------------------------------------------------------------------------------
# Q5_0 — 32 weights in 22 bytes: 5.5 bits per weight
#
#   byte  0    1    2 .. 5          6    7         21
#       +---------+---------------+----+----+ ... +----+
#       |  d fp16 | qh (u32, LE)  |qs0 |qs1 |     |qs15|   qs[j] = (q[j] & 15) | (q[j+16] & 15) << 4
#       +---------+---------------+----+----+ ... +----+   bit j of qh = bit 4 of q[j]   (q in 0 … 31)
#
#   x[j] = d * (q[j] - 16)
#
# Encode (quantize_row_q5_0_ref): like Q4_0 with d = max / -16 and q = MIN(31, (int8_t)(x*id + 16.5)).
# With an importance matrix (quantize_row_q5_0_impl): d and q from make_qx_quants(nmax=16).
# ---------------------------------------------------------------------------------------------------------------------

_Q5_0_BYTES = 22
_SIXTEEN_HALF = np.float32(16.5)
_MINUS_16 = np.float32(-16.0)


@kernel
def quantize_row_q5_0_ref(x, y):
    """``quantize_row_q5_0_ref``: one row of floats into Q5_0 blocks."""
    nb = y.size // _Q5_0_BYTES
    qk = block_elements(x.size, nb)  # QK5_0
    for i in range(nb):
        xb = i * QK5_0
        yb = i * _Q5_0_BYTES
        amax = _ZERO
        max_ = _ZERO
        for j in range(qk):
            v = x[xb + j]
            if amax < abs(v):
                amax = abs(v)
                max_ = v
        d = max_ / _MINUS_16
        id_ = _ONE / d if d != _ZERO else _ZERO
        store_fp16(y, yb, d)
        qh = np.int64(0)
        for j in range(qk // 2):
            xi0 = min(31, int8_of(c_float_to_int(x[xb + j] * id_ + _SIXTEEN_HALF))) & 0xFF
            xi1 = min(31, int8_of(c_float_to_int(x[xb + qk // 2 + j] * id_ + _SIXTEEN_HALF))) & 0xFF
            y[yb + 6 + j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4)
            qh |= ((xi0 & 0x10) >> 4) << j
            qh |= ((xi1 & 0x10) >> 4) << (j + 16)
        store_u32(y, yb + 2, qh)


@kernel
def quantize_row_q5_0_impl(x, y, quant_weights):
    """``quantize_row_q5_0_impl`` with an importance matrix: per block ``d = make_qx_quants(32, 16, x, L, 1, w)``."""
    weight = np.empty(x.size, np.float32)
    imatrix_weights(x, quant_weights, weight)
    nb = y.size // _Q5_0_BYTES
    qk = block_elements(x.size, nb)  # QK5_0
    L = np.empty(QK5_0, np.int32)
    for ib in range(nb):
        xb = ib * QK5_0
        yb = ib * _Q5_0_BYTES
        d = make_qx_quants(qk, 16, x[xb:xb + QK5_0], L, 1, weight[xb:xb + QK5_0])
        store_fp16(y, yb, d)
        qh = np.int64(0)
        for j in range(16):
            xi0 = L[j]
            xi1 = L[j + 16]
            y[yb + 6 + j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4)
            qh |= ((xi0 & 0x10) >> 4) << j
            qh |= ((xi1 & 0x10) >> 4) << (j + 16)
        store_u32(y, yb + 2, qh)


@kernel
def dequantize_row_q5_0(x, y):
    """``dequantize_row_q5_0``: ``y[j] = ((nibble | high bit << 4) - 16) * d``."""
    nb = x.size // _Q5_0_BYTES
    qk = block_elements(y.size, nb)  # QK5_0
    for i in range(nb):
        xb = i * _Q5_0_BYTES
        yb = i * QK5_0
        d = load_fp16(x, xb)
        qh = load_u32(x, xb + 2)
        for j in range(qk // 2):
            b = np.int32(x[xb + 6 + j])
            xh_0 = np.int32(((qh >> j) << 4) & 0x10)
            xh_1 = np.int32((qh >> (j + 12)) & 0x10)
            y[yb + j] = np.float32(((b & 0x0F) | xh_0) - 16) * d
            y[yb + qk // 2 + j] = np.float32(((b >> 4) | xh_1) - 16) * d


# ---------------------------------------------------------------------------------------------------------------------
# Q5_1 — 32 weights in 24 bytes: 6 bits per weight
#
#   byte  0    1    2    3    4 .. 7          8         23
#       +---------+---------+---------------+----+ ... +----+
#       |  d fp16 |  m fp16 | qh (u32, LE)  |qs0 |     |qs15|   packed as in Q5_0   (q in 0 … 31)
#       +---------+---------+---------------+----+ ... +----+
#
#   x[j] = d * q[j] + m
#
# Encode (quantize_row_q5_1_ref): like Q4_1 with d = (max - min) / 31 and q = (uint8_t)((x - m)*id + 0.5) — no
# clamp.  With an importance matrix (quantize_row_q5_1_impl): make_qkx3_quants(nmax=31, -0.9, 0.05, 36).
# ---------------------------------------------------------------------------------------------------------------------

_Q5_1_BYTES = 24
_THIRTY_ONE = np.float32(31.0)


@kernel
def quantize_row_q5_1_ref(x, y):
    """``quantize_row_q5_1_ref``: one row of floats into Q5_1 blocks."""
    nb = y.size // _Q5_1_BYTES
    qk = block_elements(x.size, nb)  # QK5_1
    for i in range(nb):
        xb = i * QK5_1
        yb = i * _Q5_1_BYTES
        min_ = _FLT_MAX
        max_ = -_FLT_MAX
        for j in range(qk):
            v = x[xb + j]
            if v < min_:
                min_ = v
            if v > max_:
                max_ = v
        d = (max_ - min_) / _THIRTY_ONE
        id_ = _ONE / d if d != _ZERO else _ZERO
        store_fp16(y, yb, d)
        store_fp16(y, yb + 2, min_)
        qh = np.int64(0)
        for j in range(qk // 2):
            xi0 = c_float_to_int((x[xb + j] - min_) * id_ + _HALF) & 0xFF
            xi1 = c_float_to_int((x[xb + qk // 2 + j] - min_) * id_ + _HALF) & 0xFF
            y[yb + 8 + j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4)
            qh |= ((xi0 & 0x10) >> 4) << j
            qh |= ((xi1 & 0x10) >> 4) << (j + 16)
        store_u32(y, yb + 4, qh)


@kernel
def quantize_row_q5_1_impl(x, y, quant_weights):
    """``quantize_row_q5_1_impl`` with an importance matrix: per block ``make_qkx3_quants(32, 31, …)``."""
    weight = np.empty(x.size, np.float32)
    imatrix_weights(x, quant_weights, weight)
    nb = y.size // _Q5_1_BYTES
    qk = block_elements(x.size, nb)  # QK5_1
    L = np.empty(QK5_1, np.int32)
    Laux = np.empty(QK5_1, np.int32)
    for ib in range(nb):
        xb = ib * QK5_1
        yb = ib * _Q5_1_BYTES
        d, the_min = make_qkx3_quants(qk, 31, x[xb:xb + QK5_1], weight[xb:xb + QK5_1], L, Laux, _RMIN,
                                      _RDELTA, 36, False)
        store_fp16(y, yb, d)
        store_fp16(y, yb + 2, -the_min)
        qh = np.int64(0)
        for j in range(16):
            xi0 = L[j]
            xi1 = L[j + 16]
            y[yb + 8 + j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4)
            qh |= ((xi0 & 0x10) >> 4) << j
            qh |= ((xi1 & 0x10) >> 4) << (j + 16)
        store_u32(y, yb + 4, qh)


@kernel
def dequantize_row_q5_1(x, y):
    """``dequantize_row_q5_1``: ``y[j] = (nibble | high bit << 4) * d + m`` (see
    :func:`~refllm.quants.common.add_first_nan`)."""
    nb = x.size // _Q5_1_BYTES
    qk = block_elements(y.size, nb)  # QK5_1
    for i in range(nb):
        xb = i * _Q5_1_BYTES
        yb = i * QK5_1
        d = load_fp16(x, xb)
        m = load_fp16(x, xb + 2)
        qh = load_u32(x, xb + 4)
        for j in range(qk // 2):
            b = np.int32(x[xb + 8 + j])
            xh_0 = np.int32(((qh >> j) << 4) & 0x10)
            xh_1 = np.int32((qh >> (j + 12)) & 0x10)
            y[yb + j] = add_first_nan(np.float32((b & 0x0F) | xh_0) * d, m)
            y[yb + qk // 2 + j] = add_first_nan(np.float32((b >> 4) | xh_1) * d, m)


# ---------------------------------------------------------------------------------------------------------------------
# Q8_0 — 32 weights in 34 bytes: 8.5 bits per weight
#
#   byte  0    1    2    3         33
#       +---------+----+----+ ... +----+
#       |  d fp16 |qs0 |qs1 |     |qs31|      qs[j]: int8 (two's complement)
#       +---------+----+----+ ... +----+
#
#   x[j] = d * qs[j]
#
# Encode (quantize_row_q8_0_ref): amax = max |x| (C's MAX macro); d = amax / 127; qs = roundf(x * id) with the
# unrounded id = 1/d (roundf: halves away from zero).  The importance matrix is ignored.
# ---------------------------------------------------------------------------------------------------------------------

_Q8_0_BYTES = 34
_127 = np.float32(127.0)


@kernel
def quantize_row_q8_0_ref(x, y):
    """``quantize_row_q8_0_ref``: one row of floats into Q8_0 blocks (also the activation quantizer)."""
    nb = y.size // _Q8_0_BYTES
    qk = block_elements(x.size, nb)  # QK8_0
    for i in range(nb):
        xb = i * QK8_0
        yb = i * _Q8_0_BYTES
        amax = _ZERO
        for j in range(qk):
            v = abs(x[xb + j])
            amax = amax if amax > v else v  # MAX(amax, fabsf(v)): a NaN amax is replaced by the next element
        d = amax / _127
        id_ = _ONE / d if d != _ZERO else _ZERO
        store_fp16(y, yb, d)
        for j in range(qk):
            y[yb + 2 + j] = c_float_to_int(roundf(x[xb + j] * id_)) & 0xFF


@kernel
def dequantize_row_q8_0(x, y):
    """``dequantize_row_q8_0``: ``y[j] = qs[j] * d``."""
    qs = x.view(np.int8)
    nb = x.size // _Q8_0_BYTES
    qk = block_elements(y.size, nb)  # QK8_0
    for i in range(nb):
        xb = i * _Q8_0_BYTES
        yb = i * QK8_0
        d = load_fp16(x, xb)
        for j in range(qk):
            y[yb + j] = np.float32(qs[xb + 2 + j]) * d


# ---------------------------------------------------------------------------------------------------------------------
# Q8_1 — 32 weights in 36 bytes: 9 bits per weight (an activation format: never stored in model files)
#
#   byte  0    1    2    3    4    5         35
#       +---------+---------+----+----+ ... +----+
#       |  d fp16 |  s fp16 |qs0 |qs1 |     |qs31|      qs[j]: int8;  s = fp16(d * Σ qs)
#       +---------+---------+----+----+ ... +----+
#
#   x[j] = d * qs[j]        (refllm's decoder: ggml has none)
#
# Encode (quantize_row_q8_1_ref): as Q8_0, plus s = GGML_FP32_TO_FP16((float)Σqs * d) with the unrounded d.
# The precomputed d·Σqs lets the Q4_1/Q5_1 dot products add the offset term m·Σx in one multiply.
# ---------------------------------------------------------------------------------------------------------------------

_Q8_1_BYTES = 36


@kernel
def quantize_row_q8_1_ref(x, y):
    """``quantize_row_q8_1_ref``: one row of floats into Q8_1 blocks (the activations of Q4_1/Q5_1 dot products)."""
    nb = y.size // _Q8_1_BYTES
    qk = block_elements(x.size, nb)  # QK8_1
    for i in range(nb):
        xb = i * QK8_1
        yb = i * _Q8_1_BYTES
        amax = _ZERO
        for j in range(qk):
            v = abs(x[xb + j])
            amax = amax if amax > v else v  # MAX(amax, fabsf(v))
        d = amax / _127
        id_ = _ONE / d if d != _ZERO else _ZERO
        store_fp16(y, yb, d)
        sum_ = 0
        for j in range(qk):
            q = int8_of(c_float_to_int(roundf(x[xb + j] * id_)))
            y[yb + 4 + j] = q & 0xFF
            sum_ += q
        store_fp16(y, yb + 2, np.float32(sum_) * d)


@kernel
def dequantize_row_q8_1(x, y):
    """refllm's Q8_1 decoder (ggml has none): ``y[j] = qs[j] * d``; the stored ``s`` is not used."""
    qs = x.view(np.int8)
    nb = x.size // _Q8_1_BYTES
    qk = block_elements(y.size, nb)  # QK8_1
    for i in range(nb):
        xb = i * _Q8_1_BYTES
        yb = i * QK8_1
        d = load_fp16(x, xb)
        for j in range(qk):
            y[yb + j] = np.float32(qs[xb + 4 + j]) * d


# -- the row-parallel entry points (registry calling convention) ------------------------------------------------------


@parallel_kernel
def quantize_q4_0(x, imatrix, out):
    """``quantize_q4_0``: the ref quantizer, or ``quantize_row_q4_0_impl`` per row when an imatrix is given."""
    for r in prange(x.shape[0]):
        if imatrix.size == 0:
            quantize_row_q4_0_ref(x[r], out[r])
        else:
            quantize_row_q4_0_impl(x[r], out[r], imatrix)


@parallel_kernel
def quantize_q4_1(x, imatrix, out):
    """``quantize_q4_1``: the ref quantizer, or ``quantize_row_q4_1_impl`` per row when an imatrix is given."""
    for r in prange(x.shape[0]):
        if imatrix.size == 0:
            quantize_row_q4_1_ref(x[r], out[r])
        else:
            quantize_row_q4_1_impl(x[r], out[r], imatrix)


@parallel_kernel
def quantize_q5_0(x, imatrix, out):
    """``quantize_q5_0``: the ref quantizer, or ``quantize_row_q5_0_impl`` per row when an imatrix is given."""
    for r in prange(x.shape[0]):
        if imatrix.size == 0:
            quantize_row_q5_0_ref(x[r], out[r])
        else:
            quantize_row_q5_0_impl(x[r], out[r], imatrix)


@parallel_kernel
def quantize_q5_1(x, imatrix, out):
    """``quantize_q5_1``: the ref quantizer, or ``quantize_row_q5_1_impl`` per row when an imatrix is given."""
    for r in prange(x.shape[0]):
        if imatrix.size == 0:
            quantize_row_q5_1_ref(x[r], out[r])
        else:
            quantize_row_q5_1_impl(x[r], out[r], imatrix)


@parallel_kernel
def quantize_q8_0(x, imatrix, out):
    """``quantize_q8_0``: the ref quantizer on every row (an importance matrix is ignored, as in ggml)."""
    for r in prange(x.shape[0]):
        quantize_row_q8_0_ref(x[r], out[r])


@parallel_kernel
def quantize_q8_1(x, imatrix, out):
    """``quantize_row_q8_1_ref`` on every row."""
    for r in prange(x.shape[0]):
        quantize_row_q8_1_ref(x[r], out[r])


@parallel_kernel
def dequantize_q4_0(q, out):
    for r in prange(q.shape[0]):
        dequantize_row_q4_0(q[r], out[r])


@parallel_kernel
def dequantize_q4_1(q, out):
    for r in prange(q.shape[0]):
        dequantize_row_q4_1(q[r], out[r])


@parallel_kernel
def dequantize_q5_0(q, out):
    for r in prange(q.shape[0]):
        dequantize_row_q5_0(q[r], out[r])


@parallel_kernel
def dequantize_q5_1(q, out):
    for r in prange(q.shape[0]):
        dequantize_row_q5_1(q[r], out[r])


@parallel_kernel
def dequantize_q8_0(q, out):
    for r in prange(q.shape[0]):
        dequantize_row_q8_0(q[r], out[r])


@parallel_kernel
def dequantize_q8_1(q, out):
    for r in prange(q.shape[0]):
        dequantize_row_q8_1(q[r], out[r])


FORMATS = [
    BlockFormat(GGMLType.Q4_0, quantize=quantize_q4_0, dequantize=dequantize_q4_0, imatrix=Imatrix.OPTIONAL,
                finite_only=True),
    BlockFormat(GGMLType.Q4_1, quantize=quantize_q4_1, dequantize=dequantize_q4_1, imatrix=Imatrix.OPTIONAL,
                finite_only=True),
    BlockFormat(GGMLType.Q5_0, quantize=quantize_q5_0, dequantize=dequantize_q5_0, imatrix=Imatrix.OPTIONAL,
                finite_only=True),
    BlockFormat(GGMLType.Q5_1, quantize=quantize_q5_1, dequantize=dequantize_q5_1, imatrix=Imatrix.OPTIONAL,
                finite_only=True),
    BlockFormat(GGMLType.Q8_0, quantize=quantize_q8_0, dequantize=dequantize_q8_0, imatrix=Imatrix.IGNORED,
                finite_only=False),
    # Q8_1 is not a ggml_quantize_chunk type (no imatrix path at all); its decoder is refllm's own.
    BlockFormat(GGMLType.Q8_1, quantize=quantize_q8_1, dequantize=dequantize_q8_1, imatrix=Imatrix.NONE,
                finite_only=False),
]
