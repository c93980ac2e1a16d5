"""The ``ggml`` numeric mode against ggml's own code and llama.cpp, and the ``f32`` mode against llama.cpp.

* The activation converters (``from_float`` of Q8_0, Q8_1, Q8_K, F16, BF16) give ggml's bytes, bit for bit, as the
  x86 build computes them (``libggml-cpu.so`` through ctypes).
* The dot products agree with the build's (SIMD) ``vec_dot`` to float rounding: the integer parts are exact, the
  float parts are summed in ggml's portable-C order (the build's SIMD code uses another order and fused
  multiply-adds).
* The whole forward pass agrees with llama.cpp (``libllama.so``, its default F16 KV cache and flash attention,
  extra buffer types off): to 1e-5 where no activation rounding decision differs (Q8_0 weights); for other types a
  last-bit difference upstream sometimes flips a half-precision or Q8 rounding downstream, and the agreement is
  only better than the ``f32`` mode's on average (see docs/phi3.md).
* The ``f32`` mode with the ``ctx`` RoPE policy and no sliding window agrees with llama.cpp run with an F32 KV
  cache and flash attention off to 1e-5 — short and long LongRoPE factors both.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace

import numpy as np
import pytest

from refllm import quants
from refllm.convert import convert, make_checkpoint
from refllm.convert.checkpoint import PRESETS
from refllm.ggml_types import GGMLType
from refllm.jit import num_threads, set_num_threads
from refllm.model import Phi3Model
from refllm.model import ggml_kernels as gk

pytestmark = [pytest.mark.reference, pytest.mark.slow]

WEIGHT_TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


@pytest.fixture(scope="module")
def ggml_cpu(reference):
    from refllm.reference import ggml_cpu as module

    module.library()
    return module


@pytest.fixture(scope="module")
def llama(reference):
    from refllm.reference.llama_logits import llama_logits

    return llama_logits


@pytest.fixture(scope="module")
def files(tmp_path_factory, reference):
    """{name: GGUF path}: a GQA model (rows of 256 and 512, so every block type fits) as F32 and quantized by
    llama-quantize, and a LongRoPE model whose original context is 256."""
    root = tmp_path_factory.mktemp("model-ggml")
    vocab = reference.models_dir() / "ggml-vocab-phi-3.gguf"
    gqa = make_checkpoint(root / "gqa", "phi3-medium", layers=2, hidden=256, heads=4, kv_heads=2, intermediate=512,
                          seed=5, vocab_path=vocab)
    made = {"F32": convert(gqa, root / "gqa-f32.gguf", "f32")}
    for ftype in ("Q8_0", "Q4_K_M", "Q5_1"):
        out = root / f"gqa-{ftype}.gguf"
        subprocess.run([str(reference.tool("llama-quantize")), str(made["F32"]), str(out), ftype],
                       check=True, capture_output=True)
        made[ftype] = out
    preset = replace(PRESETS["phi3.5-mini"], original_max_position_embeddings=256, max_position_embeddings=8192)
    lr = make_checkpoint(root / "longrope", preset, layers=2, hidden=192, heads=2, intermediate=384, seed=6,
                         vocab_path=vocab)
    made["longrope"] = convert(lr, root / "longrope-f32.gguf", "f32")
    return made


def prompt(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 32064, n)


# -- the pieces ---------------------------------------------------------------------------------------------------


def _activation_rows(rng) -> list[np.ndarray]:
    n = 512
    ties = np.zeros(n, np.float32)  # max 127 -> id = 1: x.5 values round half to even on x86
    ties[0] = 127.0
    ties[1:9] = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -3.5]
    return [rng.standard_normal(n).astype(np.float32), (rng.standard_normal(n) * 1e-3).astype(np.float32),
            (rng.standard_t(2, n) * 5).astype(np.float32), np.zeros(n, np.float32), ties]


@pytest.mark.parametrize("vtype", ["F32", "F16", "BF16", "Q8_0", "Q8_1", "Q8_K"])
def test_activation_conversion_is_ggmls(ggml_cpu, vtype):
    rng = np.random.default_rng(1)
    for x in _activation_rows(rng):
        ours = np.zeros((1, ggml_cpu.from_float(x, vtype).size), np.uint8)
        gk.quantize_activations(int(GGMLType[vtype]), x[None], ours)
        assert ours[0].tobytes() == ggml_cpu.from_float(x, vtype).tobytes()


@pytest.mark.parametrize("wtype", WEIGHT_TYPES)
def test_vec_dot_matches_ggml(ggml_cpu, wtype):
    qtype = GGMLType[wtype]
    vtype = gk.VEC_DOT_TYPE[qtype]
    assert ggml_cpu.vec_dot_type(qtype) == vtype
    rng = np.random.default_rng(2)
    n = 512
    for _ in range(20):
        w = quants.quantize(rng.standard_normal((1, n)).astype(np.float32), qtype)[0]
        x = (rng.standard_normal(n) * rng.uniform(0.1, 10)).astype(np.float32)
        a = ggml_cpu.from_float(x, vtype)
        terms = quants.dequantize(w[None], qtype)[0].astype(np.float64) * quants.dequantize(a[None], vtype)[0]
        scale = np.abs(terms).sum()
        ours = float(gk.vec_dot(int(qtype), w, a))
        if vtype != GGMLType.Q8_1:  # (Q8_1's offset term uses its stored fp16 s = d·Σq, not the exact sum)
            assert abs(ours - terms.sum()) <= 1e-6 * scale  # the exact value
        assert abs(ours - float(ggml_cpu.vec_dot(qtype, w, a, n))) <= 1e-6 * scale  # the build's


# -- the forward pass against llama.cpp ---------------------------------------------------------------------------


def _stats(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = np.abs(a.astype(np.float64) - b)
    return float(d.max()), float(d.mean())


@pytest.mark.parametrize("step", [None, 1], ids=["one-batch", "token-by-token"])
def test_ggml_mode_q8_0_matches_llama_cpp(files, llama, step):
    ids = prompt(24)
    model = Phi3Model.from_gguf(files["Q8_0"], mode="ggml", rope_policy="ctx", sliding_window=False)
    ours = np.concatenate([model.forward(ids[i:i + 1]) for i in range(ids.size)]) if step else model.prompt_logits(ids)
    theirs = llama(files["Q8_0"], ids, step=step)
    d_max, d_mean = _stats(ours, theirs)
    print(f"Q8_0, {step or 'one batch'}: ggml mode vs llama.cpp max {d_max:.2g} mean {d_mean:.2g}")
    assert d_max <= 1e-5


@pytest.mark.parametrize("name", ["F32", "Q4_K_M", "Q5_1"])
def test_ggml_mode_is_closer_to_llama_cpp_than_f32_mode(files, llama, name):
    ids = prompt(24, seed=1)
    options = {"rope_policy": "ctx", "sliding_window": False}
    ggml = Phi3Model.from_gguf(files[name], mode="ggml", **options).prompt_logits(ids)
    f32 = Phi3Model.from_gguf(files[name], mode="f32", **options).prompt_logits(ids)
    theirs = llama(files[name], ids)
    (g_max, g_mean), (f_max, f_mean) = _stats(ggml, theirs), _stats(f32, theirs)
    print(f"{name}: vs llama.cpp, ggml mode max {g_max:.2g} mean {g_mean:.2g}; f32 mode max {f_max:.2g} "
          f"mean {f_mean:.2g}")
    assert g_mean < f_mean
    assert g_max <= 0.05


@pytest.mark.parametrize("n_ctx, long", [(256, False), (257, True), (0, True)])
def test_f32_mode_matches_llama_cpp_with_f32_cache(files, llama, n_ctx, long):
    """llama.cpp picks the factors from n_ctx padded to 256 (original context 256 here); refllm's ``ctx`` policy
    picks the same, and without F16 rounding the two passes agree to float rounding."""
    ids = prompt(40, seed=2)
    model = Phi3Model.from_gguf(files["longrope"], rope_policy="ctx", n_ctx=n_ctx or None, sliding_window=False)
    ours = model.prompt_logits(ids)
    assert model.long_factors is long
    theirs = llama(files["longrope"], ids, n_ctx=n_ctx, type_k="F32", type_v="F32", flash_attn="off")
    d_max, _ = _stats(ours, theirs)
    print(f"longrope n_ctx={n_ctx} ({'long' if long else 'short'}): f32 mode vs llama.cpp (F32 cache) {d_max:.2g}")
    assert d_max <= 1e-5


# -- determinism ------------------------------------------------------------------------------------------------


def test_ggml_mode_is_deterministic(files):
    ids = prompt(12, seed=3)
    model = Phi3Model.from_gguf(files["Q4_K_M"], mode="ggml")
    n = num_threads()
    try:
        set_num_threads(1)
        one = model.prompt_logits(ids)
        set_num_threads(2)
        two = model.prompt_logits(ids)
    finally:
        set_num_threads(n)
    model.reset()
    stepwise = np.concatenate([model.forward(ids[i:i + 1]) for i in range(ids.size)])
    assert one.tobytes() == two.tobytes() == stepwise.tobytes()
