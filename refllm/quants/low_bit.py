"""The 1- and 2-bit "legacy-style" block formats Q1_0 and Q2_0 (``ggml/src/ggml-quants.c``, new in this ggml).

Both are one fp16 scale ``d`` per block plus a few bits per weight, with no search: the scale is a plain statistic of
the block (mean |x| for Q1_0, max |x| for Q2_0).  ggml ignores an importance matrix for both (with one it runs the
same ``_ref`` function row by row, which gives the same bytes).  gguf-py does not know these types.

* **Q1_0** keeps only the sign of each weight: ``x = ±d``, ``d`` = the mean absolute value of the block.
* **Q2_0** rounds ``x/d`` to {-1, 0, +1} (code 0, 1, 2) with ``d`` = the largest |x| of the block; code 3 (+2d)
  decodes but the encoder never makes it.

Q1_0's encoder is defined for every input (NaN and ±inf give an fp16 NaN or inf scale; ``finite_only=False``).
Q2_0's is not: it converts ``roundf(x/d)`` to ``int``, which C leaves undefined for NaN, ±inf and huge values.
refllm rejects NaN/±inf for Q2_0 (``finite_only=True``) but must still reproduce one such conversion on finite
input: for a block whose largest |x| is below 2**-128, ``1/d`` overflows to inf and ggml converts ±inf and NaN
(``0*inf``) with x86-64's ``cvttss2si``, which gives INT_MIN — code 0.  :func:`~refllm.quants.common.c_float_to_int`
does the same.
"""

from __future__ import annotations

import numpy as np

from ..ggml_types import GGMLType
from ..jit import parallel_kernel, prange
from .common import FP16_TO_FP32, c_float_to_int, load_u16_2d, roundf, store_fp16
from .registry import BlockFormat, Imatrix

__all__ = ["quantize_q1_0", "dequantize_q1_0", "quantize_q2_0", "dequantize_q2_0", "FORMATS"]

QK1_0 = 128
Q1_0_BYTES = 18
QK2_0 = 64
Q2_0_BYTES = 18

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)
_QK1_0_F32 = np.float32(QK1_0)


# -- Q1_0 ------------------------------------------------------------------------------------------------------------
#
#   block_q1_0 (128 weights, 18 bytes, 1.125 bits per weight)
#
#   byte  0     2 ............................................ 17
#        +-----+-----------------------------------------------+
#        |  d  | qs[16]: bit (j % 8) of byte j / 8 = sign bit of x[j] (1: x[j] >= 0)
#        +-----+-----------------------------------------------+
#         fp16
#
#   x[j] = bit ? d : -d
#
#   Encode (quantize_row_q1_0_ref): d = fp16((|x[0]| + |x[1]| + ... + |x[127]|) / 128), summed in order in float32;
#   bit j = (x[j] >= 0), so -0.0 counts as positive and NaN as negative.


@parallel_kernel
def quantize_q1_0(x, imatrix, out):
    """``quantize_row_q1_0_ref`` on every row (``imatrix`` is ignored, as in ggml)."""
    nrows, n = x.shape
    nb = n // QK1_0
    for r in prange(nrows):
        for i in range(nb):
            x0 = i * QK1_0
            y0 = i * Q1_0_BYTES
            sum_abs = _ZERO
            for j in range(QK1_0):
                sum_abs += abs(x[r, x0 + j])
            store_fp16(out[r], y0, sum_abs / _QK1_0_F32)
            for k in range(QK1_0 // 8):
                byte = 0
                for b in range(8):
                    if x[r, x0 + 8 * k + b] >= _ZERO:
                        byte |= 1 << b
                out[r, y0 + 2 + k] = byte


@parallel_kernel
def dequantize_q1_0(q, out):
    """``dequantize_row_q1_0``: ``y[j] = d`` if bit j is set, else ``-d``."""
    nrows = q.shape[0]
    nb = q.shape[1] // Q1_0_BYTES
    for r in prange(nrows):
        for i in range(nb):
            b = i * Q1_0_BYTES
            y0 = i * QK1_0
            d = FP16_TO_FP32[load_u16_2d(q, r, b)]
            neg_d = -d
            for j in range(QK1_0):
                bit = (q[r, b + 2 + (j >> 3)] >> (j & 7)) & 1
                out[r, y0 + j] = d if bit else neg_d


# -- Q2_0 ------------------------------------------------------------------------------------------------------------
#
#   block_q2_0 (64 weights, 18 bytes, 2.25 bits per weight)
#
#   byte  0     2 ............................................ 17
#        +-----+-----------------------------------------------+
#        |  d  | qs[16]: bits 2(j % 4), 2(j % 4)+1 of byte j / 4 = code of x[j]
#        +-----+-----------------------------------------------+
#         fp16
#
#   x[j] = (code - 1) * d        code 0, 1, 2, 3 -> -d, 0, +d, +2d
#
#   Encode (quantize_row_q2_0_ref): d = max |x| (NaN skipped), id = d > 0 ? 1/d : 0;
#   code = clamp((int)roundf(x * id) + 1, 0, 3); d is stored as fp16 (and the codes use the unrounded d).


@parallel_kernel
def quantize_q2_0(x, imatrix, out):
    """``quantize_row_q2_0_ref`` on every row (``imatrix`` is ignored, as in ggml)."""
    nrows, n = x.shape
    nb = n // QK2_0
    for r in prange(nrows):
        for i in range(nb):
            x0 = i * QK2_0
            y0 = i * Q2_0_BYTES
            amax = _ZERO
            for j in range(QK2_0):
                a = abs(x[r, x0 + j])
                if a > amax:
                    amax = a
            d = amax
            idd = _ONE / d if d > _ZERO else _ZERO
            store_fp16(out[r], y0, d)
            for k in range(QK2_0 // 4):
                byte = 0
                for b in range(4):
                    code = c_float_to_int(roundf(x[r, x0 + 4 * k + b] * idd)) + 1
                    if code < 0:
                        code = 0
                    if code > 3:
                        code = 3
                    byte |= code << (2 * b)
                out[r, y0 + 2 + k] = byte


@parallel_kernel
def dequantize_q2_0(q, out):
    """``dequantize_row_q2_0``: ``y[j] = (code_j - 1) * d``, the integer converted to float first."""
    nrows = q.shape[0]
    nb = q.shape[1] // Q2_0_BYTES
    for r in prange(nrows):
        for i in range(nb):
            b = i * Q2_0_BYTES
            y0 = i * QK2_0
            d = FP16_TO_FP32[load_u16_2d(q, r, b)]
            for j in range(QK2_0):
                code = (np.int64(q[r, b + 2 + (j >> 2)]) >> (2 * (j & 3))) & 3
                out[r, y0 + j] = np.float32(code - 1) * d


FORMATS = [
    BlockFormat(GGMLType.Q1_0, quantize=quantize_q1_0, dequantize=dequantize_q1_0, imatrix=Imatrix.IGNORED,
                finite_only=False),
    BlockFormat(GGMLType.Q2_0, quantize=quantize_q2_0, dequantize=dequantize_q2_0, imatrix=Imatrix.IGNORED,
                finite_only=True),
]
