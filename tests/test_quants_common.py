"""The shared helpers of refllm.quants.common — C's rounding and conversions as the x86-64 reference computes them,
the half-precision decoder and its table, and the little-endian block fields — checked against the C library and
against their definitions.  (Every format's tests check them again through ggml's bytes.)"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_strategies import LIBM, PLAIN_PYTHON, assert_same_bits
from refllm.quants import common

EXAMPLES = 5 if PLAIN_PYTHON else 60

LIBM.roundf.restype = ctypes.c_float
LIBM.roundf.argtypes = [ctypes.c_float]


@settings(max_examples=3 * EXAMPLES)
@given(v=st.one_of(st.floats(width=32), st.integers(-(2**24), 2**24).map(lambda i: i / 2)))
def test_roundf_is_c_roundf(v):
    v = np.float32(v)
    ours = np.float32(common.roundf(v))  # a compiled kernel returns a Python float
    theirs = np.float32(LIBM.roundf(float(v)))
    assert np.isnan(ours) and np.isnan(theirs) or ours.view(np.uint32) == theirs.view(np.uint32)


def test_roundf_and_c_float_to_int():
    for v, expected in [(0.5, 1.0), (-0.5, -1.0), (1.5, 2.0), (2.5, 3.0), (-2.5, -3.0), (0.49999997, 0.0),
                        (-0.49999997, -0.0), (8388607.5, 8388608.0), (1e30, 1e30), (0.0, 0.0)]:
        r = common.roundf(np.float32(v))
        assert r == np.float32(expected) and np.signbit(r) == np.signbit(np.float32(expected)), v
    assert np.isnan(common.roundf(np.float32(np.nan)))
    assert common.c_float_to_int(np.float32(-2.9)) == -2
    assert common.c_float_to_int(np.float32(2147483520.0)) == 2147483520
    for v in (np.nan, np.inf, -np.inf, 2.0**31, -(2.0**32)):
        assert common.c_float_to_int(np.float32(v)) == -(2**31)


@pytest.mark.parametrize("v, expected", [(0.5, 1), (-0.5, -1), (1.5, 2), (2.5, 3), (-2.5, -3), (0.49999997, 0),
                                         (126.5, 127), (np.nan, 0), (np.inf, 0), (-np.inf, 0), (3e9, 0)])
def test_int8_conversion_as_on_x86_64(v, expected):
    """``(int8_t)roundf(v)``: out-of-range and NaN give x86's integer indefinite 0x80000000, whose low byte is 0."""
    assert common.int8_of(common.c_float_to_int(common.roundf(np.float32(v)))) == expected


def test_fp16_table_is_the_kernel():
    """common.FP16_TO_FP32 (numpy, at import) and common.fp16_to_fp32 (the kernel the block decoders call) are one
    formula written twice: the same float32 bits for all 65,536 halves."""
    with np.errstate(invalid="ignore"):  # plain Python: signalling NaN halves are quieted on purpose
        kernel = np.array([common.fp16_to_fp32(h) for h in range(65536)], np.float32)
    assert_same_bits(kernel, common.FP16_TO_FP32)


@settings(max_examples=EXAMPLES)
@given(h=st.integers(0, 2**16 - 1), w=st.integers(0, 2**32 - 1), f=st.floats(width=32), o=st.integers(0, 4))
def test_block_fields(h, w, f, o):
    """Little-endian loads and stores at any offset; store_fp16 returns what load_fp16 then reads."""
    b = np.zeros(10, np.uint8)
    common.store_u16(b, o, h)
    assert common.load_u16(b, o) == h and b[o:o + 2].tobytes() == h.to_bytes(2, "little")
    common.store_u32(b, o, w)
    assert common.load_u32(b, o) == w and b[o:o + 4].tobytes() == w.to_bytes(4, "little")
    stored = np.float32(common.store_fp16(b, o, np.float32(f)))
    assert common.load_u16(b, o) == common.fp32_to_fp16(np.float32(f))
    assert stored.view(np.uint32) == np.float32(common.load_fp16(b, o)).view(np.uint32)
    assert stored.view(np.uint32) == common.FP16_TO_FP32[common.load_u16(b, o)].view(np.uint32)
