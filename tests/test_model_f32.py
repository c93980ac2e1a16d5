"""The forward pass in ``f32`` mode against Hugging Face transformers, and its determinism.

Checkpoints come from the checkpoint maker (real 32064-token vocabulary, seeded random bf16 weights) and are
converted with ``--outtype f32``, so refllm and transformers (``Phi3ForCausalLM`` in float32, eager attention) see
the same float values.  transformers chooses the LongRoPE factors by sequence length, so refllm runs with the
``seq`` policy.  Required: max |Δlogit| ≤ 1e-4 over every position of a 64-token prompt, for

* a Phi-3-mini-4k model (plain RoPE) whose sliding window is made 24, so the 64-token prompt crosses it;
* a Phi-3.5-mini model (LongRoPE) whose original context is made 32: prompts below it (short factors), above it
  (long factors), and a sequence that grows across it token by token (the cache is recomputed, as ``generate()``
  does);
* a Phi-3-medium model (grouped-query attention: 4 query heads, 2 KV heads).

Determinism: logits are bitwise identical for 1 and 2 threads, and for a prompt run at once or token by token.  The
weight types: a file whose matrices are quantized (every type the kernels read) gives bitwise the logits of the same
file with those matrices decoded to F32 — the kernels compute on the decoded blocks, nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from refllm import gguf, quants
from refllm.convert import convert, make_checkpoint
from refllm.convert.checkpoint import PRESETS
from refllm.ggml_types import GGMLType
from refllm.jit import num_threads, set_num_threads
from refllm.model import Phi3Model

pytestmark = [pytest.mark.reference, pytest.mark.slow]  # the maker's vocabulary comes from the reference sdist

TOLERANCE = 1e-4
N_PROMPT = 64

MODELS = {  # name: (preset with overrides, make_checkpoint arguments)
    "mini-4k-swa": (replace(PRESETS["phi3-mini-4k"], sliding_window=24),
                    {"layers": 2, "hidden": 192, "heads": 2, "intermediate": 384}),
    "longrope": (replace(PRESETS["phi3.5-mini"], original_max_position_embeddings=32, max_position_embeddings=1024),
                 {"layers": 2, "hidden": 192, "heads": 2, "intermediate": 384}),
    "gqa": (PRESETS["phi3-medium"], {"layers": 2, "hidden": 256, "heads": 4, "kv_heads": 2, "intermediate": 512}),
}


@pytest.fixture(scope="module")
def vocab_file():
    from refllm.reference.build import reference_source

    return reference_source() / "models" / "ggml-vocab-phi-3.gguf"


@pytest.fixture(scope="module")
def models(tmp_path_factory, vocab_file):
    """{name: (checkpoint directory, F32 GGUF path)}"""
    root = tmp_path_factory.mktemp("model-f32")
    made = {}
    for name, (preset, kwargs) in MODELS.items():
        path = make_checkpoint(root / name, preset, seed=5, vocab_path=vocab_file, **kwargs)
        made[name] = (path, convert(path, root / f"{name}-f32.gguf", "f32"))
    return made


@pytest.fixture(scope="module")
def hf_logits(models):
    """transformers' logits of a token sequence (all positions), float32 eager attention."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    loaded = {}

    def run(name: str, ids: np.ndarray) -> np.ndarray:
        if name not in loaded:
            loaded[name] = transformers.Phi3ForCausalLM.from_pretrained(
                models[name][0], dtype=torch.float32, attn_implementation="eager").eval()
        with torch.no_grad():
            return loaded[name](torch.tensor(ids, dtype=torch.long)[None]).logits[0].numpy()

    return run


def prompt(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 32064, n)


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


# -- agreement with transformers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_prompt_matches_transformers(models, hf_logits, name):
    ids = prompt(N_PROMPT)
    model = Phi3Model.from_gguf(models[name][1], rope_policy="seq")
    ours = model.prompt_logits(ids)
    theirs = hf_logits(name, ids)
    d = max_diff(ours, theirs)
    print(f"{name}: {N_PROMPT} tokens, max |Δlogit| = {d:.3g} (logits up to {np.abs(theirs).max():.3g})")
    assert d <= TOLERANCE


def test_sliding_window_switch(models, hf_logits):
    """The window (24 here) is on by default; switched off, positions ≥ 24 change and earlier ones do not."""
    ids = prompt(N_PROMPT)
    path = models["mini-4k-swa"][1]
    assert Phi3Model.from_gguf(path).window == 24
    model = Phi3Model.from_gguf(path, sliding_window=False)
    assert model.window == 0
    full = model.prompt_logits(ids)
    theirs = hf_logits("mini-4k-swa", ids)
    assert max_diff(full[:24], theirs[:24]) <= TOLERANCE
    assert max_diff(full[24:], theirs[24:]) > 100 * TOLERANCE


def test_longrope_below_original_context(models, hf_logits):
    ids = prompt(24, seed=1)  # 24 <= 32: short factors
    model = Phi3Model.from_gguf(models["longrope"][1], rope_policy="seq")
    ours = model.prompt_logits(ids)
    assert model.long_factors is False
    d = max_diff(ours, hf_logits("longrope", ids))
    print(f"longrope, 24 tokens (short factors): max |Δlogit| = {d:.3g}")
    assert d <= TOLERANCE


def test_longrope_growing_across_original_context(models, hf_logits):
    """Prefill 24 tokens, then one token at a time up to 64: the logits at each position are transformers' for the
    sequence so far — short factors while it has ≤ 32 tokens, long ones (whole cache recomputed) after."""
    ids = prompt(N_PROMPT, seed=2)
    model = Phi3Model.from_gguf(models["longrope"][1], rope_policy="seq")
    rows = [model.forward(ids[:24], 0)]
    for pos in range(24, N_PROMPT):
        rows.append(model.forward(ids[pos:pos + 1]))
        assert model.long_factors is (pos + 1 > 32)
    ours = np.concatenate(rows)
    short = hf_logits("longrope", ids[:32])  # seq_len 32: short factors for positions 0 … 31
    long = hf_logits("longrope", ids)  # seq_len 64: long factors
    d_short, d_long = max_diff(ours[:32], short), max_diff(ours[32:], long[32:])
    print(f"longrope, growing 24 -> 64: max |Δlogit| = {d_short:.3g} (short part), {d_long:.3g} (long part)")
    assert d_short <= TOLERANCE and d_long <= TOLERANCE
    assert max_diff(short, long[:32]) > 100 * TOLERANCE  # the factor sets really differ


def test_rope_policies_differ(models, hf_logits):
    """``ctx`` (llama.cpp) picks the long factors from the context size (here any n_ctx: 256 > 32), so a short
    prompt is rotated as transformers rotates a long sequence."""
    ids = prompt(N_PROMPT, seed=3)
    path = models["longrope"][1]
    seq = Phi3Model.from_gguf(path, rope_policy="seq").prompt_logits(ids[:24])
    ctx = Phi3Model.from_gguf(path, rope_policy="ctx", n_ctx=64).prompt_logits(ids[:24])
    long = hf_logits("longrope", ids)[:24]  # causal: the first 24 positions of a long-factor run
    assert max_diff(ctx, long) <= TOLERANCE
    d = max_diff(seq, ctx)
    print(f"longrope, 24 tokens: seq vs ctx policy max |Δlogit| = {d:.3g}")
    assert d > 100 * TOLERANCE


# -- determinism -----------------------------------------------------------------------------------------------------


@pytest.fixture
def restore_threads():
    n = num_threads()
    yield
    set_num_threads(n)


def test_thread_count_and_batching_do_not_change_bits(models, restore_threads):
    ids = prompt(20, seed=4)
    model = Phi3Model.from_gguf(models["gqa"][1])
    set_num_threads(1)
    one = model.prompt_logits(ids)
    set_num_threads(2)
    two = model.prompt_logits(ids)
    model.reset()
    stepwise = np.concatenate([model.forward(ids[i:i + 1]) for i in range(ids.size)])
    assert one.tobytes() == two.tobytes()
    assert one.tobytes() == stepwise.tobytes()


def test_rewind(models):
    ids = prompt(12, seed=5)
    model = Phi3Model.from_gguf(models["gqa"][1])
    full = model.prompt_logits(ids)
    model.forward(prompt(5, seed=6), 7)  # overwrite positions 7…11
    again = model.forward(ids[7:], 7)
    assert again.tobytes() == full[7:].tobytes()
    assert model.n_past == 12


# -- every weight type -------------------------------------------------------------------------------------------

# (weight type per matrix) — together every type refllm.model.kernels reads; all rows are multiples of 256
MIXES = {
    "k-quants": {"token_embd": GGMLType.Q4_K, "attn_qkv": GGMLType.Q5_K, "attn_output": GGMLType.Q6_K,
                 "ffn_up": GGMLType.Q3_K, "ffn_down": GGMLType.Q2_K, "output": GGMLType.Q8_0},
    "legacy": {"token_embd": GGMLType.Q4_0, "attn_qkv": GGMLType.Q4_1, "attn_output": GGMLType.Q5_0,
               "ffn_up": GGMLType.Q5_1, "ffn_down": GGMLType.F16, "output": GGMLType.BF16},
}


def _requantize(src: Path, mix: dict, quantized: Path, decoded: Path) -> None:
    """Write ``src`` with its matrices in the types of ``mix`` (``quantized``) and the same values back in F32
    (``decoded``)."""
    f = gguf.read(src)
    q_tensors, d_tensors = [], []
    for t in f.tensors:
        kind = t.name.split(".")[-2]
        qtype = mix.get(kind)
        if qtype is None or len(t.shape) != 2:
            q_tensors.append(t)
            d_tensors.append(t)
            continue
        blocks = quants.quantize(t.data, qtype)
        q_tensors.append(gguf.TensorSpec(t.name, qtype, t.shape, blocks))
        d_tensors.append(gguf.TensorSpec(t.name, GGMLType.F32, t.shape, quants.dequantize(blocks, qtype)))
    gguf.write(quantized, f.metadata, q_tensors)
    gguf.write(decoded, f.metadata, d_tensors)
    f.close()


@pytest.mark.parametrize("mix", list(MIXES))
def test_weight_types_compute_on_decoded_blocks(models, tmp_path, mix, restore_threads):
    quantized, decoded = tmp_path / "q.gguf", tmp_path / "d.gguf"
    _requantize(models["gqa"][1], MIXES[mix], quantized, decoded)
    ids = prompt(8, seed=7)
    q_model = Phi3Model.from_gguf(quantized)
    assert {L.ffn_down.qtype for L in q_model.layers} == {MIXES[mix]["ffn_down"]}
    ours = q_model.prompt_logits(ids)
    assert ours.tobytes() == Phi3Model.from_gguf(decoded).prompt_logits(ids).tobytes()
    set_num_threads(1)
    assert q_model.prompt_logits(ids).tobytes() == ours.tobytes()


# -- plain Python ----------------------------------------------------------------------------------------------------


def test_kernels_run_without_jit(tmp_path, vocab_file):
    """With NUMBA_DISABLE_JIT=1 every kernel runs as plain Python; on a one-layer model of width 64 it gives the
    compiled logits (both numeric modes) up to the last bits of exp, cos and sin (numpy's vs libm's)."""
    path = make_checkpoint(tmp_path / "tiny", "phi3.5-mini", layers=1, hidden=64, heads=1, intermediate=64,
                           seed=3, vocab_path=vocab_file)
    model_path = convert(path, tmp_path / "tiny.gguf", "f32")
    ids = [1, 32010, 1815]
    script = ("import json, sys, numpy as np\nfrom refllm.model import Phi3Model\n"
              "for mode in ('f32', 'ggml'):\n"
              "    m = Phi3Model.from_gguf(sys.argv[1], mode=mode)\n"
              "    np.save(f'{sys.argv[2]}-{mode}.npy', np.concatenate([m.forward([t]) for t in json.loads(sys.argv[3])]))\n")
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    subprocess.run([sys.executable, "-c", script, str(model_path), str(tmp_path / "plain"), json.dumps(ids)],
                   env=env, check=True, timeout=900)
    for mode in ("f32", "ggml"):
        compiled = Phi3Model.from_gguf(model_path, mode=mode).prompt_logits(ids)
        plain = np.load(tmp_path / f"plain-{mode}.npy")
        assert max_diff(plain, compiled) <= 1e-5, mode
