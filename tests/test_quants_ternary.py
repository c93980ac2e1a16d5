"""The ternary formats TQ1_0 and TQ2_0 against ggml, byte for byte and bit for bit — for every input, NaN and ±inf
included (``finite_only=False``): ggml's result there rests on glibc's ``lroundf`` (LONG_MIN for NaN/inf), which
refllm reproduces.  ggml ignores an importance matrix for both types; so does refllm."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from quant_strategies import (
    LIBM,
    PLAIN_PYTHON,
    assert_same_bits,
    block_bytes,
    float_bits,
    seeded_rows,
    slow_as_plain_python,
)
from refllm import quants
from refllm.quants import ternary

QK_K = 256
TYPES = ["TQ1_0", "TQ2_0"]
TYPE_SIZE = {"TQ1_0": 54, "TQ2_0": 66}
EXAMPLES = 5 if PLAIN_PYTHON else 100

KINDS = ["gaussian", "student_t", "cauchy", "constant", "zeros", "outlier", "subnormal", "tiny", "huge", "flt_max",
         "ternary", "ties", "sparse", "uniform_bits"]


def rows(max_rows=2, max_blocks=2):
    """Float32 rows of one of the KINDS (quant_strategies.make_rows; "huge" may overflow to ±inf: defined here)."""
    return seeded_rows(KINDS, QK_K, max_rows, max_blocks, finite=False)


@pytest.mark.parametrize("qtype", TYPES)
@settings(max_examples=EXAMPLES)
@given(x=rows())
def test_encode_matches_ggml(ggml, qtype, x):
    q = quants.quantize(x, qtype)
    assert np.array_equal(q, ggml.quantize_chunk(x, qtype))
    assert_same_bits(quants.dequantize(q, qtype), ggml.to_float(q, qtype, x.shape[1]))


@pytest.mark.parametrize("qtype", TYPES)
@settings(max_examples=EXAMPLES)
@given(x=float_bits(QK_K, max_blocks=2, sprinkled=True))
def test_nan_and_inf_match_ggml(ggml, qtype, x):
    """NaN/±inf: MAX(amax, NaN) is NaN and the next element replaces it (so later trits can be out of range and
    wrap around in uint8), NaN·id and inf·0 go through lroundf → LONG_MIN → trit code 1."""
    assert np.array_equal(quants.quantize(x, qtype), ggml.quantize_chunk(x, qtype))


@pytest.mark.parametrize("qtype", TYPES)
def test_nan_after_the_largest_value(ggml, qtype):
    """amax = MAX(MAX(100, NaN), 1) = 1: the 100 is then 100 trits away from zero and packed modulo 256."""
    x = np.ones((1, QK_K), np.float32) * np.float32(0.3)
    x[0, 0], x[0, 1], x[0, 2] = 100.0, np.nan, 1.0
    x[0, 200] = -1e30
    assert np.array_equal(quants.quantize(x, qtype), ggml.quantize_chunk(x, qtype))


@pytest.mark.parametrize("qtype", TYPES)
@settings(max_examples=EXAMPLES // 2)
@given(data=st.data(), x=rows())
def test_imatrix_is_ignored(ggml, qtype, data, x):
    w = data.draw(arrays(np.float32, x.shape[1], elements=st.floats(0, 1e6, width=32)))
    q = quants.quantize(x, qtype, imatrix=w)
    assert np.array_equal(q, ggml.quantize_chunk(x, qtype, imatrix=w))
    assert np.array_equal(q, quants.quantize(x, qtype))


@pytest.mark.parametrize("qtype", TYPES)
@settings(max_examples=EXAMPLES * 2)
@given(data=st.data())
def test_decode_arbitrary_bytes(ggml, qtype, data):
    """Every byte string decodes (TQ1_0 bytes above 242 and TQ2_0 codes 3 included) like ggml, bit for bit."""
    raw, n = data.draw(block_bytes(qtype, max_blocks=3, uniform=True))
    assert_same_bits(quants.dequantize(raw, qtype), ggml.to_float(raw, qtype, n))


@pytest.mark.parametrize("qtype", TYPES)
@slow_as_plain_python
def test_decode_every_byte_and_scale(ggml, qtype):
    """Every byte value in every position, and all 65,536 fp16 scales."""
    ts = TYPE_SIZE[qtype]
    nblocks = 65536
    blocks = np.empty((nblocks, ts), np.uint8)
    blocks[:, : ts - 2] = (np.arange(nblocks)[:, None] + np.arange(ts - 2)[None, :] * 7) % 256
    blocks[:, ts - 2:] = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.uint8).reshape(-1, 2)
    raw = blocks.reshape(256, -1)
    assert_same_bits(quants.dequantize(raw, qtype), ggml.to_float(raw, qtype, 256 * QK_K))


LIBM.lroundf.restype = ctypes.c_long
LIBM.lroundf.argtypes = [ctypes.c_float]


@settings(max_examples=3 * EXAMPLES)
@given(v=st.one_of(st.floats(width=32), st.integers(-(2**24), 2**24).map(lambda i: i / 2)))
def test_lroundf_is_glibc_lroundf(v):
    v = np.float32(v)
    assert ternary.lroundf(v) == LIBM.lroundf(float(v))
