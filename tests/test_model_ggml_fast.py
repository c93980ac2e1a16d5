"""The ``ggml`` mode's matrix products are ggml's portable C, bit for bit.

:func:`refllm.model.ggml_kernels.matmul` computes the integer sums in vectorizable columns and the float parts in
ggml's order.  Here it is compared, bit for bit, with ``ggml_vec_dot_<w>_<a>_generic`` of ggml-cpu/quants.c
compiled as C says — without fused multiply-adds and without ``-march=native`` (the reference build compiles it with
both, so its own copy rounds differently; ``test_model_ggml.py`` compares with that one to float rounding) — for
every quantized weight type, several rows and tokens, 1 and 2 threads, and as plain Python (``NUMBA_DISABLE_JIT``).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import numpy as np
import pytest

from refllm import quants
from refllm.ggml_types import GGMLType
from refllm.jit import num_threads, set_num_threads
from refllm.model import ggml_kernels as gk

pytestmark = pytest.mark.reference

QUANT_TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
FLOAT_TYPES = ["F32", "F16", "BF16"]
_GENERIC = {"Q8_0": "q8_0_q8_0", "Q4_0": "q4_0_q8_0", "Q4_1": "q4_1_q8_1", "Q5_0": "q5_0_q8_0", "Q5_1": "q5_1_q8_1",
            "Q2_K": "q2_K_q8_K", "Q3_K": "q3_K_q8_K", "Q4_K": "q4_K_q8_K", "Q5_K": "q5_K_q8_K", "Q6_K": "q6_K_q8_K"}


@pytest.fixture(scope="module")
def generic(reference, tmp_path_factory):
    """ggml-cpu/quants.c of the reference source compiled with ``-ffp-contract=off`` for plain x86-64, loaded after
    the build's libggml-cpu (which provides its fp16 table)."""
    from refllm.reference import ggml_cpu
    from refllm.reference.build import reference_source

    src = reference_source() / "ggml" / "src"
    out = tmp_path_factory.mktemp("generic") / "libquants-generic.so"
    subprocess.run(["cc", "-O2", "-fPIC", "-shared", "-ffp-contract=off", "-std=gnu11", "-D_GNU_SOURCE",
                    f"-I{src}", f"-I{src / 'ggml-cpu'}", f"-I{src.parent / 'include'}",
                    str(src / "ggml-cpu" / "quants.c"), "-o", str(out)], check=True, capture_output=True)
    ggml_cpu.library()  # ggml_cpu_init fills the fp16 table
    ctypes.CDLL(str(reference.bin_dir / "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)
    return ctypes.CDLL(str(out))


def _generic_dot(lib, wtype: str, w: np.ndarray, a: np.ndarray, n: int) -> np.float32:
    fn = getattr(lib, f"ggml_vec_dot_{_GENERIC[wtype]}_generic")
    s = np.zeros(1, np.float32)
    w, a = np.ascontiguousarray(w), np.ascontiguousarray(a)
    fn(ctypes.c_int(n), ctypes.c_void_p(s.ctypes.data), ctypes.c_size_t(0), ctypes.c_void_p(w.ctypes.data),
       ctypes.c_size_t(0), ctypes.c_void_p(a.ctypes.data), ctypes.c_size_t(0), ctypes.c_int(1))
    return s[0]


def _float_dot(wtype: str, w: np.ndarray, a: np.ndarray) -> np.float32:
    """``ggml_vec_dot_f32 / f16 / bf16`` without SIMD: float32 products summed in float64, in order."""
    x, y = (quants.dequantize(v[None], GGMLType[wtype])[0] for v in (w, a))
    s = 0.0
    for p in x * y:  # float32 products (exact for F16 and BF16)
        s += float(p)
    return np.float32(s)


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


@pytest.mark.parametrize("wtype", QUANT_TYPES)
def test_matmul_is_ggml_generic_c_bit_for_bit(generic, wtype):
    for n_in, seed in ((256, 0), (1024, 1)):
        qtype, w, a = _case(wtype, 19, n_in, 5, seed)
        y = _matmul(qtype, w, a)
        expected = np.array([[_generic_dot(generic, wtype, w[r], a[t], n_in) for r in range(w.shape[0])]
                             for t in range(a.shape[0])], np.float32)
        assert y.tobytes() == expected.tobytes()


@pytest.mark.parametrize("wtype", FLOAT_TYPES)
def test_matmul_float_types_sum_in_float64_in_order(wtype):
    qtype, w, a = _case(wtype, 7, 96, 3, 2)
    y = _matmul(qtype, w, a)
    expected = np.array([[_float_dot(wtype, w[r], a[t]) for r in range(w.shape[0])] for t in range(a.shape[0])])
    assert y.tobytes() == expected.astype(np.float32).tobytes()


@pytest.mark.parametrize("wtype", QUANT_TYPES + FLOAT_TYPES)
def test_matmul_does_not_depend_on_threads_or_batch(wtype):
    qtype, w, a = _case(wtype, 3 * gk.ROWS_PER_TASK + 5, 512, 6, 3)
    n = num_threads()
    try:
        set_num_threads(1)
        one = _matmul(qtype, w, a)
        set_num_threads(2)
        two = _matmul(qtype, w, a)
    finally:
        set_num_threads(n)
    by_token = np.concatenate([_matmul(qtype, w, a[t:t + 1]) for t in range(a.shape[0])])
    assert one.tobytes() == two.tobytes() == by_token.tobytes()


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
    """The kernels are plain Python too: with NUMBA_DISABLE_JIT=1 they give the same bits (tiny case)."""
    arrays = {}
    for wtype in QUANT_TYPES + FLOAT_TYPES:
        qtype, w, a = _case(wtype, 3, 256, 2, 4)
        arrays.update({f"w-{wtype}": w, f"a-{wtype}": a, f"t-{wtype}": np.array(int(qtype)),
                       f"y-{wtype}": _matmul(qtype, w, a)})
    np.savez(tmp_path / "cases.npz", **arrays)
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    proc = subprocess.run([sys.executable, "-c", _PLAIN_PYTHON, str(tmp_path / "cases.npz")], env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"
