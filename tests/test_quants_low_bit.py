"""Q1_0 and Q2_0 (refllm.quants.low_bit) against ggml: encoder bytes and decoder bits must be identical."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_strategies import TINY, assert_same_bits, assert_same_bytes, block_bytes, float_rows
from refllm import quants
from refllm.quants import QuantError

pytestmark = pytest.mark.reference

BLOCK = {"Q1_0": (128, 18), "Q2_0": (64, 18)}

# -- encoders ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("qtype", ["Q1_0", "Q2_0"])
@settings(max_examples=150)
@given(data=st.data())
def test_encode_matches_ggml(ggml, qtype, data):
    x = data.draw(float_rows(BLOCK[qtype][0]))
    assert_same_bytes(quants.quantize(x, qtype), ggml.quantize_chunk(x, qtype))


@pytest.mark.parametrize("qtype", ["Q1_0", "Q2_0"])
@settings(max_examples=30)
@given(data=st.data())
def test_imatrix_is_ignored(ggml, qtype, data):
    """With an imatrix ggml runs the same _ref function row by row; the bytes do not change."""
    x = data.draw(float_rows(BLOCK[qtype][0]))
    w = np.random.default_rng(0).random(x.shape[1]).astype(np.float32)
    expected = ggml.quantize_chunk(x, qtype, imatrix=w)
    assert_same_bytes(quants.quantize(x, qtype, imatrix=w), expected)
    assert_same_bytes(quants.quantize(x, qtype), expected)


@settings(max_examples=100)
@given(data=st.data())
def test_q1_0_nonfinite_matches_ggml(ggml, data):
    """Q1_0 is defined for NaN and ±inf: the sum of |x| becomes NaN/inf (fp16 0x7E00/0x7C00), NaN >= 0 is false."""
    x = data.draw(float_rows(128, nonfinite=True))
    assert_same_bytes(quants.quantize(x, "Q1_0"), ggml.quantize_chunk(x, "Q1_0"))


@settings(max_examples=30)
@given(data=st.data())
def test_q2_0_rejects_nonfinite(data):
    """Q2_0 computes (int)roundf(x/d): C leaves that undefined for NaN and ±inf, so refllm refuses them."""
    x = data.draw(float_rows(64, nonfinite=True))
    if np.isfinite(x).all():
        x[-1, -1] = np.nan
    with pytest.raises(QuantError):
        quants.quantize(x, "Q2_0")


def test_q2_0_rounds_halves_away_from_zero(ggml):
    """roundf, not round-half-even: with amax = 1 the codes are roundf(x) + 1, x = ±0.5, ±0.49999997, ±1, 0."""
    vals = np.array([0.5, -0.5, 0.49999997, -0.49999997, 0.50000006, -0.50000006, 1.0, -1.0, 0.0, -0.0,
                     0.25, -0.75, 0.75, 1e-45, -1e-45, 0.9999999], np.float32)
    x = np.resize(vals, (2, 64)).astype(np.float32)
    assert_same_bytes(quants.quantize(x, "Q2_0"), ggml.quantize_chunk(x, "Q2_0"))


def test_q2_0_tiny_blocks_follow_x86(ggml):
    """amax below 2**-128 makes 1/amax overflow to inf; ggml then converts ±inf and NaN (0*inf) to int with
    x86-64's cvttss2si (INT_MIN → code 0).  refllm reproduces that for every such block."""
    rng = np.random.default_rng(3)
    rows = []
    for amax_bits in [1, 2, 3, 7, 0x100, 0x1FFFFF, 0x200000, 0x200001, 0x3FFFFF, 0x400000, 0x7FFFFF, 0x800000]:
        amax = np.uint32(amax_bits).view(np.float32)
        x = (rng.integers(-3, 4, 64) * np.float64(TINY)).clip(-amax, amax).astype(np.float32)
        x[7] = amax
        rows.append(x)
    x = np.array(rows, np.float32)
    assert_same_bytes(quants.quantize(x, "Q2_0"), ggml.quantize_chunk(x, "Q2_0"))


def test_q1_0_sign_of_zero(ggml):
    x = np.resize(np.array([0.0, -0.0, 1.0, -1.0, 1e-45, -1e-45], np.float32), (1, 128)).astype(np.float32)
    assert_same_bytes(quants.quantize(x, "Q1_0"), ggml.quantize_chunk(x, "Q1_0"))


# -- decoders ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("qtype", ["Q1_0", "Q2_0"])
@settings(max_examples=150)
@given(data=st.data())
def test_decode_arbitrary_bytes(ggml, qtype, data):
    q, n = data.draw(block_bytes(qtype))
    assert_same_bits(quants.dequantize(q, qtype), ggml.to_float(q, qtype, n))


@pytest.mark.parametrize("qtype", ["Q1_0", "Q2_0"])
def test_decode_special_scales(ggml, qtype):
    """Every fp16 NaN (signaling ones included: ggml's fp16→fp32 quiets them), ±inf, ±0, subnormals, max."""
    block, size = BLOCK[qtype]
    halves = np.array([0x7C00, 0xFC00, 0x7C01, 0x7DFF, 0x7E00, 0x7FFF, 0xFC01, 0xFE00, 0x0000, 0x8000, 0x0001,
                       0x03FF, 0x7BFF, 0xFBFF, 0x3C00, 0xBC00], np.uint16)
    q = np.zeros((len(halves), size), np.uint8)
    q[:, 0] = halves & 0xFF
    q[:, 1] = halves >> 8
    q[:, 2:] = np.arange(size - 2, dtype=np.uint8) * 37 + 11
    assert_same_bits(quants.dequantize(q, qtype), ggml.to_float(q, qtype, block))
    allh = np.arange(65536, dtype=np.uint32)
    q = np.zeros((65536, size), np.uint8)
    q[:, 0] = allh & 0xFF
    q[:, 1] = allh >> 8
    q[:, 2:] = 0xA5
    assert_same_bits(quants.dequantize(q, qtype), ggml.to_float(q, qtype, block))


@pytest.mark.parametrize("qtype", ["Q1_0", "Q2_0"])
@settings(max_examples=50)
@given(data=st.data())
def test_roundtrip_through_ggml(ggml, qtype, data):
    x = data.draw(float_rows(BLOCK[qtype][0]))
    q = ggml.quantize_chunk(x, qtype)
    assert_same_bits(quants.dequantize(q, qtype), ggml.to_float(q, qtype, x.shape[1]))

