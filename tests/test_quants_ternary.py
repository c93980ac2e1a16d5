"""The ternary formats TQ1_0 and TQ2_0 against ggml, byte for byte and bit for bit — for every input, NaN and ±inf
included (``finite_only=False``): ggml's result there rests on glibc's ``lroundf`` (LONG_MIN for NaN/inf), which
refllm reproduces.  ggml ignores an importance matrix for both types; so does refllm."""

from __future__ import annotations

import ctypes
import ctypes.util

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from refllm import quants
from refllm.quants import ternary

# plain-Python runs (NUMBA_DISABLE_JIT=1) are ~1000x slower: fewer examples, no exhaustive sweeps
PLAIN_PYTHON = numba.config.DISABLE_JIT
slow_as_plain_python = pytest.mark.skipif(PLAIN_PYTHON, reason="exhaustive sweep; too slow as plain Python")

QK_K = 256
TYPES = ["TQ1_0", "TQ2_0"]
TYPE_SIZE = {"TQ1_0": 54, "TQ2_0": 66}
EXAMPLES = 5 if PLAIN_PYTHON else 100


def same_floats(a, b):
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


KINDS = ["gaussian", "student_t", "cauchy", "constant", "zeros", "outlier", "subnormal", "tiny", "huge", "flt_max",
         "ternary", "ties", "sparse", "uniform_bits"]


def make_rows(kind: str, seed: int, nrows: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (nrows, n)
    if kind == "gaussian":
        x = rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 3)
    elif kind == "student_t":
        x = rng.standard_t(rng.uniform(1.0, 5.0), shape)
    elif kind == "cauchy":
        x = rng.standard_cauchy(shape)
    elif kind == "constant":
        x = np.full(shape, rng.standard_normal() * 10.0 ** rng.uniform(-5, 5))
    elif kind == "zeros":
        x = np.zeros(shape) * rng.choice([1.0, -1.0])
    elif kind == "outlier":
        x = rng.standard_normal(shape) * 0.01
        x[rng.integers(0, nrows), rng.integers(0, n)] = rng.choice([-1.0, 1.0]) * 10.0 ** rng.uniform(0, 6)
    elif kind == "subnormal":  # amax < 2**-128: id = 1/d = inf, x*id = ±inf or NaN, lroundf → LONG_MIN
        x = rng.standard_normal(shape) * 10.0 ** rng.uniform(-44, -39)
    elif kind == "tiny":
        x = rng.standard_normal(shape) * 10.0 ** rng.uniform(-38, -36)
    elif kind == "huge":
        x = rng.standard_normal(shape) * 10.0 ** rng.uniform(25, 38)
    elif kind == "flt_max":
        x = rng.choice([-1.0, 1.0, 0.5, 0.0], shape) * np.finfo(np.float32).max
    elif kind == "ternary":  # what the format is for: {-s, 0, s}
        x = rng.integers(-1, 2, shape) * rng.uniform(0.01, 10)
    elif kind == "ties":  # x/d = ±0.5 exactly: lroundf rounds away from zero
        s = 2.0 ** rng.integers(-20, 20)
        x = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0, 0.25, -0.75], shape) * s
        x[:, ::QK_K] = s
    elif kind == "sparse":
        x = rng.standard_normal(shape) * (rng.random(shape) < 0.1)
    elif kind == "uniform_bits":
        bits = rng.integers(0, 2**32, shape, dtype=np.uint64).astype(np.uint32)
        x = bits.view(np.float32)
        x = np.where(np.isfinite(x), x, np.float32(0))
    else:
        raise ValueError(kind)
    return np.ascontiguousarray(x, dtype=np.float32)


@st.composite
def rows(draw, max_rows=2, max_blocks=2):
    nrows = draw(st.integers(1, max_rows))
    nblocks = draw(st.integers(1, max_blocks))
    return make_rows(draw(st.sampled_from(KINDS)), draw(st.integers(0, 2**32 - 1)), nrows, nblocks * QK_K)


@st.composite
def float_bits(draw, max_rows=2, max_blocks=2):
    """Arbitrary float32 bit patterns in a background of ordinary numbers: NaN payloads, ±inf, subnormals."""
    shape = (draw(st.integers(1, max_rows)), draw(st.integers(1, max_blocks)) * QK_K)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = (rng.standard_normal(shape) * 10.0 ** draw(st.integers(-40, 30))).astype(np.float32)
    special = st.sampled_from([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFBFFFFF, 0x7FC12345, 0x7F800000,
                               0xFF800000, 0x00000001, 0x80000000, 0x7F7FFFFF])
    k = draw(st.integers(1, 12))
    bits = draw(arrays(np.uint32, k, elements=st.one_of(special, st.integers(0, 2**32 - 1))))
    flat = x.reshape(-1)
    flat[draw(arrays(np.int64, k, elements=st.integers(0, flat.size - 1)))] = bits.view(np.float32)
    return x


@pytest.mark.parametrize("qtype", TYPES)
@settings(max_examples=EXAMPLES)
@given(x=rows())
def test_encode_matches_ggml(ggml, qtype, x):
    q = quants.quantize(x, qtype)
    assert np.array_equal(q, ggml.quantize_chunk(x, qtype))
    assert same_floats(quants.dequantize(q, qtype), ggml.to_float(q, qtype, x.shape[1]))


@pytest.mark.parametrize("qtype", TYPES)
@settings(max_examples=EXAMPLES)
@given(x=float_bits())
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
    shape = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)) * TYPE_SIZE[qtype])
    if data.draw(st.booleans()):
        raw = data.draw(arrays(np.uint8, shape))
    else:
        raw = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).integers(0, 256, shape, dtype=np.uint8)
    n = shape[1] // TYPE_SIZE[qtype] * QK_K
    assert same_floats(quants.dequantize(raw, qtype), ggml.to_float(raw, qtype, n))


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
    assert same_floats(quants.dequantize(raw, qtype), ggml.to_float(raw, qtype, 256 * QK_K))


_libm = ctypes.CDLL(ctypes.util.find_library("m"))
_libm.lroundf.restype = ctypes.c_long
_libm.lroundf.argtypes = [ctypes.c_float]


@settings(max_examples=3 * EXAMPLES)
@given(v=st.one_of(st.floats(width=32), st.integers(-(2**24), 2**24).map(lambda i: i / 2)))
def test_lroundf_is_glibc_lroundf(v):
    v = np.float32(v)
    assert ternary.lroundf(v) == _libm.lroundf(float(v))
