"""The ``ggml`` mode's matrix products: independent of the thread count, and plain Python.

:func:`refllm.model.ggml_kernels.matmul` computes the integer sums in vectorizable columns and the float parts in
the order of the x86 build's kernels (``test_model_ggml.py`` compares every ``vec_dot`` with the build's, bit for
bit, and the whole forward pass with llama.cpp).  Here: the same bits for 1 and 2 threads, for one token and for the
batch shapes that take llama.cpp's other algorithms (tiled K-quant kernel from 8 tokens, llamafile's sgemm for float
weights from 2); a token's outputs never depend on the other tokens of its batch; and the kernels give the same bits
as plain Python (``NUMBA_DISABLE_JIT``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from refllm import quants
from refllm.ggml_types import GGMLType
from refllm.jit import num_threads, set_num_threads
from refllm.model import ggml_kernels as gk

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
    np.savez(tmp_path / "cases.npz", **arrays)
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    proc = subprocess.run([sys.executable, "-c", _PLAIN_PYTHON, str(tmp_path / "cases.npz")], env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"
