"""Phi-3 (``Phi3ForCausalLM``) -> GGUF architecture ``phi3``: tensor names, shapes, types and the ``phi3.*`` keys.

Tensor names (HF ``[rows, cols]`` = PyTorch ``[out_features, in_features]``; GGUF shapes are ggml's ``{ne0, ne1}``,
i.e. reversed, row length first).  H = hidden size, F = feed-forward size, V = vocab size, nh / nkv = query / KV
heads, hd = H / nh:

=================================================  ===========================  ================  ================
Hugging Face                                       GGUF                         GGUF shape        type
=================================================  ===========================  ================  ================
(config ``long_factor``, LongRoPE only)            ``rope_factors_long.weight`` {hd/2}            F32
(config ``short_factor``, LongRoPE only)           ``rope_factors_short.weight``{hd/2}            F32
``model.embed_tokens.weight`` [V, H]               ``token_embd.weight``        {H, V}            outtype
``model.layers.N.input_layernorm.weight`` [H]      ``blk.N.attn_norm.weight``   {H}               F32
``model.layers.N.self_attn.qkv_proj.weight``       ``blk.N.attn_qkv.weight``    {H, (nh+2nkv)hd}  outtype
``model.layers.N.self_attn.o_proj.weight``         ``blk.N.attn_output.weight`` {H, H}            outtype
``model.layers.N.post_attention_layernorm.weight`` ``blk.N.ffn_norm.weight``    {H}               F32
``model.layers.N.mlp.gate_up_proj.weight`` [2F,H]  ``blk.N.ffn_up.weight``      {H, 2F}           outtype
``model.layers.N.mlp.down_proj.weight`` [H, F]     ``blk.N.ffn_down.weight``    {F, H}            outtype
``model.norm.weight`` [H]                          ``output_norm.weight``       {H}               F32
``lm_head.weight`` [V, H]                          ``output.weight``            {H, V}            outtype
=================================================  ===========================  ================  ================

Nothing is split or fused: ``qkv_proj`` (rows: all of Q, then K, then V) and ``gate_up_proj`` (rows: gate, then up)
are fused in the checkpoint already and are copied as they are; llama.cpp splits them at run time.  Checkpoints
with separate ``q_proj`` / ``k_proj`` / ``v_proj`` convert to ``attn_q`` / ``attn_k`` / ``attn_v``.

Types: 1-D tensors and ``*_norm.weight`` are always F32; every other ``.weight`` gets the output type (F32, F16,
BF16 or Q8_0; a Q8_0 tensor whose rows are not a multiple of 32 falls back to F16, as in the reference).

Order: the LongRoPE factors first, then the checkpoint's tensors shard by shard, each shard sorted by HF name —
so ``output.weight`` comes before ``token_embd.weight`` and ``blk.10`` before ``blk.2``.

``phi3.*`` keys, in the order written: context_length, rope.scaling.original_context_length, embedding_length,
feed_forward_length (F, not 2F), block_count, attention.head_count, attention.head_count_kv,
attention.layer_norm_rms_epsilon, rope.dimension_count, rope.freq_base, (general.file_type),
attention.sliding_window; and, only with LongRoPE and written before everything but ``general.architecture`` (the
reference sets it while producing the factor tensors), ``rope.scaling.attn_factor`` =
``sqrt(1 + ln(context / original) / ln(original))`` = 1.1902381 for 131072 / 4096.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..errors import RefllmError
from ..ggml_types import GGMLType
from ..gguf import Value
from .hf_config import Phi3Config
from .safetensors import TensorEntry

ARCH = "phi3"

# HF name (with {bid} for the layer) -> GGUF name
TENSOR_NAMES = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
    "model.layers.{bid}.input_layernorm": "blk.{bid}.attn_norm",
    "model.layers.{bid}.self_attn.qkv_proj": "blk.{bid}.attn_qkv",
    "model.layers.{bid}.self_attn.q_proj": "blk.{bid}.attn_q",
    "model.layers.{bid}.self_attn.k_proj": "blk.{bid}.attn_k",
    "model.layers.{bid}.self_attn.v_proj": "blk.{bid}.attn_v",
    "model.layers.{bid}.self_attn.o_proj": "blk.{bid}.attn_output",
    "model.layers.{bid}.post_attention_layernorm": "blk.{bid}.ffn_norm",
    "model.layers.{bid}.mlp.gate_up_proj": "blk.{bid}.ffn_up",
    "model.layers.{bid}.mlp.down_proj": "blk.{bid}.ffn_down",
}
SKIPPED_SUFFIXES = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")  # buffers, not weights
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def gguf_name(hf_name: str, n_layers: int) -> str | None:
    """The GGUF name of an HF tensor name, or None if it has none (``.weight`` and ``.bias`` suffixes kept)."""
    for suffix in (".weight", ".bias"):
        if hf_name.endswith(suffix):
            base = hf_name[: -len(suffix)]
            break
    else:
        return None
    m = _LAYER.match(base)
    if m:
        bid = int(m.group(1))
        if bid >= n_layers:
            return None
        target = TENSOR_NAMES.get(f"model.layers.{{bid}}.{m.group(2)}")
        return target.format(bid=bid) + suffix if target else None
    target = TENSOR_NAMES.get(base)
    return target + suffix if target else None


def expected_shape(gguf_tensor: str, cfg: Phi3Config) -> tuple[int, ...] | None:
    """The HF (PyTorch) shape a Phi-3 tensor must have, from ``config.json``."""
    h, hd, f, v = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size, cfg.vocab_size
    nq, nkv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    kind = gguf_tensor.split(".")[-2] if gguf_tensor.startswith("blk.") else gguf_tensor.rsplit(".", 1)[0]
    is_bias = gguf_tensor.endswith(".bias")
    shapes = {
        "token_embd": (v, h), "output": (v, h), "output_norm": (h,), "attn_norm": (h,), "ffn_norm": (h,),
        "attn_qkv": (nq + 2 * nkv, h), "attn_q": (nq, h), "attn_k": (nkv, h), "attn_v": (nkv, h),
        "attn_output": (h, nq), "ffn_up": (2 * f, h), "ffn_down": (h, f),
    }
    shape = shapes.get(kind)
    return shape[:1] if shape is not None and is_bias else shape


def check_complete(names: set[str], cfg: Phi3Config, where: str) -> None:
    """Every tensor a Phi-3 model needs is present (``output.weight`` may be absent: tied embeddings)."""
    required = ["token_embd.weight", "output_norm.weight"]
    for i in range(cfg.num_hidden_layers):
        required += [f"blk.{i}.{t}.weight" for t in ("attn_norm", "attn_output", "ffn_norm", "ffn_up", "ffn_down")]
        if f"blk.{i}.attn_qkv.weight" not in names:
            required += [f"blk.{i}.attn_{t}.weight" for t in "qkv"]
    missing = [n for n in required if n not in names]
    if missing:
        raise RefllmError(f"{where}: missing tensors (by GGUF name): {', '.join(missing[:8])}"
                          + (f" and {len(missing) - 8} more" if len(missing) > 8 else ""))


def tensor_type(gguf_tensor: str, n_dims: int, outtype: GGMLType, row_length: int) -> tuple[GGMLType, str | None]:
    """The GGUF type of a tensor, and a warning if the output type had to give way."""
    if n_dims <= 1 or gguf_tensor.endswith("_norm.weight") or not gguf_tensor.endswith(".weight"):
        return GGMLType.F32, None
    if outtype == GGMLType.Q8_0 and row_length % 32:
        return GGMLType.F16, (f"Quantized tensor row size ({row_length}) is not a multiple of Q8_0 block size (32), "
                              f"falling back to F16")
    return outtype, None


def attn_factor(cfg: Phi3Config) -> float | None:
    """``phi3.rope.scaling.attn_factor`` (LongRoPE only): the factor both cos and sin are scaled by."""
    if cfg.long_factor is None:
        return None
    scale = cfg.max_position_embeddings / cfg.original_max_position_embeddings
    if scale <= 1.0:
        return 1.0
    return math.sqrt(1 + math.log(scale) / math.log(cfg.original_max_position_embeddings))


def hparams_metadata(cfg: Phi3Config, file_type: int) -> dict[str, Value]:
    """The ``phi3.*`` keys (and ``general.file_type``) in the reference's order."""
    p = f"{ARCH}."
    return {
        p + "context_length": Value.uint32(cfg.max_position_embeddings),
        p + "rope.scaling.original_context_length": Value.uint32(cfg.original_max_position_embeddings),
        p + "embedding_length": Value.uint32(cfg.hidden_size),
        p + "feed_forward_length": Value.uint32(cfg.intermediate_size),
        p + "block_count": Value.uint32(cfg.num_hidden_layers),
        p + "attention.head_count": Value.uint32(cfg.num_attention_heads),
        p + "attention.head_count_kv": Value.uint32(cfg.num_key_value_heads),
        p + "attention.layer_norm_rms_epsilon": Value.float32(cfg.rms_norm_eps),
        p + "rope.dimension_count": Value.uint32(cfg.rope_dims),
        p + "rope.freq_base": Value.float32(cfg.rope_theta),
        "general.file_type": Value.uint32(file_type),
        p + "attention.sliding_window": Value.uint32(cfg.sliding_window),
    }


@dataclass
class PlannedTensor:
    """One tensor of the output: where its values come from and how it is stored."""

    gguf_name: str
    type: GGMLType
    shape: tuple[int, ...]  # numpy order (rows first); the GGUF shape is reversed
    source: TensorEntry | np.ndarray  # a checkpoint tensor, or values made by the converter (RoPE factors)
    source_dtype: str  # for the log line: "torch.bfloat16", ...

    @property
    def ggml_shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.shape))


TORCH_DTYPES = {"BF16": "torch.bfloat16", "F16": "torch.float16", "F32": "torch.float32", "F64": "torch.float64"}


def plan_tensors(cfg: Phi3Config, entries: dict[str, TensorEntry], outtype: GGMLType,
                 warn=lambda message: None) -> list[PlannedTensor]:
    """Every output tensor, in output order, with its type and shape checked against ``config.json``."""
    plan: list[PlannedTensor] = []
    if cfg.long_factor is not None:
        for name, factors in (("rope_factors_long.weight", cfg.long_factor),
                              ("rope_factors_short.weight", cfg.short_factor)):
            plan.append(PlannedTensor(name, GGMLType.F32, (len(factors),), np.array(factors, dtype=np.float32),
                                      "torch.float32"))
    for hf_name, entry in entries.items():
        if hf_name.endswith(SKIPPED_SUFFIXES):
            continue
        name = gguf_name(hf_name, cfg.num_hidden_layers)
        if name is None:
            raise RefllmError(f"{entry.path}: tensor {hf_name!r} is not part of a Phi-3 model (no GGUF name for "
                              f"it with {cfg.num_hidden_layers} layers)")
        if entry.dtype not in TORCH_DTYPES:
            raise RefllmError(f"{entry.path}: tensor {hf_name!r} has dtype {entry.dtype}; a Phi-3 weight must be "
                              f"BF16, F16 or F32")
        shape = expected_shape(name, cfg)
        if shape is not None and entry.shape != shape:
            raise RefllmError(f"{entry.path}: tensor {hf_name!r} has shape {list(entry.shape)}, but config.json "
                              f"implies {list(shape)}")
        qtype, warning = tensor_type(name, len(entry.shape), outtype, entry.shape[-1] if entry.shape else 1)
        if warning:
            warn(f"{name}: {warning}")
        plan.append(PlannedTensor(name, qtype, entry.shape, entry, TORCH_DTYPES[entry.dtype]))
    check_complete({t.gguf_name for t in plan}, cfg, str(next(iter(entries.values())).path.parent)
                   if entries else "checkpoint")
    return plan
