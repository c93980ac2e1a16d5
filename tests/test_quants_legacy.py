"""The legacy block formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q8_1 against ggml, byte for byte and bit for bit.

Encoding is compared with ``ggml_quantize_chunk`` (with and without an importance matrix; Q8_1, which is not a
``ggml_quantize_chunk`` type, with ``quantize_row_q8_1_ref``), decoding with ggml's ``to_float`` on the bits of the
floats, so NaN payloads count.  Q8_1 has no ggml decoder: refllm's is checked against ``d * qs`` computed by numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from quant_strategies import (
    PLAIN_PYTHON,
    assert_same_bits,
    block_bytes,
    finite_arrays,
    float_bits,
    seeded_rows,
    slow_as_plain_python,
)
from refllm import quants
from refllm.quants import QuantError, legacy

QK = 32
CHUNK_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
IMATRIX_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1"]  # ggml has a weighted algorithm for these
ALL_TYPES = CHUNK_TYPES + ["Q8_1"]
NONFINITE_TYPES = ["Q8_0", "Q8_1"]  # finite_only=False: NaN and ±inf are matched too
FINITE_ONLY_TYPES = IMATRIX_TYPES
TYPE_SIZE = {"Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24, "Q8_0": 34, "Q8_1": 36}

EXAMPLES = 5 if PLAIN_PYTHON else 60


def ggml_encode(ggml, x, qtype, imatrix=None):
    if qtype == "Q8_1":
        assert imatrix is None
        return ggml.quantize_row_ref(x, qtype)
    return ggml.quantize_chunk(x, qtype, imatrix=imatrix)


# -- input generators -------------------------------------------------------------------------------------------------

KINDS = ["gaussian", "student_t", "cauchy", "constant", "zeros", "outlier", "subnormal", "tiny", "huge", "flt_max",
         "grid", "positive", "sparse", "mixed_scales", "uniform_bits"]


def rows(max_rows=3, max_blocks=4):
    """Finite float32 rows of one of the KINDS (quant_strategies.make_rows)."""
    return seeded_rows(KINDS, QK, max_rows, max_blocks)


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
        assert_same_bits(quants.dequantize(q, qtype), ggml.to_float(q, qtype, x.shape[1]))


@pytest.mark.parametrize("qtype", ALL_TYPES)
@settings(max_examples=EXAMPLES)
@given(x=finite_arrays(QK))
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
@given(data=st.data(), x=finite_arrays(QK))
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
@given(x=float_bits(QK))
def test_nan_and_inf_match_ggml(ggml, qtype, x):
    """Q8_0/Q8_1 are defined for NaN and ±inf on the reference platform: MAX(amax, NaN) = NaN is replaced by the next
    element, d = NaN/inf is stored as an fp16 NaN/inf, and every NaN or infinite x*id becomes the byte 0."""
    q = quants.quantize(x, qtype)
    assert np.array_equal(q, ggml_encode(ggml, x, qtype))
    if qtype == "Q8_0":
        assert_same_bits(quants.dequantize(q, qtype), ggml.to_float(q, qtype, x.shape[1]))


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
    y = np.empty(96 // QK * TYPE_SIZE[qtype], np.uint8)
    getattr(legacy, f"quantize_row_{name}_ref")(x, y)
    assert np.array_equal(y, ggml_encode(ggml, x[None], qtype)[0])
    z = np.empty(96, np.float32)
    getattr(legacy, f"dequantize_row_{name}")(y, z)
    assert_same_bits(z, quants.dequantize(y[None], qtype)[0])


# -- decode -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", CHUNK_TYPES)
@settings(max_examples=EXAMPLES * 2)
@given(data=st.data())
def test_decode_arbitrary_bytes(ggml, qtype, data):
    """Every byte string is a valid block (fp16 NaN/inf scales included): the floats equal ggml's bit for bit."""
    raw, n = data.draw(block_bytes(qtype, max_blocks=4, uniform=True))
    assert_same_bits(quants.dequantize(raw, qtype), ggml.to_float(raw, qtype, n))


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
    assert_same_bits(quants.dequantize(raw, qtype), ggml.to_float(raw, qtype, 256 * QK))


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
    assert_same_bits(quants.dequantize(q, "Q8_1"), q8_1_reference_decode(q))


@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_q8_1_decode_arbitrary_bytes(data):
    raw, _ = data.draw(block_bytes("Q8_1", max_blocks=4, uniform=True))
    assert_same_bits(quants.dequantize(raw, "Q8_1"), q8_1_reference_decode(raw))


def test_q8_1_sum_field(ggml):
    """s = fp16(d · Σqs) with the unrounded d — as ggml writes it."""
    x = np.random.default_rng(3).standard_normal((4, 256)).astype(np.float32)
    q = quants.quantize(x, "Q8_1").reshape(-1, 36)
    assert np.array_equal(q, ggml.quantize_row_ref(x, "Q8_1").reshape(-1, 36))
    s = q[:, 2:4].copy().view(np.float16).astype(np.float32)[:, 0]
    d = q[:, 0:2].copy().view(np.float16).astype(np.float32)[:, 0]
    sums = q[:, 4:].view(np.int8).astype(np.int64).sum(1)
    assert np.allclose(s, d * sums, rtol=2e-3, atol=1e-3)

