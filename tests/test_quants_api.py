"""The public quantize/dequantize API across every registered format: validation, thread-count independence,
plain-Python kernels (NUMBA_DISABLE_JIT=1), and real weights from the Gemma-3 GGUF re-encoded into every type."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import gguf as gguf_py
import numpy as np
import pytest

from refllm import quants
from refllm.ggml_types import TYPE_SIZES, GGMLType
from refllm.jit import set_num_threads
from refllm.quants import FORMATS, Imatrix, QuantError

ENCODABLE = [t for t, f in FORMATS.items() if f.quantize is not None]
DECODABLE = [t for t, f in FORMATS.items() if f.dequantize is not None]


def _rows(qtype, nrows=3, blocks=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((nrows, blocks * TYPE_SIZES[qtype].block_size)).astype(np.float32)


def test_every_type_is_covered():
    """Issue scope: encode + decode for all but the I-quants, which decode only (for now)."""
    i_quants = {GGMLType.IQ1_S, GGMLType.IQ1_M, GGMLType.IQ2_XXS, GGMLType.IQ2_XS, GGMLType.IQ2_S,
                GGMLType.IQ3_XXS, GGMLType.IQ3_S, GGMLType.IQ4_NL, GGMLType.IQ4_XS}
    plain = {GGMLType.I8, GGMLType.I16, GGMLType.I32, GGMLType.I64, GGMLType.F64}
    assert set(DECODABLE) == set(GGMLType) - plain
    assert set(ENCODABLE) == set(GGMLType) - plain - i_quants


@pytest.mark.parametrize("qtype", ENCODABLE, ids=lambda t: t.name)
def test_qtype_spellings(qtype):
    x = _rows(qtype)
    expected = quants.quantize(x, qtype)
    for spelling in (qtype.name, qtype.name.lower(), int(qtype), gguf_py.GGMLQuantizationType(int(qtype))
                     if qtype.name in gguf_py.GGMLQuantizationType.__members__ else qtype):
        assert np.array_equal(quants.quantize(x, spelling), expected)
    assert quants.dequantize(expected, qtype).shape == x.shape


def test_shapes_are_kept():
    x = _rows(GGMLType.Q8_0, nrows=6).reshape(2, 3, 64)
    q = quants.quantize(x, "Q8_0")
    assert q.shape == (2, 3, 68) and quants.dequantize(q, "Q8_0").shape == (2, 3, 64)
    assert quants.quantize(np.zeros((0, 32), np.float32), "Q8_0").shape == (0, 34)
    assert quants.quantize(x[0, 0].astype(np.float64), "Q8_0").shape == (68,)  # float64 is converted


def test_bad_input_is_a_clear_error():
    with pytest.raises(QuantError, match="expected a float array, got dtype int32"):
        quants.quantize(np.zeros((1, 32), np.int32), "Q8_0")
    with pytest.raises(QuantError, match="row length 48 is not a positive multiple of the block size 32"):
        quants.quantize(np.zeros((1, 48), np.float32), "Q4_0")
    with pytest.raises(QuantError, match="unknown ggml type 'Q9_K'"):
        quants.quantize(np.zeros((1, 256), np.float32), "Q9_K")
    with pytest.raises(QuantError, match="imatrix has shape \\(3,\\), expected \\(256,\\)"):
        quants.quantize(np.zeros((1, 256), np.float32), "Q4_K", imatrix=np.ones(3, np.float32))
    with pytest.raises(QuantError, match="finite and non-negative"):
        quants.quantize(np.zeros((1, 256), np.float32), "Q4_K", imatrix=-np.ones(256, np.float32))
    with pytest.raises(QuantError, match="decode only"):
        quants.quantize(np.zeros((1, 256), np.float32), "IQ2_XXS")
    with pytest.raises(QuantError, match="expected uint8 blocks"):
        quants.dequantize(np.zeros((1, 144), np.int8), "Q4_K")
    with pytest.raises(QuantError, match="not a whole number of 144-byte blocks"):
        quants.dequantize(np.zeros((1, 100), np.uint8), "Q4_K")


@pytest.mark.parametrize("qtype", [t for t in ENCODABLE if FORMATS[t].finite_only], ids=lambda t: t.name)
def test_nan_is_refused_where_ggml_is_undefined(qtype):
    x = _rows(qtype)
    x[1, 3] = np.nan
    with pytest.raises(QuantError, match="NaN or ±inf"):
        quants.quantize(x, qtype)


@pytest.mark.parametrize("qtype", ENCODABLE, ids=lambda t: t.name)
def test_results_do_not_depend_on_the_thread_count(qtype):
    x = _rows(qtype, nrows=37, blocks=3, seed=5)
    imatrix = None
    if FORMATS[qtype].imatrix in (Imatrix.OPTIONAL, Imatrix.REQUIRED):
        imatrix = np.random.default_rng(6).random(x.shape[1]).astype(np.float32)
    results = []
    for n in (1, 2):
        set_num_threads(n)
        q = quants.quantize(x, qtype, imatrix=imatrix)
        results.append((q, quants.dequantize(q, qtype).view(np.uint32)))
    set_num_threads(os.cpu_count() or 1)
    assert np.array_equal(results[0][0], results[1][0])
    assert np.array_equal(results[0][1], results[1][1])


_NO_JIT_SCRIPT = r"""
import json, sys
import numpy as np
from refllm import quants
from refllm.ggml_types import GGMLType, TYPE_SIZES
out = {}
for name in sys.argv[1:]:
    qtype = GGMLType[name]
    block_size, type_size = TYPE_SIZES[qtype]
    rng = np.random.default_rng(3)
    if quants.FORMATS[qtype].quantize is not None:
        q = quants.quantize(rng.standard_normal((2, max(block_size, 32))).astype(np.float32), qtype)
    else:
        q = rng.integers(0, 256, (2, type_size), dtype=np.uint8)
    out[name] = [q.tobytes().hex(), quants.dequantize(q, qtype).tobytes().hex()]
print(json.dumps(out))
"""

NO_JIT_SUBSET = ["F16", "BF16", "Q4_0", "Q5_1", "Q8_0", "Q4_K", "Q6_K", "Q2_K", "TQ1_0", "MXFP4", "IQ4_NL", "IQ2_XXS"]


def test_kernels_run_as_plain_python():
    """The same kernels with NUMBA_DISABLE_JIT=1 (plain Python loops) give the same bytes and floats."""
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    r = subprocess.run([sys.executable, "-c", _NO_JIT_SCRIPT, *NO_JIT_SUBSET], capture_output=True, text=True,
                       env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    plain = json.loads(r.stdout)
    jitted = json.loads(subprocess.run([sys.executable, "-c", _NO_JIT_SCRIPT, *NO_JIT_SUBSET], capture_output=True,
                                       text=True, check=True).stdout)
    assert plain == jitted
