"""The kernels of the ``ggml`` numeric mode: the arithmetic of llama.cpp's CPU backend, read from ggml's C.

What changes against the ``f32`` mode (:mod:`refllm.model.kernels`):

* **Matrix products** (``ggml_compute_forward_mul_mat``).  The activation rows are first converted to the weight
  type's ``vec_dot_type`` (``type_traits_cpu[type].vec_dot_type`` in ggml-cpu.c) — Q8_K for the K-quants, Q8_0 for
  Q4_0 / Q5_0 / Q8_0, Q8_1 for Q4_1 / Q5_1, F16 for F16, BF16 for BF16, nothing for F32 — and then every output is
  ``ggml_vec_dot_<weight>_<activation>``: integer sums over the quantized values inside a block, one float
  multiply-add per block.  The activation quantizers are the ones the x86 build runs (:func:`quantize_row_q8_0_x86`
  and :func:`quantize_row_q8_1_x86` — AVX, round-half-even and ``127 / max``; Q8_K is ``quantize_row_q8_K_ref``).
  The dot products are ggml's portable C (``ggml_vec_dot_*_generic`` in ggml-cpu/quants.c, ``ggml_vec_dot_f16`` …
  in vec.cpp without SIMD), evaluated as C says: each float operation rounded to float32, in source order (the
  integer sums, exact in any order, are computed in the order that vectorizes — see :func:`matmul`).
  tests/test_model_ggml_fast.py checks them bit for bit against that C compiled without fused multiply-adds.
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

from ..ggml_types import TYPE_SIZES, GGMLType
from ..jit import float32_bits, float32_from_bits, kernel, parallel_kernel, prange
from ..quants.common import (
    FP16_TO_FP32,
    bf16_to_fp32,
    fp32_to_bf16,
    fp32_to_fp16,
    nearest_int,
)
from ..quants.k_quants import quantize_row_q8_K_ref

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
_I0 = np.int32(0)
_ONE = np.float32(1.0)
_127 = np.float32(127.0)


# -- reading block fields ----------------------------------------------------------------------------------------


@kernel
def _f16(b, off):
    """The fp16 at byte ``off`` of ``b`` as float32 (``GGML_CPU_FP16_TO_FP32``)."""
    return FP16_TO_FP32[np.int64(b[off]) | (np.int64(b[off + 1]) << 8)]


@kernel
def _i8(v):
    """A byte read as ``int8_t``."""
    return (np.int64(v) ^ 128) - 128


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


# -- matrix products: ggml_vec_dot_<weight>_<activation> ---------------------------------------------------------
#
# ``matmul`` walks a weight row block by block; each block's scales are decoded once and the block is then dotted
# with the same block of every activation row (a prompt reuses the decoded scales; a generated token is the case of
# one row).  The integer sums of a K-quant super-block are computed in 32 *columns* — ``acc[c]`` sums the scaled
# products of the elements ``c, c + 32, …, c + 224`` — because that loop vectorizes; integer sums are exact in any
# order, and ggml's eight lanes (element ``e`` goes to lane ``e mod 8``) are sums of four columns.  The float
# operations are ggml's portable C, one by one, in its order (:func:`_row_k`, :func:`_row_legacy`).
#
# Speed notes (each checked in the generated assembly): the quants are read as ``x[_ix(offset + l)]`` — a signed
# index makes Numba add a negative-index check to every access, which keeps LLVM from vectorizing; every index here
# is non-negative.  The arithmetic is int32, and the scales carry a range LLVM can see (:func:`_small`), so the
# 8-bit × 8-bit products become ``pmaddwd`` rather than 32-bit multiplies.

_I1, _I2, _I3, _I4, _I6, _I8, _I15, _I16, _I32, _I63 = (np.int32(v) for v in (1, 2, 3, 4, 6, 8, 15, 16, 32, 63))


@kernel
def _ix(i):
    """Index ``i`` (non-negative) as an unsigned integer: Numba then leaves out the negative-index check."""
    return np.uint64(i)


@kernel
def _small(scale, signed):
    """A sub-block scale as an int32 whose range LLVM can see — 0 … 63 (``& 63``) or, ``signed``, −128 … 127
    (through int8) — so that it multiplies with ``pmaddwd`` (16-bit products) instead of ``pmulld``."""
    return np.int32(np.int8(scale)) if signed else np.int32(scale) & _I63


@kernel
def _eight_scales(scales, step, first, signed):
    """``scales[first + step·j]`` for j = 0 … 7 as :func:`_small` ints (held in registers by the column loops)."""
    return (_small(scales[first], signed), _small(scales[first + step], signed),
            _small(scales[first + 2 * step], signed), _small(scales[first + 3 * step], signed),
            _small(scales[first + 4 * step], signed), _small(scales[first + 5 * step], signed),
            _small(scales[first + 6 * step], signed), _small(scales[first + 7 * step], signed))


@kernel
def _act_f32(ah, t, k):
    """The float32 whose bits are the 16-bit words ``k``, ``k + 1`` of activation row ``t`` (``ah`` uint16)."""
    return float32_from_bits(np.int64(ah[t, k]) | (np.int64(ah[t, k + 1]) << 16))


# K-quants: one super-block of 256 elements; x is the weight row, o the super-block's byte offset in it


@kernel
def _scales_q45_K(x, o, scales, mins):
    """Q4_K, Q5_K: the 6-bit scales and mins of the 8 sub-blocks of 32 (``get_scale_min_k4``) from the 12 bytes
    ``b`` at ``o + 4`` — for ``j < 4`` ``b[j] & 63`` and ``b[j + 4] & 63``, else the low / high nibble of
    ``b[j + 4]`` with the top two bits of ``b[j − 4]`` / ``b[j]``."""
    for j in range(4):
        b0 = np.int32(x[o + 4 + j])
        b4 = np.int32(x[o + 8 + j])
        b8 = np.int32(x[o + 12 + j])
        scales[j] = b0 & _I63
        mins[j] = b4 & _I63
        scales[j + 4] = (b8 & _I15) | ((b0 >> _I6) << _I4)
        mins[j + 4] = (b8 >> _I4) | ((b4 >> _I6) << _I4)


@kernel
def _scales_q6_K(x, o, scales):
    """Q6_K: the signed 8-bit scales of the 16 sub-blocks of 16, at ``o + 192``."""
    for s in range(16):
        scales[s] = _i8(x[o + 192 + s])


@kernel
def _scales_q3_K(x, o, scales):
    """Q3_K: the 6-bit scales (minus 32) of the 16 sub-blocks of 16 from the 12 bytes at ``o + 96`` — ggml's
    ``auxs`` juggling: ``aux[0] = a0 & 0x0F0F0F0F | (tmp & 0x03030303) << 4``, ``aux[1]`` the same of ``a1`` with
    ``tmp >> 2``, ``aux[2]``, ``aux[3]`` the high nibbles of ``a0``, ``a1`` with ``tmp >> 4``, ``tmp >> 6``, read as
    16 bytes."""
    a0 = _u32(x, o + 96)
    a1 = _u32(x, o + 100)
    tmp = _u32(x, o + 104)
    for s in range(16):
        word = s // 4  # aux[word], byte s % 4
        nibbles = ((a0 if word % 2 == 0 else a1) >> (4 * (word // 2))) & 0x0F0F0F0F
        aux = nibbles | (((tmp >> (2 * word)) & 0x03030303) << 4)
        scales[s] = ((aux >> (8 * (s % 4))) & 0xFF) - 32


@kernel
def _scales_q2_K(x, o, scales, mins):
    """Q2_K: the 4-bit scales (low nibbles) and mins (high nibbles) of the 16 sub-blocks of 16, at ``o``."""
    for s in range(16):
        scales[s] = np.int32(x[o + s]) & _I15
        mins[s] = np.int32(x[o + s]) >> _I4


# The columns of a K-quant super-block at x[o] with token t's Q8_K quants a8[t, ao …]: every function sets
# acc[c] = Σ_k sc(e) · q(e) · q8(e) over the elements e = c + 32k (k = 0 … 7), sc(e) the scale of e's sub-block.
# With sub-blocks of 16 the columns c < 16 and c ≥ 16 see different scales: each half is its own loop.


@kernel
def _columns_q45_K(x, o, scales, a8, t, ao, acc, has_qh):
    """Q4_K: element ``64k + l`` is the low nibble of ``qs[32k + l]`` (``qs`` at 16), ``64k + 32 + l`` its high
    nibble.  Q5_K (``has_qh``; ``qs`` at 48) adds bit ``2k`` / ``2k + 1`` of ``qh[l]`` (at 16) as fifth bit."""
    n32 = acc.shape[0]  # 32 at run time: a loop with a constant trip count would be unrolled, not vectorized
    s0, s1, s2, s3, s4, s5, s6, s7 = _eight_scales(scales, 1, 0, False)
    qs = o + (48 if has_qh else 16)
    for c in range(n32):
        v0 = np.int32(x[_ix(qs + c)])
        v1 = np.int32(x[_ix(qs + 32 + c)])
        v2 = np.int32(x[_ix(qs + 64 + c)])
        v3 = np.int32(x[_ix(qs + 96 + c)])
        if not has_qh:
            q0, q1, q2, q3 = v0 & _I15, v0 >> _I4, v1 & _I15, v1 >> _I4
            q4, q5, q6, q7 = v2 & _I15, v2 >> _I4, v3 & _I15, v3 >> _I4
        else:
            h = np.int32(x[_ix(o + 16 + c)])
            q0 = (v0 & _I15) | ((h & _I1) << _I4)
            q1 = (v0 >> _I4) | (((h >> _I1) & _I1) << _I4)
            q2 = (v1 & _I15) | (((h >> _I2) & _I1) << _I4)
            q3 = (v1 >> _I4) | (((h >> _I3) & _I1) << _I4)
            q4 = (v2 & _I15) | (((h >> _I4) & _I1) << _I4)
            q5 = (v2 >> _I4) | (((h >> np.int32(5)) & _I1) << _I4)
            q6 = (v3 & _I15) | (((h >> _I6) & _I1) << _I4)
            q7 = (v3 >> _I4) | (((h >> np.int32(7)) & _I1) << _I4)
        e = ao + c
        acc[c] = (s0 * q0 * np.int32(a8[t, _ix(e)]) + s1 * q1 * np.int32(a8[t, _ix(e + 32)])
                  + s2 * q2 * np.int32(a8[t, _ix(e + 64)]) + s3 * q3 * np.int32(a8[t, _ix(e + 96)])
                  + s4 * q4 * np.int32(a8[t, _ix(e + 128)]) + s5 * q5 * np.int32(a8[t, _ix(e + 160)])
                  + s6 * q6 * np.int32(a8[t, _ix(e + 192)]) + s7 * q7 * np.int32(a8[t, _ix(e + 224)]))


@kernel
def _columns_q6_K(x, o, scales, a8, t, ao, acc):
    """Q6_K: element ``128h + 32s + l`` takes 4 bits of ``ql`` (byte ``64h + l`` for s = 0, 2, ``64h + 32 + l``
    for s = 1, 3; the low nibble for s < 2) and bits ``2s`` of ``qh[32h + l]`` (at 128), minus 32."""
    n32 = acc.shape[0]  # 32 at run time: a loop with a constant trip count would be unrolled, not vectorized
    n16 = n32 // 2
    for half in range(2):  # columns 16·half + l: sub-blocks 8h + 2s + half = 2j + half (j = 4h + s)
        s0, s1, s2, s3, s4, s5, s6, s7 = _eight_scales(scales, 2, half, True)
        for l in range(n16):
            c = 16 * half + l
            ql0 = np.int32(x[_ix(o + c)])
            ql1 = np.int32(x[_ix(o + 32 + c)])
            ql2 = np.int32(x[_ix(o + 64 + c)])
            ql3 = np.int32(x[_ix(o + 96 + c)])
            qh0 = np.int32(x[_ix(o + 128 + c)])
            qh1 = np.int32(x[_ix(o + 160 + c)])
            e = ao + c
            acc[c] = (
                s0 * (((ql0 & _I15) | ((qh0 & _I3) << _I4)) - _I32) * np.int32(a8[t, _ix(e)])
                + s1 * (((ql1 & _I15) | (((qh0 >> _I2) & _I3) << _I4)) - _I32) * np.int32(a8[t, _ix(e + 32)])
                + s2 * (((ql0 >> _I4) | (((qh0 >> _I4) & _I3) << _I4)) - _I32) * np.int32(a8[t, _ix(e + 64)])
                + s3 * (((ql1 >> _I4) | (((qh0 >> _I6) & _I3) << _I4)) - _I32) * np.int32(a8[t, _ix(e + 96)])
                + s4 * (((ql2 & _I15) | ((qh1 & _I3) << _I4)) - _I32) * np.int32(a8[t, _ix(e + 128)])
                + s5 * (((ql3 & _I15) | (((qh1 >> _I2) & _I3) << _I4)) - _I32) * np.int32(a8[t, _ix(e + 160)])
                + s6 * (((ql2 >> _I4) | (((qh1 >> _I4) & _I3) << _I4)) - _I32) * np.int32(a8[t, _ix(e + 192)])
                + s7 * (((ql3 >> _I4) | (((qh1 >> _I6) & _I3) << _I4)) - _I32) * np.int32(a8[t, _ix(e + 224)]))


@kernel
def _columns_q3_K(x, o, scales, a8, t, ao, acc):
    """Q3_K: element ``32k + l`` is bits ``2(k % 4)`` of ``qs[32(k // 4) + l]`` (at 32), minus 4 where bit ``k`` of
    ``hmask[l]`` (at 0) is clear."""
    n32 = acc.shape[0]  # 32 at run time: a loop with a constant trip count would be unrolled, not vectorized
    n16 = n32 // 2
    for half in range(2):  # columns 16·half + l: sub-blocks 2k + half
        s0, s1, s2, s3, s4, s5, s6, s7 = _eight_scales(scales, 2, half, True)
        for l in range(n16):
            c = 16 * half + l
            m = np.int32(x[_ix(o + c)])  # hmask: bit k set means "do not subtract 4" for element 32k + c
            v0 = np.int32(x[_ix(o + 32 + c)])
            v1 = np.int32(x[_ix(o + 64 + c)])
            e = ao + c
            acc[c] = (
                s0 * ((v0 & _I3) - _I4 * (_I1 - (m & _I1))) * np.int32(a8[t, _ix(e)])
                + s1 * (((v0 >> _I2) & _I3) - _I4 * (_I1 - ((m >> _I1) & _I1))) * np.int32(a8[t, _ix(e + 32)])
                + s2 * (((v0 >> _I4) & _I3) - _I4 * (_I1 - ((m >> _I2) & _I1))) * np.int32(a8[t, _ix(e + 64)])
                + s3 * (((v0 >> _I6) & _I3) - _I4 * (_I1 - ((m >> _I3) & _I1))) * np.int32(a8[t, _ix(e + 96)])
                + s4 * ((v1 & _I3) - _I4 * (_I1 - ((m >> _I4) & _I1))) * np.int32(a8[t, _ix(e + 128)])
                + s5 * (((v1 >> _I2) & _I3) - _I4 * (_I1 - ((m >> np.int32(5)) & _I1)))
                * np.int32(a8[t, _ix(e + 160)])
                + s6 * (((v1 >> _I4) & _I3) - _I4 * (_I1 - ((m >> _I6) & _I1))) * np.int32(a8[t, _ix(e + 192)])
                + s7 * (((v1 >> _I6) & _I3) - _I4 * (_I1 - ((m >> np.int32(7)) & _I1)))
                * np.int32(a8[t, _ix(e + 224)]))


@kernel
def _columns_q2_K(x, o, scales, a8, t, ao, acc):
    """Q2_K: element ``128k + 32j + l`` is bits ``2j`` of ``qs[32k + l]`` (at 16)."""
    n32 = acc.shape[0]  # 32 at run time: a loop with a constant trip count would be unrolled, not vectorized
    n16 = n32 // 2
    for half in range(2):  # columns 16·half + l: sub-blocks 8k + 2j + half = 2(4k + j) + half
        s0, s1, s2, s3, s4, s5, s6, s7 = _eight_scales(scales, 2, half, False)
        for l in range(n16):
            c = 16 * half + l
            v0 = np.int32(x[_ix(o + 16 + c)])
            v1 = np.int32(x[_ix(o + 48 + c)])
            e = ao + c
            acc[c] = (s0 * (v0 & _I3) * np.int32(a8[t, _ix(e)])
                      + s1 * ((v0 >> _I2) & _I3) * np.int32(a8[t, _ix(e + 32)])
                      + s2 * ((v0 >> _I4) & _I3) * np.int32(a8[t, _ix(e + 64)])
                      + s3 * ((v0 >> _I6) & _I3) * np.int32(a8[t, _ix(e + 96)])
                      + s4 * (v1 & _I3) * np.int32(a8[t, _ix(e + 128)])
                      + s5 * ((v1 >> _I2) & _I3) * np.int32(a8[t, _ix(e + 160)])
                      + s6 * ((v1 >> _I4) & _I3) * np.int32(a8[t, _ix(e + 192)])
                      + s7 * ((v1 >> _I6) & _I3) * np.int32(a8[t, _ix(e + 224)]))


@kernel
def _row_k(qtype, x, a16, ah, a8, y, r, acc, scales, mins, sums, sumf):
    """``y[t, r]`` for every token ``t``: weight row ``x`` of a K-quant against the Q8_K activations (``a8`` int8,
    ``a16`` int16 and ``ah`` uint16 views of their bytes).  Per super-block ``i`` (``d``, ``dmin`` its fp16 scales,
    ``dy`` the activation's float32 scale, ``aux[l] = Σ_{c ≡ l (mod 8)} acc[c]`` the integer sums of ggml's lane
    ``l``)::

        Q2_K:        sumf += (dy · d) · Σ_l aux[l] − (dy · dmin) · Σ_s bsums[s] · mins[s]
        Q3_K, Q6_K:  sums[l] += (d · dy) · aux[l]                        (l = 0 … 7)
        Q4_K, Q5_K:  sums[l] += (d · dy) · aux[l];   sumf −= (dmin · dy) · Σ_j (bsums[2j] + bsums[2j+1]) · mins[j]

    and at the end ``sumf += sums[0]; … sumf += sums[7]`` — ggml's eight float lanes, added in order.
    ``sums`` float32 [n_tok, 8] and ``sumf`` float32 [n_tok] hold each token's state.
    """
    n_tok = a8.shape[0]
    if qtype == _Q4_K:
        type_size, d_at = 144, 0
    elif qtype == _Q5_K:
        type_size, d_at = 176, 0
    elif qtype == _Q6_K:
        type_size, d_at = 210, 208
    elif qtype == _Q3_K:
        type_size, d_at = 110, 108
    else:
        type_size, d_at = 84, 80
    for t in range(n_tok):
        sumf[t] = 0
        for l in range(8):
            sums[t, l] = 0
    n8 = acc.shape[0] // 4  # 8 lanes, a run-time count so that the lane loops vectorize
    for i in range(x.shape[0] // type_size):
        o = type_size * i
        if qtype == _Q4_K or qtype == _Q5_K:
            _scales_q45_K(x, o, scales, mins)
        elif qtype == _Q6_K:
            _scales_q6_K(x, o, scales)
        elif qtype == _Q3_K:
            _scales_q3_K(x, o, scales)
        else:
            _scales_q2_K(x, o, scales, mins)
        d = _f16(x, o + d_at)
        dmin = _f16(x, o + d_at + 2) if qtype == _Q2_K or qtype == _Q4_K or qtype == _Q5_K else _ZERO
        bsums = 146 * i + 130  # the int16 bsums of the activations' super-block
        for t in range(n_tok):
            if qtype == _Q4_K or qtype == _Q5_K:
                _columns_q45_K(x, o, scales, a8, t, 292 * i + 4, acc, qtype == _Q5_K)
            elif qtype == _Q6_K:
                _columns_q6_K(x, o, scales, a8, t, 292 * i + 4, acc)
            elif qtype == _Q3_K:
                _columns_q3_K(x, o, scales, a8, t, 292 * i + 4, acc)
            else:
                _columns_q2_K(x, o, scales, a8, t, 292 * i + 4, acc)
            dy = _act_f32(ah, t, 146 * i)
            if qtype == _Q2_K:
                summs = 0
                for s in range(2 * n8):
                    summs += np.int32(a16[t, _ix(bsums + s)]) * mins[s]
                isum = 0
                for c in range(4 * n8):
                    isum += acc[c]
                sumf[t] += (dy * d) * np.float32(isum) - (dy * dmin) * np.float32(summs)
                continue
            dd = d * dy
            for l in range(n8):
                sums[t, _ix(l)] += dd * np.float32(acc[l] + acc[_ix(l + 8)] + acc[_ix(l + 16)] + acc[_ix(l + 24)])
            if qtype == _Q4_K or qtype == _Q5_K:
                sumi = 0
                for j in range(n8):
                    sumi += (np.int32(a16[t, _ix(bsums + 2 * j)]) + np.int32(a16[t, _ix(bsums + 2 * j + 1)])) * mins[j]
                sumf[t] -= (dmin * dy) * np.float32(sumi)
    for t in range(n_tok):
        total = sumf[t]
        if qtype != _Q2_K:
            for l in range(8):
                total += sums[t, l]
        y[t, r] = total


# legacy types: blocks of 32 elements


@kernel
def _legacy_block(qtype, x, o, q):
    """Unpack the block at ``x[o]`` into ``q`` (int32 [32]), in element order:

    * Q4_0 (18 bytes, ``qs`` at 2): ``q[j] = (qs[j] & 0xF) − 8``, ``q[j + 16] = (qs[j] >> 4) − 8``;
    * Q4_1 (20 bytes, ``qs`` at 4): the nibbles without offset;
    * Q5_0 (22 bytes, ``qh`` at 2, ``qs`` at 6) and Q5_1 (24 bytes, ``qh`` at 4, ``qs`` at 8): the nibbles with
      bit ``j`` of the 32-bit ``qh`` as fifth bit, minus 16 for Q5_0;
    * Q8_0 (34 bytes, ``qs`` at 2): the int8 quants.
    """
    n16 = q.shape[0] // 2
    if qtype == _Q8_0:
        for j in range(q.shape[0]):
            q[j] = (np.int32(x[_ix(o + 2 + j)]) ^ np.int32(128)) - np.int32(128)
    elif qtype == _Q4_0 or qtype == _Q4_1:
        qs = o + (2 if qtype == _Q4_0 else 4)
        offset = _I8 if qtype == _Q4_0 else np.int32(0)
        for j in range(n16):
            v = np.int32(x[_ix(qs + j)])
            q[j] = (v & _I15) - offset
            q[j + 16] = (v >> _I4) - offset
    else:
        qh_at = o + (2 if qtype == _Q5_0 else 4)
        offset = _I16 if qtype == _Q5_0 else np.int32(0)
        qh = _u32(x, qh_at)
        for j in range(n16):
            v = np.int32(x[_ix(qh_at + 4 + j)])
            q[j] = ((v & _I15) | np.int32(((qh >> j) & 1) << 4)) - offset
            q[j + 16] = ((v >> _I4) | np.int32(((qh >> (j + 16)) & 1) << 4)) - offset


@kernel
def _row_legacy(qtype, x, ah, a8, y, r, q, sumf):
    """``y[t, r]`` for every token: weight row ``x`` of a 32-element block type against its Q8_0 / Q8_1
    activations.  Per block, with ``sumi = Σ q · q8`` and the fp16 scales ``dx``, ``dy`` (and ``m``, ``s``)::

        Q8_0:  sumf += sumi · (dx · dy)
        Q4_0:  sumf += (sumi · dx) · dy
        Q5_0:  sumf += (dx · dy) · sumi
        Q4_1, Q5_1 (Q8_1 activations with s = d · Σq8):  sumf += (dx · dy) · sumi + m · s
    """
    n_tok = a8.shape[0]
    if qtype == _Q8_0:
        type_size = 34
    elif qtype == _Q4_0:
        type_size = 18
    elif qtype == _Q4_1:
        type_size = 20
    elif qtype == _Q5_0:
        type_size = 22
    else:
        type_size = 24
    vsize = 36 if qtype == _Q4_1 or qtype == _Q5_1 else 34
    for t in range(n_tok):
        sumf[t] = 0
    for ib in range(x.shape[0] // type_size):
        o = type_size * ib
        _legacy_block(qtype, x, o, q)
        dx = _f16(x, o)
        m = _f16(x, o + 2) if vsize == 36 else _ZERO  # Q4_1, Q5_1: the block's min
        for t in range(n_tok):
            sumi = _I0
            for e in range(q.shape[0]):
                sumi += q[e] * np.int32(a8[t, _ix(vsize * ib + vsize - 32 + e)])
            dy = FP16_TO_FP32[ah[t, vsize * ib // 2]]
            if qtype == _Q8_0:
                sumf[t] += np.float32(sumi) * (dx * dy)
            elif qtype == _Q4_0:
                sumf[t] += (np.float32(sumi) * dx) * dy
            elif qtype == _Q5_0:
                sumf[t] += (dx * dy) * np.float32(sumi)
            else:
                sumf[t] += (dx * dy) * np.float32(sumi) + m * FP16_TO_FP32[ah[t, vsize * ib // 2 + 1]]
    for t in range(n_tok):
        y[t, r] = sumf[t]


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


ROWS_PER_TASK = 16  # weight rows per prange iteration (they share the scratch arrays): speed only, never results


@parallel_kernel
def matmul(qtype, w, a, y):
    """``y[t, r] = ggml_vec_dot(W[r], a[t])``: ``w`` uint8 [n_out, row_bytes] of ``qtype``, ``a`` uint8 [n_tok, …]
    the activations already in the vec_dot_type, ``y`` float32 [n_tok, n_out].

    Parallel over tasks of ``ROWS_PER_TASK`` weight rows; every output is computed whole by one thread, in the
    order :func:`_row_k` / :func:`_row_legacy` / :func:`vec_dot_f32` … give, so the thread count never changes a
    bit.
    """
    n_out = w.shape[0]
    n_tok = a.shape[0]
    a8 = a.view(np.int8)
    a16 = a.view(np.int16)
    ah = a.view(np.uint16)
    is_k = qtype == _Q2_K or qtype == _Q3_K or qtype == _Q4_K or qtype == _Q5_K or qtype == _Q6_K
    is_float = qtype == _F32 or qtype == _F16 or qtype == _BF16
    for task in prange((n_out + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        acc = np.empty(32, np.int32)
        scales = np.empty(16, np.int32)
        mins = np.empty(16, np.int32)
        sums = np.empty((n_tok, 8), np.float32)
        sumf = np.empty(n_tok, np.float32)
        for r in range(task * ROWS_PER_TASK, min((task + 1) * ROWS_PER_TASK, n_out)):
            if is_k:
                _row_k(qtype, w[r], a16, ah, a8, y, r, acc, scales, mins, sums, sumf)
            elif is_float:
                for t in range(n_tok):
                    if qtype == _F32:
                        y[t, r] = vec_dot_f32(w[r], a[t])
                    elif qtype == _F16:
                        y[t, r] = vec_dot_f16(w[r], a[t])
                    else:
                        y[t, r] = vec_dot_bf16(w[r], a[t])
            else:
                _row_legacy(qtype, w[r], ah, a8, y, r, acc, sumf)


def vec_dot(qtype, w: np.ndarray, a: np.ndarray) -> np.float32:
    """``ggml_vec_dot`` of one weight row ``w`` (bytes of type ``qtype``) and one activation row ``a`` (bytes of its
    vec_dot_type): :func:`matmul` of a 1 × 1 product."""
    y = np.empty((1, 1), np.float32)
    matmul(int(qtype), np.ascontiguousarray(w).reshape(1, -1), np.ascontiguousarray(a).reshape(1, -1), y)
    return y[0, 0]


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
