"""The plain float formats F32, F16 and BF16: one element per "block", converted exactly as ggml converts them.

These are the unquantized tensor types of a GGUF file.  They fit the block-format calling convention of
:mod:`refllm.quants.registry` like every other type: a row of ``n`` elements is ``n * 4`` (F32) or ``n * 2``
(F16, BF16) little-endian bytes.

Unlike the quantized formats they are defined for every input, NaN and ±inf included, and refllm reproduces ggml's
bits for all of them:

* F32 — a byte copy (``memcpy`` in ``ggml_quantize_chunk``); NaN payloads, signaling NaNs and −0 survive.
* F16 — ``ggml_fp32_to_fp16_row`` = ``GGML_FP32_TO_FP16`` per element (round to nearest even, subnormal halves,
  overflow to ±inf, every NaN becomes ``sign | 0x7E00``); decoded by ``ggml_fp16_to_fp32_row`` =
  ``GGML_FP16_TO_FP32``, which is exact except that it *quiets* signaling NaNs: ggml multiplies by 2**-112, which
  sets the quiet bit of a half sNaN (0x7C01 → 0x7FC02000, where a plain IEEE conversion gives 0x7F802000).
* BF16 — ``ggml_fp32_to_bf16_row_ref`` (round to nearest even on the top 16 bits; NaN → ``(bits >> 16) | 64``);
  decoded by ``ggml_bf16_to_fp32_row``, which puts the 16 bits on top of 16 zero bits (NaNs stay as they are).
"""

from __future__ import annotations

import numpy as np

from ..ggml_types import GGMLType
from ..jit import float32_bits, float32_from_bits, parallel_kernel, prange
from .common import (
    FP16_TO_FP32,
    bf16_to_fp32,
    fp32_to_bf16,
    fp32_to_fp16,
    load_u16_2d,
    load_u32_2d,
    store_u16,
    store_u32,
)
from .registry import BlockFormat, Imatrix

# ---------------------------------------------------------------------------------------------------------------------
# F32 — 32 bits per weight
#
#   byte   0        1        2        3
#        +--------+--------+--------+--------+
#        | bits 0-7        ...       bits 24-31 |   IEEE-754 binary32, little-endian
#        +--------+--------+--------+--------+
#
# Encode: copy the four bytes of the float.  Decode: read them back.  Nothing is rounded, nothing is changed.
# ---------------------------------------------------------------------------------------------------------------------


@parallel_kernel
def quantize_f32(x, imatrix, out):
    """F32 "encode": the little-endian bytes of each float (``memcpy``; NaN payloads kept bit for bit)."""
    for r in prange(x.shape[0]):
        row = out[r]
        for j in range(x.shape[1]):
            store_u32(row, 4 * j, float32_bits(x[r, j]))


@parallel_kernel
def dequantize_f32(q, out):
    """F32 decode: the float whose little-endian bytes are ``q[4j : 4j+4]``."""
    for r in prange(q.shape[0]):
        for j in range(out.shape[1]):
            out[r, j] = float32_from_bits(load_u32_2d(q, r, 4 * j))


# ---------------------------------------------------------------------------------------------------------------------
# F16 — 16 bits per weight
#
#   byte   0        1
#        +--------+--------+
#        | mantissa lo | s|eeeee|mm |   IEEE-754 binary16 (1 sign, 5 exponent, 10 mantissa bits), little-endian
#        +--------+--------+
#
# Encode: GGML_FP32_TO_FP16 (refllm.quants.common.fp32_to_fp16) — round to nearest even, keep subnormals, overflow
# to ±inf, NaN → sign | 0x7E00 (the payload is dropped).
# Decode: GGML_FP16_TO_FP32 (the table refllm.quants.common.FP16_TO_FP32) — exact; signaling NaNs come out quiet.
# ---------------------------------------------------------------------------------------------------------------------


@parallel_kernel
def quantize_f16(x, imatrix, out):
    """``ggml_fp32_to_fp16_row``: each float as ``GGML_FP32_TO_FP16`` bits, little-endian."""
    for r in prange(x.shape[0]):
        row = out[r]
        for j in range(x.shape[1]):
            store_u16(row, 2 * j, np.int64(fp32_to_fp16(x[r, j])))


@parallel_kernel
def dequantize_f16(q, out):
    """``ggml_fp16_to_fp32_row``: ``GGML_FP16_TO_FP32`` of each little-endian half."""
    for r in prange(q.shape[0]):
        for j in range(out.shape[1]):
            out[r, j] = FP16_TO_FP32[load_u16_2d(q, r, 2 * j)]  # GGML_FP16_TO_FP32 (sNaN halves come out quiet)


# ---------------------------------------------------------------------------------------------------------------------
# BF16 — 16 bits per weight
#
#   byte   0        1
#        +--------+--------+
#        | e|mmmmmmm | s|eeeeeee |   bfloat16 = the top half of a binary32 (1 sign, 8 exponent, 7 mantissa bits)
#        +--------+--------+
#
# Encode: ggml_fp32_to_bf16_row_ref = GGML_FP32_TO_BF16 (refllm.quants.common.fp32_to_bf16): NaN → (bits >> 16) | 64
# (quiet, payload's top bits kept); otherwise (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16, i.e. round to nearest even
# (overflow rounds to ±inf).  Decode: bits << 16.
# ---------------------------------------------------------------------------------------------------------------------


@parallel_kernel
def quantize_bf16(x, imatrix, out):
    """``ggml_fp32_to_bf16_row_ref``: each float as ``GGML_FP32_TO_BF16`` bits, little-endian."""
    for r in prange(x.shape[0]):
        row = out[r]
        for j in range(x.shape[1]):
            store_u16(row, 2 * j, np.int64(fp32_to_bf16(x[r, j])))


@parallel_kernel
def dequantize_bf16(q, out):
    """``ggml_bf16_to_fp32_row``: ``x = float32 with bits (h << 16)``."""
    for r in prange(q.shape[0]):
        for j in range(out.shape[1]):
            out[r, j] = bf16_to_fp32(load_u16_2d(q, r, 2 * j))


# ggml_quantize_chunk accepts an importance matrix for the float types and ignores it.
FORMATS = [
    BlockFormat(GGMLType.F32, quantize=quantize_f32, dequantize=dequantize_f32, imatrix=Imatrix.IGNORED,
                finite_only=False),
    BlockFormat(GGMLType.F16, quantize=quantize_f16, dequantize=dequantize_f16, imatrix=Imatrix.IGNORED,
                finite_only=False),
    BlockFormat(GGMLType.BF16, quantize=quantize_bf16, dequantize=dequantize_bf16, imatrix=Imatrix.IGNORED,
                finite_only=False),
]
