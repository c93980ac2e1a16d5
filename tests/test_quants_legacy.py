"""The legacy block formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q8_1 against ggml, byte for byte and bit for bit.

Encoding is compared with ``ggml_quantize_chunk`` (with and without an importance matrix; Q8_1, which is not a
``ggml_quantize_chunk`` type, with ``quantize_row_q8_1_ref``), decoding with ggml's ``to_float`` on the bits of the
floats, so NaN payloads count.  Q8_1 has no ggml decoder: refllm's is checked against ``d * qs`` computed by numpy.
"""

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
from refllm.quants import QuantError, legacy

# plain-Python runs (NUMBA_DISABLE_JIT=1) are ~1000x slower: fewer examples, no exhaustive sweeps
PLAIN_PYTHON = numba.config.DISABLE_JIT
slow_as_plain_python = pytest.mark.skipif(PLAIN_PYTHON, reason="exhaustive sweep; too slow as plain Python")

QK = 32
CHUNK_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
IMATRIX_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1"]  # ggml has a weighted algorithm for these
ALL_TYPES = CHUNK_TYPES + ["Q8_1"]
NONFINITE_TYPES = ["Q8_0", "Q8_1"]  # finite_only=False: NaN and ±inf are matched too
FINITE_ONLY_TYPES = IMATRIX_TYPES

EXAMPLES = 5 if PLAIN_PYTHON else 60


def ggml_encode(ggml, x, qtype, imatrix=None):
    if qtype == "Q8_1":
        assert imatrix is None
        return ggml.quantize_row_ref(x, qtype)
    return ggml.quantize_chunk(x, qtype, imatrix=imatrix)


def same_floats(a, b):
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


# -- input generators -------------------------------------------------------------------------------------------------

KINDS = ["gaussian", "student_t", "cauchy", "constant", "zeros", "outlier", "subnormal", "tiny", "huge", "flt_max",
         "grid", "positive", "sparse", "mixed_scales", "uniform_bits"]


def make_rows(kind: str, seed: int, nrows: int, n: int) -> np.ndarray:
    """Finite float32 rows of one of the KINDS (deterministic in ``seed``)."""
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
        x = np.zeros(shape) * rng.choice([1.0, -1.0])  # +0 or -0
    elif kind == "outlier":
        x = rng.standard_normal(shape) * 0.01
        x[rng.integers(0, nrows), rng.integers(0, n)] = rng.choice([-1.0, 1.0]) * 10.0 ** rng.uniform(0, 6)
    elif kind == "subnormal":  # float32 subnormals (below 1.2e-38); 1/d overflows to inf in these blocks
        x = rng.standard_normal(shape) * 1e-40
    elif kind == "tiny":  # around the smallest normal floats, where d = amax/127 etc. is subnormal
        x = rng.standard_normal(shape) * 10.0 ** rng.uniform(-38, -35)
    elif kind == "huge":
        x = rng.standard_normal(shape) * 10.0 ** rng.uniform(25, 37)
    elif kind == "flt_max":  # ±FLT_MAX: max - min overflows to inf
        x = rng.choice([-1.0, 1.0, 0.5, 0.0], shape) * np.finfo(np.float32).max
    elif kind == "grid":  # multiples of s/2 with a power-of-two s: many exact .5 ties before rounding/truncation
        s = 2.0 ** rng.integers(-10, 10)
        x = rng.integers(-40, 41, shape) * (s / 2)
        m = rng.choice([8.0, -8.0, 16.0, -16.0, 127.0, -127.0, 15.0, 31.0])
        x[:, ::QK] = m * s  # one block maximum that gives an exact d
    elif kind == "positive":
        x = np.abs(rng.standard_normal(shape)) + rng.uniform(0, 10)
    elif kind == "sparse":
        x = rng.standard_normal(shape) * (rng.random(shape) < 0.1)
    elif kind == "mixed_scales":  # every block on its own scale
        x = rng.standard_normal(shape) * 10.0 ** rng.uniform(-20, 20, (nrows, n // QK, 1)).repeat(QK, 2).reshape(shape)
    elif kind == "uniform_bits":  # every finite float32 bit pattern is equally likely
        bits = rng.integers(0, 2**32, shape, dtype=np.uint64).astype(np.uint32)
        x = bits.view(np.float32)
        x = np.where(np.isfinite(x), x, np.float32(0))
    else:
        raise ValueError(kind)
    return np.ascontiguousarray(x, dtype=np.float32)


@st.composite
def rows(draw, max_rows=3, max_blocks=4):
    nrows = draw(st.integers(1, max_rows))
    nblocks = draw(st.integers(1, max_blocks))
    kind = draw(st.sampled_from(KINDS))
    seed = draw(st.integers(0, 2**32 - 1))
    return make_rows(kind, seed, nrows, nblocks * QK)


finite_float32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@st.composite
def finite_arrays(draw, max_rows=2, max_blocks=3):
    """Arbitrary finite float32 values chosen by hypothesis (which likes 0, ±min, ±max, subnormals, integers)."""
    shape = (draw(st.integers(1, max_rows)), draw(st.integers(1, max_blocks)) * QK)
    return draw(arrays(np.float32, shape, elements=finite_float32))


@st.composite
def float_bits(draw, max_rows=2, max_blocks=3):
    """Arbitrary float32 bit patterns: NaN with any payload and sign, ±inf, subnormals, and ordinary numbers mixed."""
    shape = (draw(st.integers(1, max_rows)), draw(st.integers(1, max_blocks)) * QK)
    special = st.sampled_from([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFBFFFFF, 0x7FC12345, 0x7F800000, 0xFF800000,
                               0x00000001, 0x80000000, 0x7F7FFFFF, 0xFF7FFFFF])
    ordinary = finite_float32.map(lambda f: int(np.float32(f).view(np.uint32)))
    bits = draw(arrays(np.uint32, shape, elements=st.one_of(ordinary, special, st.integers(0, 2**32 - 1))))
    return bits.view(np.float32)


@st.composite
def imatrices(draw, n):
    """Importance matrices ggml accepts: finite, non-negative (zeros, tiny, huge and ordinary values)."""
    kind = draw(st.sampled_from(["uniform", "ones", "zeros", "some_zeros", "huge", "tiny", "hypothesis"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "uniform":
        w = rng.random(n) * 10.0 ** rng.uniform(-3, 3)
    elif kind == "ones":
        w = np.ones(n)
    elif kind == "zeros":
        w = np.zeros(n)
    elif kind == "some_zeros":
        w = rng.random(n) * (rng.random(n) < 0.5)
    elif kind == "huge":
        w = rng.random(n) * 1e30
    elif kind == "tiny":
        w = rng.random(n) * 1e-40
    else:
        w = draw(arrays(np.float32, n, elements=st.floats(0, float(np.finfo(np.float32).max), width=32)))
    return np.ascontiguousarray(w, dtype=np.float32)


# -- encode -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", ALL_TYPES)
@settings(max_examples=EXAMPLES)
@given(x=rows())
def test_encode_matches_ggml(ggml, qtype, x):
    q = quants.quantize(x, qtype)
    assert np.array_equal(q, ggml_encode(ggml, x, qtype))
    if qtype != "Q8_1":
        assert same_floats(quants.dequantize(q, qtype), ggml.to_float(q, qtype, x.shape[1]))


@pytest.mark.parametrize("qtype", ALL_TYPES)
@settings(max_examples=EXAMPLES)
@given(x=finite_arrays())
def test_encode_arbitrary_finite_values(ggml, qtype, x):
    assert np.array_equal(quants.quantize(x, qtype), ggml_encode(ggml, x, qtype))


@pytest.mark.parametrize("qtype", IMATRIX_TYPES)
@settings(max_examples=EXAMPLES)
@given(data=st.data(), x=rows())
def test_encode_with_imatrix_matches_ggml(ggml, qtype, data, x):
    """The weighted algorithms (make_qx_quants / make_qkx3_quants with qw·sqrt(sigma2 + x²))."""
    w = data.draw(imatrices(x.shape[1]))
    assert np.array_equal(quants.quantize(x, qtype, imatrix=w), ggml_encode(ggml, x, qtype, w))


@pytest.mark.parametrize("qtype", IMATRIX_TYPES)
@settings(max_examples=EXAMPLES // 2)
@given(data=st.data(), x=finite_arrays())
def test_encode_with_imatrix_arbitrary_finite_values(ggml, qtype, data, x):
    w = data.draw(imatrices(x.shape[1]))
    assert np.array_equal(quants.quantize(x, qtype, imatrix=w), ggml_encode(ggml, x, qtype, w))


@settings(max_examples=EXAMPLES // 2)
@given(data=st.data(), x=rows())
def test_q8_0_ignores_the_imatrix(ggml, data, x):
    w = data.draw(imatrices(x.shape[1]))
    q = quants.quantize(x, "Q8_0", imatrix=w)
    assert np.array_equal(q, ggml.quantize_chunk(x, "Q8_0", imatrix=w))
    assert np.array_equal(q, quants.quantize(x, "Q8_0"))


def test_q8_1_takes_no_imatrix():
    with pytest.raises(QuantError, match="takes no importance matrix"):
        quants.quantize(np.ones((1, 32), np.float32), "Q8_1", imatrix=np.ones(32, np.float32))


@pytest.mark.parametrize("qtype", NONFINITE_TYPES)
@settings(max_examples=EXAMPLES * 2)
@given(x=float_bits())
def test_nan_and_inf_match_ggml(ggml, qtype, x):
    """Q8_0/Q8_1 are defined for NaN and ±inf on the reference platform: MAX(amax, NaN) = NaN is replaced by the next
    element, d = NaN/inf is stored as an fp16 NaN/inf, and every NaN or infinite x*id becomes the byte 0."""
    q = quants.quantize(x, qtype)
    assert np.array_equal(q, ggml_encode(ggml, x, qtype))
    if qtype == "Q8_0":
        assert same_floats(quants.dequantize(q, qtype), ggml.to_float(q, qtype, x.shape[1]))


@pytest.mark.parametrize("qtype", NONFINITE_TYPES)
@pytest.mark.parametrize("value", [np.nan, -np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("position", [0, 5, 31])
def test_single_nonfinite_value(ggml, qtype, value, position):
    x = np.random.default_rng(position).standard_normal((1, 64)).astype(np.float32)
    x[0, position] = value
    assert np.array_equal(quants.quantize(x, qtype), ggml_encode(ggml, x, qtype))
    x[0, :32] = value
    assert np.array_equal(quants.quantize(x, qtype), ggml_encode(ggml, x, qtype))


@pytest.mark.parametrize("qtype", FINITE_ONLY_TYPES)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nonfinite_is_refused(qtype, value):
    """Q4_0…Q5_1 refuse NaN/±inf: on ggml's importance-matrix path several NaNs meet in one addition, and which
    payload and sign survives (the sign reaches the stored fp16 NaN) depends on the operand order the C compiler
    chose — it is not defined by the C source, so refllm has nothing to match."""
    x = np.ones((2, 64), np.float32)
    x[1, 40] = value
    with pytest.raises(QuantError, match="NaN or ±inf"):
        quants.quantize(x, qtype)
    with pytest.raises(QuantError, match="NaN or ±inf"):
        quants.quantize(x, qtype, imatrix=np.ones(64, np.float32))


@pytest.mark.parametrize("qtype", CHUNK_TYPES)
def test_rounding_ties(ggml, qtype):
    """Every x/d on the grid of halves: Q8_0 rounds .5 away from zero (roundf), Q4_0…Q5_1 truncate x/d + 8.5 etc."""
    k = np.arange(-40, 41, dtype=np.float32) / 2  # -20, -19.5, ..., 20
    rows_ = []
    for m in (8, -8, 16, -16, 15, 31, 127, -127):
        for s in (1.0, 0.25, 2.0**-20, 2.0**20):
            block = np.resize(k, 31) * np.float32(s)
            rows_.append(np.concatenate([[np.float32(m * s)], block, -block[::-1], [np.float32(-m * s)]]))
    x = np.array(rows_, np.float32)
    assert np.array_equal(quants.quantize(x, qtype), ggml_encode(ggml, x, qtype))


@pytest.mark.parametrize("qtype", ALL_TYPES)
def test_row_functions_work_on_single_rows(ggml, qtype):
    """The serial row functions (what a matrix-vector kernel calls for its activations) on 1-D arrays."""
    name = qtype.lower()
    x = np.random.default_rng(7).standard_normal(96).astype(np.float32)
    y = np.empty(96 // QK * {"q4_0": 18, "q4_1": 20, "q5_0": 22, "q5_1": 24, "q8_0": 34, "q8_1": 36}[name], np.uint8)
    getattr(legacy, f"quantize_row_{name}_ref")(x, y)
    assert np.array_equal(y, ggml_encode(ggml, x[None], qtype)[0])
    z = np.empty(96, np.float32)
    getattr(legacy, f"dequantize_row_{name}")(y, z)
    assert same_floats(z, quants.dequantize(y[None], qtype)[0])


# -- decode -----------------------------------------------------------------------------------------------------------


@st.composite
def block_bytes(draw, type_size, max_rows=3, max_blocks=4):
    shape = (draw(st.integers(1, max_rows)), draw(st.integers(1, max_blocks)) * type_size)
    raw = draw(arrays(np.uint8, shape))
    # hypothesis shrinks bytes towards 0; also take uniformly random bytes
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return raw if draw(st.booleans()) else rng.integers(0, 256, shape, dtype=np.uint8)


TYPE_SIZE = {"Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24, "Q8_0": 34, "Q8_1": 36}


@pytest.mark.parametrize("qtype", CHUNK_TYPES)
@settings(max_examples=EXAMPLES * 2)
@given(data=st.data())
def test_decode_arbitrary_bytes(ggml, qtype, data):
    """Every byte string is a valid block (fp16 NaN/inf scales included): the floats equal ggml's bit for bit."""
    raw = data.draw(block_bytes(TYPE_SIZE[qtype]))
    n = raw.shape[1] // TYPE_SIZE[qtype] * QK
    assert same_floats(quants.dequantize(raw, qtype), ggml.to_float(raw, qtype, n))


@pytest.mark.parametrize("qtype", CHUNK_TYPES)
@slow_as_plain_python
def test_decode_every_scale(ggml, qtype):
    """All 65,536 fp16 scales (and offsets), with random quants."""
    ts = TYPE_SIZE[qtype]
    raw = np.random.default_rng(1).integers(0, 256, (256, 256 * ts), dtype=np.uint8)
    blocks = raw.reshape(-1, ts)
    h = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    blocks[:, 0:2] = h.view(np.uint8).reshape(-1, 2)
    if qtype in ("Q4_1", "Q5_1"):
        blocks[:, 2:4] = np.roll(h, 12345).view(np.uint8).reshape(-1, 2)
    assert same_floats(quants.dequantize(raw, qtype), ggml.to_float(raw, qtype, 256 * QK))


def q8_1_reference_decode(raw: np.ndarray) -> np.ndarray:
    """x = d * qs, in numpy: d is the fp16 at byte 0 (the stored s = d·Σqs at byte 2 is not needed)."""
    blocks = raw.reshape(-1, 36)
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)  # [nblocks, 1]
    qs = blocks[:, 4:].view(np.int8).astype(np.float32)
    return (qs * d).reshape(raw.shape[:-1] + (raw.shape[-1] // 36 * QK,)).astype(np.float32)


@settings(max_examples=EXAMPLES)
@given(x=rows())
def test_q8_1_decode_is_d_times_qs(ggml, x):
    """ggml has no Q8_1 decoder; refllm's is x = d * qs (checked with numpy on ggml's own encoding)."""
    q = ggml.quantize_row_ref(x, "Q8_1")
    assert same_floats(quants.dequantize(q, "Q8_1"), q8_1_reference_decode(q))


@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_q8_1_decode_arbitrary_bytes(data):
    raw = data.draw(block_bytes(36))
    assert same_floats(quants.dequantize(raw, "Q8_1"), q8_1_reference_decode(raw))


def test_q8_1_sum_field(ggml):
    """s = fp16(d · Σqs) with the unrounded d — as ggml writes it."""
    x = np.random.default_rng(3).standard_normal((4, 256)).astype(np.float32)
    q = quants.quantize(x, "Q8_1").reshape(-1, 36)
    assert np.array_equal(q, ggml.quantize_row_ref(x, "Q8_1").reshape(-1, 36))
    s = q[:, 2:4].copy().view(np.float16).astype(np.float32)[:, 0]
    d = q[:, 0:2].copy().view(np.float16).astype(np.float32)[:, 0]
    sums = q[:, 4:].view(np.int8).astype(np.int64).sum(1)
    assert np.allclose(s, d * sums, rtol=2e-3, atol=1e-3)


# -- the C-semantics helpers ------------------------------------------------------------------------------------------

_libm = ctypes.CDLL(ctypes.util.find_library("m"))
_libm.roundf.restype = ctypes.c_float
_libm.roundf.argtypes = [ctypes.c_float]


@settings(max_examples=3 * EXAMPLES)
@given(v=st.one_of(st.floats(width=32), st.integers(-(2**24), 2**24).map(lambda i: i / 2)))
def test_roundf_is_c_roundf(v):
    v = np.float32(v)
    ours = np.float32(legacy.roundf(v))  # a compiled kernel returns a Python float
    theirs = np.float32(_libm.roundf(float(v)))
    assert np.isnan(ours) and np.isnan(theirs) or ours.view(np.uint32) == theirs.view(np.uint32)


@pytest.mark.parametrize("v, expected", [(0.5, 1), (-0.5, -1), (1.5, 2), (2.5, 3), (-2.5, -3), (0.49999997, 0),
                                         (126.5, 127), (np.nan, 0), (np.inf, 0), (-np.inf, 0), (3e9, 0)])
def test_int8_conversion_as_on_x86_64(v, expected):
    """``(int8_t)roundf(v)``: out-of-range and NaN give x86's integer indefinite 0x80000000, whose low byte is 0."""
    assert legacy.int8_of(legacy.c_float_to_int(legacy.roundf(np.float32(v)))) == expected
