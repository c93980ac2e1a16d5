"""The kernels of the ``ggml`` numeric mode: the arithmetic of llama.cpp's CPU backend, read from ggml's C.

What changes against the ``f32`` mode (:mod:`refllm.model.kernels`):

* **Matrix products** (``ggml_compute_forward_mul_mat``).  The activation rows are first converted to the weight
  type's ``vec_dot_type`` (``type_traits_cpu[type].vec_dot_type`` in ggml-cpu.c) — Q8_K for the K-quants, Q8_0 for
  Q4_0 / Q5_0 / Q8_0, Q8_1 for Q4_1 / Q5_1, F16 for F16, BF16 for BF16, nothing for F32 — and then every output is
  ``ggml_vec_dot_<weight>_<activation>``: integer sums over the quantized values inside a block, one float
  multiply-add per block.  The activation quantizers are the ones the x86 build runs (:func:`quantize_row_q8_0_x86`
  and :func:`quantize_row_q8_1_x86` — AVX, round-half-even and ``127 / max``; Q8_K is ``quantize_row_q8_K_ref``).
  The dot products are ggml's portable C (``ggml_vec_dot_*_generic`` in ggml-cpu/quants.c, ``ggml_vec_dot_f16`` …
  in vec.cpp without SIMD), evaluated as C says: each operation rounded to float32, in source order.
* **RoPE angles** as ``ggml_rope_cache_init``: ``θ`` starts at ``p`` and is multiplied by
  ``theta_scale = powf(base, -2/n_rot)`` once per pair; ``cosf(θ / ff) · m``.
* **Attention** as ``ggml_compute_forward_flash_attn_ext_f16_one_chunk`` (llama.cpp enables flash attention on the
  CPU by default): K and V cached in F16, Q (already scaled by ``1/sqrt(D)``) rounded to F16, ``K·Q`` summed in
  float64, an online softmax whose value accumulator is F16 — rounded to half precision after every key.

Where the reference build differs: its SIMD code sums the float parts in other orders and fuses multiply-adds
(gcc ``-march=native``, ``-ffp-contract=fast``); it uses other algorithms for some batch shapes (tiled flash
attention for 64 or more queries, a KV-split one for one query over 512 or more keys, llamafile's sgemm and
repacked weights for prefill); and its SiLU and softmax exponentials are vector approximations (``ggml_v_expf``).
Those are float-rounding differences (about 1e-7), but a later rounding to F16 or Q8 sometimes turns one into a
whole grid step (see docs/phi3.md, "How close each mode is to llama.cpp").  Everything quantized — activations,
integer sums, the F16 KV cache and accumulator — is reproduced exactly.
"""

from __future__ import annotations

import numpy as np

from ..ggml_types import QK_K, TYPE_SIZES, GGMLType
from ..jit import float32_bits, float32_from_bits, kernel, parallel_kernel, prange
from ..quants.common import (
    FP16_TO_FP32,
    bf16_to_fp32,
    fp32_to_bf16,
    fp32_to_fp16,
    nearest_int,
)
from ..quants.k_quants import get_scale_min_k4, quantize_row_q8_K_ref

# ggml type ids as plain ints (Numba compares them as constants)
_F32 = int(GGMLType.F32)
_F16 = int(GGMLType.F16)
_BF16 = int(GGMLType.BF16)
_Q4_0 = int(GGMLType.Q4_0)
_Q4_1 = int(GGMLType.Q4_1)
_Q5_0 = int(GGMLType.Q5_0)
_Q5_1 = int(GGMLType.Q5_1)
_Q8_0 = int(GGMLType.Q8_0)
_Q8_1 = int(GGMLType.Q8_1)
_Q2_K = int(GGMLType.Q2_K)
_Q3_K = int(GGMLType.Q3_K)
_Q4_K = int(GGMLType.Q4_K)
_Q5_K = int(GGMLType.Q5_K)
_Q6_K = int(GGMLType.Q6_K)
_Q8_K = int(GGMLType.Q8_K)

# type_traits_cpu[type].vec_dot_type (ggml-cpu.c)
VEC_DOT_TYPE = {
    GGMLType.F32: GGMLType.F32, GGMLType.F16: GGMLType.F16, GGMLType.BF16: GGMLType.BF16,
    GGMLType.Q4_0: GGMLType.Q8_0, GGMLType.Q5_0: GGMLType.Q8_0, GGMLType.Q8_0: GGMLType.Q8_0,
    GGMLType.Q4_1: GGMLType.Q8_1, GGMLType.Q5_1: GGMLType.Q8_1,
    GGMLType.Q2_K: GGMLType.Q8_K, GGMLType.Q3_K: GGMLType.Q8_K, GGMLType.Q4_K: GGMLType.Q8_K,
    GGMLType.Q5_K: GGMLType.Q8_K, GGMLType.Q6_K: GGMLType.Q8_K,
}

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)
_127 = np.float32(127.0)


# -- reading block fields ----------------------------------------------------------------------------------------


@kernel
def _f16(b, off):
    """The fp16 at byte ``off`` of ``b`` as float32 (``GGML_CPU_FP16_TO_FP32``)."""
    return FP16_TO_FP32[np.int64(b[off]) | (np.int64(b[off + 1]) << 8)]


@kernel
def _f32(b, off):
    """The float32 at byte ``off`` of ``b``."""
    return float32_from_bits(np.int64(b[off]) | (np.int64(b[off + 1]) << 8) | (np.int64(b[off + 2]) << 16)
                             | (np.int64(b[off + 3]) << 24))


@kernel
def _i8(v):
    """A byte read as ``int8_t``."""
    return (np.int64(v) ^ 128) - 128


@kernel
def _i16(b, off):
    """The little-endian ``int16_t`` at byte ``off``."""
    return ((np.int64(b[off]) | (np.int64(b[off + 1]) << 8)) ^ 0x8000) - 0x8000


@kernel
def _u32(b, off):
    return np.int64(b[off]) | (np.int64(b[off + 1]) << 8) | (np.int64(b[off + 2]) << 16) | (np.int64(b[off + 3]) << 24)


@kernel
def _put_u16(b, off, h):
    b[off] = np.int64(h) & 0xFF
    b[off + 1] = (np.int64(h) >> 8) & 0xFF


@kernel
def round_fp16(x):
    """``x`` rounded to half precision and back: ``GGML_CPU_FP16_TO_FP32(GGML_CPU_FP32_TO_FP16(x))``."""
    return FP16_TO_FP32[np.int64(fp32_to_fp16(x))]


# -- activations: from_float of the vec_dot_type -----------------------------------------------------------------


@kernel
def quantize_row_q8_0_x86(x, y):
    """``quantize_row_q8_0`` of ggml-cpu/arch/x86/quants.c (the AVX path the x86 build runs).

    Per block of 32: ``max = max|x|``, ``d = max / 127`` (stored as fp16), ``id = 127 / max`` (0 if max is 0),
    ``q = round_half_even(x · id)``.  (The portable ``quantize_row_q8_0_ref`` uses ``id = 1 / d`` and ``roundf``;
    the two differ for a few values.)
    """
    nb = x.shape[0] // 32
    for i in range(nb):
        xb = x[32 * i:32 * i + 32]
        amax = _ZERO
        for j in range(32):
            amax = max(amax, abs(xb[j]))
        d = amax / _127
        _put_u16(y, 34 * i, fp32_to_fp16(d))
        idv = _127 / amax if amax != _ZERO else _ZERO
        for j in range(32):
            y[34 * i + 2 + j] = nearest_int(xb[j] * idv) & 0xFF


@kernel
def quantize_row_q8_1_x86(x, y):
    """``quantize_row_q8_1`` of ggml-cpu/arch/x86/quants.c: as :func:`quantize_row_q8_0_x86`, plus
    ``s = fp16(d · Σq)`` with the unrounded ``d``."""
    nb = x.shape[0] // 32
    for i in range(nb):
        xb = x[32 * i:32 * i + 32]
        amax = _ZERO
        for j in range(32):
            amax = max(amax, abs(xb[j]))
        d = amax / _127
        _put_u16(y, 36 * i, fp32_to_fp16(d))
        idv = _127 / amax if amax != _ZERO else _ZERO
        total = 0
        for j in range(32):
            q = nearest_int(xb[j] * idv)
            total += q
            y[36 * i + 4 + j] = q & 0xFF
        _put_u16(y, 36 * i + 2, fp32_to_fp16(d * np.float32(total)))


@kernel
def from_float(vtype, x, y):
    """Convert one activation row ``x`` (float32 [n]) to the bytes ``y`` of ``vtype``, as ggml-cpu's
    ``type_traits_cpu[vtype].from_float`` does."""
    n = x.shape[0]
    if vtype == _F32:
        for i in range(n):
            bits = float32_bits(x[i])
            for k in range(4):
                y[4 * i + k] = (bits >> (8 * k)) & 0xFF
    elif vtype == _F16:
        for i in range(n):
            _put_u16(y, 2 * i, fp32_to_fp16(x[i]))
    elif vtype == _BF16:
        for i in range(n):
            _put_u16(y, 2 * i, fp32_to_bf16(x[i]))
    elif vtype == _Q8_0:
        quantize_row_q8_0_x86(x, y)
    elif vtype == _Q8_1:
        quantize_row_q8_1_x86(x, y)
    elif vtype == _Q8_K:
        quantize_row_q8_K_ref(x, y)
    else:
        raise ValueError("from_float: unsupported activation type")


@parallel_kernel
def quantize_activations(vtype, x, out):
    """``from_float`` of every row: ``x`` float32 [n_tok, n] -> ``out`` uint8 [n_tok, row_bytes(vtype, n)]."""
    for t in prange(x.shape[0]):
        from_float(vtype, x[t], out[t])


# -- dot products: ggml_vec_dot_<weight>_<activation> -------------------------------------------------------------


@kernel
def vec_dot_f32(x, y):
    """``ggml_vec_dot_f32`` (portable C): ``Σ (double)(x[i]·y[i])`` — float32 products, a float64 sum in order."""
    xf = x.view(np.float32)
    yf = y.view(np.float32)
    s = 0.0
    for i in range(xf.shape[0]):
        s += np.float64(xf[i] * yf[i])
    return np.float32(s)


@kernel
def vec_dot_f16(x, y):
    """``ggml_vec_dot_f16`` (portable C): the products of two halves are exact in float32; summed in float64."""
    s = 0.0
    for i in range(x.shape[0] // 2):
        s += np.float64(_f16(x, 2 * i) * _f16(y, 2 * i))
    return np.float32(s)


@kernel
def vec_dot_bf16(x, y):
    """``ggml_vec_dot_bf16`` (portable C): bf16 products in float32, summed in float64."""
    s = 0.0
    for i in range(x.shape[0] // 2):
        a = bf16_to_fp32(np.int64(x[2 * i]) | (np.int64(x[2 * i + 1]) << 8))
        b = bf16_to_fp32(np.int64(y[2 * i]) | (np.int64(y[2 * i + 1]) << 8))
        s += np.float64(a * b)
    return np.float32(s)


@kernel
def vec_dot_q8_0_q8_0(x, y):
    """``sumf += sumi · (dx · dy)`` per block of 32, ``sumi = Σ qx·qy``."""
    sumf = _ZERO
    for ib in range(x.shape[0] // 34):
        xb, yb = 34 * ib, 34 * ib
        sumi = 0
        for j in range(32):
            sumi += _i8(x[xb + 2 + j]) * _i8(y[yb + 2 + j])
        sumf += np.float32(sumi) * (_f16(x, xb) * _f16(y, yb))
    return sumf


@kernel
def vec_dot_q4_0_q8_0(x, y):
    """``sumf += (sumi · dx) · dy``; weights ``(nibble − 8)``, low nibbles with the first 16 activations."""
    sumf = _ZERO
    for ib in range(x.shape[0] // 18):
        xb, yb = 18 * ib, 34 * ib
        sumi0 = 0
        sumi1 = 0
        for j in range(16):
            v = np.int64(x[xb + 2 + j])
            sumi0 += ((v & 0x0F) - 8) * _i8(y[yb + 2 + j])
            sumi1 += ((v >> 4) - 8) * _i8(y[yb + 2 + 16 + j])
        sumf += (np.float32(sumi0 + sumi1) * _f16(x, xb)) * _f16(y, yb)
    return sumf


@kernel
def vec_dot_q4_1_q8_1(x, y):
    """``sumf += (dx · dy) · sumi + m · s`` (``s`` = the Q8_1 block's ``d · Σq``)."""
    sumf = _ZERO
    for ib in range(x.shape[0] // 20):
        xb, yb = 20 * ib, 36 * ib
        sumi0 = 0
        sumi1 = 0
        for j in range(16):
            v = np.int64(x[xb + 4 + j])
            sumi0 += (v & 0x0F) * _i8(y[yb + 4 + j])
            sumi1 += (v >> 4) * _i8(y[yb + 4 + 16 + j])
        sumf += (_f16(x, xb) * _f16(y, yb)) * np.float32(sumi0 + sumi1) + _f16(x, xb + 2) * _f16(y, yb + 2)
    return sumf


@kernel
def vec_dot_q5_0_q8_0(x, y):
    """``sumf += (dx · dy) · sumi``; weights ``(nibble | fifth bit << 4) − 16``."""
    sumf = _ZERO
    for ib in range(x.shape[0] // 22):
        xb, yb = 22 * ib, 34 * ib
        qh = _u32(x, xb + 2)
        sumi0 = 0
        sumi1 = 0
        for j in range(16):
            v = np.int64(x[xb + 6 + j])
            x0 = ((v & 0x0F) | (((qh >> j) & 1) << 4)) - 16
            x1 = ((v >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16
            sumi0 += x0 * _i8(y[yb + 2 + j])
            sumi1 += x1 * _i8(y[yb + 2 + 16 + j])
        sumf += (_f16(x, xb) * _f16(y, yb)) * np.float32(sumi0 + sumi1)
    return sumf


@kernel
def vec_dot_q5_1_q8_1(x, y):
    """``sumf += (dx · dy) · sumi + m · s``; weights ``nibble | fifth bit << 4``."""
    sumf = _ZERO
    for ib in range(x.shape[0] // 24):
        xb, yb = 24 * ib, 36 * ib
        qh = _u32(x, xb + 4)
        sumi0 = 0
        sumi1 = 0
        for j in range(16):
            v = np.int64(x[xb + 8 + j])
            x0 = (v & 0x0F) | (((qh >> j) & 1) << 4)
            x1 = (v >> 4) | (((qh >> (j + 16)) & 1) << 4)
            sumi0 += x0 * _i8(y[yb + 4 + j])
            sumi1 += x1 * _i8(y[yb + 4 + 16 + j])
        sumf += (_f16(x, xb) * _f16(y, yb)) * np.float32(sumi0 + sumi1) + _f16(x, xb + 2) * _f16(y, yb + 2)
    return sumf


@kernel
def _lane_sums(a, yb, scales, sub, aux32):
    """The integer part of the type-0/type-1 K-quant dot products, in ggml's eight lanes:
    ``aux32[l] = Σ_{e ≡ l (mod 8)} scales[e // sub] · a[e] · q8[e]`` over the 256 elements of a super-block."""
    for l in range(8):
        aux32[l] = 0
    for e in range(QK_K):
        aux32[e & 7] += scales[e // sub] * (a[e] * _i8(yb[4 + e]))


@kernel
def vec_dot_q2_K_q8_K(x, y):
    """``sumf += (dall · isum) − (dmin · summs)`` per super-block; ``isum = Σ sc · q · q8`` over 16 sub-blocks of
    16, ``summs = Σ bsums[j] · min_j``."""
    sumf = _ZERO
    for i in range(x.shape[0] // 84):
        xb = x[84 * i:84 * i + 84]
        yb = y[292 * i:292 * i + 292]
        summs = 0
        for j in range(16):
            summs += _i16(yb, 260 + 2 * j) * (np.int64(xb[j]) >> 4)
        dy = _f32(yb, 0)
        dall = dy * _f16(xb, 80)
        dmin = dy * _f16(xb, 82)
        isum = 0
        for k in range(2):  # two halves of 128
            for j in range(4):  # shift 2j
                for half in range(2):
                    sc = np.int64(xb[8 * k + 2 * j + half]) & 0xF
                    isuml = 0
                    for l in range(16 * half, 16 * half + 16):
                        q = (np.int64(xb[16 + 32 * k + l]) >> (2 * j)) & 3
                        isuml += _i8(yb[4 + 128 * k + 32 * j + l]) * q
                    isum += sc * isuml
        sumf += dall * np.float32(isum) - dmin * np.float32(summs)
    return sumf


@kernel
def _q3_K_scales(b, scales):
    """The 16 signed 6-bit scales of a Q3_K super-block (``auxs`` juggling of ggml), minus 32."""
    a0 = _u32(b, 96)
    a1 = _u32(b, 100)
    tmp = _u32(b, 104)
    aux = np.empty(4, np.int64)
    aux[0] = (a0 & 0x0F0F0F0F) | (((tmp >> 0) & 0x03030303) << 4)
    aux[1] = (a1 & 0x0F0F0F0F) | (((tmp >> 2) & 0x03030303) << 4)
    aux[2] = ((a0 >> 4) & 0x0F0F0F0F) | (((tmp >> 4) & 0x03030303) << 4)
    aux[3] = ((a1 >> 4) & 0x0F0F0F0F) | (((tmp >> 6) & 0x03030303) << 4)
    for j in range(16):
        scales[j] = ((aux[j // 4] >> (8 * (j % 4))) & 0xFF) - 32


@kernel
def vec_dot_q3_K_q8_K(x, y):
    """Eight float lanes ``sums[l] += d · aux32[l]`` (``d = dx · dy``), added in order at the end."""
    sums = np.zeros(8, np.float32)
    aux32 = np.empty(8, np.int64)
    a = np.empty(QK_K, np.int64)
    scales = np.empty(16, np.int64)
    for i in range(x.shape[0] // 110):
        xb = x[110 * i:110 * i + 110]
        yb = y[292 * i:292 * i + 292]
        for c in range(8):  # 8 chunks of 32: bits 2(c%4) of qs[32(c//4) + l], hmask bit c
            for l in range(32):
                q = (np.int64(xb[32 + 32 * (c // 4) + l]) >> (2 * (c % 4))) & 3
                a[32 * c + l] = q - (0 if (np.int64(xb[l]) >> c) & 1 else 4)
        _q3_K_scales(xb, scales)
        _lane_sums(a, yb, scales, 16, aux32)
        d = _f16(xb, 108) * _f32(yb, 0)
        for l in range(8):
            sums[l] += d * np.float32(aux32[l])
    sumf = _ZERO
    for l in range(8):
        sumf += sums[l]
    return sumf


@kernel
def _vec_dot_q45_K(x, y, type_size, qs_off, has_qh):
    """Q4_K (``has_qh`` false) and Q5_K: eight lanes ``sums[l] += d · aux32[l]``; the mins subtracted as
    ``sumf −= dmin · Σ bsums[j] · m[j/2]`` block by block; the lanes added at the end."""
    sums = np.zeros(8, np.float32)
    aux32 = np.empty(8, np.int64)
    a = np.empty(QK_K, np.int64)
    scales = np.empty(8, np.int64)
    sumf = _ZERO
    for i in range(x.shape[0] // type_size):
        xb = x[type_size * i:type_size * (i + 1)]
        yb = y[292 * i:292 * i + 292]
        for c in range(4):
            for l in range(32):
                v = np.int64(xb[qs_off + 32 * c + l])
                lo = v & 0xF
                hi = v >> 4
                if has_qh:
                    h = np.int64(xb[16 + l])
                    lo += ((h >> (2 * c)) & 1) << 4
                    hi += ((h >> (2 * c + 1)) & 1) << 4
                a[64 * c + l] = lo
                a[64 * c + 32 + l] = hi
        sumi = 0
        for j in range(8):
            sc, m = get_scale_min_k4(j, xb[4:16])
            scales[j] = sc
            sumi += (_i16(yb, 260 + 4 * j) + _i16(yb, 262 + 4 * j)) * m
        _lane_sums(a, yb, scales, 32, aux32)
        dy = _f32(yb, 0)
        d = _f16(xb, 0) * dy
        for l in range(8):
            sums[l] += d * np.float32(aux32[l])
        dmin = _f16(xb, 2) * dy
        sumf -= dmin * np.float32(sumi)
    for l in range(8):
        sumf += sums[l]
    return sumf


@kernel
def vec_dot_q6_K_q8_K(x, y):
    """Eight lanes ``sums[l] += d · aux32[l]`` with signed 8-bit sub-block scales; weights ``q − 32``."""
    sums = np.zeros(8, np.float32)
    aux32 = np.empty(8, np.int64)
    a = np.empty(QK_K, np.int64)
    scales = np.empty(16, np.int64)
    for i in range(x.shape[0] // 210):
        xb = x[210 * i:210 * i + 210]
        yb = y[292 * i:292 * i + 292]
        for h in range(2):
            for l in range(32):
                ql0 = np.int64(xb[64 * h + l])
                ql1 = np.int64(xb[64 * h + 32 + l])
                qh = np.int64(xb[128 + 32 * h + l])
                a[128 * h + l] = ((ql0 & 0xF) | (((qh >> 0) & 3) << 4)) - 32
                a[128 * h + 32 + l] = ((ql1 & 0xF) | (((qh >> 2) & 3) << 4)) - 32
                a[128 * h + 64 + l] = ((ql0 >> 4) | (((qh >> 4) & 3) << 4)) - 32
                a[128 * h + 96 + l] = ((ql1 >> 4) | (((qh >> 6) & 3) << 4)) - 32
        for j in range(16):
            scales[j] = _i8(xb[192 + j])
        _lane_sums(a, yb, scales, 16, aux32)
        d = _f16(xb, 208) * _f32(yb, 0)
        for l in range(8):
            sums[l] += d * np.float32(aux32[l])
    sumf = _ZERO
    for l in range(8):
        sumf += sums[l]
    return sumf


@kernel
def vec_dot(qtype, w, a):
    """``ggml_vec_dot`` of weight row ``w`` (type ``qtype``) and activation row ``a`` (its vec_dot_type)."""
    if qtype == _F32:
        return vec_dot_f32(w, a)
    elif qtype == _F16:
        return vec_dot_f16(w, a)
    elif qtype == _BF16:
        return vec_dot_bf16(w, a)
    elif qtype == _Q8_0:
        return vec_dot_q8_0_q8_0(w, a)
    elif qtype == _Q4_0:
        return vec_dot_q4_0_q8_0(w, a)
    elif qtype == _Q4_1:
        return vec_dot_q4_1_q8_1(w, a)
    elif qtype == _Q5_0:
        return vec_dot_q5_0_q8_0(w, a)
    elif qtype == _Q5_1:
        return vec_dot_q5_1_q8_1(w, a)
    elif qtype == _Q2_K:
        return vec_dot_q2_K_q8_K(w, a)
    elif qtype == _Q3_K:
        return vec_dot_q3_K_q8_K(w, a)
    elif qtype == _Q4_K:
        return _vec_dot_q45_K(w, a, 144, 16, False)
    elif qtype == _Q5_K:
        return _vec_dot_q45_K(w, a, 176, 48, True)
    elif qtype == _Q6_K:
        return vec_dot_q6_K_q8_K(w, a)
    raise ValueError("vec_dot: unsupported weight type")


@parallel_kernel
def matmul(qtype, w, a, y):
    """``y[t, r] = vec_dot(W[r], a[t])``: ``w`` uint8 [n_out, row_bytes] of ``qtype``, ``a`` uint8 [n_tok, …] the
    activations already in the vec_dot_type, ``y`` float32 [n_tok, n_out].  Parallel over weight rows."""
    n_out = w.shape[0]
    for r in prange(n_out):
        for t in range(a.shape[0]):
            y[t, r] = vec_dot(qtype, w[r], a[t])


def activation_row_bytes(qtype: GGMLType, n: int) -> int:
    block_size, type_size = TYPE_SIZES[VEC_DOT_TYPE[qtype]]
    return n // block_size * type_size


# -- RoPE -------------------------------------------------------------------------------------------------------------


@kernel
def rope_cache(positions, n_rot, freq_base, factors, mscale, cos, sin):
    """``ggml_rope_cache_init`` for each position (freq_scale 1, no YaRN ramp — Phi-3's settings):
    ``θ = p``; for each pair i: ``cos[i] = cosf(θ / ff_i) · m``, ``sin[i] = sinf(θ / ff_i) · m``,
    then ``θ *= theta_scale`` with ``theta_scale = powf(base, -2 / n_rot)``."""
    theta_scale = np.power(freq_base, np.float32(-2.0) / np.float32(n_rot))
    for t in range(positions.shape[0]):
        theta = np.float32(positions[t])
        for i in range(n_rot // 2):
            angle = np.float32(1.0) * (theta / factors[i])  # freq_scale · theta_extrap
            cos[t, i] = np.cos(angle) * mscale
            sin[t, i] = np.sin(angle) * mscale
            theta *= theta_scale


# -- attention ---------------------------------------------------------------------------------------------------


@parallel_kernel
def store_fp16(x, cache, pos0):
    """Write rows of ``x`` (float32 [n, Hkv, D]) into ``cache`` (uint16 fp16 bits [Hkv, capacity, D]) at
    positions ``pos0 …`` (``ggml_set_rows`` into an F16 cache: ``GGML_CPU_FP32_TO_FP16``)."""
    n, n_head_kv, head_dim = x.shape
    for t in prange(n):
        for g in range(n_head_kv):
            for d in range(head_dim):
                cache[g, pos0 + t, d] = fp32_to_fp16(x[t, g, d])


@parallel_kernel
def flash_attn_ext_f16(q, k_cache, v_cache, pos0, window, out):
    """llama.cpp's CPU flash attention (``ggml_compute_forward_flash_attn_ext_f16_one_chunk``) with F16 K and V.

    ``q``: float32 [n_tok, n_head, D], rotated and already multiplied by ``1/sqrt(D)``; ``k_cache``, ``v_cache``:
    uint16 fp16 bits [n_head_kv, n_cache, D]; ``out``: float32 [n_tok, n_head, D].  For each query (keys
    ``p − window < j ≤ p`` as in :func:`refllm.model.kernels.attention`), with ``q16 = fp16(q)``::

        s = Σ_d k_j[d] · q16[d]                  (float64 sum of exact float32 products; kq_scale 1)
        if s > M:  ms = expf(M − s), M = s, acc = fp16(acc · ms), vs = 1
        else:      ms = 1, vs = expf(s − M)
        acc = fp16(acc + v_j · vs)                 (elementwise, the accumulator is half precision)
        S = S · ms + vs
        out = acc · (1 / S)
    """
    n_tok, n_head, head_dim = q.shape
    group = n_head // k_cache.shape[0]
    for job in prange(n_tok * n_head):
        t = job // n_head
        h = job - t * n_head
        g = h // group
        p = pos0 + t
        first = 0
        if window > 0 and p - window + 1 > 0:
            first = p - window + 1
        q16 = np.empty(head_dim, np.float32)
        for d in range(head_dim):
            q16[d] = round_fp16(q[t, h, d])
        acc = np.zeros(head_dim, np.float32)  # VKQ16, held as the float32 values of halves
        big_s = _ZERO
        big_m = np.float32(-np.inf)
        for j in range(first, p + 1):
            kj = k_cache[g, j]
            s64 = 0.0
            for d in range(head_dim):
                s64 += np.float64(FP16_TO_FP32[kj[d]] * q16[d])
            s = np.float32(s64)
            ms = _ONE
            vs = _ONE
            if s > big_m:
                ms = np.exp(big_m - s)
                big_m = s
                for d in range(head_dim):
                    acc[d] = round_fp16(acc[d] * ms)
            else:
                vs = np.exp(s - big_m)
            vj = v_cache[g, j]
            for d in range(head_dim):
                acc[d] = round_fp16(acc[d] + FP16_TO_FP32[vj[d]] * vs)
            big_s = big_s * ms + vs
        s_inv = _ONE / big_s if big_s != _ZERO else _ZERO
        for d in range(head_dim):
            out[t, h, d] = acc[d] * s_inv
