"""``config.json`` of a Phi-3 checkpoint -> the hyperparameters the converter needs.

convert_hf_to_gguf.py does not read ``config.json`` itself: it asks transformers (``AutoConfig.from_pretrained(...)
.to_dict()``), which fills in ``Phi3Config``'s defaults and normalizes the RoPE settings, and falls back to the raw
JSON when transformers rejects the file.  refllm reads the JSON and applies the same defaults and normalization:

===================================  =========  ===================================================================
field                                default    note
===================================  =========  ===================================================================
vocab_size                           32064      rows of the embedding; the tokenizer has 32011 tokens
hidden_size / intermediate_size      3072/8192
num_hidden_layers / _attention_heads 32 / 32
num_key_value_heads                  = heads    < heads: grouped-query attention (Phi-3-medium: 40 / 10)
rms_norm_eps                         1e-05
max_position_embeddings              4096       ``n_positions`` wins if present
original_max_position_embeddings     4096       the training context; LongRoPE's threshold
sliding_window                       None → 0   written to GGUF but ignored by llama.cpp for phi3
rope theta, partial_rotary_factor    10000, 1.0
===================================  =========  ===================================================================

**Two schemas for RoPE.**  Checkpoints saved by transformers 4 have a top-level ``rope_theta`` and
``"rope_scaling": null`` (plain RoPE) or ``{"type": "su" | "longrope", "long_factor": [...], "short_factor": [...]}``
(LongRoPE, 128k context).  transformers 5 writes ``"rope_parameters": {"rope_type": "default" | "longrope",
"rope_theta": ..., "partial_rotary_factor": ..., "original_max_position_embeddings": ..., factors}``.  Both give
the same :class:`Phi3Config` here.  As in transformers 5, ``rope_scaling`` wins over ``rope_parameters`` when both
are set, the legacy types ``"su"`` and ``"yarn"`` mean ``"longrope"``, and the top-level
``original_max_position_embeddings`` wins over the one inside the RoPE dict (except for type ``"su"``, where
transformers leaves the dict's own value).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import RefllmError

SUPPORTED_ARCHITECTURES = ("Phi3ForCausalLM",)


@dataclass(frozen=True)
class Phi3Config:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float
    max_position_embeddings: int
    original_max_position_embeddings: int
    rope_theta: float
    partial_rotary_factor: float
    sliding_window: int
    rope_type: str  # "default" or "longrope" (after normalization); the file's spelling is in rope_type_raw
    rope_type_raw: str | None
    long_factor: tuple[float, ...] | None
    short_factor: tuple[float, ...] | None

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rope_dims(self) -> int:
        """``phi3.rope.dimension_count``: rotated dimensions per head (``int(factor * n_embd) // n_head``)."""
        return int(self.partial_rotary_factor * self.hidden_size) // self.num_attention_heads


def _int(path: Path, config: dict, key: str, default: int | None) -> int:
    value = config.get(key, default)
    if value is None and default is not None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int):
        raise RefllmError(f"{path}: {key} must be an integer, got {value!r}")
    return value


def _float(path: Path, value, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RefllmError(f"{path}: {key} must be a number, got {value!r}")
    return float(value)


def load_config(model_dir: str | Path) -> Phi3Config:
    """Read and check ``model_dir/config.json``."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise RefllmError(f"{path}: missing (every Hugging Face checkpoint has a config.json)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RefllmError(f"{path}: cannot read JSON: {e}") from None
    if not isinstance(config, dict):
        raise RefllmError(f"{path}: not a JSON object")
    architectures = config.get("architectures") or []
    arch = architectures[0] if isinstance(architectures, list) and architectures else None
    if arch not in SUPPORTED_ARCHITECTURES:
        raise RefllmError(f"{path}: architecture {arch!r} is not supported; refllm converts "
                          f"{', '.join(SUPPORTED_ARCHITECTURES)} (Phi-3 mini / medium, Phi-3.5 mini)")

    heads = _int(path, config, "num_attention_heads", 32)
    rope = config.get("rope_scaling") or config.get("rope_parameters") or {}
    if not isinstance(rope, dict):
        raise RefllmError(f"{path}: rope_scaling / rope_parameters must be an object, got {rope!r}")
    raw_type = rope.get("rope_type", rope.get("type"))
    rope_type = {None: "default", "su": "longrope", "yarn": "longrope"}.get(raw_type, raw_type)
    if rope_type not in ("default", "longrope"):
        raise RefllmError(f"{path}: RoPE type {raw_type!r} is not supported for Phi-3 (plain RoPE, 'su' or "
                          f"'longrope')")
    if raw_type == "su" and "original_max_position_embeddings" in rope:
        original = _int(path, rope, "original_max_position_embeddings", None)
    else:
        original = _int(path, config, "original_max_position_embeddings", 4096)
    theta = _float(path, rope.get("rope_theta", config.get("rope_theta", 10000.0)), "rope_theta")
    partial = _float(path, rope.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0)),
                     "partial_rotary_factor")
    long_factor = short_factor = None
    if rope_type == "longrope":
        long_factor, short_factor = rope.get("long_factor"), rope.get("short_factor")
        if not long_factor or not short_factor:
            raise RefllmError(f"{path}: LongRoPE ({raw_type!r}) needs both long_factor and short_factor")
        long_factor = tuple(_float(path, x, "long_factor") for x in long_factor)
        short_factor = tuple(_float(path, x, "short_factor") for x in short_factor)
    sliding = config.get("sliding_window")
    cfg = Phi3Config(
        architecture=arch,
        vocab_size=_int(path, config, "vocab_size", 32064),
        hidden_size=_int(path, config, "hidden_size", 3072),
        intermediate_size=_int(path, config, "intermediate_size", 8192),
        num_hidden_layers=_int(path, config, "num_hidden_layers", 32),
        num_attention_heads=heads,
        num_key_value_heads=_int(path, config, "num_key_value_heads", heads),
        rms_norm_eps=_float(path, config.get("rms_norm_eps", 1e-05), "rms_norm_eps"),
        max_position_embeddings=_int(path, config, "n_positions" if "n_positions" in config
                                     else "max_position_embeddings", 4096),
        original_max_position_embeddings=original,
        rope_theta=theta,
        partial_rotary_factor=partial,
        sliding_window=0 if sliding is None else _int(path, config, "sliding_window", None),
        rope_type=rope_type,
        rope_type_raw=raw_type,
        long_factor=long_factor,
        short_factor=short_factor,
    )
    if cfg.hidden_size % heads or heads % cfg.num_key_value_heads:
        raise RefllmError(f"{path}: hidden_size {cfg.hidden_size}, num_attention_heads {heads} and "
                          f"num_key_value_heads {cfg.num_key_value_heads} do not divide evenly")
    if long_factor is not None and (len(long_factor) != len(short_factor) or len(long_factor) * 2 != cfg.rope_dims):
        raise RefllmError(f"{path}: LongRoPE needs {cfg.rope_dims // 2} long and short factors (rope dimensions / 2), "
                          f"got {len(long_factor)} and {len(short_factor)}")
    return cfg
