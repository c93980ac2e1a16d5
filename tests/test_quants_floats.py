"""The float formats F32, F16 and BF16 against ggml, bit for bit, for every input: NaN payloads (quiet and
signaling, either sign), ±inf, ±0, subnormals, overflow and rounding ties.

Encoding is compared with ``ggml_quantize_chunk`` (``memcpy``, ``ggml_fp32_to_fp16_row``,
``ggml_fp32_to_bf16_row_ref``), decoding with ggml's ``to_float`` (``ggml_fp16_to_fp32_row``,
``ggml_bf16_to_fp32_row``; ggml has none for F32, whose decoder is checked as the inverse of ``memcpy``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_strategies import PLAIN_PYTHON, SPECIAL_BITS, assert_same_bits, block_bytes, float_bits, slow_as_plain_python
from refllm import quants

EXAMPLES = 10 if PLAIN_PYTHON else 100

TYPES = ["F32", "F16", "BF16"]
HALF_TYPES = ["F16", "BF16"]
BYTES = {"F32": 4, "F16": 2, "BF16": 2}


def as_f32(bits) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint64).astype(np.uint32).view(np.float32)


@pytest.mark.parametrize("qtype", TYPES)
@settings(max_examples=2 * EXAMPLES)
@given(x=float_bits(1, max_rows=3, max_blocks=40))
def test_encode_matches_ggml(ggml, qtype, x):
    q = quants.quantize(x, qtype)
    assert q.shape == (x.shape[0], x.shape[1] * BYTES[qtype])
    assert np.array_equal(q, ggml.quantize_chunk(x, qtype))


@pytest.mark.parametrize("qtype", TYPES)
def test_special_values(ggml, qtype):
    x = as_f32(SPECIAL_BITS)[None, :]
    q = quants.quantize(x, qtype)
    assert np.array_equal(q, ggml.quantize_chunk(x, qtype))
    if qtype != "F32":  # F32 has no from_float_ref (ggml_quantize_chunk memcpy's it)
        assert np.array_equal(q, ggml.from_float_ref(x, qtype))


@pytest.mark.parametrize("qtype", TYPES)
@slow_as_plain_python
def test_encode_many_random_bit_patterns(ggml, qtype):
    bits = np.random.default_rng(0).integers(0, 2**32, (8, 1 << 16), dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    assert np.array_equal(quants.quantize(x, qtype), ggml.quantize_chunk(x, qtype))


@slow_as_plain_python
def test_f16_encode_every_half_value_and_midpoint(ggml):
    """Every finite half, and the float32 midpoints between neighbouring halves (ties to even) and just beside."""
    h = np.arange(0, 0x7C00, dtype=np.uint16)
    v = h.view(np.float16).astype(np.float32)
    mid = (v[:-1].astype(np.float64) + v[1:]) / 2  # exact in float32 (one more bit than the half)
    x = np.concatenate([v, mid.astype(np.float32), np.nextafter(mid.astype(np.float32), np.float32(0)),
                        np.nextafter(mid.astype(np.float32), np.float32(np.inf))])
    x = np.concatenate([x, -x])
    assert np.array_equal(quants.quantize(x[None], "F16"), ggml.quantize_chunk(x[None], "F16"))


@pytest.mark.parametrize("qtype", HALF_TYPES)
def test_decode_every_16_bit_pattern(ggml, qtype):
    raw = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.uint8).reshape(4, -1)
    assert_same_bits(quants.dequantize(raw, qtype), ggml.to_float(raw, qtype, raw.shape[1] // 2))


@pytest.mark.parametrize("qtype", HALF_TYPES)
@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_decode_arbitrary_bytes(ggml, qtype, data):
    raw, n = data.draw(block_bytes(qtype, max_blocks=40))
    assert_same_bits(quants.dequantize(raw, qtype), ggml.to_float(raw, qtype, n))


@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_f32_decode_is_the_inverse_of_memcpy(ggml, data):
    """ggml has no to_float for F32 (it is memcpy); refllm's decoder gives back the exact bits, NaN payloads too."""
    raw, _ = data.draw(block_bytes("F32", max_blocks=40))
    y = quants.dequantize(raw, "F32")
    assert np.array_equal(y.view(np.uint8), raw)
    assert np.array_equal(ggml.quantize_chunk(y, "F32"), raw)


def test_f16_decoder_quiets_signaling_nans():
    """GGML_FP16_TO_FP32 multiplies by 2**-112, which sets the quiet bit of a signaling NaN (payload kept): a NaN
    half decodes to sign | 0x7FC00000 | mantissa << 13, where a plain IEEE conversion keeps sNaNs signaling.
    Every other half decodes exactly."""
    h = np.arange(65536, dtype=np.uint32)
    ours = quants.dequantize(h.astype(np.uint16).view(np.uint8)[None], "F16")[0].view(np.uint32)
    nan = ((h & 0x7C00) == 0x7C00) & ((h & 0x3FF) != 0)
    expected_nan = ((h & 0x8000) << 16) | 0x7FC00000 | ((h & 0x3FF) << 13)
    assert np.array_equal(ours[nan], expected_nan[nan])
    exact = h[~nan].astype(np.uint16).view(np.float16).astype(np.float32).view(np.uint32)
    assert np.array_equal(ours[~nan], exact)
    assert ours[0x7C01] == 0x7FC02000 and ours[0xFDFF] == 0xFFFFE000


@pytest.mark.parametrize("qtype", TYPES)
def test_imatrix_is_ignored(ggml, qtype):
    """ggml_quantize_chunk accepts an importance matrix for the float types and does not use it."""
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    w = np.random.default_rng(2).random(64).astype(np.float32)
    q = quants.quantize(x, qtype, imatrix=w)
    assert np.array_equal(q, quants.quantize(x, qtype))
    assert np.array_equal(q, ggml.quantize_chunk(x, qtype, imatrix=w))


@pytest.mark.parametrize("qtype", TYPES)
def test_round_trip_of_representable_values(qtype):
    """Values the format represents exactly come back unchanged (NaN payloads aside)."""
    x = np.random.default_rng(4).standard_normal((3, 50)).astype(np.float32)
    if qtype == "F16":
        x = x.astype(np.float16).astype(np.float32)
    elif qtype == "BF16":
        x = (x.view(np.uint32) & 0xFFFF0000).view(np.float32)
    assert_same_bits(quants.dequantize(quants.quantize(x, qtype), qtype), x)

