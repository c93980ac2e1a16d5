"""Rotary position embedding for Phi-3: plain RoPE and LongRoPE ("su"), and the two rules for choosing the factors.

Phi-3 rotates every head in the NeoX layout: dimension ``i`` is paired with ``i + d/2`` (``d`` = the rotated
dimensions, ``phi3.rope.dimension_count``, the whole head).  Pair ``i`` at position ``p`` turns by the angle::

    θ_i(p) = p · inv_freq_i,        inv_freq_i = 1 / (ext_i · base^(2i/d))

and both cos and sin are multiplied by the attention factor ``m`` (see :func:`refllm.model.kernels.rope_neox`).
Plain RoPE (Phi-3-mini-4k, Phi-3-medium): ``ext_i = 1``, ``m = 1``.  LongRoPE (Phi-3-mini-128k, Phi-3.5-mini): the
GGUF file holds two sets of ``d/2`` factors, ``rope_factors_short.weight`` and ``rope_factors_long.weight``, and
``m = phi3.rope.scaling.attn_factor = sqrt(1 + ln(s) / ln(n_orig))`` with ``s = n_ctx_train / n_orig`` (1.1902381 for
131072 / 4096).  Because q and k are both scaled by ``m``, the attention scores are scaled by ``m²``.

Which set of factors, short or long?  The two implementations disagree (see docs/phi3.md for numbers):

* ``seq`` — Hugging Face transformers: long once the sequence is longer than the original context,
  ``max(position) + 1 > n_orig``, decided for each forward call over the whole sequence so far.  When a sequence
  grows past ``n_orig``, ``generate()`` drops the cache and recomputes every earlier token with the long factors.
* ``ctx`` — llama.cpp: long iff the context size, rounded up to a multiple of 256, exceeds ``n_orig``
  (``n_ctx_seq > n_ctx_orig_yarn`` in ``llama_model::get_rope_factors``) — decided once, for every position.  With
  ``n_ctx = 0`` (= the training context, 131072) that is *long* even for a one-token prompt.
"""

from __future__ import annotations

import numpy as np

POLICIES = ("seq", "ctx")


def llama_cpp_context_size(n_ctx: int) -> int:
    """``cparams.n_ctx_seq`` of llama.cpp for one sequence: ``n_ctx`` rounded up to a multiple of 256."""
    return -(-n_ctx // 256) * 256


def use_long_factors(policy: str, n_orig: int, *, seq_len: int, n_ctx: int) -> bool:
    """The LongRoPE choice: ``seq``: ``seq_len > n_orig``; ``ctx``: ``pad256(n_ctx) > n_orig``."""
    if policy == "seq":
        return seq_len > n_orig
    if policy == "ctx":
        return llama_cpp_context_size(n_ctx) > n_orig
    raise ValueError(f"unknown rope policy {policy!r}; choose one of {', '.join(POLICIES)}")


def inv_freq(n_rot: int, base: float, factors: np.ndarray | None) -> np.ndarray:
    """``inv_freq_i = 1 / (ext_i · base^(2i/d))``, float32 [d/2], computed in float32 as transformers does.

    (``base ** (arange(0, d, 2) / d)`` with a float32 exponent, times the factor, then the reciprocal — each step
    rounded to float32.)
    """
    exponent = np.arange(0, n_rot, 2, dtype=np.float32) / np.float32(n_rot)
    powers = np.power(np.float32(base), exponent, dtype=np.float32)
    if factors is not None:
        powers = np.asarray(factors, np.float32) * powers
    return np.float32(1.0) / powers


def cos_sin(positions: np.ndarray, freqs: np.ndarray, attn_factor: float) -> tuple[np.ndarray, np.ndarray]:
    """``cos(θ)·m`` and ``sin(θ)·m`` for each position and pair: float32 [n_tok, d/2] each.

    ``θ = float32(p) · inv_freq`` in float32, as transformers computes it (``position_ids.float() * inv_freq``).
    """
    theta = positions.astype(np.float32)[:, None] * freqs[None, :]
    m = np.float32(attn_factor)
    return np.cos(theta) * m, np.sin(theta) * m
