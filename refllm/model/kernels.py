"""The compiled kernels of the forward pass in float32: the ``f32`` numeric mode (RMSNorm, SwiGLU and the RoPE
rotation serve the ``ggml`` mode too; its own kernels are in :mod:`refllm.model.ggml_kernels`).

Every kernel here is deterministic by construction: parallel loops (``prange``) hand out whole output elements —
one tile of weight rows, one (token, head) pair, one token — and every floating-point reduction runs inside one
thread in an order fixed by the code.  So the results are bitwise identical for any thread count, and a token's
result does not depend on which other tokens are in the same batch: a prompt run in one call and the same prompt
run token by token give the same bits.

The reductions:

* :func:`dot` — a dot product of float32 vectors in ``LANES`` = 16 lanes: lane ``k`` sums the products of the
  elements ``i ≡ k (mod 16)`` in increasing ``i``; the lanes are then added in order 0…15, then the tail
  elements (``n mod 16`` of them) in order.  (Without ``fastmath`` LLVM may not reorder a float sum, so a single
  accumulator would not vectorize; 16 independent lanes do.)
* :func:`rms_norm` — the sum of squares in float64, in order, as ggml does.
* :func:`attention` — scores one key at a time, softmax sum in order, the weighted sum of values key by key.

Weights stay in their GGUF type.  :func:`matmul` decodes a few weight rows at a time into a small float32 buffer
(:func:`dequantize_row` — the block decoders of :mod:`refllm.quants`, bit-exact with ggml) and multiplies them
with every activation row; it serves prefill (many tokens) and decode (one token) alike.
"""

from __future__ import annotations

import numpy as np

from ..ggml_types import GGMLType
from ..jit import float32_from_bits, kernel, parallel_kernel, prange
from ..quants.common import FP16_TO_FP32
from ..quants.k_quants import (
    dequantize_row_q2_K,
    dequantize_row_q3_K,
    dequantize_row_q4_K,
    dequantize_row_q5_K,
    dequantize_row_q6_K,
)
from ..quants.legacy import (
    dequantize_row_q4_0,
    dequantize_row_q4_1,
    dequantize_row_q5_0,
    dequantize_row_q5_1,
    dequantize_row_q8_0,
)

LANES = 16  # accumulator lanes of dot(): part of the numerics (see the module docstring)
TILE_ROWS = 4  # weight rows decoded together by matmul(): only a matter of speed, never of the result

# The weight types the f32 matmul can read (type id -> its row decoder below).
_F32 = int(GGMLType.F32)
_F16 = int(GGMLType.F16)
_BF16 = int(GGMLType.BF16)
_Q4_0 = int(GGMLType.Q4_0)
_Q4_1 = int(GGMLType.Q4_1)
_Q5_0 = int(GGMLType.Q5_0)
_Q5_1 = int(GGMLType.Q5_1)
_Q8_0 = int(GGMLType.Q8_0)
_Q2_K = int(GGMLType.Q2_K)
_Q3_K = int(GGMLType.Q3_K)
_Q4_K = int(GGMLType.Q4_K)
_Q5_K = int(GGMLType.Q5_K)
_Q6_K = int(GGMLType.Q6_K)

WEIGHT_TYPES = (GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0,
                GGMLType.Q5_1, GGMLType.Q8_0, GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K,
                GGMLType.Q6_K)


# -- weights -------------------------------------------------------------------------------------------------------


@kernel
def dequantize_row(qtype, src, dst):
    """Decode one weight row: ``src`` uint8 [row_bytes] of type ``qtype`` (a ggml type id) -> ``dst`` float32 [n].

    Exactly ggml's ``to_float`` of that type (F16 through ggml's table, BF16 as the top half of a float32).
    """
    if qtype == _F32:
        w = src.view(np.float32)
        for i in range(dst.shape[0]):
            dst[i] = w[i]
    elif qtype == _F16:
        h = src.view(np.uint16)
        for i in range(dst.shape[0]):
            dst[i] = FP16_TO_FP32[h[i]]
    elif qtype == _BF16:
        h = src.view(np.uint16)
        for i in range(dst.shape[0]):
            dst[i] = float32_from_bits(np.int64(h[i]) << 16)
    elif qtype == _Q8_0:
        dequantize_row_q8_0(src, dst)
    elif qtype == _Q4_0:
        dequantize_row_q4_0(src, dst)
    elif qtype == _Q4_1:
        dequantize_row_q4_1(src, dst)
    elif qtype == _Q5_0:
        dequantize_row_q5_0(src, dst)
    elif qtype == _Q5_1:
        dequantize_row_q5_1(src, dst)
    elif qtype == _Q2_K:
        dequantize_row_q2_K(src, dst)
    elif qtype == _Q3_K:
        dequantize_row_q3_K(src, dst)
    elif qtype == _Q4_K:
        dequantize_row_q4_K(src, dst)
    elif qtype == _Q5_K:
        dequantize_row_q5_K(src, dst)
    elif qtype == _Q6_K:
        dequantize_row_q6_K(src, dst)
    else:
        raise ValueError("dequantize_row: unsupported weight type")


@kernel
def dot(a, b, lanes):
    """``Σ_i a[i]·b[i]`` in float32, in ``lanes.shape[0]`` lanes (scratch, float32) — see the module docstring.

    Lane ``k`` accumulates ``a[i]·b[i]`` for ``i = k, k+L, k+2L, …`` (each product rounded, then added); the result
    is ``((lane_0 + lane_1) + lane_2) + … + lane_{L-1}``, then plus the tail products one by one.
    """
    n_lanes = lanes.shape[0]  # a run-time count: a constant one would be unrolled and not vectorized
    n = a.shape[0]
    n_full = n // n_lanes
    for k in range(n_lanes):
        lanes[k] = 0
    for blk in range(n_full):
        ab = a[blk * n_lanes:(blk + 1) * n_lanes]
        bb = b[blk * n_lanes:(blk + 1) * n_lanes]
        for k in range(n_lanes):
            lanes[k] += ab[k] * bb[k]
    s = np.float32(0.0)
    for k in range(n_lanes):
        s += lanes[k]
    for i in range(n_full * n_lanes, n):
        s += a[i] * b[i]
    return s


@parallel_kernel
def matmul(qtype, w, x, y):
    """``y[t, r] = Σ_i W[r, i] · x[t, i]`` — every activation row times every weight row (``y = x · Wᵀ``).

    ``w``: uint8 [n_out, row_bytes], the weight rows in GGUF type ``qtype``; ``x``: float32 [n_tok, n_in];
    ``y``: float32 [n_tok, n_out].  Parallel over tiles of ``TILE_ROWS`` weight rows: each tile is decoded once into
    float32 and multiplied with all ``n_tok`` activation rows by :func:`dot`.
    """
    n_out = w.shape[0]
    n_tok, n_in = x.shape
    n_tiles = (n_out + TILE_ROWS - 1) // TILE_ROWS
    for tile in prange(n_tiles):
        rows = np.empty((TILE_ROWS, n_in), np.float32)  # the decoded weight tile
        lanes = np.empty(LANES, np.float32)
        r0 = tile * TILE_ROWS
        r1 = min(r0 + TILE_ROWS, n_out)
        for r in range(r0, r1):
            dequantize_row(qtype, w[r], rows[r - r0])
        for t in range(n_tok):
            for r in range(r0, r1):
                y[t, r] = dot(rows[r - r0], x[t], lanes)


@parallel_kernel
def get_rows(qtype, w, ids, out):
    """Embedding lookup: ``out[t] = W[ids[t]]`` decoded to float32 (ggml's ``get_rows``).

    ``w``: uint8 [n_vocab, row_bytes]; ``ids``: int64 [n_tok]; ``out``: float32 [n_tok, n_embd].
    """
    for t in prange(ids.shape[0]):
        dequantize_row(qtype, w[ids[t]], out[t])


# -- normalization and activation ------------------------------------------------------------------------------------


@parallel_kernel
def rms_norm(x, weight, eps, out):
    """RMSNorm of each row: ``out[t, i] = (x[t, i] · scale_t) · weight[i]`` with
    ``scale_t = 1 / sqrt(mean_i(x[t, i]²) + eps)``.

    As ggml computes it: each square is a float32 product, summed in float64 in order; the mean is rounded to
    float32, then ``1.0f / sqrtf(mean + eps)`` in float32.  ``x``, ``out``: float32 [n_tok, n]; ``weight``: [n].
    """
    n_tok, n = x.shape
    for t in prange(n_tok):
        s = 0.0
        for i in range(n):
            sq = x[t, i] * x[t, i]
            s += np.float64(sq)
        mean = np.float32(s / n)
        scale = np.float32(1.0) / np.sqrt(mean + eps)
        for i in range(n):
            out[t, i] = (x[t, i] * scale) * weight[i]


@parallel_kernel
def swiglu(gate_up, out):
    """SwiGLU on the fused ``ffn_up`` output: ``out[t, i] = silu(g) · u`` with ``g = gate_up[t, i]``,
    ``u = gate_up[t, n_ff + i]`` and ``silu(g) = g / (1 + exp(-g))`` (ggml's ``ggml_silu_f32``).

    ``gate_up``: float32 [n_tok, 2·n_ff] (gate first, then up); ``out``: float32 [n_tok, n_ff].
    """
    n_tok, n_ff = out.shape
    for t in prange(n_tok):
        for i in range(n_ff):
            g = gate_up[t, i]
            out[t, i] = (g / (np.float32(1.0) + np.exp(-g))) * gate_up[t, n_ff + i]


# -- rotary position embedding -----------------------------------------------------------------------------------


@parallel_kernel
def rope_neox(x, cos, sin, n_rot):
    """Rotate the first ``n_rot`` dimensions of every head in place, NeoX layout (pairs ``i``, ``i + n_rot/2``).

    ``x``: float32 [n_tok, n_heads, head_dim]; ``cos``, ``sin``: float32 [n_tok, n_rot/2] for each token's position
    (the attention factor already multiplied in).  For ``i < n_rot/2``::

        y[i]           = x[i] · cos[i] − x[i + n_rot/2] · sin[i]
        y[i + n_rot/2] = x[i + n_rot/2] · cos[i] + x[i] · sin[i]
    """
    n_tok, n_heads, _ = x.shape
    half = n_rot // 2
    for t in prange(n_tok):
        for h in range(n_heads):
            v = x[t, h]
            for i in range(half):
                x0 = v[i]
                x1 = v[i + half]
                v[i] = x0 * cos[t, i] - x1 * sin[t, i]
                v[i + half] = x1 * cos[t, i] + x0 * sin[t, i]


# -- attention ---------------------------------------------------------------------------------------------------------


@parallel_kernel
def attention(q, k_cache, v_cache, pos0, window, scale, out):
    """Causal (optionally sliding-window) attention of ``n_tok`` new queries over the KV cache, with GQA.

    ``q``: float32 [n_tok, n_head, head_dim] (rotated); ``k_cache``, ``v_cache``: float32
    [n_head_kv, n_cache, head_dim], positions ``0 … pos0 + n_tok − 1`` filled; ``out``: float32
    [n_tok, n_head, head_dim].  Query head ``h`` reads KV head ``h // (n_head / n_head_kv)``.

    The query at position ``p = pos0 + t`` sees the keys at positions ``j`` with ``p − window < j ≤ p``
    (``window = 0``: all ``j ≤ p``)::

        s_j = (q · k_j) · scale          scale = 1 / sqrt(head_dim)
        a_j = exp(s_j − max s) / Σ exp(s − max s)
        out = Σ_j a_j · v_j              (key by key, in order of position)
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
        n_keys = p + 1 - first
        lanes = np.empty(LANES, np.float32)
        a = np.empty(n_keys, np.float32)
        qv = q[t, h]
        s_max = np.float32(-np.inf)
        for j in range(n_keys):
            s = dot(qv, k_cache[g, first + j], lanes) * scale
            a[j] = s
            s_max = max(s_max, s)
        total = np.float32(0.0)
        for j in range(n_keys):
            e = np.exp(a[j] - s_max)
            a[j] = e
            total += e
        o = out[t, h]
        for d in range(head_dim):
            o[d] = 0
        for j in range(n_keys):
            weight = a[j] / total
            vj = v_cache[g, first + j]
            for d in range(head_dim):
                o[d] += weight * vj[d]
