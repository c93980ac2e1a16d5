"""The kernels of the ``ggml`` numeric mode: the arithmetic of llama.cpp's CPU backend as the reference build runs it.

The reference build is x86-64, gcc ``-march=native`` on a CPU with AVX512 (F, VL, DQ, BW, VNNI, BF16, FP16), with
gcc's default ``-ffp-contract=fast``.  The ``ggml`` mode follows the SIMD code that build executes — its lanes, its
fused multiply-adds (:func:`refllm.jit.fma32`), its horizontal sums — and chooses the algorithm by batch shape as
llama.cpp does.  The orders are part of the numerics a golden file records, so each is written out here:

* **Activations** (``ggml_compute_forward_mul_mat``): each row is converted to the weight type's ``vec_dot_type``
  (``type_traits_cpu[type].vec_dot_type``) — Q8_K for the K-quants, Q8_0 for Q4_0 / Q5_0 / Q8_0, Q8_1 for Q4_1 /
  Q5_1, F16, BF16, or F32 — by the x86 quantizers (:func:`quantize_row_q8_0_x86`, :func:`quantize_row_q8_1_x86`;
  Q8_K is ``quantize_row_q8_K_ref``).
* **Q4_0 … Q8_0** (x86 ``ggml_vec_dot_<type>_q8_<0|1>``, ``__AVX2__`` branch; llamafile's ``tinyBLAS_Q0_AVX``, used
  for 2 or more tokens, sums the same way): eight float lanes; block ``ib`` gives lane ``l`` the integer sum of
  elements ``4l … 4l+3`` and ``acc[l] = fma(dx·dy, sumi_l, acc[l])``; Q4_1 / Q5_1 ``summs = fma(m, s, summs)``;
  result ``hsum_float_8(acc)`` (+ ``summs``), ``hsum_float_8(v) = ((v0+v4) + (v2+v6)) + ((v1+v5) + (v3+v7))``
  (:func:`_row_legacy`).
* **Q2_K … Q6_K, fewer than 8 tokens** (x86 ``ggml_vec_dot_<type>_q8_K``, ``__AVX2__`` branch): eight lanes, lane
  ``l`` the integer sum of the 32-element columns ``4l … 4l+3``; per super-block ``acc[l] = fma(d, sumi_l, acc[l])``
  with ``d = dy·fp16(x.d)``, and the mins as each kernel has them (:func:`_row_k`; Q4_K and Q6_K written as ggml's
  AVX2 loops with the SIMD blocks of :mod:`refllm.simd`, :func:`vec_dot_q4_K_q8_K`, :func:`vec_dot_q6_K_q8_K`).
* **Q2_K … Q6_K, 8 or more tokens** (ggml-cpu's tiled kernel, AVX512-VNNI microkernel): per super-block
  ``r = float(s1)·fp16(x.d)``, ``r = fma(−fp16(x.dmin), s2, r)``, ``y = fma(r, dy, y)`` (:func:`_row_k`,
  :func:`_tiled_q4_K`, :func:`_tiled_q6_K`).
* **F32 / F16 / BF16**: one token, AVX512 ``ggml_vec_dot_f32 / _f16 / _bf16`` (:func:`vec_dot_float`); 2 or more
  tokens, llamafile's ``tinyBLAS`` (:func:`sgemm_dot_float`).
* **Flash attention** (``ggml_compute_forward_flash_attn_ext_f16``; K and V cached in F16, Q already multiplied by
  ``1/sqrt(D)``): fewer than 64 queries, the one-chunk algorithm with an F16 value accumulator
  (:func:`_flash_attn_one_chunk`); 64 or more, the tiled algorithm with F32 accumulators and ggml's vector
  exponential (:func:`_flash_attn_tiled`).
* **RoPE** angles as ``ggml_rope_cache_init`` (:func:`rope_cache`), the rotation fused as gcc compiles it
  (:func:`rope_neox`); **SwiGLU** with the AVX512 ``ggml_v_silu`` (:func:`swiglu`, :func:`v_expf`).

Integer sums are exact in any order; they are computed in the order that vectorizes.  Not reproduced: other builds
(AVX2-only, other compilers: other float orders), and llama.cpp's KV-split flash attention for one query over 512
or more cached keys, whose sums depend on llama.cpp's thread count (see docs/phi3.md, "How close each mode is to
llama.cpp").
"""

from __future__ import annotations

import numpy as np

from ..ggml_types import TYPE_SIZES, GGMLType
from ..jit import (
    expf,
    float32_bits,
    float32_from_bits,
    fma32,
    kernel,
    parallel_kernel,
    prange,
)
from ..quants.common import (
    FP16_TO_FP32,
    bf16_to_fp32,
    fp32_to_bf16,
    fp32_to_fp16,
    nearest_int,
)
from ..quants.k_quants import quantize_row_q8_K_ref
from ..simd import (
    broadcast_epi16_halves,
    cvtepi8_epi16,
    cvtepi32_ps,
    cvtepu8_epi16_set_epi32,
    extracti128_hi,
    fmadd_ps,
    hadd_epi16_halves,
    hsum_epi32,
    hsum_float_4,
    hsum_float_8,
    loadu_i8,
    loadu_i16,
    loadu_u8,
    madd,
    maddubs,
    repeat_epi16_hi,
    setzero_epi32,
    setzero_ps,
)

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
# order, and the eight int32 lanes of the x86 kernels (lane ``l`` holds the elements whose index mod 32 is in
# ``4l … 4l+3``) are sums of four neighbouring columns.  The float operations are the x86 kernels', one by one, in
# their order (:func:`_row_k`, :func:`_row_legacy`).  Q4_K and Q6_K, the types of the usual Q4_K_M files, go
# further: their integer sums use ggml's own AVX2 instructions (``vpmaddubsw``, ``vpmaddwd``) through
# :mod:`refllm.simd` (:func:`_row_q46_K`).
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
def _scales_q5_K(x, o, scales, mins):
    """Q5_K: the 6-bit scales and mins of the 8 sub-blocks of 32 (``get_scale_min_k4``) from the 12 bytes
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
def _columns_q5_K(x, o, scales, a8, t, ao, acc):
    """Q5_K: element ``64k + l`` is the low nibble of ``qs[32k + l]`` (``qs`` at 48), ``64k + 32 + l`` its high
    nibble, with bit ``2k`` / ``2k + 1`` of ``qh[l]`` (at 16) as fifth bit."""
    n32 = acc.shape[0]  # 32 at run time: a loop with a constant trip count would be unrolled, not vectorized
    s0, s1, s2, s3, s4, s5, s6, s7 = _eight_scales(scales, 1, 0, False)
    for c in range(n32):
        v0 = np.int32(x[_ix(o + 48 + c)])
        v1 = np.int32(x[_ix(o + 80 + c)])
        v2 = np.int32(x[_ix(o + 112 + c)])
        v3 = np.int32(x[_ix(o + 144 + c)])
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
def _row_k(qtype, x, a16, ah, a8, y, r, acc, scales, mins, sums, sumf, tiled):
    """``y[t, r]`` for every token ``t``: weight row ``x`` of Q2_K, Q3_K or Q5_K against the Q8_K activations
    (``a8`` int8, ``a16`` int16 and ``ah`` uint16 views of their bytes).  Per super-block ``i``, with
    ``d = dy · fp16(x.d)``, ``dmin = −dy · fp16(x.dmin)`` (``dy`` the activation's float32 scale), ``bs`` the
    activation's block sums of 16 and ``sumi[l] = Σ_{c = 4l}^{4l+3} acc[c]`` (x86's int32 lane ``l``):

    ``tiled`` false — x86 ``ggml_vec_dot_<type>_q8_K`` (``__AVX2__`` branch), eight float lanes::

        Q2_K:  sums[l] = fma(dmin, mins[2l]·bs[2l] + mins[2l+1]·bs[2l+1], sums[l]);  sums[l] = fma(d, sumi[l], sums[l])
        Q3_K:  sums[l] = fma(d, sumi[l], sums[l])
        Q5_K:  sums[l] = fma(d, sumi[l], sums[l]);  summs = fma(dmin, Σ_j mins[j]·(bs[2j] + bs[2j+1]), summs)

    result ``hsum_float_8(sums)``, plus ``summs`` for Q5_K.

    ``tiled`` true — ggml-cpu's tiled kernel (8 or more tokens; its AVX512-VNNI microkernel), one float per
    super-block: ``s1 = Σ_l sumi[l]``, ``s2`` the mins term (Q2_K, Q5_K)::

        r = float(s1) · fp16(x.d);   r = fma(−fp16(x.dmin), float(s2), r);   y = fma(r, dy, y)

    ``sums`` float32 [n_tok, 8] and ``sumf`` float32 [n_tok] hold each token's state.  (Q4_K, Q6_K:
    :func:`_row_q46_K`.)
    """
    n_tok = a8.shape[0]
    if qtype == _Q5_K:
        type_size, d_at = 176, 0
    elif qtype == _Q3_K:
        type_size, d_at = 110, 108
    else:
        type_size, d_at = 84, 80
    has_min = qtype == _Q2_K or qtype == _Q5_K
    for t in range(n_tok):
        sumf[t] = 0
        for l in range(8):
            sums[t, l] = 0
    n8 = acc.shape[0] // 4  # 8 lanes, a run-time count so that the lane loops vectorize
    for i in range(x.shape[0] // type_size):
        o = type_size * i
        if qtype == _Q5_K:
            _scales_q5_K(x, o, scales, mins)
        elif qtype == _Q3_K:
            _scales_q3_K(x, o, scales)
        else:
            _scales_q2_K(x, o, scales, mins)
        xd = _f16(x, o + d_at)
        xdmin = _f16(x, o + d_at + 2) if has_min else _ZERO
        bsums = 146 * i + 130  # the int16 bsums of the activations' super-block
        for t in range(n_tok):
            if qtype == _Q5_K:
                _columns_q5_K(x, o, scales, a8, t, 292 * i + 4, acc)
            elif qtype == _Q3_K:
                _columns_q3_K(x, o, scales, a8, t, 292 * i + 4, acc)
            else:
                _columns_q2_K(x, o, scales, a8, t, 292 * i + 4, acc)
            dy = _act_f32(ah, t, 146 * i)
            # the mins term, as the kernel groups it: per pair of sub-blocks of 16 (Q2_K), or whole (Q5_K, and the
            # tiled kernel's s2)
            s2 = _I0
            if qtype == _Q2_K:
                for l in range(n8):
                    prod = (mins[2 * l] * np.int32(a16[t, _ix(bsums + 2 * l)])
                            + mins[2 * l + 1] * np.int32(a16[t, _ix(bsums + 2 * l + 1)]))
                    s2 += prod
                    if not tiled:
                        sums[t, _ix(l)] = fma32(-dy * xdmin, np.float32(prod), sums[t, _ix(l)])
            elif qtype == _Q5_K:
                for k in range(n8 // 2):
                    s2 += (mins[2 * k] * (np.int32(a16[t, _ix(bsums + 4 * k)])
                                          + np.int32(a16[t, _ix(bsums + 4 * k + 1)]))
                           + mins[2 * k + 1] * (np.int32(a16[t, _ix(bsums + 4 * k + 2)])
                                                + np.int32(a16[t, _ix(bsums + 4 * k + 3)])))
                if not tiled:
                    sumf[t] = fma32(-dy * xdmin, np.float32(s2), sumf[t])
            s1 = _I0
            d = dy * xd
            for l in range(n8):
                sumi = acc[_ix(4 * l)] + acc[_ix(4 * l + 1)] + acc[_ix(4 * l + 2)] + acc[_ix(4 * l + 3)]
                s1 += sumi
                if not tiled:
                    sums[t, _ix(l)] = fma32(d, np.float32(sumi), sums[t, _ix(l)])
            if tiled:
                res = np.float32(s1) * xd
                if has_min:
                    res = fma32(-xdmin, np.float32(s2), res)
                sumf[t] = fma32(res, dy, sumf[t])
    for t in range(n_tok):
        if tiled:
            y[t, r] = sumf[t]
        else:
            total = hsum_float_8(sums[t])
            if qtype == _Q5_K:
                total += sumf[t]
            y[t, r] = total


# Q4_K and Q6_K: ggml's AVX2 loops written with refllm.simd's blocks (x = the weight row's bytes, q8 / a[t] the
# activation row's Q8_K bytes: per super-block i the float32 d at 292i, 256 int8 quants at 292i + 4, 16 int16 bsums
# at 292i + 260).  maddubs never saturates here: its pairs are at most 2·63·128 < 32768.

_KMASK1, _KMASK2, _KMASK3 = 0x3F3F3F3F, 0x0F0F0F0F, 0x03030303


@kernel
def _mins_and_scales_q4_K(x, o):
    """The 8 scales, then the 8 mins, of the Q4_K super-block at ``x[o]`` as 16 int16 lanes: ggml's ``utmp``
    shuffle of the 12 bytes at ``o + 4`` read as three little-endian words (``get_scale_min_k4``)."""
    u0, u1, u2 = _u32(x, o + 4), _u32(x, o + 8), _u32(x, o + 12)
    return cvtepu8_epi16_set_epi32(u0 & _KMASK1, (u2 & _KMASK2) | (((u0 >> 6) & _KMASK3) << 4),
                                   u1 & _KMASK1, ((u2 >> 4) & _KMASK2) | (((u1 >> 6) & _KMASK3) << 4))


@kernel
def _quants_q6_K(x, o, j):
    """The unsigned 6-bit quants (0 … 63) of elements ``128j … 128j + 127`` of the Q6_K super-block at ``x[o]``,
    as four vectors of 32 (``ql`` at 0 gives the low 4 bits, ``qh`` at 128 the high 2)."""
    q4bits1 = loadu_u8(x, o + 64 * j)
    q4bits2 = loadu_u8(x, o + 64 * j + 32)
    q4bits_h = loadu_u8(x, o + 128 + 32 * j)
    return ((q4bits1 & 15) | ((q4bits_h & 3) << 4), (q4bits2 & 15) | ((q4bits_h & 12) << 2),
            (q4bits1 >> 4) | (q4bits_h & 48), (q4bits2 >> 4) | ((q4bits_h & 192) >> 2))


@kernel
def vec_dot_q4_K_q8_K(x, q8):
    """``ggml_vec_dot_q4_K_q8_K`` (x86, ``__AVX2__``): eight int32 lanes per super-block (lane ``l``: the scaled
    products of the elements whose index mod 32 is in ``4l … 4l+3``), ``acc = fma(d, lanes, acc)`` with
    ``d = dy·fp16(x.d)``; the mins in four lanes ``acc_m = fma(dmin, prod, acc_m)``, ``dmin = −dy·fp16(x.dmin)``,
    ``prod[k] = m[2k]·int16(bs[4k] + bs[4k+1]) + m[2k+1]·int16(bs[4k+2] + bs[4k+3])``; result
    ``hsum_float_8(acc) + ((acc_m0 + acc_m2) + (acc_m1 + acc_m3))``."""
    acc = setzero_ps(8)
    acc_m = setzero_ps(4)
    for i in range(x.shape[0] // 144):
        o = 144 * i
        b = 292 * i
        dy = float32_from_bits(_u32(q8, b))
        d = dy * _f16(x, o)
        dmin = -dy * _f16(x, o + 2)
        mins_and_scales = _mins_and_scales_q4_K(x, o)
        prod = madd(extracti128_hi(mins_and_scales), hadd_epi16_halves(loadu_i16(q8, b + 260)))
        acc_m = fmadd_ps(dmin, cvtepi32_ps(prod), acc_m)
        sumi = setzero_epi32(8)
        for j in range(4):  # sub-blocks 2j (low nibbles of qs[32j …]) and 2j + 1 (high nibbles)
            scale_l = broadcast_epi16_halves(mins_and_scales, 2 * j, 2 * j)
            scale_h = broadcast_epi16_halves(mins_and_scales, 2 * j + 1, 2 * j + 1)
            q4bits = loadu_u8(x, o + 16 + 32 * j)
            p16l = madd(scale_l, maddubs(q4bits & 15, loadu_i8(q8, b + 4 + 64 * j)))
            p16h = madd(scale_h, maddubs(q4bits >> 4, loadu_i8(q8, b + 36 + 64 * j)))
            sumi = sumi + (p16l + p16h)
        acc = fmadd_ps(d, cvtepi32_ps(sumi), acc)
    return hsum_float_8(acc) + hsum_float_4(acc_m)


@kernel
def vec_dot_q6_K_q8_K(x, q8):
    """``ggml_vec_dot_q6_K_q8_K`` (x86, ``__AVX2__``): eight int32 lanes of the scaled products of the unsigned
    quants (as :func:`vec_dot_q4_K_q8_K`; sub-blocks of 16, int8 scales at 192) minus the offset,
    ``32·(sc[2l]·bs[2l] + sc[2l+1]·bs[2l+1])``; ``acc = fma(dy·fp16(x.d), lanes, acc)``; result
    ``hsum_float_8(acc)``."""
    acc = setzero_ps(8)
    for i in range(x.shape[0] // 210):
        o = 210 * i
        b = 292 * i
        d = float32_from_bits(_u32(q8, b)) * _f16(x, o + 208)
        scales = cvtepi8_epi16(x, o + 192)
        q8sclsub = madd(loadu_i16(q8, b + 260), scales) << 5
        sumi = setzero_epi32(8)
        for j in range(2):
            q6_0, q6_1, q6_2, q6_3 = _quants_q6_K(x, o, j)
            s = 8 * j  # the scales of sub-blocks s … s + 7, two per vector of 32
            q8o = b + 4 + 128 * j
            p16_0 = madd(broadcast_epi16_halves(scales, s, s + 1), maddubs(q6_0, loadu_i8(q8, q8o)))
            p16_1 = madd(broadcast_epi16_halves(scales, s + 2, s + 3), maddubs(q6_1, loadu_i8(q8, q8o + 32)))
            p16_2 = madd(broadcast_epi16_halves(scales, s + 4, s + 5), maddubs(q6_2, loadu_i8(q8, q8o + 64)))
            p16_3 = madd(broadcast_epi16_halves(scales, s + 6, s + 7), maddubs(q6_3, loadu_i8(q8, q8o + 96)))
            sumi = sumi + (p16_0 + p16_1)
            sumi = sumi + (p16_2 + p16_3)
        acc = fmadd_ps(d, cvtepi32_ps(sumi - q8sclsub), acc)
    return hsum_float_8(acc)


@kernel
def _tiled_q4_K(x, a, y, r, sumf):
    """ggml-cpu's tiled kernel for Q4_K (8 or more tokens): ``y[t, r]`` for every token, with one float per token
    (``sumf`` float32 [n_tok]).  Per super-block, ``s1`` the integer dot product of the scaled quants and ``s2 =
    Σ_j m[j]·(bs[2j] + bs[2j+1])`` (int32)::

        res = float(s1)·fp16(x.d);  res = fma(−fp16(x.dmin), float(s2), res);  sumf[t] = fma(res, dy, sumf[t])

    The super-block's quants and scales are unpacked once, for all tokens."""
    for t in range(a.shape[0]):
        sumf[t] = 0
    for i in range(x.shape[0] // 144):
        o = 144 * i
        b = 292 * i
        xd = _f16(x, o)
        xdmin = _f16(x, o + 2)
        mins_and_scales = _mins_and_scales_q4_K(x, o)
        mins = repeat_epi16_hi(mins_and_scales)  # m[k // 2] against bs[k]
        qs = (loadu_u8(x, o + 16), loadu_u8(x, o + 48), loadu_u8(x, o + 80), loadu_u8(x, o + 112))
        q4 = (qs[0] & 15, qs[0] >> 4, qs[1] & 15, qs[1] >> 4, qs[2] & 15, qs[2] >> 4, qs[3] & 15, qs[3] >> 4)
        scale = (broadcast_epi16_halves(mins_and_scales, 0, 0), broadcast_epi16_halves(mins_and_scales, 1, 1),
                 broadcast_epi16_halves(mins_and_scales, 2, 2), broadcast_epi16_halves(mins_and_scales, 3, 3),
                 broadcast_epi16_halves(mins_and_scales, 4, 4), broadcast_epi16_halves(mins_and_scales, 5, 5),
                 broadcast_epi16_halves(mins_and_scales, 6, 6), broadcast_epi16_halves(mins_and_scales, 7, 7))
        for t in range(a.shape[0]):
            q8 = a[t]
            sumi = madd(scale[0], maddubs(q4[0], loadu_i8(q8, b + 4)))
            for k in range(1, 8):
                sumi = sumi + madd(scale[k], maddubs(q4[k], loadu_i8(q8, b + 4 + 32 * k)))
            s2 = hsum_epi32(madd(mins, loadu_i16(q8, b + 260)))
            res = np.float32(hsum_epi32(sumi)) * xd
            res = fma32(-xdmin, np.float32(s2), res)
            sumf[t] = fma32(res, float32_from_bits(_u32(q8, b)), sumf[t])
    for t in range(a.shape[0]):
        y[t, r] = sumf[t]


@kernel
def _tiled_q6_K(x, a, y, r, sumf):
    """ggml-cpu's tiled kernel for Q6_K (8 or more tokens), as :func:`_tiled_q4_K` without mins: ``s1`` the integer
    dot product minus ``32·Σ_s sc[s]·bs[s]``, ``sumf[t] = fma(float(s1)·fp16(x.d), dy, sumf[t])``."""
    for t in range(a.shape[0]):
        sumf[t] = 0
    for i in range(x.shape[0] // 210):
        o = 210 * i
        b = 292 * i
        xd = _f16(x, o + 208)
        scales = cvtepi8_epi16(x, o + 192)
        q6 = _quants_q6_K(x, o, 0) + _quants_q6_K(x, o, 1)
        scale = (broadcast_epi16_halves(scales, 0, 1), broadcast_epi16_halves(scales, 2, 3),
                 broadcast_epi16_halves(scales, 4, 5), broadcast_epi16_halves(scales, 6, 7),
                 broadcast_epi16_halves(scales, 8, 9), broadcast_epi16_halves(scales, 10, 11),
                 broadcast_epi16_halves(scales, 12, 13), broadcast_epi16_halves(scales, 14, 15))
        for t in range(a.shape[0]):
            q8 = a[t]
            sumi = madd(scale[0], maddubs(q6[0], loadu_i8(q8, b + 4)))
            for k in range(1, 8):
                sumi = sumi + madd(scale[k], maddubs(q6[k], loadu_i8(q8, b + 4 + 32 * k)))
            s1 = hsum_epi32(sumi - (madd(loadu_i16(q8, b + 260), scales) << 5))
            sumf[t] = fma32(np.float32(s1) * xd, float32_from_bits(_u32(q8, b)), sumf[t])
    for t in range(a.shape[0]):
        y[t, r] = sumf[t]


@kernel
def _row_q46_K(qtype, x, a, y, r, sumf, tiled):
    """``y[t, r]`` for every token ``t``: weight row ``x`` (Q4_K or Q6_K) against the Q8_K rows ``a``, with the
    tiled kernel (``tiled``) or ``vec_dot`` token by token."""
    if tiled:
        if qtype == _Q4_K:
            _tiled_q4_K(x, a, y, r, sumf)
        else:
            _tiled_q6_K(x, a, y, r, sumf)
    else:
        for t in range(a.shape[0]):
            y[t, r] = vec_dot_q4_K_q8_K(x, a[t]) if qtype == _Q4_K else vec_dot_q6_K_q8_K(x, a[t])


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
def _row_legacy(qtype, x, ah, a8, y, r, q, sums, sumf):
    """``y[t, r]`` for every token: weight row ``x`` of a 32-element block type against its Q8_0 / Q8_1
    activations, in the order of x86's ``ggml_vec_dot_<type>_q8_<0|1>`` (``__AVX2__`` branch; llamafile's
    ``tinyBLAS_Q0_AVX``, which llama.cpp uses for Q4_0 / Q5_0 / Q8_0 with 2 or more tokens, sums the same way).
    Eight float lanes: in block ``ib`` lane ``l`` gets the integer sum ``sumi_l`` of the products of elements
    ``4l … 4l+3`` (one ``vpdpbusd``) and, with the fp16 scales ``dx``, ``dy``::

        acc[l] = fma(dx · dy, sumi_l, acc[l])
        Q4_1, Q5_1 (Q8_1 activations, s = fp16(d · Σq8)):  summs = fma(m, s, summs)

    and the result ``hsum_float_8(acc)`` (``+ summs``).  ``sums`` [n_tok, 8] holds ``acc``, ``sumf`` [n_tok]
    ``summs``.
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
    n8 = q.shape[0] // 4  # 8 lanes, a run-time count so that the lane loop vectorizes
    for t in range(n_tok):
        sumf[t] = 0
        for l in range(8):
            sums[t, l] = 0
    for ib in range(x.shape[0] // type_size):
        o = type_size * ib
        _legacy_block(qtype, x, o, q)
        dx = _f16(x, o)
        m = _f16(x, o + 2) if vsize == 36 else _ZERO  # Q4_1, Q5_1: the block's min
        qa = vsize * ib + vsize - 32  # the activation block's quants
        for t in range(n_tok):
            d = dx * FP16_TO_FP32[ah[t, vsize * ib // 2]]
            for l in range(n8):
                e = 4 * l
                sumi = (q[_ix(e)] * np.int32(a8[t, _ix(qa + e)]) + q[_ix(e + 1)] * np.int32(a8[t, _ix(qa + e + 1)])
                        + q[_ix(e + 2)] * np.int32(a8[t, _ix(qa + e + 2)])
                        + q[_ix(e + 3)] * np.int32(a8[t, _ix(qa + e + 3)]))
                sums[t, _ix(l)] = fma32(d, np.float32(sumi), sums[t, _ix(l)])
            if vsize == 36:
                sumf[t] = fma32(m, FP16_TO_FP32[ah[t, vsize * ib // 2 + 1]], sumf[t])
    for t in range(n_tok):
        y[t, r] = hsum_float_8(sums[t]) + sumf[t] if vsize == 36 else hsum_float_8(sums[t])


@kernel
def _float_elem(qtype, b, i):
    """Element ``i`` of an F32, F16 or BF16 row (bytes ``b``) as float32."""
    if qtype == _F32:
        return float32_from_bits(_u32(b, 4 * i))
    if qtype == _F16:
        return _f16(b, 2 * i)
    return bf16_to_fp32(np.int64(b[2 * i]) | (np.int64(b[2 * i + 1]) << 8))


@kernel
def _reduce_add_16(v):
    """``_mm512_reduce_add_ps`` as gcc implements it: ``t[i] = v[i] + v[i+8]``, ``u[i] = t[i] + t[i+4]``, then
    ``(u0 + u2) + (u1 + u3)``."""
    u0 = (v[0] + v[8]) + (v[4] + v[12])
    u1 = (v[1] + v[9]) + (v[5] + v[13])
    u2 = (v[2] + v[10]) + (v[6] + v[14])
    u3 = (v[3] + v[11]) + (v[7] + v[15])
    return (u0 + u2) + (u1 + u3)


@kernel
def _dpbf16(c, x, y, e):
    """One lane of ``_mm512_dpbf16_ps``: ``c + x[e+1]·y[e+1]``, then ``+ x[e]·y[e]`` (products of bf16 are exact in
    float32; each addition rounds)."""
    c = c + _float_elem(_BF16, x, e + 1) * _float_elem(_BF16, y, e + 1)
    return c + _float_elem(_BF16, x, e) * _float_elem(_BF16, y, e)


@kernel
def vec_dot_float(qtype, x, y, lanes):
    """``ggml_vec_dot_f32`` / ``ggml_vec_dot_f16`` / ``ggml_vec_dot_bf16`` of two rows (bytes) as the AVX512 build
    sums them (vec.cpp, simd-mappings.h); ``lanes`` is float32 scratch [4, 16].

    * F32, F16: four vectors of 16 lanes; element ``e < n − n mod 64`` goes to lane ``e mod 16`` of vector
      ``(e // 16) mod 4``: ``v[j][l] = fma(x[e], y[e], v[j][l])``; then ``(v0 + v2) + (v1 + v3)`` and
      ``_mm512_reduce_add_ps``.  The leftover elements: F32 in float32, ``s = s + x[e]·y[e]`` (product rounded) for
      whole groups of 8 (gcc's in-order vectorization of the loop) and ``s = fma(x[e], y[e], s)`` for the last
      ``mod 8``; F16 ``s += x·y`` in float64.
    * BF16 (``__AVX512BF16__``): two vectors ``c1``, ``c2`` of 16 lanes over steps of 64 — ``c1`` takes elements
      ``i … i+31``, ``c2`` ``i+32 … i+63``, lane ``l`` the pair ``2l, 2l+1`` (:func:`_dpbf16`); ``s =
      (double)reduce(c1) + (double)reduce(c2)``, leftovers ``s += x·y`` in float64.
    """
    if qtype == _F32:
        n = x.shape[0] // 4
    else:
        n = x.shape[0] // 2
    n64 = n - n % 64
    for j in range(4):
        for l in range(16):
            lanes[j, l] = 0
    if qtype == _BF16:
        for i in range(0, n64, 64):
            for l in range(16):
                lanes[0, l] = _dpbf16(lanes[0, l], x, y, i + 2 * l)
                lanes[1, l] = _dpbf16(lanes[1, l], x, y, i + 32 + 2 * l)
        s = np.float64(_reduce_add_16(lanes[0])) + np.float64(_reduce_add_16(lanes[1]))
        for e in range(n64, n):
            s += np.float64(_float_elem(qtype, x, e) * _float_elem(qtype, y, e))
        return np.float32(s)
    for i in range(0, n64, 64):
        for j in range(4):
            for l in range(16):
                e = i + 16 * j + l
                lanes[j, l] = fma32(_float_elem(qtype, x, e), _float_elem(qtype, y, e), lanes[j, l])
    for l in range(16):
        lanes[0, l] = (lanes[0, l] + lanes[2, l]) + (lanes[1, l] + lanes[3, l])
    r = _reduce_add_16(lanes[0])
    if qtype == _F32:  # gcc vectorizes the leftover loop 8 products at a time, added in order, and fuses the rest
        n8 = n - (n - n64) % 8
        for e in range(n64, n8):
            r = r + _float_elem(qtype, x, e) * _float_elem(qtype, y, e)
        for e in range(n8, n):
            r = fma32(_float_elem(qtype, x, e), _float_elem(qtype, y, e), r)
        return r
    s = np.float64(r)
    for e in range(n64, n):
        s += np.float64(_float_elem(qtype, x, e) * _float_elem(qtype, y, e))
    return np.float32(s)


@kernel
def sgemm_dot_float(qtype, x, y, lanes):
    """One output of llamafile's ``tinyBLAS`` (sgemm.cpp, AVX512: ``tinyBLAS<16, __m512, …>``; BF16 with
    ``__AVX512BF16__``: ``tinyBLAS<32, __m512, __m512bh, …>``), which llama.cpp uses for F32 / F16 / BF16 weights
    when a batch has 2 or more tokens: one vector of 16 lanes, lane ``l`` accumulating the elements ``e ≡ l
    (mod 16)`` with ``fma`` in order (BF16: per step of 32, lane ``l`` the pair ``2l, 2l+1``, :func:`_dpbf16`);
    the result ``_mm512_reduce_add_ps``.  ``lanes``: float32 scratch [4, 16]."""
    if qtype == _F32:
        n = x.shape[0] // 4
    else:
        n = x.shape[0] // 2
    for l in range(16):
        lanes[0, l] = 0
    if qtype == _BF16:
        for i in range(0, n, 32):
            for l in range(16):
                lanes[0, l] = _dpbf16(lanes[0, l], x, y, i + 2 * l)
    else:
        for i in range(0, n, 16):
            for l in range(16):
                lanes[0, l] = fma32(_float_elem(qtype, x, i + l), _float_elem(qtype, y, i + l), lanes[0, l])
    return _reduce_add_16(lanes[0])


ROWS_PER_TASK = 16  # weight rows per prange iteration (they share the scratch arrays): speed only, never results


@parallel_kernel
def matmul(qtype, w, a, y):
    """``y[t, r] = W[r] · a[t]`` as llama.cpp computes it: ``w`` uint8 [n_out, row_bytes] of ``qtype``, ``a`` uint8
    [n_tok, …] the activations already in the vec_dot_type, ``y`` float32 [n_tok, n_out].

    The algorithm depends on the batch shape, as in ``ggml_compute_forward_mul_mat``: K-quants with 8 or more
    activation rows take ggml-cpu's tiled kernel; F32 / F16 / BF16 weights with 2 or more rows, ``n_out`` a multiple
    of 4 and ``n_in`` a multiple of the vector width (16 floats, 32 bf16) take llamafile's ``tinyBLAS``
    (:func:`sgemm_dot_float`); everything else ``vec_dot``, one output at a time (:func:`_row_k`,
    :func:`_row_legacy`, :func:`vec_dot_float`; Q4_0 / Q5_0 / Q8_0's ``tinyBLAS_Q0_AVX`` sums as their ``vec_dot``).

    Parallel over tasks of ``ROWS_PER_TASK`` weight rows; every output is computed whole by one thread, so the
    thread count never changes a bit.
    """
    n_out = w.shape[0]
    n_tok = a.shape[0]
    a8 = a.view(np.int8)
    a16 = a.view(np.int16)
    ah = a.view(np.uint16)
    is_k = qtype == _Q2_K or qtype == _Q3_K or qtype == _Q4_K or qtype == _Q5_K or qtype == _Q6_K
    is_float = qtype == _F32 or qtype == _F16 or qtype == _BF16
    tiled = is_k and n_tok >= 8
    n_in = w.shape[1] // 4 if qtype == _F32 else w.shape[1] // 2
    sgemm = is_float and n_tok >= 2 and n_out % 4 == 0 and n_in % (32 if qtype == _BF16 else 16) == 0
    for task in prange((n_out + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        acc = np.empty(32, np.int32)
        scales = np.empty(16, np.int32)
        mins = np.empty(16, np.int32)
        sums = np.empty((n_tok, 8), np.float32)
        sumf = np.empty(n_tok, np.float32)
        lanes = np.empty((4, 16), np.float32)
        for r in range(task * ROWS_PER_TASK, min((task + 1) * ROWS_PER_TASK, n_out)):
            if qtype == _Q4_K or qtype == _Q6_K:
                _row_q46_K(qtype, w[r], a, y, r, sumf, tiled)
            elif is_k:
                _row_k(qtype, w[r], a16, ah, a8, y, r, acc, scales, mins, sums, sumf, tiled)
            elif is_float:
                for t in range(n_tok):
                    if sgemm:
                        y[t, r] = sgemm_dot_float(qtype, w[r], a[t], lanes)
                    else:
                        y[t, r] = vec_dot_float(qtype, w[r], a[t], lanes)
            else:
                _row_legacy(qtype, w[r], ah, a8, y, r, acc, sums, sumf)


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


@kernel
def _vec_dot_f16_q(k, q16):
    """``ggml_vec_dot_f16`` of the F16 bits ``k`` with the halves ``q16`` (float32 values): the F16 case of
    :func:`vec_dot_float` — four vectors of 16 lanes with ``fma`` over steps of 64, ``(v0 + v2) + (v1 + v3)``,
    ``_mm512_reduce_add_ps``, leftovers added in float64."""
    n = k.shape[0]
    acc = np.zeros((4, 16), np.float32)
    n64 = n - n % 64
    for i in range(0, n64, 64):
        for j in range(4):
            for l in range(16):
                e = i + 16 * j + l
                acc[j, l] = fma32(FP16_TO_FP32[k[e]], q16[e], acc[j, l])
    for l in range(16):
        acc[0, l] = (acc[0, l] + acc[2, l]) + (acc[1, l] + acc[3, l])
    s = np.float64(_reduce_add_16(acc[0]))
    for e in range(n64, n):
        s += np.float64(FP16_TO_FP32[k[e]] * q16[e])
    return np.float32(s)


@kernel
def _fma_fp16(x, y, z):
    """``x·y + z`` of half-precision values (held as float32) rounded once to half precision — one lane of
    ``_mm512_fmadd_ph``.  The product is exact in float32 and the sum exact (or, far below the half's precision,
    harmless) in float64; that sum is rounded to float32 *to odd*, so the final rounding to half is correct."""
    d = np.float64(x * y) + np.float64(z)
    f = np.float32(d)
    if np.float64(f) != d:
        bits = float32_bits(f)
        if bits & 1 == 0:
            bits = bits + 1 if abs(d) > abs(np.float64(f)) else bits - 1
            f = float32_from_bits(bits)
    return round_fp16(f)


F16_STEP = 128  # GGML_F16_STEP with __AVX512FP16__: ggml_vec_mad_f16 / ggml_vec_scale_f16 use half vectors


@kernel
def _flash_attn_one_chunk(q, k_cache, v_cache, t, h, g, first, p, out):
    """One query row of ``ggml_compute_forward_flash_attn_ext_f16_one_chunk`` (fewer than 64 queries in the batch):
    ``q16 = fp16(q)``; for each key ``j``::

        s = ggml_vec_dot_f16(k_j, q16)                                 (:func:`_vec_dot_f16_q`; kq_scale 1)
        if s > M:  ms = expf(M − s), M = s, acc = acc ⊙ ms, vs = 1
        else:      ms = 1, vs = expf(s − M)
        acc = acc + v_j · vs                                           (ggml_vec_mad_f16)
        S = fma(S, ms, vs)
        out = acc · (1 / S)

    ``acc`` (VKQ16) is half precision.  The AVX512-FP16 build does the first ``D − D mod 128`` elements in half
    vectors — ``acc = fp16(acc · fp16(ms))``, ``acc = fma_ph(v, fp16(vs), acc)`` (:func:`_fma_fp16`) — and the
    rest in float: ``acc = fp16(acc · ms)``, ``acc = fp16(fma(v, vs, acc))``.
    """
    head_dim = q.shape[2]
    n_vec = head_dim - head_dim % F16_STEP
    q16 = np.empty(head_dim, np.float32)
    for d in range(head_dim):
        q16[d] = round_fp16(q[t, h, d])
    acc = np.zeros(head_dim, np.float32)  # VKQ16, held as the float32 values of halves
    big_s = _ZERO
    big_m = np.float32(-np.inf)
    for j in range(first, p + 1):
        s = _vec_dot_f16_q(k_cache[g, j], q16)
        ms = _ONE
        vs = _ONE
        if s > big_m:
            ms = expf(big_m - s)
            big_m = s
            ms16 = round_fp16(ms)
            for d in range(n_vec):
                acc[d] = round_fp16(acc[d] * ms16)
            for d in range(n_vec, head_dim):
                acc[d] = round_fp16(acc[d] * ms)
        else:
            vs = expf(s - big_m)
        vj = v_cache[g, j]
        vs16 = round_fp16(vs)
        for d in range(n_vec):
            acc[d] = _fma_fp16(FP16_TO_FP32[vj[d]], vs16, acc[d])
        for d in range(n_vec, head_dim):
            acc[d] = round_fp16(fma32(FP16_TO_FP32[vj[d]], vs, acc[d]))
        big_s = fma32(big_s, ms, vs)
    s_inv = _ONE / big_s if big_s != _ZERO else _ZERO
    for d in range(head_dim):
        out[t, h, d] = acc[d] * s_inv


FA_TILE = 64  # GGML_FA_TILE_Q = GGML_FA_TILE_KV (ggml-cpu/common.h)


@kernel
def _flash_attn_tiled(q, k_cache, v_cache, t, h, g, first, p, kq, out):
    """One query row of ``ggml_compute_forward_flash_attn_ext_tiled`` (64 or more queries in the batch): Q stays
    float32, the keys go in tiles of 64 (``ic = 0, 64, …``; a tile with no visible key is skipped), ``kq`` float32
    [64] is scratch.  Per tile (``kq[tk] = −∞`` for keys that are masked)::

        kq[tk] = fma(k[D−1], q[D−1], … fma(k[0], q[0], 0))              (simd_gemm: fma in order of d)
        Mnew = max(M, max(kq));  if Mnew > M:  ms = expf(M − Mnew), acc = acc · ms, S = S · ms
        M = Mnew
        kq[tk] = v_expf(kq[tk] − M)                                    (the AVX512 ggml_v_expf, :func:`v_expf`)
        S = S + Σ_4 (double)reduce_add(kq[16m … 16m+15])              (ggml_vec_soft_max_f32, sum in float64)
        acc[d] = fma(v_tk[d], kq[tk], acc[d])   for tk in order        (simd_gemm)
        out = acc · (1 / S)
    """
    head_dim = q.shape[2]
    acc = np.zeros(head_dim, np.float32)  # VKQ32
    big_s = _ZERO
    big_m = np.float32(-np.inf)
    for ic in range(first - first % FA_TILE, p + 1, FA_TILE):
        tile_max = np.float32(-np.inf)
        for tk in range(FA_TILE):
            j = ic + tk
            if j < first or j > p:
                kq[tk] = np.float32(-np.inf)
                continue
            kj = k_cache[g, j]
            s = _ZERO
            for d in range(head_dim):
                s = fma32(FP16_TO_FP32[kj[d]], q[t, h, d], s)
            kq[tk] = s
            tile_max = max(tile_max, s)
        m_new = max(big_m, tile_max)
        if m_new > big_m:
            ms = expf(big_m - m_new)
            for d in range(head_dim):
                acc[d] = acc[d] * ms
            big_s = big_s * ms
        big_m = m_new
        total = 0.0
        for m16 in range(FA_TILE // 16):
            for l in range(16):
                kq[16 * m16 + l] = v_expf(kq[16 * m16 + l] - big_m)
            total += np.float64(_reduce_add_16(kq[16 * m16:16 * m16 + 16]))
        big_s = np.float32(np.float64(big_s) + total)
        for tk in range(FA_TILE):
            j = ic + tk
            if j < first or j > p:
                continue
            vj = v_cache[g, j]
            w = kq[tk]
            for d in range(head_dim):
                acc[d] = fma32(FP16_TO_FP32[vj[d]], w, acc[d])
    s_inv = _ONE / big_s if big_s != _ZERO else _ZERO
    for d in range(head_dim):
        out[t, h, d] = acc[d] * s_inv


@parallel_kernel
def flash_attn_ext_f16(q, k_cache, v_cache, pos0, window, tiled, out):
    """llama.cpp's CPU flash attention (``ggml_compute_forward_flash_attn_ext_f16``) with F16 K and V.

    ``q``: float32 [n_tok, n_head, D], rotated and already multiplied by ``1/sqrt(D)``; ``k_cache``, ``v_cache``:
    uint16 fp16 bits [n_head_kv, n_cache, D]; ``out``: float32 [n_tok, n_head, D].  Query ``t`` (position
    ``p = pos0 + t``) of head ``h`` sees the keys ``p − window < j ≤ p`` of KV head ``h // (n_head / n_head_kv)``.
    ``tiled`` chooses the algorithm as llama.cpp does by the number of queries in the batch: 64 or more
    (``GGML_FA_TILE_Q``) :func:`_flash_attn_tiled`, else :func:`_flash_attn_one_chunk`.
    """
    n_tok, n_head = q.shape[0], q.shape[1]
    group = n_head // k_cache.shape[0]
    for job in prange(n_tok * n_head):
        t = job // n_head
        h = job - t * n_head
        p = pos0 + t
        first = 0
        if window > 0 and p - window + 1 > 0:
            first = p - window + 1
        if tiled:
            kq = np.empty(FA_TILE, np.float32)
            _flash_attn_tiled(q, k_cache, v_cache, t, h, h // group, first, p, kq, out)
        else:
            _flash_attn_one_chunk(q, k_cache, v_cache, t, h, h // group, first, p, out)


# -- RoPE and SwiGLU as the build compiles them ---------------------------------------------------------------------


@parallel_kernel
def rope_neox(x, cos, sin, n_rot):
    """``ggml_rope`` NeoX in place as gcc compiles ``rotate_pairs`` (``-ffp-contract=fast``): for ``i < n_rot/2``
    ``y[i] = fma(x[i], cos, −(x[i+h]·sin))``, ``y[i+h] = fma(x[i], sin, x[i+h]·cos)``.  ``x``: float32
    [n_tok, n_heads, head_dim]; ``cos``, ``sin``: float32 [n_tok, n_rot/2]."""
    half = n_rot // 2
    for t in prange(x.shape[0]):
        for hh in range(x.shape[1]):
            for i in range(half):
                a = x[t, hh, i]
                b = x[t, hh, i + half]
                x[t, hh, i] = fma32(a, cos[t, i], -(b * sin[t, i]))
                x[t, hh, i + half] = fma32(a, sin[t, i], b * cos[t, i])


# the constants of ggml_v_expf, written as in vec.h
_EXP_SHIFT = np.float32(float.fromhex("0x1.8p23"))
_LOG2E = np.float32(float.fromhex("0x1.715476p+0"))
_LN2_HI = np.float32(float.fromhex("0x1.62e4p-1"))
_LN2_LO = np.float32(float.fromhex("0x1.7f7d1cp-20"))
_EXP_C0 = np.float32(float.fromhex("0x1.0e4020p-7"))
_EXP_C1 = np.float32(float.fromhex("0x1.573e2ep-5"))
_EXP_C2 = np.float32(float.fromhex("0x1.555e66p-3"))
_EXP_C3 = np.float32(float.fromhex("0x1.fffdb6p-2"))
_EXP_C4 = np.float32(float.fromhex("0x1.ffffecp-1"))


@kernel
def v_expf(x):
    """One lane of the AVX512 ``ggml_v_expf`` (vec.h)::

        n = fma(x, log2e, 0x1.8p23) − 0x1.8p23                  (x · log2 e rounded to an integer)
        b = fma(−n, ln2_lo, fma(−n, ln2_hi, x))
        u = b · b
        j = fma(fma(fma(c0, b, c1), u, fma(c2, b, c3)), u, fma(c4, b, 1))
        exp(x) ≈ j · 2ⁿ  (``_mm512_scalef_ps``: one rounding);  0 if n < −192, ∞ if n > 192
    """
    n = fma32(x, _LOG2E, _EXP_SHIFT) - _EXP_SHIFT
    if abs(n) > np.float32(192.0):
        return _ZERO if n <= _ZERO else np.float32(np.inf)
    b = fma32(-n, _LN2_LO, fma32(-n, _LN2_HI, x))
    u = b * b
    j = fma32(fma32(fma32(_EXP_C0, b, _EXP_C1), u, fma32(_EXP_C2, b, _EXP_C3)), u, fma32(_EXP_C4, b, _ONE))
    return np.float32(np.float64(j) * np.power(2.0, np.float64(n)))


@parallel_kernel
def swiglu(gate_up, out):
    """``ggml_vec_swiglu_f32`` (AVX512) on the fused ``ffn_up`` output: ``out[t, i] = silu(g) · u`` with
    ``g = gate_up[t, i]``, ``u = gate_up[t, n_ff + i]``; for the elements in whole groups of 16
    ``silu(g) = g / (1 + v_expf(0 − g))`` (:func:`v_expf`), for the rest ``g / (1 + expf(−g))``.
    ``gate_up``: float32 [n_tok, 2·n_ff]; ``out``: float32 [n_tok, n_ff]."""
    n_tok, n_ff = out.shape
    n16 = n_ff - n_ff % 16
    for t in prange(n_tok):
        for i in range(n16):
            g = gate_up[t, i]
            out[t, i] = (g / (_ONE + v_expf(_ZERO - g))) * gate_up[t, n_ff + i]
        for i in range(n16, n_ff):
            g = gate_up[t, i]
            out[t, i] = (g / (_ONE + expf(-g))) * gate_up[t, n_ff + i]
