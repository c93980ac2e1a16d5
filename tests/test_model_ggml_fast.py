"""The ``ggml`` mode's matrix products: independent of the thread count, and plain Python.

:func:`refllm.model.ggml_kernels.matmul` computes the integer sums in vectorizable columns and the float parts in
the order of the x86 build's kernels (``test_model_ggml.py`` compares every ``vec_dot`` with the build's, bit for
bit, and the whole forward pass with llama.cpp).  Here: the same bits for 1 and 2 threads, for one token and for the
batch shapes that take llama.cpp's other algorithms (tiled K-quant kernel from 8 tokens, llamafile's sgemm for float
weights from 2); a token's outputs never depend on the other tokens of its batch; and the kernels give the same bits
as plain Python (``NUMBA_DISABLE_JIT``).  The SIMD blocks of :mod:`refllm.simd` (Q4_K, Q6_K) compiled give the bits of
their Python definitions, with AVX2 and on a target without it; the Q4_K / Q6_K rows are the build's ``vec_dot``
also on arbitrary activation bytes (block sums that are not the sums of the quants).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refllm import quants
from refllm.ggml_types import GGMLType
from refllm.jit import kernel, num_threads, set_num_threads
from refllm.model import ggml_kernels as gk
from refllm.simd import (
    broadcast_epi16_halves,
    cvtepi8_epi16,
    cvtepi32_ps,
    cvtepu8_epi16_set_epi32,
    extracti128_hi,
    fmadd_ps,
    hadd_epi16_halves,
    hsum_epi32,
    hsum_float_4,
    hsum_float_8,
    loadu_i8,
    loadu_i16,
    loadu_u8,
    madd,
    maddubs,
    repeat_epi16_hi,
    setzero_epi32,
    setzero_ps,
    storeu,
)

QUANT_TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
FLOAT_TYPES = ["F32", "F16", "BF16"]


def _case(wtype: str, n_out: int, n_in: int, n_tok: int, seed: int):
    """Weights (some rows zero or tiny, outliers) and their vec_dot_type activations (one row zero)."""
    rng = np.random.default_rng(seed)
    qtype = GGMLType[wtype]
    w = rng.standard_normal((n_out, n_in)).astype(np.float32)
    w[0] = 0
    w[1] *= 1e-3
    w[2, ::7] *= 50
    x = (rng.standard_normal((n_tok, n_in)) * rng.uniform(0.01, 100, (n_tok, 1))).astype(np.float32)
    x[-1] = 0
    a = np.zeros((n_tok, gk.activation_row_bytes(qtype, n_in)), np.uint8)
    gk.quantize_activations(int(gk.VEC_DOT_TYPE[qtype]), x, a)
    return qtype, quants.quantize(w, qtype), a


def _matmul(qtype, w, a) -> np.ndarray:
    y = np.empty((a.shape[0], w.shape[0]), np.float32)
    gk.matmul(int(qtype), w, a, y)
    return y


@pytest.mark.parametrize("wtype", QUANT_TYPES + FLOAT_TYPES)
def test_matmul_does_not_depend_on_threads(wtype):
    for n_tok in (1, 6, 9):  # vec_dot; sgemm for the float types; the tiled kernel for the K-quants
        qtype, w, a = _case(wtype, 3 * gk.ROWS_PER_TASK + 4, 512, n_tok, 3)
        n = num_threads()
        try:
            set_num_threads(1)
            one = _matmul(qtype, w, a)
            set_num_threads(2)
            two = _matmul(qtype, w, a)
        finally:
            set_num_threads(n)
        assert one.tobytes() == two.tobytes()


@pytest.mark.parametrize("wtype", QUANT_TYPES + FLOAT_TYPES)
def test_a_tokens_outputs_depend_only_on_its_row_and_the_batch_size(wtype):
    """Replacing the other rows of a batch leaves a token's outputs alone; with the algorithm of a single token
    (quantized types below 8 tokens) they equal the token's own product."""
    qtype, w, a = _case(wtype, 2 * gk.ROWS_PER_TASK, 512, 9, 5)
    _, _, other = _case(wtype, 2 * gk.ROWS_PER_TASK, 512, 9, 6)
    mixed = other.copy()
    mixed[4] = a[4]
    assert _matmul(qtype, w, a)[4].tobytes() == _matmul(qtype, w, mixed)[4].tobytes()
    if wtype in QUANT_TYPES:
        few = a[:6]
        by_token = np.concatenate([_matmul(qtype, w, few[t:t + 1]) for t in range(few.shape[0])])
        assert _matmul(qtype, w, few).tobytes() == by_token.tobytes()


_PLAIN_PYTHON = """
import sys
import numpy as np
from refllm.model import ggml_kernels as gk
data = np.load(sys.argv[1])
for key in data.files:
    if key.startswith("w-"):
        name = key[2:]
        y = np.empty((data["a-" + name].shape[0], data[key].shape[0]), np.float32)
        gk.matmul(int(data["t-" + name]), data[key], data["a-" + name], y)
        assert y.tobytes() == data["y-" + name].tobytes(), name
print("ok")
"""


def test_matmul_runs_as_plain_python(tmp_path):
    """The kernels are plain Python too: with NUMBA_DISABLE_JIT=1 they give the same bits (small case)."""
    arrays = {}
    for wtype in QUANT_TYPES + FLOAT_TYPES:
        qtype, w, a = _case(wtype, 4, 256, 9, 4)  # 9 tokens: the tiled kernel (K-quants) and sgemm (float types)
        arrays.update({f"w-{wtype}": w, f"a-{wtype}": a, f"t-{wtype}": np.array(int(qtype)),
                       f"y-{wtype}": _matmul(qtype, w, a)})
        if wtype in ("Q4_K", "Q6_K"):  # and vec_dot
            arrays.update({f"w-{wtype}-1": w, f"a-{wtype}-1": a[:2], f"t-{wtype}-1": np.array(int(qtype)),
                           f"y-{wtype}-1": _matmul(qtype, w, a[:2])})
    np.savez(tmp_path / "cases.npz", **arrays)
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    proc = subprocess.run([sys.executable, "-c", _PLAIN_PYTHON, str(tmp_path / "cases.npz")], env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


# -- refllm.simd: every block compiled equals its Python definition ------------------------------------------------


@kernel
def _every_block(x, d, out8, out16, out32, outf):
    """Every block of refllm.simd on the 96 bytes ``x`` (and the float32 ``d``), its lanes stored in the outputs.
    Compiled it runs the LLVM IR; ``_every_block.py_func`` runs the blocks' Python definitions."""
    u = loadu_u8(x, 0)
    s = loadu_i8(x, 32)
    h = loadu_i16(x, 64)
    storeu(out8, 0, ((u >> 3) & 21) | (u << 5))
    storeu(out16, 0, maddubs(u, s))  # saturates on random bytes
    storeu(out16, 16, cvtepi8_epi16(x, 40))
    storeu(out16, 32, broadcast_epi16_halves(h, x[0] % 16, x[1] % 16))
    storeu(out16, 48, hadd_epi16_halves(h))
    storeu(out16, 56, extracti128_hi(h))
    storeu(out16, 64, repeat_epi16_hi(h))
    words = cvtepu8_epi16_set_epi32(gk._u32(x, 0), gk._u32(x, 4), gk._u32(x, 8), gk._u32(x, 12))
    storeu(out16, 80, ((h >> 3) + (h << 2)) - (h & 7) | words)
    p = madd(h, maddubs(u, s))
    storeu(out32, 0, p + madd(h, h) - (p >> 2))
    storeu(out32, 8, madd(extracti128_hi(h), hadd_epi16_halves(h)))
    storeu(out32, 12, setzero_epi32(8) - p)
    out32[20] = hsum_epi32(p)
    acc = fmadd_ps(d, cvtepi32_ps(p), cvtepi32_ps(madd(h, cvtepi8_epi16(x, 8))))
    storeu(outf, 0, acc)
    outf[8] = hsum_float_8(fmadd_ps(d, acc, setzero_ps(8)))
    acc4 = fmadd_ps(d, cvtepi32_ps(madd(extracti128_hi(h), extracti128_hi(words))), setzero_ps(4))
    storeu(outf, 9, acc4)
    outf[13] = hsum_float_4(acc4)


def _run_every_block(fn, x, d):
    outs = (np.zeros(32, np.uint8), np.zeros(96, np.int16), np.zeros(21, np.int32), np.zeros(14, np.float32))
    fn(x, np.float32(d), *outs)
    return b"".join(o.tobytes() for o in outs)


@settings(max_examples=200, deadline=None)
@given(x=st.binary(min_size=96, max_size=96), d=st.floats(-1e3, 1e3, width=32))
def test_simd_blocks_compiled_are_their_python_definitions(x, d):
    x = np.frombuffer(x, np.uint8).copy()
    assert _run_every_block(_every_block, x, d) == _run_every_block(_every_block.py_func, x, d)


_GENERIC_TARGET = """
import sys
import numpy as np
import refllm.simd
sys.path.insert(0, sys.argv[2])
import test_model_ggml_fast as t
assert not refllm.simd.AVX2
data = np.load(sys.argv[1])
for x, d, expected in zip(data["x"], data["d"], data["expected"]):
    assert t._run_every_block(t._every_block, x, d) == expected.tobytes()
print("ok")
"""


def test_simd_blocks_without_avx2_are_the_same(tmp_path):
    """On a target without AVX2 (``NUMBA_CPU_NAME=generic``) ``maddubs`` / ``madd`` are generic LLVM IR: same bits."""
    rng = np.random.default_rng(0)
    xs = rng.integers(0, 256, (50, 96), dtype=np.uint8)
    ds = rng.standard_normal(50).astype(np.float32)
    expected = [np.frombuffer(_run_every_block(_every_block.py_func, x, d), np.uint8) for x, d in zip(xs, ds)]
    np.savez(tmp_path / "cases.npz", x=xs, d=ds, expected=np.stack(expected))
    env = {**os.environ, "NUMBA_CPU_NAME": "generic", "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", _GENERIC_TARGET, str(tmp_path / "cases.npz"),
                           os.path.dirname(__file__)], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


@pytest.mark.parametrize("wtype", ["Q4_K", "Q6_K"])
def test_q4_K_q6_K_rows_are_the_builds_vec_dot_on_any_bytes(reference, wtype):
    """Random weight bytes (finite scales) against valid and arbitrary Q8_K rows — ggml's int16 sums of block sums
    wrap — equal the build's ``vec_dot`` bit for bit, for 1 to 12 super-blocks."""
    from refllm.reference import ggml_cpu

    ggml_cpu.library()
    qtype = GGMLType[wtype]
    type_size, d_at = (144, (0, 2)) if wtype == "Q4_K" else (210, (208,))
    rng = np.random.default_rng(7)
    for nb in (1, 2, 5, 12):
        w = rng.integers(0, 256, (6, nb * type_size), dtype=np.uint8)
        for i in range(nb):
            for off in d_at:
                h = np.float16(rng.standard_normal(6) * 10.0 ** rng.uniform(-6, 1, 6)).view(np.uint16)
                w[:, type_size * i + off], w[:, type_size * i + off + 1] = h & 0xFF, h >> 8
        x = (rng.standard_normal((3, 256 * nb)) * 10.0 ** rng.uniform(-5, 3, (3, 1))).astype(np.float32)
        a = np.stack([ggml_cpu.from_float(row, GGMLType.Q8_K) for row in x]
                     + [rng.integers(0, 256, 292 * nb, dtype=np.uint8) for _ in range(3)])
        for i in range(nb):  # finite activation scales in the arbitrary rows
            a[3:, 292 * i:292 * i + 4] = np.float32(rng.uniform(-10, 10, (3, 1))).view(np.uint8)
        y = _matmul(qtype, w, a)
        for t in range(a.shape[0]):
            for r in range(w.shape[0]):
                assert y[t, r].tobytes() == np.float32(ggml_cpu.vec_dot(qtype, w[r], a[t], 256 * nb)).tobytes()
