"""Make a Phi-3 Hugging Face checkpoint directory with seeded random weights — real shapes, real files, no hub.

>>> from refllm.convert.checkpoint import make_checkpoint
>>> make_checkpoint("phi35-tiny", "phi3.5-mini", layers=2, hidden=256, heads=4, seed=0)

The directory looks like a download of ``microsoft/Phi-3-mini-4k-instruct`` (and friends):

==============================  ======================================================================================
file                            content
==============================  ======================================================================================
config.json                     the real config fields (``Phi3ForCausalLM``, LongRoPE ``rope_scaling`` or
                                transformers-5 ``rope_parameters``), with the sizes asked for
model.safetensors               bf16 weights, seeded normal(0, 0.02) (norm weights 1 + normal(0, 0.02)); above
 or model-0000k-of-0000n...     ``shard_size`` bytes split into shards like ``save_pretrained`` does, with
 + model.safetensors.index.json ``model.safetensors.index.json``
tokenizer.model, tokenizer.json the real Phi-3 tokenizer, rebuilt from ``models/ggml-vocab-phi-3.gguf`` of the reference
tokenizer_config.json,          sdist (see :mod:`refllm.convert.tokenizer_files`)
added_tokens.json,
special_tokens_map.json
generation_config.json          bos / eos / pad ids
README.md                       a model card whose YAML front matter has the fields of the real one (license, tags, ...)
==============================  ======================================================================================

Presets (full size unless overridden with ``layers=`` / ``hidden=`` / ...):

==================  ======  ======  =====  ===  =====  ========  ==========  =========================================
preset              hidden  layers  heads  kv   ffn    context   window      RoPE
==================  ======  ======  =====  ===  =====  ========  ==========  =========================================
phi3-mini-4k        3072    32      32     32   8192   4096      2047        plain
phi3-mini-128k      3072    32      32     32   8192   131072    262144      LongRoPE, ``rope_scaling.type = "su"``
phi3.5-mini         3072    32      32     32   8192   131072    262144      LongRoPE, ``type = "longrope"``
phi3-medium         5120    40      40     10   17920  4096      2047        plain, grouped-query attention
==================  ======  ======  =====  ===  =====  ========  ==========  =========================================

LongRoPE factors are the real Phi-3.5-mini ones (48 each, one per rotated pair of a 96-wide head).  A head of another
size gets a set of ``head_dim / 2`` factors with the same shape, interpolated from them.  (The real mini-128k factors
differ slightly; only their first values are public knowledge here, so mini-128k uses the 3.5 set too.)

Weights are generated tensor by tensor and written row-chunk by row-chunk, so the full-size presets (3.8 B and 14 B
parameters) are made in bounded memory.  Every tensor has its own random stream (``seed`` and the tensor name), so
the values do not depend on sharding.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import RefllmError
from . import safetensors as st
from .tokenizer_files import GGUFVocab, write_tokenizer_files

# Phi-3.5-mini-instruct's config.json (two independent public copies agree; see shared/specs/phi3-spec.md §7).
PHI35_LONG_FACTOR = [
    1.0800000429153442, 1.1100000143051147, 1.1399999856948853, 1.340000033378601, 1.5899999141693115,
    1.600000023841858, 1.6200000047683716, 2.620000123977661, 3.2300000190734863, 3.2300000190734863,
    4.789999961853027, 7.400000095367432, 7.700000286102295, 9.09000015258789, 12.199999809265137,
    17.670000076293945, 24.46000099182129, 28.57000160217285, 30.420001983642578, 30.840002059936523,
    32.590003967285156, 32.93000411987305, 42.320003509521484, 44.96000289916992, 50.340003967285156,
    50.45000457763672, 57.55000305175781, 57.93000411987305, 58.21000289916992, 60.1400032043457,
    62.61000442504883, 62.62000274658203, 62.71000289916992, 63.1400032043457, 63.1400032043457,
    63.77000427246094, 63.93000411987305, 63.96000289916992, 63.970001220703125, 64.02999877929688,
    64.06999969482422, 64.08000183105469, 64.12000274658203, 64.41000366210938, 64.4800033569336,
    64.51000213623047, 64.52999877929688, 64.83999633789062,
]
PHI35_SHORT_FACTOR = [
    1.0, 1.0199999809265137, 1.0299999713897705, 1.0299999713897705, 1.0499999523162842, 1.0499999523162842,
    1.0499999523162842, 1.0499999523162842, 1.0499999523162842, 1.0699999332427979, 1.0999999046325684,
    1.1099998950958252, 1.1599998474121094, 1.1599998474121094, 1.1699998378753662, 1.2899998426437378,
    1.339999794960022, 1.679999828338623, 1.7899998426437378, 1.8199998140335083, 1.8499997854232788,
    1.8799997568130493, 1.9099997282028198, 1.9399996995925903, 1.9899996519088745, 2.0199997425079346,
    2.0199997425079346, 2.0199997425079346, 2.0199997425079346, 2.0199997425079346, 2.0199997425079346,
    2.0299997329711914, 2.0299997329711914, 2.0299997329711914, 2.0299997329711914, 2.0299997329711914,
    2.0299997329711914, 2.0299997329711914, 2.0299997329711914, 2.0299997329711914, 2.0799996852874756,
    2.0899996757507324, 2.189999580383301, 2.2199995517730713, 2.5899994373321533, 2.729999542236328,
    2.749999523162842, 2.8399994373321533,
]

# llama.cpp's vendored Phi-3.5 template (models/templates/microsoft-Phi-3.5-mini-instruct.jinja).
PHI35_CHAT_TEMPLATE_FILE = "models/templates/microsoft-Phi-3.5-mini-instruct.jinja"
VOCAB_FILE = "models/ggml-vocab-phi-3.gguf"


@dataclass(frozen=True)
class Preset:
    """The shape and flavour of one Phi-3 model."""

    name_or_path: str  # config.json "_name_or_path" (the hub id without the organization)
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    max_position_embeddings: int
    sliding_window: int
    rope_type: str | None  # None: plain RoPE; "su" / "longrope": LongRoPE
    chat_template: str  # "vocab": the template in ggml-vocab-phi-3.gguf (Phi-3-mini-4k); "phi3.5": the 3.5 one
    add_bos_token: bool
    transformers_version: str
    vocab_size: int = 32064
    original_max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-05


PRESETS: dict[str, Preset] = {
    "phi3-mini-4k": Preset("Phi-3-mini-4k-instruct", 3072, 32, 32, 32, 8192, 4096, 2047, None, "vocab", True,
                           "4.40.2"),
    "phi3-mini-128k": Preset("Phi-3-mini-128k-instruct", 3072, 32, 32, 32, 8192, 131072, 262144, "su", "vocab",
                             True, "4.40.2"),
    "phi3.5-mini": Preset("Phi-3.5-mini-instruct", 3072, 32, 32, 32, 8192, 131072, 262144, "longrope", "phi3.5",
                          False, "4.43.3"),
    "phi3-medium": Preset("Phi-3-medium-4k-instruct", 5120, 40, 40, 10, 17920, 4096, 2047, None, "vocab", True,
                          "4.40.2"),
}
DEFAULT_SHARD_SIZE = 5_000_000_000  # save_pretrained's max_shard_size="5GB"
CHUNK_ELEMENTS = 1 << 22  # weights are generated and written 4 M elements at a time


@dataclass
class CheckpointSpec:
    """Everything that determines the files: a preset plus overrides."""

    preset: Preset
    seed: int = 0
    config_schema: str = "legacy"  # "legacy": rope_scaling + top-level rope_theta; "transformers5": rope_parameters
    dtype: str = "BF16"  # safetensors dtype of the weights
    shard_size: int = DEFAULT_SHARD_SIZE
    extra_config: dict = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.preset.hidden_size // self.preset.num_attention_heads


def longrope_factors(n: int) -> tuple[list[float], list[float]]:
    """``n`` long and short factors: the real Phi-3.5 ones for n = 48, else the same curves resampled to n points
    (float32 values, as they would be after a save by PyTorch)."""
    if n == len(PHI35_LONG_FACTOR):
        return list(PHI35_LONG_FACTOR), list(PHI35_SHORT_FACTOR)
    src = np.linspace(0.0, 1.0, len(PHI35_LONG_FACTOR))
    dst = np.linspace(0.0, 1.0, n)

    def resample(factors: list[float]) -> list[float]:
        return [float(np.float32(v)) for v in np.interp(dst, src, np.array(factors, dtype=np.float64))]

    return resample(PHI35_LONG_FACTOR), resample(PHI35_SHORT_FACTOR)


def config_json(spec: CheckpointSpec) -> dict:
    """The ``config.json`` of the checkpoint (keys sorted, as ``save_pretrained`` writes them)."""
    p = spec.preset
    rope: dict | None = None
    if p.rope_type is not None:
        long_factor, short_factor = longrope_factors(spec.head_dim // 2)
        rope = {"long_factor": long_factor, "short_factor": short_factor, "type": p.rope_type}
    config: dict = {
        "architectures": ["Phi3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "auto_map": {"AutoConfig": "configuration_phi3.Phi3Config",
                     "AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM"},
        "bos_token_id": 1,
        "embd_pdrop": 0.0,
        "eos_token_id": 32000,
        "hidden_act": "silu",
        "hidden_size": p.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": p.intermediate_size,
        "max_position_embeddings": p.max_position_embeddings,
        "model_type": "phi3",
        "num_attention_heads": p.num_attention_heads,
        "num_hidden_layers": p.num_hidden_layers,
        "num_key_value_heads": p.num_key_value_heads,
        "original_max_position_embeddings": p.original_max_position_embeddings,
        "pad_token_id": 32000,
        "resid_pdrop": 0.0,
        "rms_norm_eps": p.rms_norm_eps,
        "sliding_window": p.sliding_window,
        "tie_word_embeddings": False,
        "use_cache": True,
        "vocab_size": p.vocab_size,
    }
    dtype_name = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[spec.dtype]
    if spec.config_schema == "legacy":
        config["_name_or_path"] = p.name_or_path
        config["rope_scaling"] = rope
        config["rope_theta"] = p.rope_theta
        config["torch_dtype"] = dtype_name
        config["transformers_version"] = p.transformers_version
    elif spec.config_schema == "transformers5":
        # what transformers 5 writes: RoPE settings moved into rope_parameters, "dtype" instead of "torch_dtype"
        params = {"partial_rotary_factor": 1.0, "rope_theta": p.rope_theta, "rope_type": "default"}
        if rope is not None:
            params = {**rope, "original_max_position_embeddings": p.original_max_position_embeddings, **params,
                      "rope_type": "longrope"}
        config["rope_parameters"] = params
        config["dtype"] = dtype_name
        config["transformers_version"] = "5.23.0"
    else:
        raise RefllmError(f"unknown config schema {spec.config_schema!r} (legacy or transformers5)")
    config.update(spec.extra_config)
    return {k: config[k] for k in sorted(config)}


@dataclass
class WeightSpec:
    name: str
    shape: tuple[int, ...]
    kind: str  # "linear" (normal(0, 0.02)) or "norm" (1 + normal(0, 0.02))


def weight_specs(p: Preset) -> list[WeightSpec]:
    """The tensors of ``Phi3ForCausalLM`` in ``state_dict`` order, with their PyTorch shapes ``[out, in]``."""
    h, head_dim = p.hidden_size, p.hidden_size // p.num_attention_heads
    qkv = (p.num_attention_heads + 2 * p.num_key_value_heads) * head_dim
    specs = [WeightSpec("model.embed_tokens.weight", (p.vocab_size, h), "linear")]
    for i in range(p.num_hidden_layers):
        layer = f"model.layers.{i}."
        specs += [
            WeightSpec(layer + "self_attn.o_proj.weight", (h, p.num_attention_heads * head_dim), "linear"),
            WeightSpec(layer + "self_attn.qkv_proj.weight", (qkv, h), "linear"),
            WeightSpec(layer + "mlp.gate_up_proj.weight", (2 * p.intermediate_size, h), "linear"),
            WeightSpec(layer + "mlp.down_proj.weight", (h, p.intermediate_size), "linear"),
            WeightSpec(layer + "input_layernorm.weight", (h,), "norm"),
            WeightSpec(layer + "post_attention_layernorm.weight", (h,), "norm"),
        ]
    specs += [WeightSpec("model.norm.weight", (h,), "norm"), WeightSpec("lm_head.weight", (p.vocab_size, h), "linear")]
    return specs


def _chunks(w: WeightSpec, seed: int, dtype: str) -> Iterator[np.ndarray]:
    """The tensor's values, ``CHUNK_ELEMENTS`` at a time, in the safetensors dtype (raw bits for BF16)."""
    rng = np.random.default_rng([seed, zlib.crc32(w.name.encode())])
    n = int(np.prod(w.shape))
    for start in range(0, n, CHUNK_ELEMENTS):
        x = rng.standard_normal(min(CHUNK_ELEMENTS, n - start), dtype=np.float32)
        x *= np.float32(0.02)
        if w.kind == "norm":
            x += np.float32(1.0)
        if dtype == "BF16":
            yield st.f32_to_bf16_bits(x)
        elif dtype == "F16":
            yield x.astype(np.float16)
        else:
            yield x


def plan_shards(sizes: list[tuple[str, int]], max_shard_size: int) -> list[list[str]]:
    """Group tensors into shards the way ``huggingface_hub.split_torch_state_dict_into_shards`` does: in state-dict
    order, a new shard when the next tensor would push the current one over the limit; a tensor bigger than the
    limit gets a shard of its own."""
    shards: list[list[str]] = []
    current: list[str] = []
    current_size = 0
    for name, size in sizes:
        if size > max_shard_size:
            shards.append([name])
            continue
        if current and current_size + size > max_shard_size:
            shards.append(current)
            current, current_size = [], 0
        current.append(name)
        current_size += size
    if current:
        shards.append(current)
    return shards


def _model_card(p: Preset) -> str:
    return f"""---
license: mit
license_link: https://huggingface.co/microsoft/{p.name_or_path}/resolve/main/LICENSE
language:
- en
pipeline_tag: text-generation
tags:
- nlp
- code
---

# {p.name_or_path} (random weights)

Made by `python -m refllm make-checkpoint`: the configuration, file layout and tokenizer of Microsoft's
{p.name_or_path}, with seeded random weights. It generates noise; it exists to test converters and runtimes.
"""


def _progress(done: int, total: int, t0: float, label: str) -> None:
    if sys.stderr.isatty() or done == total:
        pct = 100.0 * done / total if total else 100.0
        print(f"\r{label}: {done / 1e9:6.2f} / {total / 1e9:.2f} GB ({pct:5.1f}%) {time.time() - t0:6.1f} s",
              end="\n" if done == total else "", file=sys.stderr, flush=True)


def make_checkpoint(outdir: str | os.PathLike, preset: str | Preset = "phi3.5-mini", *, layers: int | None = None,
                    hidden: int | None = None, heads: int | None = None, kv_heads: int | None = None,
                    intermediate: int | None = None, seed: int = 0, config_schema: str = "legacy",
                    rope_type: str | None = None, dtype: str = "BF16", shard_size: int = DEFAULT_SHARD_SIZE,
                    vocab_path: str | os.PathLike | None = None, progress: bool = False) -> Path:
    """Write a checkpoint directory (see the module docstring); return its path.

    ``outdir`` must not exist or be empty.  The files are written into a sibling temporary directory that is renamed
    at the end, so an interrupted run leaves nothing half-made at ``outdir``.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise RefllmError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    overrides = {k: v for k, v in (("num_hidden_layers", layers), ("hidden_size", hidden),
                                   ("num_attention_heads", heads), ("num_key_value_heads", kv_heads),
                                   ("intermediate_size", intermediate)) if v is not None}
    if heads is not None and kv_heads is None and preset.num_key_value_heads == preset.num_attention_heads:
        overrides["num_key_value_heads"] = heads  # keep "no GQA" presets without GQA
    if rope_type is not None:
        if preset.rope_type is None:
            raise RefllmError(f"preset {preset.name_or_path} has plain RoPE; --rope-type needs a LongRoPE preset")
        overrides["rope_type"] = rope_type
    p = replace(preset, **overrides)
    dtype = dtype.upper()
    if dtype not in ("BF16", "F16", "F32"):
        raise RefllmError(f"dtype must be BF16, F16 or F32, not {dtype}")
    if p.hidden_size % p.num_attention_heads or p.num_attention_heads % p.num_key_value_heads:
        raise RefllmError(f"hidden size {p.hidden_size} must be a multiple of the head count {p.num_attention_heads}, "
                          f"and that a multiple of the KV head count {p.num_key_value_heads}")
    if p.rope_type is not None and (p.hidden_size // p.num_attention_heads) % 2:
        raise RefllmError("LongRoPE needs an even head size")
    spec = CheckpointSpec(p, seed, config_schema, dtype, shard_size)

    out = Path(outdir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RefllmError(f"{out}: exists and is not an empty directory")
    from ..reference.build import reference_source

    source = None
    if vocab_path is None:
        source = reference_source()
        vocab_path = source / VOCAB_FILE
    vocab = GGUFVocab(vocab_path)
    if p.chat_template == "phi3.5":
        source = source or reference_source()
        template = (source / PHI35_CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")
    else:
        template = vocab.chat_template
    vocab.add_bos = p.add_bos_token

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        (tmp / "config.json").write_text(json.dumps(config_json(spec), indent=2) + "\n", encoding="utf-8")
        (tmp / "generation_config.json").write_text(json.dumps(
            {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": [32000, 32001, 32007],
             "pad_token_id": 32000, "transformers_version": p.transformers_version}, indent=2) + "\n")
        (tmp / "README.md").write_text(_model_card(p), encoding="utf-8")
        model_max_length = p.max_position_embeddings
        write_tokenizer_files(tmp, vocab, model_max_length, template)
        _write_weights(tmp, spec, progress)
        shutil.rmtree(out, ignore_errors=True)  # an empty directory
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_weights(directory: Path, spec: CheckpointSpec, progress: bool) -> None:
    specs = weight_specs(spec.preset)
    itemsize = st.DTYPES[spec.dtype].itemsize
    sizes = [(w.name, int(np.prod(w.shape)) * itemsize) for w in specs]
    total = sum(s for _, s in sizes)
    shards = plan_shards(sizes, spec.shard_size)
    by_name = {w.name: w for w in specs}
    done, t0 = 0, time.time()

    def tensor(w: WeightSpec) -> st.TensorToWrite:
        def chunks():
            nonlocal done
            for chunk in _chunks(w, spec.seed, spec.dtype):
                yield chunk
                done += chunk.nbytes
                if progress:
                    _progress(done, total, t0, "weights")
        return st.TensorToWrite(w.name, spec.dtype, w.shape, chunks)

    if len(shards) == 1:
        st.write_file(directory / "model.safetensors", [tensor(w) for w in specs])
        return
    weight_map = {}
    for k, names in enumerate(shards):
        filename = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        st.write_file(directory / filename, [tensor(by_name[n]) for n in names])
        weight_map.update({n: filename for n in names})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def parse_size(text: str) -> int:
    """``"5GB"`` -> 5_000_000_000, ``"200MB"``, ``"512KB"``, or a plain number of bytes."""
    t = text.strip().upper()
    for suffix, mult in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
        if t.endswith(suffix):
            return int(float(t[: -len(suffix)]) * mult)
    return int(t)


__all__ = ["PRESETS", "Preset", "make_checkpoint", "config_json", "weight_specs", "plan_shards", "longrope_factors",
           "parse_size"]
