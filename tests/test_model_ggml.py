"""The ``ggml`` numeric mode against ggml's own code and llama.cpp, and the ``f32`` mode against llama.cpp.

The ``ggml`` mode follows the reference build: x86-64, gcc ``-march=native`` on a CPU with AVX512 (F, VL, DQ, BW,
VNNI, BF16, FP16).  On such a build:

* the activation converters (``from_float`` of Q8_0, Q8_1, Q8_K, F16, BF16) give ggml's bytes, bit for bit;
* every dot product is the build's ``vec_dot`` bit for bit (hypothesis: random rows, magnitudes from 1e-3 to 1e3);
  the SwiGLU and the softmax exponential are the build's SIMD ``ggml_v_expf`` bit for bit;
* the whole forward pass gives llama.cpp's logits bit for bit (``libllama.so`` with its defaults: F16 KV cache,
  flash attention, extra buffer types off) — Q8_0, Q6_K, Q4_K_M, Q5_1 and F32 files, 16- and 80-token prompts
  (80 takes llama.cpp's tiled flash attention), in one batch (K-quant products tiled, float products through
  llamafile's sgemm) and token by token (``vec_dot`` everywhere); head size 128 (flash attention's half-precision
  vectors) when the CPU has AVX512-FP16.

On an x86 build without AVX512 (``ggml_cpu_has_avx512`` and friends, read through ctypes) the float-type dot
products, the exponential and the attention sums take other orders; those tests then only check agreement to float
rounding (1e-6 relative for a dot product or an activation, 5e-2 for a logit) and say so.

The ``f32`` mode with the ``ctx`` RoPE policy and no sliding window agrees with llama.cpp run with an F32 KV cache
and flash attention off to 1e-5 — short and long LongRoPE factors both.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
def avx512(ggml_exact) -> bool:
    """Whether the reference build takes the AVX512 paths the ``ggml`` mode follows."""
    return ggml_exact


def _has_avx512_fp16() -> bool:
    """AVX512-FP16 on this CPU (the reference is built with ``-march=native``; ggml has no query for it)."""
    try:
        with open("/proc/cpuinfo") as f:
            return "avx512_fp16" in f.read()
    except OSError:
        return False


@pytest.fixture(scope="module")
def llama(reference):
    from refllm.reference.llama_logits import llama_logits

    return llama_logits


@pytest.fixture(scope="module")
def files(tmp_path_factory, reference):
    """{name: GGUF path}: a GQA model (rows of 256 and 512, so every block type fits; head size 64) as F32 and
    quantized by llama-quantize, a LongRoPE model whose original context is 256, and a model with head size 128."""
    root = tmp_path_factory.mktemp("model-ggml")
    vocab = reference.models_dir() / "ggml-vocab-phi-3.gguf"
    gqa = make_checkpoint(root / "gqa", "phi3-medium", layers=2, hidden=256, heads=4, kv_heads=2, intermediate=512,
                          seed=5, vocab_path=vocab)
    made = {"F32": convert(gqa, root / "gqa-f32.gguf", "f32")}
    for ftype in ("Q8_0", "Q4_K_M", "Q6_K", "Q5_1"):
        out = root / f"gqa-{ftype}.gguf"
        subprocess.run([str(reference.tool("llama-quantize")), str(made["F32"]), str(out), ftype],
                       check=True, capture_output=True)
        made[ftype] = out
    preset = replace(PRESETS["phi3.5-mini"], original_max_position_embeddings=256, max_position_embeddings=8192)
    lr = make_checkpoint(root / "longrope", preset, layers=2, hidden=192, heads=2, intermediate=384, seed=6,
                         vocab_path=vocab)
    made["longrope"] = convert(lr, root / "longrope-f32.gguf", "f32")
    h128 = make_checkpoint(root / "h128", "phi3-medium", layers=2, hidden=256, heads=2, kv_heads=1, intermediate=512,
                           seed=9, vocab_path=vocab)
    made["h128-F32"] = convert(h128, root / "h128-f32.gguf", "f32")
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
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), blocks=st.integers(1, 12), w_exp=st.floats(-3, 3), x_exp=st.floats(-3, 3),
       heavy=st.booleans())
def test_vec_dot_is_the_builds(ggml_cpu, avx512, wtype, seed, blocks, w_exp, x_exp, heavy):
    """``ggml_kernels.vec_dot`` equals the build's ``vec_dot`` bit for bit (the x86 kernels' float order: eight
    lanes and ``hsum_float_8`` for the quantized types, AVX512 lanes and ``_mm512_reduce_add_ps`` for F32 / F16 /
    BF16).  Rows of 32·k or 256·k elements; F32 / F16 / BF16 rows of any length (leftovers past the vectors)."""
    qtype = GGMLType[wtype]
    vtype = gk.VEC_DOT_TYPE[qtype]
    assert ggml_cpu.vec_dot_type(qtype) == vtype
    rng = np.random.default_rng(seed)
    block = 256 if wtype.endswith("_K") else 32
    n = blocks * block + (int(rng.integers(0, 64)) if wtype in ("F32", "F16", "BF16") else 0)
    w = quants.quantize((rng.standard_normal((1, n)) * 10.0**w_exp).astype(np.float32), qtype)[0]
    x = rng.standard_t(2, n) if heavy else rng.standard_normal(n)
    a = ggml_cpu.from_float((x * 10.0**x_exp).astype(np.float32), vtype)
    ours = gk.vec_dot(int(qtype), w, a)
    theirs = ggml_cpu.vec_dot(qtype, w, a, n)
    if avx512 or wtype not in ("F32", "F16", "BF16"):  # the quantized types' order is __AVX2__'s on any x86 build
        assert ours.tobytes() == np.float32(theirs).tobytes()
    else:
        terms = quants.dequantize(w[None], qtype)[0].astype(np.float64) * quants.dequantize(a[None], vtype)[0]
        assert abs(float(ours) - float(theirs)) <= 1e-6 * np.abs(terms).sum()


def test_swiglu_and_softmax_exponential_are_the_builds(ggml_cpu, avx512):
    """``ggml_kernels.swiglu`` is ``ggml_vec_swiglu_f32`` and ``ggml_kernels.v_expf`` the exponential of
    ``ggml_vec_soft_max_f32`` (the SIMD ``ggml_v_expf``, with its underflow to 0 and overflow to ∞)."""
    rng = np.random.default_rng(4)
    for n in (512, 100, 37):  # whole vectors of 16, and leftovers (libm expf)
        x = (rng.standard_normal(n) * 10.0**rng.uniform(-2, 2, n)).astype(np.float32)
        x[:5] = [-100.0, -150.0, 100.0, 200.0, 0.0]
        g = rng.standard_normal(n).astype(np.float32)
        ours = np.empty((1, n), np.float32)
        gk.swiglu(np.concatenate([x, g])[None], ours)
        theirs = ggml_cpu.swiglu(x, g)
        if avx512:
            assert ours[0].tobytes() == theirs.tobytes()
        else:
            np.testing.assert_allclose(ours[0], theirs, rtol=1e-6, atol=1e-30)
    x = (rng.standard_normal(64) * 30).astype(np.float32)
    theirs, total = ggml_cpu.soft_max(x, x.max())
    ours = np.array([gk.v_expf(np.float32(v - x.max())) for v in x], np.float32)
    ours_total = sum(float(gk._reduce_add_16(ours[i:i + 16])) for i in range(0, 64, 16))  # as the tiled attention
    if avx512:
        assert ours.tobytes() == theirs.tobytes()
        assert ours_total == total
    else:
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)


# -- the forward pass against llama.cpp ---------------------------------------------------------------------------


def _stats(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = np.abs(a.astype(np.float64) - b)
    return float(d.max()), float(d.mean())


@pytest.mark.parametrize("n", [16, 80])
@pytest.mark.parametrize("step", [None, 1], ids=["one-batch", "token-by-token"])
@pytest.mark.parametrize("name", ["Q8_0", "Q6_K", "Q4_K_M", "Q5_1", "F32"])
def test_ggml_mode_is_llama_cpp_bit_for_bit(files, llama, avx512, name, step, n):
    """Every logit equal to llama.cpp's: 16 tokens (one-chunk flash attention; K-quant products tiled from 8
    rows), 80 tokens (tiled flash attention from 64 queries), and token by token (``vec_dot`` everywhere)."""
    ids = prompt(n, seed=n)
    model = Phi3Model.from_gguf(files[name], mode="ggml", rope_policy="ctx", sliding_window=False)
    ours = np.concatenate([model.forward(ids[i:i + 1]) for i in range(n)]) if step else model.prompt_logits(ids)
    theirs = llama(files[name], ids, step=step)
    d_max, d_mean = _stats(ours, theirs)
    print(f"{name}, {n} tokens, {step or 'one batch'}: ggml mode vs llama.cpp max {d_max:.2g} mean {d_mean:.2g}")
    if avx512:
        assert ours.tobytes() == theirs.tobytes()
    else:  # another build: other float orders, and now and then a flipped rounding downstream
        assert d_max <= 5e-2


@pytest.mark.skipif(not _has_avx512_fp16(), reason="the build has no AVX512-FP16 half-precision vectors")
@pytest.mark.parametrize("step", [None, 1], ids=["one-batch", "token-by-token"])
def test_ggml_mode_head_size_128_is_llama_cpp(files, llama, step):
    """Head size 128: with AVX512-FP16 the build's flash attention scales and accumulates V in half-precision
    vectors (``ggml_vec_mad_f16`` / ``ggml_vec_scale_f16``)."""
    ids = prompt(16, seed=7)
    model = Phi3Model.from_gguf(files["h128-F32"], mode="ggml", rope_policy="ctx", sliding_window=False)
    ours = np.concatenate([model.forward(ids[i:i + 1]) for i in range(16)]) if step else model.prompt_logits(ids)
    assert ours.tobytes() == llama(files["h128-F32"], ids, step=step).tobytes()


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
    """The same bits for 1 and 2 threads, in one batch and token by token.  (A batch and its tokens one at a time
    differ slightly, as they do in llama.cpp, which takes other algorithms for batches.)"""
    ids = prompt(12, seed=3)
    model = Phi3Model.from_gguf(files["Q4_K_M"], mode="ggml")
    n = num_threads()
    runs = []
    try:
        for threads in (1, 2):
            set_num_threads(threads)
            runs.append(model.prompt_logits(ids).tobytes())
            model.reset()
            runs.append(np.concatenate([model.forward(ids[i:i + 1]) for i in range(ids.size)]).tobytes())
    finally:
        set_num_threads(n)
    assert runs[0] == runs[2] and runs[1] == runs[3]
