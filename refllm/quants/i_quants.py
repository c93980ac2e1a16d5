"""The I-quants: IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ4_NL, IQ4_XS (decode only, for now).

ggml's "importance-matrix" quants (ikawrakow's, ``ggml/src/ggml-quants.c``) replace the uniform integer levels of
the K-quants with *codebooks*:

* **Lattice grids** (IQ1_*, IQ2_*, IQ3_*): a group of 8 (or 4) weights is stored as an index into a fixed table of
  8-vectors (4-vectors), the grid, whose coordinates take a few magnitudes only — {8, 25, 43} for the IQ2 grids
  (with a sign per weight), {4, 12, …, 62} for IQ3_XXS, {1, 3, …, 15} for IQ3_S, {-1, 0, 1} for IQ1 (no signs;
  a shared shift ±1/8 instead).  The grids are chosen subsets of an E8-like lattice (256 … 2048 points), so a few
  index bits stand for 8 weights.
* **Signs** are stored separately, 8 per group: IQ2_XXS, IQ2_XS and IQ3_XXS keep only 7 sign bits and the 8th is
  implied by an even number of minus signs (``ksigns_iq2xs`` expands the 7 bits to 8); IQ2_S and IQ3_S store all 8.
* **Non-linear 4-bit** (IQ4_NL, IQ4_XS): each weight is a 4-bit index into ``kvalues_iq4nl``, 16 levels spaced
  more densely near zero.
* **Scales**: an fp16 super-scale ``d`` per 256 weights (per 32 for IQ4_NL) and small integer sub-scales.

Decoding is a table lookup and one or two float32 multiplies per weight, written here exactly as ggml's
``dequantize_row_iq*`` computes them, so the results are bitwise identical (NaN payloads included) for any bytes.
Two details matter for that:

* ggml writes a sign as ``grid * (bit ? -1.f : 1.f)``; gcc compiles the multiplication by -1 as a negation, which
  also flips the sign of a NaN.  refllm negates (``-v``), which is the same bit operation.
* Integer sub-scales are converted to float before they meet ``d``: ``d * (0.5f + s) * 0.25f`` is
  ``(d * (0.5 + float(s))) * 0.25`` in float32, never ``d * 0.125 + …``.

The grids and sign tables are the format's constant data.  They are not copied into this file: they are expanded at
import time from gguf-py (``gguf.quants``, the Python package maintained in the llama.cpp repository), whose
classes ``IQ2_XXS``, ``IQ2_XS``, ``IQ2_S``, ``IQ3_XXS``, ``IQ3_S`` and ``IQ1_S`` carry each grid in compact form
(2 or 3 bits per coordinate) and the public class method ``init_grid()`` that expands it; ``IQ2_XXS.ksigns`` is
``ksigns_iq2xs``.  The decode tests prove the expanded tables equal ggml's ``iq*_grid`` (every index and sign
pattern is fed through both decoders).

Encoders come later; the encode algorithms are described above each layout for reference.
"""

from __future__ import annotations

import gguf.quants as _gguf_quants
import numpy as np

from ..ggml_types import QK_K, GGMLType
from ..jit import parallel_kernel, prange
from .common import FP16_TO_FP32, load_u16_2d, load_u32_2d
from .registry import BlockFormat, Imatrix

__all__ = ["IQ2XXS_GRID", "IQ2XS_GRID", "IQ2S_GRID", "IQ3XXS_GRID", "IQ3S_GRID", "IQ1S_GRID", "KSIGNS_IQ2XS",
           "KVALUES_IQ4NL", "IQ1S_DELTA", "dequantize_iq2_xxs", "dequantize_iq2_xs", "dequantize_iq2_s",
           "dequantize_iq3_xxs", "dequantize_iq3_s", "dequantize_iq1_s", "dequantize_iq1_m", "dequantize_iq4_nl",
           "dequantize_iq4_xs", "FORMATS"]


# -- the codebooks ---------------------------------------------------------------------------------------------------

def _expanded_grid(cls) -> np.ndarray:
    """gguf-py's grid of ``cls`` expanded to float32 ``[n_points, 8 or 4]`` — the bytes of ggml's ``iq*_grid``
    entries (uint8 coordinates, or int8 for IQ1_S) as the float values the decoders multiply."""
    cls.init_grid()
    grid = np.ascontiguousarray(np.asarray(cls.grid, dtype=np.float32).reshape(cls.grid_shape))
    grid.setflags(write=False)
    return grid


IQ2XXS_GRID = _expanded_grid(_gguf_quants.IQ2_XXS)  # iq2xxs_grid: 256 × 8, coordinates 8, 25, 43
IQ2XS_GRID = _expanded_grid(_gguf_quants.IQ2_XS)  # iq2xs_grid: 512 × 8, coordinates 8, 25, 43
IQ2S_GRID = _expanded_grid(_gguf_quants.IQ2_S)  # iq2s_grid: 1024 × 8, coordinates 8, 25, 43
IQ3XXS_GRID = _expanded_grid(_gguf_quants.IQ3_XXS)  # iq3xxs_grid: 256 × 4, coordinates 4, 12, ..., 62
IQ3S_GRID = _expanded_grid(_gguf_quants.IQ3_S)  # iq3s_grid: 512 × 4, coordinates 1, 3, ..., 15
IQ1S_GRID = _expanded_grid(_gguf_quants.IQ1_S)  # iq1s_grid: 2048 × 8, coordinates -1, 0, 1 (also used by IQ1_M)

# ksigns_iq2xs: 7 sign bits -> 8 sign bits, the 8th making the number of minus signs even (bit 7 = parity).
KSIGNS_IQ2XS = np.frombuffer(_gguf_quants.IQ2_XXS.ksigns, dtype=np.uint8).copy()
KSIGNS_IQ2XS.setflags(write=False)

# kvalues_iq4nl (ggml-common.h): the 16 non-linear levels of IQ4_NL and IQ4_XS.
KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)
_KVALUES_IQ4NL_F32 = KVALUES_IQ4NL.astype(np.float32)

IQ1S_DELTA = np.float32(0.125)  # IQ1S_DELTA = IQ1M_DELTA: the shift of every IQ1 grid point, ±1/8

_HALF = np.float32(0.5)
_QUARTER = np.float32(0.25)


# -- IQ2_XXS ---------------------------------------------------------------------------------------------------------
#
#   block_iq2_xxs (256 weights, 66 bytes, 2.0625 bits per weight)
#
#   byte  0     2                                                                    66
#        +-----+--------------------------------------------------------------------+
#        |  d  | 8 × 8 bytes, one per 32 weights (ib32):                              |
#        +-----+   bytes 0-3: grid index (into iq2xxs_grid) of weights 8l … 8l+7, l = 0..3
#         fp16     bytes 4-7: uint32 aux: bits 7l … 7l+6 = sign index of group l (ksigns_iq2xs),
#                                         bits 28-31   = 4-bit sub-scale s
#
#   db = d * (0.5 + s) * 0.25;   x[8l + j] = ±db * grid[j]   (minus where bit j of ksigns_iq2xs[sign index] is set)
#
#   Encode (quantize_row_iq2_xxs_impl; needs an imatrix): per 32 weights, weights w = qw*sqrt(σ²+x²); signs are
#   taken off (flipping the least important one if the count of minus signs is odd); a scale search (make_qp_quants,
#   then 13 trial scales) projects each group of 8 |x| onto {1,3,5}*scale and snaps it to the nearest grid point
#   (via a neighbour table when off-grid); the 8 sub-block scales are stored as 4 bits against d = max/31.


@parallel_kernel
def dequantize_iq2_xxs(q, out):
    """``dequantize_row_iq2_xxs``: ``y = ±(d * (0.5 + s) * 0.25) * iq2xxs_grid[idx][j]``."""
    nrows = q.shape[0]
    nb = q.shape[1] // 66
    for r in prange(nrows):
        for i in range(nb):
            b = i * 66
            d = FP16_TO_FP32[load_u16_2d(q, r, b)]
            for ib32 in range(QK_K // 32):
                o = b + 2 + 8 * ib32
                aux = load_u32_2d(q, r, o + 4)
                db = (d * (_HALF + np.float32(aux >> 28))) * _QUARTER
                for l in range(4):
                    idx = q[r, o + l]
                    signs = KSIGNS_IQ2XS[(aux >> (7 * l)) & 127]
                    y0 = i * QK_K + 32 * ib32 + 8 * l
                    for j in range(8):
                        v = db * IQ2XXS_GRID[idx, j]
                        out[r, y0 + j] = -v if (signs >> j) & 1 else v


# -- IQ2_XS ----------------------------------------------------------------------------------------------------------
#
#   block_iq2_xs (256 weights, 74 bytes, 2.3125 bits per weight)
#
#   byte  0     2                                                66                74
#        +-----+------------------------------------------------+-----------------+
#        |  d  | qs[32]: uint16 per 8 weights:                   | scales[8]       |
#        +-----+   bits 0-8 grid index (iq2xs_grid),             | per 32 weights: |
#         fp16     bits 9-15 sign index (ksigns_iq2xs)           | lo nibble: first 16, hi nibble: last 16
#
#   db = d * (0.5 + s) * 0.25 (s = the 16-weight nibble);   x[j] = ±db * grid[j]
#
#   Encode (quantize_row_iq2_xs_impl; needs an imatrix): as IQ2_XXS, on 16-weight sub-blocks and the 512-point grid.


@parallel_kernel
def dequantize_iq2_xs(q, out):
    """``dequantize_row_iq2_xs``: ``y = ±(d * (0.5 + s) * 0.25) * iq2xs_grid[qs & 511][j]``."""
    nrows = q.shape[0]
    nb = q.shape[1] // 74
    for r in prange(nrows):
        for i in range(nb):
            b = i * 74
            d = FP16_TO_FP32[load_u16_2d(q, r, b)]
            for ib32 in range(QK_K // 32):
                sc = np.int64(q[r, b + 66 + ib32])
                db0 = (d * (_HALF + np.float32(sc & 0xF))) * _QUARTER
                db1 = (d * (_HALF + np.float32(sc >> 4))) * _QUARTER
                for l in range(4):
                    qs = load_u16_2d(q, r, b + 2 + 2 * (4 * ib32 + l))
                    idx = qs & 511
                    signs = KSIGNS_IQ2XS[qs >> 9]
                    db = db0 if l < 2 else db1
                    y0 = i * QK_K + 32 * ib32 + 8 * l
                    for j in range(8):
                        v = db * IQ2XS_GRID[idx, j]
                        out[r, y0 + j] = -v if (signs >> j) & 1 else v


# -- IQ2_S -----------------------------------------------------------------------------------------------------------
#
#   block_iq2_s (256 weights, 82 bytes, 2.5625 bits per weight)
#
#   byte  0     2                  34                 66        74          82
#        +-----+------------------+------------------+---------+-----------+
#        |  d  | qs[32]: grid     | signs[32]: one   | qh[8]   | scales[8] |
#        +-----+ index low 8 bits | byte per 8       | 2 high  | lo / hi   |
#         fp16   per 8 weights    | weights, bit j = | bits ×4 | nibble per|
#                                 | sign of weight j | per 32  | 16 weights|
#
#   index = qs[l] | ((qh[ib32] >> 2l) & 3) << 8  (10 bits, iq2s_grid);  x[j] = ±(d * (0.5 + s) * 0.25) * grid[j]
#
#   Encode (quantize_row_iq2_s_impl): as IQ2_XS with explicit sign bytes (no parity trick) and the 1024-point grid;
#   without an imatrix the weights are 0.25σ² + x².


@parallel_kernel
def dequantize_iq2_s(q, out):
    """``dequantize_row_iq2_s``: ``y = ±(d * (0.5 + s) * 0.25) * iq2s_grid[qs | qh bits << 8][j]``."""
    nrows = q.shape[0]
    nb = q.shape[1] // 82
    for r in prange(nrows):
        for i in range(nb):
            b = i * 82
            d = FP16_TO_FP32[load_u16_2d(q, r, b)]
            for ib32 in range(QK_K // 32):
                sc = np.int64(q[r, b + 74 + ib32])
                db0 = (d * (_HALF + np.float32(sc & 0xF))) * _QUARTER
                db1 = (d * (_HALF + np.float32(sc >> 4))) * _QUARTER
                qh = np.int64(q[r, b + 66 + ib32])
                for l in range(4):
                    idx = np.int64(q[r, b + 2 + 4 * ib32 + l]) | ((qh << (8 - 2 * l)) & 0x300)
                    signs = q[r, b + 34 + 4 * ib32 + l]
                    db = db0 if l < 2 else db1
                    y0 = i * QK_K + 32 * ib32 + 8 * l
                    for j in range(8):
                        v = db * IQ2S_GRID[idx, j]
                        out[r, y0 + j] = -v if (signs >> j) & 1 else v


# -- IQ3_XXS ---------------------------------------------------------------------------------------------------------
#
#   block_iq3_xxs (256 weights, 98 bytes, 3.0625 bits per weight)
#
#   byte  0     2                                   66                              98
#        +-----+-----------------------------------+-------------------------------+
#        |  d  | qs[64]: one grid index (iq3xxs_    | 8 × uint32, one per 32 weights:
#        +-----+ grid) per 4 weights               |   bits 7l … 7l+6: sign index of weights 8l … 8l+7
#         fp16                                     |   bits 28-31: sub-scale s
#
#   db = d * (0.5 + s) * 0.5;   x[8l + j] = ±db * grid[qs[2l + j/4]][j % 4]
#
#   Encode (quantize_row_iq3_xxs_impl(256, ...)): like IQ2_XXS with 8 magnitude levels: signs with the parity
#   trick, a scale search, each group of 4 |x| snapped to the 256-point grid (neighbour tables when off-grid); the
#   sub-scales as 4 bits against d = max/31, stored as fp16(d * 1.0125); without an imatrix the weights are x².


@parallel_kernel
def dequantize_iq3_xxs(q, out):
    """``dequantize_row_iq3_xxs``: ``y = ±(d * (0.5 + s) * 0.5) * iq3xxs_grid[qs][j]``."""
    nrows = q.shape[0]
    nb = q.shape[1] // 98
    for r in prange(nrows):
        for i in range(nb):
            b = i * 98
            d = FP16_TO_FP32[load_u16_2d(q, r, b)]
            for ib32 in range(QK_K // 32):
                aux = load_u32_2d(q, r, b + 66 + 4 * ib32)
                db = (d * (_HALF + np.float32(aux >> 28))) * _HALF
                for l in range(4):
                    signs = KSIGNS_IQ2XS[(aux >> (7 * l)) & 127]
                    idx1 = q[r, b + 2 + 8 * ib32 + 2 * l]
                    idx2 = q[r, b + 2 + 8 * ib32 + 2 * l + 1]
                    y0 = i * QK_K + 32 * ib32 + 8 * l
                    for j in range(4):
                        v1 = db * IQ3XXS_GRID[idx1, j]
                        v2 = db * IQ3XXS_GRID[idx2, j]
                        out[r, y0 + j] = -v1 if (signs >> j) & 1 else v1
                        out[r, y0 + 4 + j] = -v2 if (signs >> (j + 4)) & 1 else v2


# -- IQ3_S -----------------------------------------------------------------------------------------------------------
#
#   block_iq3_s (256 weights, 110 bytes, 3.4375 bits per weight)
#
#   byte  0     2                   66        74                   106         110
#        +-----+-------------------+---------+--------------------+-----------+
#        |  d  | qs[64]: grid index| qh[8]:  | signs[32]: one byte| scales[4] |
#        +-----+ low 8 bits per 4  | 9th bit | per 8 weights, bit | nibble per|
#         fp16   weights           | ×8 per  | j = sign of weight | 32 weights|
#                                  | 32      | j                  |           |
#
#   index = qs[k] | ((qh[ib32] >> k%8) & 1) << 8  (9 bits, iq3s_grid);  x[j] = ±(d * (1 + 2s)) * grid[j]
#
#   Encode (quantize_row_iq3_s_impl): per 32 weights, a search over the 512-point grid of odd magnitudes with
#   explicit signs; sub-block scales stored as (1 + 2s) multiples of d; without an imatrix the weights are x².


@parallel_kernel
def dequantize_iq3_s(q, out):
    """``dequantize_row_iq3_s``: ``y = ±(d * (1 + 2s)) * iq3s_grid[qs | qh bit << 8][j]``."""
    nrows = q.shape[0]
    nb = q.shape[1] // 110
    for r in prange(nrows):
        for i in range(nb):
            b = i * 110
            d = FP16_TO_FP32[load_u16_2d(q, r, b)]
            for ib32 in range(QK_K // 32):
                s = (np.int64(q[r, b + 106 + ib32 // 2]) >> (4 * (ib32 % 2))) & 0xF
                db = d * np.float32(1 + 2 * s)
                qh = np.int64(q[r, b + 66 + ib32])
                for l in range(4):
                    idx1 = np.int64(q[r, b + 2 + 8 * ib32 + 2 * l]) | ((qh << (8 - 2 * l)) & 256)
                    idx2 = np.int64(q[r, b + 2 + 8 * ib32 + 2 * l + 1]) | ((qh << (7 - 2 * l)) & 256)
                    signs = q[r, b + 74 + 4 * ib32 + l]
                    y0 = i * QK_K + 32 * ib32 + 8 * l
                    for j in range(4):
                        v1 = db * IQ3S_GRID[idx1, j]
                        v2 = db * IQ3S_GRID[idx2, j]
                        out[r, y0 + j] = -v1 if (signs >> j) & 1 else v1
                        out[r, y0 + 4 + j] = -v2 if (signs >> (j + 4)) & 1 else v2


# -- IQ1_S -----------------------------------------------------------------------------------------------------------
#
#   block_iq1_s (256 weights, 50 bytes, 1.5625 bits per weight)
#
#   byte  0     2                          34                                        50
#        +-----+--------------------------+-----------------------------------------+
#        |  d  | qs[32]: grid index low 8 | qh[8]: uint16 per 32 weights:            |
#        +-----+ bits per 8 weights       |   bits 3l … 3l+2: index bits 8-10 of group l
#         fp16                            |   bits 12-14: sub-scale s, bit 15: sign of the shift
#
#   x[8l + j] = (d * (2s + 1)) * (iq1s_grid[index][j] + delta),   delta = bit 15 ? -1/8 : +1/8
#
#   Encode (quantize_row_iq1_s_impl; needs an imatrix): per 32 weights, the best scale and shift sign over sorted
#   partial sums, each group of 8 snapped to the nearest of 2048 ternary grid points; scales as 3 bits of d.


@parallel_kernel
def dequantize_iq1_s(q, out):
    """``dequantize_row_iq1_s``: ``y = (d * (2s + 1)) * (iq1s_grid[idx][j] ± 0.125)``."""
    nrows = q.shape[0]
    nb = q.shape[1] // 50
    for r in prange(nrows):
        for i in range(nb):
            b = i * 50
            d = FP16_TO_FP32[load_u16_2d(q, r, b)]
            for ib in range(QK_K // 32):
                qh = load_u16_2d(q, r, b + 34 + 2 * ib)
                dl = d * np.float32(2 * ((qh >> 12) & 7) + 1)
                delta = -IQ1S_DELTA if qh & 0x8000 else IQ1S_DELTA
                for l in range(4):
                    idx = np.int64(q[r, b + 2 + 4 * ib + l]) | (((qh >> (3 * l)) & 7) << 8)
                    y0 = i * QK_K + 32 * ib + 8 * l
                    for j in range(8):
                        out[r, y0 + j] = dl * (IQ1S_GRID[idx, j] + delta)


# -- IQ1_M -----------------------------------------------------------------------------------------------------------
#
#   block_iq1_m (256 weights, 56 bytes, 1.75 bits per weight; no separate d field)
#
#   byte  0                          32                          48                     56
#        +--------------------------+---------------------------+----------------------+
#        | qs[32]: grid index low 8 | qh[16]: one byte per 16    | scales: 4 × uint16  |
#        | bits per 8 weights       | weights: bits 0-2 / 4-6 =  | 4 × 3-bit sub-scales|
#        |                          | index bits 8-10 of groups  | in bits 0-11; the 4 |
#        |                          | 2k / 2k+1, bit 3 / 7 = sign| top nibbles = fp16 d|
#        |                          | of their shift             |                     |
#        +--------------------------+---------------------------+----------------------+
#
#   d = fp16(sc0 >> 12 | (sc1 >> 8) & 0xF0 | (sc2 >> 4) & 0xF00 | sc3 & 0xF000)
#   x[8l + j] = (d * (2s + 1)) * (iq1s_grid[index][j] + delta_l),  s per 16 weights, delta ±1/8 per 8 weights
#
#   Encode (quantize_row_iq1_m_impl): as IQ1_S with a scale per 16 and a shift per 8 weights; without an imatrix
#   the weights are x².


@parallel_kernel
def dequantize_iq1_m(q, out):
    """``dequantize_row_iq1_m``: ``y = (d * (2s + 1)) * (iq1s_grid[idx][j] ± 0.125)``, d hidden in the scales."""
    nrows = q.shape[0]
    nb = q.shape[1] // 56
    for r in prange(nrows):
        for i in range(nb):
            b = i * 56
            sc0 = load_u16_2d(q, r, b + 48)
            sc1 = load_u16_2d(q, r, b + 50)
            sc2 = load_u16_2d(q, r, b + 52)
            sc3 = load_u16_2d(q, r, b + 54)
            d = FP16_TO_FP32[(sc0 >> 12) | ((sc1 >> 8) & 0x00F0) | ((sc2 >> 4) & 0x0F00) | (sc3 & 0xF000)]
            for ib in range(QK_K // 32):
                sc = load_u16_2d(q, r, b + 48 + 2 * (ib // 2))
                dl1 = d * np.float32(2 * ((sc >> (6 * (ib % 2))) & 7) + 1)
                dl2 = d * np.float32(2 * ((sc >> (6 * (ib % 2) + 3)) & 7) + 1)
                for l in range(4):
                    qh = np.int64(q[r, b + 32 + 2 * ib + l // 2])
                    shift = 4 * (l % 2)  # group 2k+1 uses the high nibble of qh
                    idx = np.int64(q[r, b + 4 * ib + l]) | (((qh >> shift) << 8) & 0x700)
                    delta = -IQ1S_DELTA if (qh >> shift) & 0x08 else IQ1S_DELTA
                    dl = dl1 if l < 2 else dl2
                    y0 = i * QK_K + 32 * ib + 8 * l
                    for j in range(8):
                        out[r, y0 + j] = dl * (IQ1S_GRID[idx, j] + delta)


# -- IQ4_NL ----------------------------------------------------------------------------------------------------------
#
#   block_iq4_nl (32 weights, 18 bytes, 4.5 bits per weight)
#
#   byte  0     2 ............................................ 18
#        +-----+-----------------------------------------------+
#        |  d  | qs[16]: byte j = index of x[j] in bits 0-3, index of x[j+16] in bits 4-7
#        +-----+-----------------------------------------------+
#         fp16
#
#   x[j] = d * kvalues_iq4nl[index]
#
#   Encode (quantize_row_iq4_nl_impl, ntry = 7 in ggml_quantize_chunk): d = -max/kvalues[0], nearest level for each
#   weight (best_index_int8), the weighted least-squares scale, then 15 more trial scales (itry = -7..7), keeping the
#   best.  Note quantize_row_iq4_nl_ref (ntry = -1) gives different bytes.


@parallel_kernel
def dequantize_iq4_nl(q, out):
    """``dequantize_row_iq4_nl``: ``y[j] = d * kvalues_iq4nl[qs[j] & 15]``,
    ``y[j+16] = d * kvalues_iq4nl[qs[j] >> 4]``."""
    nrows = q.shape[0]
    nb = q.shape[1] // 18
    for r in prange(nrows):
        for i in range(nb):
            b = i * 18
            d = FP16_TO_FP32[load_u16_2d(q, r, b)]
            y0 = i * 32
            for j in range(16):
                byte = q[r, b + 2 + j]
                out[r, y0 + j] = d * _KVALUES_IQ4NL_F32[byte & 0xF]
                out[r, y0 + 16 + j] = d * _KVALUES_IQ4NL_F32[byte >> 4]


# -- IQ4_XS ----------------------------------------------------------------------------------------------------------
#
#   block_iq4_xs (256 weights, 136 bytes, 4.25 bits per weight)
#
#   byte  0     2          4             8 .................................... 136
#        +-----+----------+-------------+---------------------------------------+
#        |  d  | scales_h | scales_l[4] | qs[128]: 16 bytes per 32 weights, as IQ4_NL
#        +-----+----------+-------------+---------------------------------------+
#         fp16   uint16:    nibble per 32 weights: low 4 bits of the 6-bit sub-scale ls
#                2 bits per 32 weights: high 2 bits of ls
#
#   x = (d * (ls - 32)) * kvalues_iq4nl[index]
#
#   Encode (quantize_iq4_xs = quantize_row_iq4_nl_impl(256, 32, ..., ntry = 7)): IQ4_NL's search per 32 weights,
#   then the sub-block scales quantized to 6 bits against d = -max_scale/32 and the indices re-picked.


@parallel_kernel
def dequantize_iq4_xs(q, out):
    """``dequantize_row_iq4_xs``: ``y = (d * (ls - 32)) * kvalues_iq4nl[index]``."""
    nrows = q.shape[0]
    nb = q.shape[1] // 136
    for r in prange(nrows):
        for i in range(nb):
            b = i * 136
            d = FP16_TO_FP32[load_u16_2d(q, r, b)]
            scales_h = load_u16_2d(q, r, b + 2)
            for ib in range(QK_K // 32):
                ls = ((np.int64(q[r, b + 4 + ib // 2]) >> (4 * (ib % 2))) & 0xF) | (((scales_h >> (2 * ib)) & 3) << 4)
                dl = d * np.float32(ls - 32)
                qb = b + 8 + 16 * ib
                y0 = i * QK_K + 32 * ib
                for j in range(16):
                    byte = q[r, qb + j]
                    out[r, y0 + j] = dl * _KVALUES_IQ4NL_F32[byte & 0xF]
                    out[r, y0 + 16 + j] = dl * _KVALUES_IQ4NL_F32[byte >> 4]


FORMATS = [
    BlockFormat(GGMLType.IQ2_XXS, quantize=None, dequantize=dequantize_iq2_xxs, imatrix=Imatrix.REQUIRED),
    BlockFormat(GGMLType.IQ2_XS, quantize=None, dequantize=dequantize_iq2_xs, imatrix=Imatrix.REQUIRED),
    BlockFormat(GGMLType.IQ2_S, quantize=None, dequantize=dequantize_iq2_s, imatrix=Imatrix.OPTIONAL),
    BlockFormat(GGMLType.IQ3_XXS, quantize=None, dequantize=dequantize_iq3_xxs, imatrix=Imatrix.OPTIONAL),
    BlockFormat(GGMLType.IQ3_S, quantize=None, dequantize=dequantize_iq3_s, imatrix=Imatrix.OPTIONAL),
    BlockFormat(GGMLType.IQ1_S, quantize=None, dequantize=dequantize_iq1_s, imatrix=Imatrix.REQUIRED),
    BlockFormat(GGMLType.IQ1_M, quantize=None, dequantize=dequantize_iq1_m, imatrix=Imatrix.OPTIONAL),
    BlockFormat(GGMLType.IQ4_NL, quantize=None, dequantize=dequantize_iq4_nl, imatrix=Imatrix.OPTIONAL),
    BlockFormat(GGMLType.IQ4_XS, quantize=None, dequantize=dequantize_iq4_xs, imatrix=Imatrix.OPTIONAL),
]
