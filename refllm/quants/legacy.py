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
weighted scale search ``make_qx_quants`` and Q4_1/Q5_1 the weighted scale-and-min search ``make_qkx3_quants``, both
with weights ``qw[j] * sqrt(sigma2 + x[j]**2)`` (``sigma2`` = mean of ``x**2`` over the whole row).  Q8_0 ignores
the importance matrix.

**C conversions out of range.**  ggml's casts ``(int8_t)f``, ``(uint8_t)f`` and the store of ``roundf(f)`` into an
``int8_t`` are undefined in C when ``f`` is NaN, ±inf or too large.  They are reached with finite input too: in a
block of tiny values (magnitudes below about 1e-37) ``d`` can be so small that ``1/d`` overflows to ``inf``, and
``x * id`` is then ±inf, or NaN for ``x = 0``.  The reference
build is x86-64, where gcc compiles them to ``cvttss2si``/``cvttps2dq`` followed by keeping the low byte; those
instructions return 0x80000000 ("integer indefinite") for NaN and out-of-range values, so the byte is 0.
:func:`c_float_to_int` states that behaviour explicitly, so refllm's bytes equal the reference bytes for every
finite input — and, for Q8_0 and Q8_1, for NaN and ±inf too.

**NaN and ±inf.**  Q8_0 and Q8_1 are matched bit for bit (``finite_only=False``): ``MAX(amax, NaN)`` is NaN, the
next element replaces it, a NaN or infinite ``d`` is stored as an fp16 NaN/inf and every NaN product is converted
to the byte 0 as above.  Q4_0…Q5_1 reject NaN and ±inf (``finite_only=True``): on the importance-matrix path several
NaNs meet in one addition, and which payload (and sign, which reaches the stored fp16 NaN) survives depends on the
operand order the C compiler picked, not on the C source.

**Speed.**  Two rewrites keep the arithmetic (and so the bits) of ggml but let LLVM vectorize: the hot loops take
their trip count as a run-time value (:func:`block_elements`), and the scale searches form each trial's products in
one loop and add them, in element order, in a second one (:func:`make_qx_quants`, :func:`make_qkx3_quants`).
"""

from __future__ import annotations

import numpy as np

from ..ggml_types import GGMLType
from ..jit import float32_bits, float32_from_bits, kernel, parallel_kernel, prange
from .common import fp32_to_fp16, nearest_int
from .registry import BlockFormat, Imatrix

QK4_0 = 32
QK4_1 = 32
QK5_0 = 32
QK5_1 = 32
QK8_0 = 32
QK8_1 = 32

GROUP_MAX_EPS = np.float32(1e-15)

_ZERO = np.float32(0.0)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_TWO_23 = np.float32(2.0**23)
_INT32_MIN_F = np.float32(-(2.0**31))
_INT32_LIMIT_F = np.float32(2.0**31)
_FLT_MAX = np.float32(np.finfo(np.float32).max)
_P1 = np.float32(0.1)  # 0.1f


# -- scalar helpers (C semantics) -------------------------------------------------------------------------------------


@kernel
def c_float_to_int(v):
    """C's ``(int)v`` for a float32 ``v`` as the x86-64 reference computes it (``cvttss2si``): truncation toward
    zero; NaN, ±inf and values outside the int32 range give ``-2**31`` (x86's "integer indefinite").

    The narrower casts ``(int8_t)v`` and ``(uint8_t)v`` compile to this followed by keeping the low 8 bits, so for
    the out-of-range cases they give 0.
    """
    if v >= _INT32_MIN_F and v < _INT32_LIMIT_F:
        return np.int32(v)
    return np.int32(-2147483648)


@kernel
def int8_of(i):
    """The C conversion of an int to ``int8_t``: the low 8 bits, read as a signed number."""
    return ((i + 128) & 0xFF) - 128


@kernel
def roundf(v):
    """C's ``roundf``: the nearest integer as a float32, halves rounded away from zero (not to even).

    ``v - trunc(v)`` is exact for ``|v| < 2**23``; larger floats, ±inf and NaN are integral (or NaN) already and
    pass through.  The sign of a zero result follows ``v`` as in C.
    """
    if abs(v) < _TWO_23:
        t = np.float32(np.int32(v))  # trunc(v)
        f = v - t
        if f >= _HALF:
            t = t + _ONE
        elif f <= -_HALF:
            t = t - _ONE
        if t == _ZERO:
            return v * _ZERO  # ±0 with the sign of v
        return t
    return v


@kernel
def load_u16(y, o):
    """The little-endian uint16 at byte offset ``o`` of a uint8 array."""
    return np.int32(y[o]) | (np.int32(y[o + 1]) << 8)


@kernel
def store_u16(y, o, h):
    """Write ``h`` (0 … 65535) little-endian at byte offset ``o`` of a uint8 array."""
    y[o] = h & 0xFF
    y[o + 1] = (h >> 8) & 0xFF


@kernel
def store_u32(y, o, w):
    """Write ``w`` (0 … 2**32-1) little-endian at byte offset ``o`` of a uint8 array."""
    y[o] = w & 0xFF
    y[o + 1] = (w >> 8) & 0xFF
    y[o + 2] = (w >> 16) & 0xFF
    y[o + 3] = (w >> 24) & 0xFF


@kernel
def load_u32(y, o):
    """The little-endian uint32 at byte offset ``o`` of a uint8 array, as a non-negative int64."""
    return (np.int64(y[o]) | (np.int64(y[o + 1]) << 8) | (np.int64(y[o + 2]) << 16)
            | (np.int64(y[o + 3]) << 24))


_EXP_OFFSET = 0xE0 << 23
_EXP_SCALE = np.float32(2.0**-112)
_MAGIC_MASK = 126 << 23
_MAGIC_BIAS = np.float32(0.5)


@kernel
def ggml_compute_fp16_to_fp32(h):
    """``GGML_FP16_TO_FP32`` (ggml-impl.h), computed as ggml computes it: the float32 value of the half bits ``h``.

    Normal halves, infinities and NaNs: exponent and mantissa moved into a float32 whose exponent is 112 too large,
    times 2**-112 (exact; it also quiets a signaling NaN).  Subnormal halves: the mantissa under the exponent of 0.5,
    minus 0.5 (exact).  The same numbers as the table ``common.FP16_TO_FP32``; the decoders compute them because
    that is faster than a 256 KB table lookup per block.
    """
    w = np.int64(h) << 16
    sign = w & 0x80000000
    two_w = (w + w) & 0xFFFFFFFF
    normalized_value = float32_from_bits((two_w >> 4) + _EXP_OFFSET) * _EXP_SCALE
    denormalized_value = float32_from_bits((two_w >> 17) | _MAGIC_MASK) - _MAGIC_BIAS
    if two_w < (1 << 27):
        return float32_from_bits(sign | float32_bits(denormalized_value))
    return float32_from_bits(sign | float32_bits(normalized_value))


@kernel
def fp16_bits(d):
    """``GGML_FP32_TO_FP16(d)`` as an int."""
    return np.int32(fp32_to_fp16(d))


@kernel
def add_first_nan(a, b):
    """C's ``a + b`` as x86-64 computes it, including *which* NaN comes out: when both are NaN the result is ``a``'s
    (``addss`` returns its first operand).  LLVM treats a float addition as commutative and may emit ``b + a``, which
    is the same number in every other case, so the rule is written out here.  Used where two NaNs can meet: the
    decoders' ``q*d + m`` with an fp16 NaN in both ``d`` and ``m``.
    """
    return a if a != a else a + b


@kernel
def block_elements(n, nb):
    """``n // nb``: the number of elements per block of a row of ``n`` elements in ``nb`` blocks (32 for every
    legacy format), computed at run time on purpose.

    Numba runs LLVM without its SLP vectorizer, and LLVM's full unroller turns a loop with a constant trip count of
    16 or 32 into straight-line scalar code before the loop vectorizer sees it.  With the trip count a run-time value
    the loop stays a loop and is vectorized (2-3× faster decoders).  The arithmetic is unchanged.
    """
    return n // nb if nb > 0 else 0


# -- the importance-matrix scale searches -----------------------------------------------------------------------------


@kernel
def make_qx_quants(n, nmax, x, L, qw, wxl, wll):
    """ggml's ``make_qx_quants(n, nmax, x, L, rmse_type=1, qw)`` with weights ``qw`` (how Q4_0 and Q5_0 call it).

    A symmetric scale search: find ``max``, the first element of largest magnitude (with its sign).  Try
    ``iscale = -nmax / max`` and then ``-(nmax + 0.1*is) / max`` for ``is = -9 … 9`` (skipping 0); for each,
    ``l = clamp(nearest_int(iscale*x), -nmax, nmax-1)`` and the weighted least-squares scale ``Σwxl / Σwl²``; keep
    the one with the largest ``(Σwxl)² / Σwl²`` (strictly larger wins).  Fills ``L[i] = l + nmax`` (0 … 2·nmax-1) and
    returns the scale, so ``x ≈ scale * (L - nmax)``.  If every ``|x| < 1e-15``: ``L = 0`` and the scale is 0.
    ``wxl`` and ``wll`` are scratch arrays of length ``n`` for the products ``w·x·l`` and ``w·l·l``.
    """
    max_ = _ZERO
    amax = _ZERO
    for i in range(n):
        ax = abs(x[i])
        if ax > amax:
            amax = ax
            max_ = x[i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return _ZERO
    scale = _ZERO
    best = _ZERO
    for is_ in range(-10, 10):  # -10 stands for ggml's first guess; then is = -9 … 9 without 0
        if is_ == 0:
            continue
        if is_ == -10:
            iscale = np.float32(-nmax) / max_
        else:
            iscale = -(np.float32(nmax) + _P1 * np.float32(is_)) / max_
        # ggml forms the products and adds them in one loop; the products go to scratch arrays first (a loop LLVM
        # vectorizes) and are added in element order afterwards: the same operations in the same order, ~1.5× faster
        for i in range(n):
            fl = np.float32(max(-nmax, min(nmax - 1, nearest_int(iscale * x[i]))))
            wxl[i] = qw[i] * x[i] * fl
            wll[i] = qw[i] * fl * fl
        sumlx = _ZERO
        suml2 = _ZERO
        for i in range(n):
            sumlx += wxl[i]
            suml2 += wll[i]
        if is_ == -10:  # the first guess is taken unconditionally
            scale = sumlx / suml2 if suml2 != _ZERO else _ZERO
        elif suml2 > _ZERO and sumlx * sumlx > best * suml2:
            scale = sumlx / suml2
        else:
            continue
        best = scale * sumlx
        for i in range(n):
            L[i] = nmax + max(-nmax, min(nmax - 1, nearest_int(iscale * x[i])))
    return scale


@kernel
def make_qkx3_quants(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep, work):
    """ggml's ``make_qkx3_quants(n, nmax, x, weights, L, &the_min, Laux, rmin, rdelta, nstep, use_mad=false)``.

    An asymmetric (scale, min) search for ``x ≈ scale * L + min`` with ``L`` in ``0 … nmax`` and ``min <= 0``:
    start from ``min = min(x, 0)``, ``scale = (max - min) / nmax``; then for ``is = 0 … nstep`` (inclusive) round with
    ``iscale = (rmin + rdelta*is + nmax) / (max - min)``, solve the weighted least-squares problem for scale and
    min (clamping a positive min to 0), and keep it when its weighted squared error is strictly smaller.  Returns
    ``(scale, the_min)`` with ``the_min = -min`` (>= 0) — ggml returns it through a pointer.  ``work`` is a float32
    scratch array ``[3, n]`` for the products of each trial (see :func:`make_qx_quants` for why).
    """
    min_ = x[0]
    max_ = x[0]
    sum_w = weights[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        if x[i] < min_:
            min_ = x[i]
        if x[i] > max_:
            max_ = x[i]
        w = weights[i]
        sum_w += w
        sum_x += w * x[i]
    if min_ > _ZERO:
        min_ = _ZERO
    if max_ <= min_:
        for i in range(n):
            L[i] = 0
        return _ZERO, -min_
    iscale = np.float32(nmax) / (max_ - min_)
    scale = _ONE / iscale
    best_mad = _ZERO
    for i in range(n):
        l = nearest_int(iscale * (x[i] - min_))
        L[i] = max(0, min(nmax, l))
        diff = scale * np.float32(L[i]) + min_ - x[i]
        diff = diff * diff
        best_mad += weights[i] * diff
    if nstep < 1:
        return scale, -min_
    for is_ in range(nstep + 1):
        iscale = (rmin + rdelta * np.float32(is_) + np.float32(nmax)) / (max_ - min_)
        wl = work[0]
        wll = work[1]
        wlx = work[2]
        for i in range(n):  # the products (vectorized) …
            l = max(0, min(nmax, nearest_int(iscale * (x[i] - min_))))
            Laux[i] = l
            fl = np.float32(l)
            wl[i] = weights[i] * fl
            wll[i] = weights[i] * fl * fl
            wlx[i] = weights[i] * fl * x[i]
        sum_l = _ZERO
        sum_l2 = _ZERO
        sum_xl = _ZERO
        for i in range(n):  # … then the sums, in element order as in ggml
            sum_l += wl[i]
            sum_l2 += wll[i]
            sum_xl += wlx[i]
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > _ZERO:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > _ZERO:
                this_min = _ZERO
                this_scale = sum_xl / sum_l2
            wdd = work[0]
            for i in range(n):
                diff = this_scale * np.float32(Laux[i]) + this_min - x[i]
                wdd[i] = weights[i] * (diff * diff)
            mad = _ZERO
            for i in range(n):
                mad += wdd[i]
            if mad < best_mad:
                for i in range(n):
                    L[i] = Laux[i]
                best_mad = mad
                scale = this_scale
                min_ = this_min
    return scale, -min_


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
        store_u16(y, yb, fp16_bits(d))
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
    wxl = np.empty(QK4_0, np.float32)
    wll = np.empty(QK4_0, np.float32)
    for ib in range(nb):
        xb = ib * QK4_0
        yb = ib * _Q4_0_BYTES
        d = make_qx_quants(qk, 8, x[xb:xb + QK4_0], L, weight[xb:xb + QK4_0], wxl, wll)
        store_u16(y, yb, fp16_bits(d))
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
        d = ggml_compute_fp16_to_fp32(load_u16(x, xb))
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
        store_u16(y, yb, fp16_bits(d))
        store_u16(y, yb + 2, fp16_bits(min_))
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
    work = np.empty((3, QK4_1), np.float32)
    for ib in range(nb):
        xb = ib * QK4_1
        yb = ib * _Q4_1_BYTES
        d, the_min = make_qkx3_quants(qk, 15, x[xb:xb + QK4_1], weight[xb:xb + QK4_1], L, Laux, _RMIN,
                                      _RDELTA, 36, work)
        store_u16(y, yb, fp16_bits(d))
        store_u16(y, yb + 2, fp16_bits(-the_min))
        for j in range(16):
            y[yb + 4 + j] = (L[j] | (L[j + 16] << 4)) & 0xFF


@kernel
def dequantize_row_q4_1(x, y):
    """``dequantize_row_q4_1``: ``y[j] = q[j] * d + m`` (see :func:`add_first_nan` for NaN scales)."""
    nb = x.size // _Q4_1_BYTES
    qk = block_elements(y.size, nb)  # QK4_1
    for i in range(nb):
        xb = i * _Q4_1_BYTES
        yb = i * QK4_1
        d = ggml_compute_fp16_to_fp32(load_u16(x, xb))
        m = ggml_compute_fp16_to_fp32(load_u16(x, xb + 2))
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
        store_u16(y, yb, fp16_bits(d))
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
    wxl = np.empty(QK5_0, np.float32)
    wll = np.empty(QK5_0, np.float32)
    for ib in range(nb):
        xb = ib * QK5_0
        yb = ib * _Q5_0_BYTES
        d = make_qx_quants(qk, 16, x[xb:xb + QK5_0], L, weight[xb:xb + QK5_0], wxl, wll)
        store_u16(y, yb, fp16_bits(d))
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
        d = ggml_compute_fp16_to_fp32(load_u16(x, xb))
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
        store_u16(y, yb, fp16_bits(d))
        store_u16(y, yb + 2, fp16_bits(min_))
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
    work = np.empty((3, QK5_1), np.float32)
    for ib in range(nb):
        xb = ib * QK5_1
        yb = ib * _Q5_1_BYTES
        d, the_min = make_qkx3_quants(qk, 31, x[xb:xb + QK5_1], weight[xb:xb + QK5_1], L, Laux, _RMIN,
                                      _RDELTA, 36, work)
        store_u16(y, yb, fp16_bits(d))
        store_u16(y, yb + 2, fp16_bits(-the_min))
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
    """``dequantize_row_q5_1``: ``y[j] = (nibble | high bit << 4) * d + m`` (see :func:`add_first_nan`)."""
    nb = x.size // _Q5_1_BYTES
    qk = block_elements(y.size, nb)  # QK5_1
    for i in range(nb):
        xb = i * _Q5_1_BYTES
        yb = i * QK5_1
        d = ggml_compute_fp16_to_fp32(load_u16(x, xb))
        m = ggml_compute_fp16_to_fp32(load_u16(x, xb + 2))
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
        store_u16(y, yb, fp16_bits(d))
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
        d = ggml_compute_fp16_to_fp32(load_u16(x, xb))
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
        store_u16(y, yb, fp16_bits(d))
        sum_ = 0
        for j in range(qk):
            q = int8_of(c_float_to_int(roundf(x[xb + j] * id_)))
            y[yb + 4 + j] = q & 0xFF
            sum_ += q
        store_u16(y, yb + 2, fp16_bits(np.float32(sum_) * d))


@kernel
def dequantize_row_q8_1(x, y):
    """refllm's Q8_1 decoder (ggml has none): ``y[j] = qs[j] * d``; the stored ``s`` is not used."""
    qs = x.view(np.int8)
    nb = x.size // _Q8_1_BYTES
    qk = block_elements(y.size, nb)  # QK8_1
    for i in range(nb):
        xb = i * _Q8_1_BYTES
        yb = i * QK8_1
        d = ggml_compute_fp16_to_fp32(load_u16(x, xb))
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
