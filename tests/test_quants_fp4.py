"""MXFP4 and NVFP4 (refllm.quants.fp4) against ggml: encoder bytes and decoder bits must be identical."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_strategies import assert_same_bits, assert_same_bytes, block_bytes, float_rows
from refllm import quants
from refllm.quants import QuantError, fp4

pytestmark = pytest.mark.reference

BLOCK = {"MXFP4": (32, 17), "NVFP4": (64, 36)}

# -- encoders ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("qtype", ["MXFP4", "NVFP4"])
@settings(max_examples=150)
@given(data=st.data())
def test_encode_matches_ggml(ggml, qtype, data):
    x = data.draw(float_rows(BLOCK[qtype][0]))
    assert_same_bytes(quants.quantize(x, qtype), ggml.quantize_chunk(x, qtype))


@pytest.mark.parametrize("qtype", ["MXFP4", "NVFP4"])
@settings(max_examples=30)
@given(data=st.data())
def test_imatrix_is_ignored(ggml, qtype, data):
    x = data.draw(float_rows(BLOCK[qtype][0]))
    w = np.random.default_rng(0).random(x.shape[1]).astype(np.float32)
    expected = ggml.quantize_chunk(x, qtype, imatrix=w)
    assert_same_bytes(quants.quantize(x, qtype, imatrix=w), expected)
    assert_same_bytes(quants.quantize(x, qtype), expected)


@settings(max_examples=100)
@given(data=st.data())
def test_nvfp4_nonfinite_matches_ggml(ggml, data):
    """NVFP4's encoder is defined for NaN and ±inf (the UE4M3 scale saturates; a NaN weight gets code 0)."""
    x = data.draw(float_rows(64, nonfinite=True))
    assert_same_bytes(quants.quantize(x, "NVFP4"), ggml.quantize_chunk(x, "NVFP4"))


@settings(max_examples=30)
@given(data=st.data())
def test_mxfp4_rejects_nonfinite(data):
    """MXFP4 converts floorf(log2f(amax)) to uint8_t; for amax = inf that is undefined in C, so refllm refuses."""
    x = data.draw(float_rows(32, nonfinite=True))
    if np.isfinite(x).all():
        x[0, 0] = np.inf
    with pytest.raises(QuantError):
        quants.quantize(x, "MXFP4")


def test_mxfp4_exponent_at_every_binade(ggml):
    """The E8M0 exponent uses floorf(log2f(amax)): at each power of two, just below it (where log2f rounds up to
    the power for large exponents), and for subnormal maxima (where ggml's uint8_t conversion wraps)."""
    maxima = []
    for k in range(-149, 128):
        p = np.float32(2.0**k)
        maxima += [p, np.nextafter(p, np.float32(0)), np.nextafter(p, np.float32(np.inf)),
                   np.float32(p * 1.5), np.nextafter(np.float32(p * 2), np.float32(0)) if k < 127 else p]
    maxima = np.array([m for m in maxima if 0 < m < np.inf], np.float32)
    rng = np.random.default_rng(1)
    x = (rng.uniform(-1, 1, (len(maxima), 32)) * maxima[:, None]).astype(np.float32)
    x[np.arange(len(maxima)), rng.integers(0, 32, len(maxima))] = maxima * rng.choice([-1, 1], len(maxima))
    assert_same_bytes(quants.quantize(x, "MXFP4"), ggml.quantize_chunk(x, "MXFP4"))


def test_nvfp4_scale_at_every_ue4m3_boundary(ggml):
    """amax/6 exactly at, just around, and halfway between every UE4M3 value (the rounding and carry cases)."""
    values = np.array(sorted({float(fp4.ue4m3_to_fp32(u)) * 2 for u in range(0x7F)}), np.float64)
    cands = list(values) + list((values[1:] + values[:-1]) / 2) + [448.0, 480.0, 1e6]
    amax = []
    for v in cands:
        a = np.float32(v * 6)
        amax += [a, np.nextafter(a, np.float32(0)), np.nextafter(a, np.float32(np.inf))]
    amax = np.array([a for a in amax if a > 0], np.float32)
    amax = amax[: len(amax) // 4 * 4]
    rng = np.random.default_rng(2)
    x = (rng.uniform(-1, 1, (len(amax), 16)) * amax[:, None]).astype(np.float32)
    x[:, 5] = amax
    x = x.reshape(-1, 64)
    assert_same_bytes(quants.quantize(x, "NVFP4"), ggml.quantize_chunk(x, "NVFP4"))


def test_ties_pick_the_first_code(ggml):
    """Weights exactly halfway between two E2M1 values, and ±0, -0.0 against +0 (code 0 wins over code 8)."""
    d_vals = np.array([0, 1, 2, 3, 4, 6, 8, 12], np.float32)
    mids = np.concatenate([(d_vals[1:] + d_vals[:-1]) / 2, d_vals])
    x = np.resize(np.concatenate([mids, -mids, [0.0, -0.0]]).astype(np.float32) / 2, 64).astype(np.float32)
    x[0] = 6.0  # both formats then pick the scale that makes the halves exact
    for qtype, rows in (("MXFP4", x.reshape(2, 32)), ("NVFP4", x.reshape(1, 64))):
        assert_same_bytes(quants.quantize(rows, qtype), ggml.quantize_chunk(rows, qtype))


# -- decoders ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("qtype", ["MXFP4", "NVFP4"])
@settings(max_examples=150)
@given(data=st.data())
def test_decode_arbitrary_bytes(ggml, qtype, data):
    q, n = data.draw(block_bytes(qtype))
    assert_same_bits(quants.dequantize(q, qtype), ggml.to_float(q, qtype, n))


@pytest.mark.parametrize("qtype", ["MXFP4", "NVFP4"])
def test_decode_every_scale_and_code(ggml, qtype):
    """Every scale byte (0 … 255) with every 4-bit code in every position."""
    block, size = BLOCK[qtype]
    q = np.zeros((256, size), np.uint8)
    nscale = size - block // 2
    q[:, :nscale] = np.arange(256, dtype=np.uint8)[:, None]
    q[:, nscale:] = (np.arange(block // 2) * 17 + np.arange(256)[:, None]) % 256
    assert_same_bits(quants.dequantize(q, qtype), ggml.to_float(q, qtype, block))


@pytest.mark.parametrize("qtype", ["MXFP4", "NVFP4"])
@settings(max_examples=50)
@given(data=st.data())
def test_roundtrip_through_ggml(ggml, qtype, data):
    x = data.draw(float_rows(BLOCK[qtype][0]))
    q = ggml.quantize_chunk(x, qtype)
    assert_same_bits(quants.dequantize(q, qtype), ggml.to_float(q, qtype, x.shape[1]))


def test_scale_helpers_exhaustive():
    """ue4m3_to_fp32 for every byte is the formula of ggml-impl.h; fp32_to_ue4m3 inverts it on its own values."""
    for u in range(256):
        exp, man = (u >> 3) & 0xF, u & 7
        if u in (0, 0x7F):
            expected = 0.0
        elif exp == 0:
            expected = man * 2.0**-9 * 0.5
        else:
            expected = (1 + man / 8) * 2.0 ** (exp - 7) * 0.5
        assert fp4.ue4m3_to_fp32(u) == np.float32(expected)
        if 0 < u < 0x78:  # ggml's encoder saturates every exponent-15 value to 0x7E
            assert fp4.fp32_to_ue4m3(np.float32(expected * 2)) == u
    for e in range(256):
        assert float(fp4.e8m0_to_fp32_half(e)) == 2.0 ** (e - 128)
