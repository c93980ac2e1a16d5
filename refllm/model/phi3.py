"""The Phi-3 forward pass over a GGUF file: llama.cpp's graph (``src/models/phi3.cpp``), written out step by step.

Shapes: ``n`` = tokens in this call, ``E`` = n_embd, ``H`` / ``Hkv`` = query / key-value heads, ``D`` = head_dim,
``F`` = n_ff, ``V`` = n_vocab.  One forward call::

    h = token_embd[tokens]                                           # h: [n, E]
    for each layer:
        x = RMSNorm(h) · attn_norm                                   # x: [n, E]
        q, k, v = split(x · attn_qkvᵀ)                               # q: [n, H, D]   k, v: [n, Hkv, D]
        q, k = RoPE(q), RoPE(k)                                      # NeoX pairs, LongRoPE factors, × attn factor
        K[pos], V[pos] = k, v                                        # the KV cache
        a = softmax(q · Kᵀ / sqrt(D) + causal/window mask) · V        # a: [n, H, D], head h reads KV head h // (H/Hkv)
        h = h + a · attn_outputᵀ                                     # [n, E]
        x = RMSNorm(h) · ffn_norm
        g, u = split(x · ffn_upᵀ)                                    # g, u: [n, F]  (gate first)
        h = h + (silu(g) ⊙ u) · ffn_downᵀ
    logits = (RMSNorm(h) · output_norm) · outputᵀ                    # [n, V]

The weights stay in their GGUF types inside the mmap.  Two numeric modes (see docs/phi3.md):

* ``f32`` — every activation and the KV cache are float32; the matrix products decode a few weight rows at a time
  and multiply in float32 (:mod:`refllm.model.kernels`).  The readable reference; it agrees with transformers.
* ``ggml`` — llama.cpp's CPU arithmetic as its x86-64 AVX512 build computes it: activations quantized to the weight
  type's dot-product partner before every matrix product, integer dot products with the SIMD kernels' float order,
  an F16 KV cache and llama.cpp's flash attention, each algorithm chosen by batch shape as llama.cpp chooses it
  (:mod:`refllm.model.ggml_kernels`).  Its logits are llama.cpp's, bit for bit, on such a build.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .. import quants
from ..errors import RefllmError
from ..ggml_types import GGMLType
from ..gguf import GGUFFile, TensorInfo
from . import ggml_kernels, kernels, rope
from .params import Phi3Params

MODES = ("f32", "ggml")
N_UBATCH = 512  # llama.cpp's default n_ubatch: the ggml mode evaluates longer calls in pieces of this size


@dataclass(frozen=True)
class Weight:
    """A matrix in its GGUF type: ``rows`` is uint8 [n_out, row_bytes], a view over the file's mmap.

    GGUF's shape is ``{n_in, n_out}`` (ggml order); row ``r`` holds the ``n_in`` input weights of output ``r``.
    """

    name: str
    qtype: GGMLType
    rows: np.ndarray
    n_in: int

    @property
    def n_out(self) -> int:
        return self.rows.shape[0]

    @classmethod
    def from_tensor(cls, t: TensorInfo) -> Weight:
        if len(t.shape) != 2:
            raise RefllmError(f"tensor {t.name!r}: expected a matrix, got shape {t.shape}")
        if t.type not in kernels.WEIGHT_TYPES:
            raise RefllmError(f"tensor {t.name!r}: refllm's forward pass does not read {t.type.name} weights "
                              f"(it reads {', '.join(q.name for q in kernels.WEIGHT_TYPES)})")
        n_in, n_out = t.shape
        return cls(t.name, t.type, t.raw.reshape(n_out, t.n_bytes // n_out), n_in)


def _vector(t: TensorInfo) -> np.ndarray:
    """A 1-D tensor (norm weights, RoPE factors) as float32."""
    if t.type == GGMLType.F32:
        return t.data.reshape(-1)
    return quants.dequantize(t.raw.reshape(1, -1), t.type).reshape(-1)


@dataclass(frozen=True)
class Layer:
    attn_norm: np.ndarray  # [E]
    attn_qkv: Weight | None  # [E -> (H + 2 Hkv) D]; or, when absent, the three below
    attn_q: Weight | None
    attn_k: Weight | None
    attn_v: Weight | None
    attn_output: Weight  # [H D -> E]
    ffn_norm: np.ndarray  # [E]
    ffn_up: Weight  # [E -> 2F]: gate rows 0…F-1, up rows F…2F-1
    ffn_down: Weight  # [F -> E]


def _check_tensors(gguf: GGUFFile, p: Phi3Params) -> None:
    """Every tensor the forward pass reads is there with the shape the hyperparameters give (llama.cpp's loader
    refuses the file otherwise: "tensor 'X' has wrong shape" / "missing tensor 'X'")."""
    shapes = {t.name: tuple(t.shape) for t in gguf.tensors}
    fused = all(f"blk.{il}.attn_qkv.weight" in shapes for il in range(p.n_layer))
    optional = {"output.weight", "rope_factors_long.weight", "rope_factors_short.weight"}
    for name, expected in p.tensor_shapes(fused_qkv=fused).items():
        if name not in shapes:
            if name in optional:
                continue
            raise RefllmError(f"{gguf.path}: missing tensor {name!r}")
        if shapes[name] != expected:
            raise RefllmError(f"{gguf.path}: tensor {name!r} has shape {list(shapes[name])}; expected "
                              f"{list(expected)} (from the phi3.* hyperparameters)")


class KVCache:
    """Rotated keys and values of every layer: ``k[il]``, ``v[il]`` [Hkv, capacity, D] — float32 in ``f32`` mode,
    fp16 bits (uint16) in ``ggml`` mode.

    The capacity grows (doubling, at most ``n_ctx``) as positions are written, so a large ``n_ctx`` costs nothing
    until it is used.
    """

    def __init__(self, n_layer: int, n_head_kv: int, head_dim: int, n_ctx: int, dtype=np.float32):
        self.n_ctx = n_ctx
        shape = (n_head_kv, min(n_ctx, 256), head_dim)
        self.k = [np.zeros(shape, dtype) for _ in range(n_layer)]
        self.v = [np.zeros(shape, dtype) for _ in range(n_layer)]

    @property
    def capacity(self) -> int:
        return self.k[0].shape[1]

    def reserve(self, n: int) -> None:
        """Make room for positions ``0 … n-1``."""
        if n <= self.capacity:
            return
        cap = min(self.n_ctx, max(n, 2 * self.capacity))
        for cache in (self.k, self.v):
            for il, old in enumerate(cache):
                new = np.zeros((old.shape[0], cap, old.shape[2]), old.dtype)
                new[:, :old.shape[1]] = old
                cache[il] = new


class Phi3Model:
    """A Phi-3 model from a GGUF file, with a KV cache.

    >>> model = Phi3Model.from_gguf("phi3.gguf")
    >>> logits = model.forward([1, 32010, 1815])      # [3, n_vocab]: positions 0, 1, 2
    >>> logits = model.forward([366])                 # [1, n_vocab]: position 3, using the cache
    >>> model.reset()

    ``rope_policy`` (LongRoPE models only) chooses the long or short factors — ``"seq"`` as Hugging Face
    transformers, ``"ctx"`` as llama.cpp (see :mod:`refllm.model.rope`).  ``sliding_window`` applies the window the
    file declares (``phi3.attention.sliding_window``, 2047 for Phi-3-mini-4k), as transformers does; llama.cpp
    ignores it for phi3 (``False``).  ``n_ctx`` (default: the training context) bounds the positions, and with the
    ``ctx`` policy decides the factors.

    ``capture``, when set to a callable, receives every intermediate of the forward pass as ``capture(name, x)``
    under the name llama.cpp's graph gives it (see :meth:`cb`; refllm.golden uses it).  ``x`` is only valid during
    the call: copy what you keep.
    """

    capture = None  # callable(name, array) or None: see the class docstring and :meth:`cb`

    def __init__(self, gguf: GGUFFile, *, n_ctx: int | None = None, rope_policy: str = "seq",
                 sliding_window: bool = True, mode: str = "f32"):
        if mode not in MODES:
            raise RefllmError(f"unknown numeric mode {mode!r}; choose one of {', '.join(MODES)}")
        if rope_policy not in rope.POLICIES:
            raise RefllmError(f"unknown rope policy {rope_policy!r}; choose one of {', '.join(rope.POLICIES)}")
        self.gguf = gguf
        self.params = p = Phi3Params.from_gguf(gguf)
        self.mode = mode
        self.rope_policy = rope_policy
        self.n_ctx = p.n_ctx_train if not n_ctx else int(n_ctx)
        self.window = p.sliding_window if sliding_window and p.sliding_window > 0 else 0

        names = {t.name for t in gguf.tensors}
        _check_tensors(gguf, p)
        tensor = gguf.tensor
        self.token_embd = Weight.from_tensor(tensor("token_embd.weight"))
        self.output_norm = _vector(tensor("output_norm.weight"))
        self.output = Weight.from_tensor(tensor("output.weight" if "output.weight" in names else "token_embd.weight"))
        self.layers = []
        for il in range(p.n_layer):
            def w(name: str, il: int = il) -> Weight | None:
                full = f"blk.{il}.{name}.weight"
                return Weight.from_tensor(tensor(full)) if full in names else None

            fused = w("attn_qkv")
            if fused is None and None in (w("attn_q"), w("attn_k"), w("attn_v")):
                raise RefllmError(f"{gguf.path}: layer {il} has neither attn_qkv nor attn_q/k/v")
            self.layers.append(Layer(
                attn_norm=_vector(tensor(f"blk.{il}.attn_norm.weight")),
                attn_qkv=fused,
                attn_q=None if fused else w("attn_q"),
                attn_k=None if fused else w("attn_k"),
                attn_v=None if fused else w("attn_v"),
                attn_output=w("attn_output"),
                ffn_norm=_vector(tensor(f"blk.{il}.ffn_norm.weight")),
                ffn_up=w("ffn_up"),
                ffn_down=w("ffn_down"),
            ))

        # RoPE: the factors of each set (all 1 without LongRoPE) and the attention factor m
        self.factors_short = self.factors_long = np.ones(p.n_rot // 2, np.float32)
        self.attn_factor = 1.0
        if p.longrope:
            self.factors_short = _vector(tensor("rope_factors_short.weight"))
            self.factors_long = _vector(tensor("rope_factors_long.weight"))
            self.attn_factor = p.attn_factor
        self.inv_freq_short = rope.inv_freq(p.n_rot, p.rope_base, self.factors_short)
        self.inv_freq_long = rope.inv_freq(p.n_rot, p.rope_base, self.factors_long)

        self.cache = KVCache(p.n_layer, p.n_head_kv, p.head_dim, self.n_ctx,
                             np.float32 if mode == "f32" else np.uint16)
        self.tokens: list[int] = []  # the tokens whose keys and values are in the cache, by position
        self.long_factors: bool | None = None  # the factor set the cache was made with (None: empty cache)

    @classmethod
    def from_gguf(cls, path_or_file: str | os.PathLike | GGUFFile, **kwargs) -> Phi3Model:
        """Open a phi3 GGUF file (or take an open :class:`~refllm.gguf.GGUFFile`); see the class for the options."""
        f = path_or_file if isinstance(path_or_file, GGUFFile) else GGUFFile(path_or_file)
        return cls(f, **kwargs)

    def close(self) -> None:
        """Release the file (the mmap goes away with the last view of it)."""
        self.gguf.close()

    def __enter__(self) -> Phi3Model:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- state ------------------------------------------------------------------------------------------------------

    @property
    def n_past(self) -> int:
        """The number of positions in the KV cache."""
        return len(self.tokens)

    def reset(self) -> None:
        """Forget the KV cache."""
        self.tokens = []
        self.long_factors = None

    # -- the forward pass -------------------------------------------------------------------------------------------

    def forward(self, tokens, pos0: int | None = None, *, last_only: bool = False) -> np.ndarray:
        """Run ``tokens`` at positions ``pos0, pos0+1, …`` (default: right after the cache) and return their logits,
        float32 [n, n_vocab] (``last_only``: [1, n_vocab], the last token's).

        Cached positions from ``pos0`` on are dropped first, so ``pos0 < n_past`` rewinds.  With the ``seq`` RoPE
        policy, a call that moves the sequence length across the original context recomputes the cached positions
        with the other factor set first — the result is then what transformers gives for the whole sequence.
        """
        ids = np.asarray(tokens, dtype=np.int64).reshape(-1)
        p = self.params
        if pos0 is None:
            pos0 = self.n_past
        if not 0 <= pos0 <= self.n_past:
            raise RefllmError(f"pos0 = {pos0}: the cache holds positions 0 … {self.n_past - 1}")
        if ids.size == 0:
            raise RefllmError("forward: no tokens")
        if ids.min() < 0 or ids.max() >= p.n_vocab:
            raise RefllmError(f"forward: token ids must be in 0 … {p.n_vocab - 1}")
        end = pos0 + ids.size
        if end > self.n_ctx:
            raise RefllmError(f"forward: positions up to {end - 1} do not fit the context of {self.n_ctx}")
        del self.tokens[pos0:]

        long = rope.use_long_factors(self.rope_policy, p.n_ctx_orig, seq_len=end, n_ctx=self.n_ctx)
        if long != self.long_factors:
            self.long_factors = long
            if pos0 > 0:  # the cached keys were rotated with the other set: recompute them
                history = np.array(self.tokens, dtype=np.int64)
                del self.tokens[:]
                self._eval(history, 0, logits=False)
        return self._eval(ids, pos0, logits=True, last_only=last_only)

    def prompt_logits(self, tokens) -> np.ndarray:
        """The logits of every position of a prompt run from an empty cache: float32 [n, n_vocab]."""
        self.reset()
        return self.forward(tokens, 0)

    def _eval(self, ids: np.ndarray, pos0: int, *, logits: bool, last_only: bool = False) -> np.ndarray | None:
        p = self.params
        n = ids.size
        if self.mode == "ggml" and n > N_UBATCH:  # llama.cpp evaluates a batch in ubatches of n_ubatch tokens
            parts = []
            for i in range(0, n, N_UBATCH):
                last = i + N_UBATCH >= n
                out = self._eval(ids[i:i + N_UBATCH], pos0 + i, logits=logits and (last or not last_only),
                                 last_only=last_only)
                if out is not None:
                    parts.append(out)
            return np.concatenate(parts) if logits else None
        self.cache.reserve(pos0 + n)
        h = np.empty((n, p.n_embd), np.float32)  # h: [n, E], the residual stream
        kernels.get_rows(int(self.token_embd.qtype), self.token_embd.rows, ids, h)
        self.cb(h, "embd")

        cos, sin = self._rope_tables(np.arange(pos0, pos0 + n))  # [n, n_rot/2] each

        for il, layer in enumerate(self.layers):
            h = self._layer(il, layer, h, pos0, cos, sin)
        self.tokens.extend(int(t) for t in ids)
        if not logits:
            return None
        if last_only:
            h = h[-1:]
        x = self._rms_norm(h, self.output_norm)
        self.cb(x, "result_norm")
        out = self._linear(self.output, x)  # [n, V]
        self.cb(out, "result_output")
        return out

    def cb(self, x: np.ndarray, name: str, il: int = -1) -> None:
        """Hand ``x`` to :attr:`capture` as ``name-il`` (``name`` alone for ``il < 0``) — the name
        ``llm_graph_context::cb`` gives the same tensor in llama.cpp's graph.  Nothing happens without a capture."""
        if self.capture is not None:
            self.capture(f"{name}-{il}" if il >= 0 else name, x)

    def _layer(self, il: int, layer: Layer, h: np.ndarray, pos0: int, cos: np.ndarray, sin: np.ndarray):
        p = self.params
        n = h.shape[0]
        H, Hkv, D = p.n_head, p.n_head_kv, p.head_dim

        # attention
        x = self._rms_norm(h, layer.attn_norm)  # [n, E]
        self.cb(x, "attn_norm", il)
        if layer.attn_qkv is not None:
            qkv = self._linear(layer.attn_qkv, x)  # [n, (H + 2 Hkv) D]
            q = qkv[:, :H * D]
            k = qkv[:, H * D:(H + Hkv) * D]
            v = qkv[:, (H + Hkv) * D:]
        else:
            q, k, v = (self._linear(w, x) for w in (layer.attn_q, layer.attn_k, layer.attn_v))
        q = np.ascontiguousarray(q).reshape(n, H, D)  # q: [n, H, D]
        k = np.ascontiguousarray(k).reshape(n, Hkv, D)  # k: [n, Hkv, D]
        v = v.reshape(n, Hkv, D)  # v: [n, Hkv, D]
        rope_neox = kernels.rope_neox if self.mode == "f32" else ggml_kernels.rope_neox
        rope_neox(q, cos, sin, p.n_rot)
        rope_neox(k, cos, sin, p.n_rot)
        self.cb(q, "Qcur", il)
        self.cb(k, "Kcur", il)
        self.cb(v, "Vcur", il)
        a = self._attention(il, q, k, v, pos0)  # a: [n, H, D]
        self.cb(a.reshape(n, H * D), "kqv_out", il)
        h = h + self._linear(layer.attn_output, a.reshape(n, H * D))  # [n, E]

        # feed-forward
        x = self._rms_norm(h, layer.ffn_norm)  # [n, E]
        self.cb(x, "ffn_norm", il)
        gate_up = self._linear(layer.ffn_up, x)  # [n, 2F]
        act = np.empty((n, p.n_ff), np.float32)  # [n, F]
        (kernels.swiglu if self.mode == "f32" else ggml_kernels.swiglu)(gate_up, act)
        ffn_out = self._linear(layer.ffn_down, act)  # [n, E]
        self.cb(ffn_out, "ffn_out", il)
        h = h + ffn_out
        self.cb(h, "l_out", il)
        return h

    # -- the operations that depend on the numeric mode ---------------------------------------------------------

    def _rms_norm(self, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        out = np.empty_like(x)
        kernels.rms_norm(np.ascontiguousarray(x), weight, np.float32(self.params.rms_eps), out)
        return out

    def _linear(self, w: Weight, x: np.ndarray) -> np.ndarray:
        """``x · Wᵀ``: x float32 [n, n_in] -> float32 [n, n_out]."""
        x = np.ascontiguousarray(x)
        y = np.empty((x.shape[0], w.n_out), np.float32)
        if self.mode == "f32":
            kernels.matmul(int(w.qtype), w.rows, x, y)
        else:  # ggml: the activations in the weight's vec_dot_type first
            vtype = ggml_kernels.VEC_DOT_TYPE[w.qtype]
            xq = np.empty((x.shape[0], ggml_kernels.activation_row_bytes(w.qtype, w.n_in)), np.uint8)
            ggml_kernels.quantize_activations(int(vtype), x, xq)
            ggml_kernels.matmul(int(w.qtype), w.rows, xq, y)
        return y

    def _rope_tables(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``cos(θ)·m`` and ``sin(θ)·m`` [n, n_rot/2] for the positions, with the factor set in use."""
        p = self.params
        if self.mode == "f32":
            freqs = self.inv_freq_long if self.long_factors else self.inv_freq_short
            return rope.cos_sin(positions, freqs, self.attn_factor)
        factors = self.factors_long if self.long_factors else self.factors_short
        cos = np.empty((positions.size, p.n_rot // 2), np.float32)
        sin = np.empty_like(cos)
        ggml_kernels.rope_cache(positions, p.n_rot, np.float32(p.rope_base), factors, np.float32(self.attn_factor),
                                cos, sin)
        return cos, sin

    def _attention(self, il: int, q: np.ndarray, k: np.ndarray, v: np.ndarray, pos0: int) -> np.ndarray:
        """Store k, v [n, Hkv, D] at positions pos0… of layer il's cache; attend with q [n, H, D] -> [n, H, D]."""
        n, H, D = q.shape
        k_cache, v_cache = self.cache.k[il], self.cache.v[il]  # [Hkv, capacity, D]
        a = np.empty((n, H, D), np.float32)
        if self.mode == "f32":
            k_cache[:, pos0:pos0 + n] = k.transpose(1, 0, 2)
            v_cache[:, pos0:pos0 + n] = v.transpose(1, 0, 2)
            scale = np.float32(D ** -0.5)  # transformers' scaling = head_dim**-0.5
            kernels.attention(q, k_cache, v_cache, pos0, self.window, scale, a)
        else:  # ggml: F16 cache; q pre-scaled by 1/sqrt(D) as phi3.cpp does, then flash attention
            ggml_kernels.store_fp16(np.ascontiguousarray(k), k_cache, pos0)
            ggml_kernels.store_fp16(np.ascontiguousarray(v), v_cache, pos0)
            q = q * (np.float32(1.0) / np.sqrt(np.float32(D)))  # ggml_scale(Q, 1.0f / sqrtf(D))
            tiled = n >= ggml_kernels.FA_TILE  # llama.cpp's tiled algorithm from 64 queries in the batch
            ggml_kernels.flash_attn_ext_f16(q, k_cache, v_cache, pos0, self.window, tiled, a)
        return a


def prompt_logits(path_or_file, tokens, **kwargs) -> np.ndarray:
    """Open a model and return the logits of every position of ``tokens``: float32 [n, n_vocab]."""
    return Phi3Model.from_gguf(path_or_file, **kwargs).prompt_logits(tokens)
