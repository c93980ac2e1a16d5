"""Shared by the block-format tests: hypothesis strategies for float rows and raw blocks, exact comparisons, and the
switches for plain-Python runs."""

from __future__ import annotations

import ctypes
import ctypes.util

import numba
import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from refllm.ggml_types import TYPE_SIZES, GGMLType

FLT_MAX = np.finfo(np.float32).max
TINY = np.float32(2.0**-149)
ALL_KINDS = ("gaussian", "student_t", "cauchy", "constant", "zeros", "outlier", "subnormal", "huge", "halves", "bits",
             "hypothesis")

# plain-Python runs (NUMBA_DISABLE_JIT=1) are ~1000x slower: fewer examples, no exhaustive sweeps
PLAIN_PYTHON = numba.config.DISABLE_JIT
slow_as_plain_python = pytest.mark.skipif(PLAIN_PYTHON, reason="exhaustive sweep; too slow as plain Python")

# the C library, for comparing refllm's C-behaviour helpers with the real roundf, lroundf, ...
LIBM = ctypes.CDLL(ctypes.util.find_library("m"))

# float32 bit patterns where conversions and encoders have something to decide
SPECIAL_BITS = [
    0x00000000, 0x80000000,  # ±0
    0x7F800000, 0xFF800000,  # ±inf
    0x7FC00000, 0xFFC00000, 0x7FC12345, 0xFFFFFFFF,  # quiet NaNs, payloads, negative
    0x7F800001, 0xFF800001, 0x7FBFFFFF, 0xFFBFFFFF, 0x7F810000, 0x7F808000,  # signaling NaNs (bf16 payload edge too)
    0x00000001, 0x807FFFFF, 0x00400000, 0x00800000,  # float32 subnormals, smallest normal
    0x7F7FFFFF, 0xFF7FFFFF,  # ±FLT_MAX: overflow to inf in F16, rounds to inf in BF16
    0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FF001,  # 65504, …, 65520 (F16 overflow threshold, a tie), above
    0x33000000, 0x33000001, 0x33800000, 0x337FFFFF, 0x387FC000, 0x38800000,  # F16 subnormal range, ties at 2^-25
    0x3F808000, 0x3F818000, 0x3F808001, 0x3F807FFF,  # BF16 ties to even / not ties
    0x3F801000, 0x3F803000, 0x3F800FFF,  # F16 ties to even / not ties
    0x7F7F8000, 0x7F7F7FFF,  # BF16 rounding to inf or not
]


def assert_same_bytes(ours, theirs, what=""):
    assert ours.dtype == np.uint8 and ours.shape == theirs.shape, (what, ours.dtype, ours.shape, theirs.shape)
    bad = np.argwhere(ours != theirs)
    assert bad.size == 0, f"{what}: {len(bad)} bytes differ, first at {bad[:5].tolist()}"


def assert_same_bits(ours, theirs, what=""):
    """Float arrays equal bit for bit (so NaN payloads and the sign of zero count)."""
    assert ours.dtype == np.float32 and ours.shape == theirs.shape, (what, ours.dtype, ours.shape, theirs.shape)
    a, b = ours.view(np.uint32), theirs.view(np.uint32)
    bad = np.argwhere(a != b)
    assert bad.size == 0, (f"{what}: {len(bad)} floats differ, first at {bad[:5].tolist()}: "
                           f"{[hex(v) for v in a[a != b][:5]]} vs {[hex(v) for v in b[a != b][:5]]}")


@st.composite
def float_rows(draw, block, nonfinite=False, max_rows=3, max_blocks=4, kinds=ALL_KINDS, exponents=(-42, 36),
               extreme=True):
    """float32 rows ``[nrows, k*block]`` of one of many kinds of data, optionally sprinkled with NaN and ±inf.

    ``exponents`` bounds the power-of-ten scale of the random kinds; ``extreme=False`` keeps constants and outliers
    within ±1e4 (for encoders that are only defined on moderate values).
    """
    nrows = draw(st.integers(1, max_rows))
    n = block * draw(st.integers(1, max_blocks))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(kinds))
    scale = 10.0 ** draw(st.integers(*exponents))
    shape = (nrows, n)
    if kind == "gaussian":
        x = rng.standard_normal(shape) * scale
    elif kind == "student_t":
        x = rng.standard_t(2.0, shape) * scale
    elif kind == "cauchy":
        x = rng.standard_cauchy(shape) * scale
    elif kind == "constant":
        x = np.full(shape, draw(st.floats(width=32, allow_nan=False, allow_infinity=False) if extreme
                                else st.floats(-1e4, 1e4, width=32)))
    elif kind == "zeros":
        x = np.where(rng.random(shape) < 0.5, -0.0, 0.0)
    elif kind == "outlier":
        x = rng.standard_normal(shape) * 1e-3
        x[rng.integers(nrows), rng.integers(n)] = draw(st.sampled_from(
            [1e4, -1e4, 3e38, -3e38, 1.0, -1.0] if extreme else [1e4, -1e4, 1.0, -1.0]))
    elif kind == "subnormal":
        x = rng.integers(-(2**23), 2**23, shape) * np.float64(TINY)
    elif kind == "huge":
        x = rng.uniform(-1.0, 1.0, shape) * FLT_MAX
        x[0, 0] = draw(st.sampled_from([FLT_MAX, -FLT_MAX]))
    elif kind == "halves":
        x = rng.integers(-24, 25, shape) * 0.5 * 2.0 ** draw(st.integers(-130, 100))
    elif kind == "bits":
        bits = rng.integers(0, 2**32, shape, dtype=np.uint64).astype(np.uint32)
        bits[(bits & 0x7F800000) == 0x7F800000] = 0  # keep finite values only
        x = bits.view(np.float32).astype(np.float64)
    else:
        x = draw(arrays(np.float32, shape, elements=st.floats(width=32, allow_nan=nonfinite,
                                                              allow_infinity=nonfinite)))
    x = np.asarray(x, np.float64)
    x = np.where(np.isfinite(x), np.clip(x, -FLT_MAX, FLT_MAX), x).astype(np.float32)
    if nonfinite:
        mask = rng.random(shape) < draw(st.sampled_from([0.0, 0.02, 0.3, 1.0]))
        x[mask] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), mask.sum())
    return x


def make_rows(kind: str, seed: int, nrows: int, n: int, block: int, finite: bool = True) -> np.ndarray:
    """Float32 rows ``[nrows, n]`` (``n`` a multiple of ``block``) of one kind of data, deterministic in ``seed``.

    Kinds: gaussian, student_t, cauchy, constant, zeros (±0), outlier, subnormal (float32 subnormals: ``1/d``
    overflows to inf in these blocks), tiny (around the smallest normals), huge, flt_max (±FLT_MAX, 0.5·FLT_MAX, 0:
    ``max - min`` overflows), grid (multiples of s/2 with one exact block maximum: ties before rounding or
    truncation), ternary ({-s, 0, s}), ties (x/d = ±0.5 exactly), positive, sparse, mixed_scales (every block on
    its own scale), uniform_bits (every finite float32 bit pattern equally likely).  ``finite=False`` lets ``huge``
    overflow to ±inf now and then; otherwise it is clipped to ±FLT_MAX.
    """
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
    elif kind == "subnormal":
        x = rng.standard_normal(shape) * 10.0 ** rng.uniform(-44, -39)
    elif kind == "tiny":
        x = rng.standard_normal(shape) * 10.0 ** rng.uniform(-38, -35)
    elif kind == "huge":
        x = rng.standard_normal(shape) * 10.0 ** rng.uniform(25, 38)
        if finite:
            x = np.clip(x, -FLT_MAX, FLT_MAX)
    elif kind == "flt_max":
        x = rng.choice([-1.0, 1.0, 0.5, 0.0], shape) * FLT_MAX
    elif kind == "grid":
        s = 2.0 ** rng.integers(-10, 10)
        x = rng.integers(-40, 41, shape) * (s / 2)
        x[:, ::block] = rng.choice([8.0, -8.0, 16.0, -16.0, 127.0, -127.0, 15.0, 31.0]) * s
    elif kind == "ternary":
        x = rng.integers(-1, 2, shape) * rng.uniform(0.01, 10)
    elif kind == "ties":
        s = 2.0 ** rng.integers(-20, 20)
        x = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0, 0.25, -0.75], shape) * s
        x[:, ::block] = s
    elif kind == "positive":
        x = np.abs(rng.standard_normal(shape)) + rng.uniform(0, 10)
    elif kind == "sparse":
        x = rng.standard_normal(shape) * (rng.random(shape) < 0.1)
    elif kind == "mixed_scales":
        x = rng.standard_normal(shape)
        x = x * 10.0 ** rng.uniform(-20, 20, (nrows, n // block, 1)).repeat(block, 2).reshape(shape)
    elif kind == "uniform_bits":
        bits = rng.integers(0, 2**32, shape, dtype=np.uint64).astype(np.uint32)
        x = bits.view(np.float32)
        x = np.where(np.isfinite(x), x, np.float32(0))
    else:
        raise ValueError(kind)
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(x, dtype=np.float32)


@st.composite
def seeded_rows(draw, kinds, block, max_rows=3, max_blocks=4, finite=True):
    """:func:`make_rows` of a drawn kind, seed and shape (1 … ``max_rows`` rows of 1 … ``max_blocks`` blocks)."""
    nrows = draw(st.integers(1, max_rows))
    nblocks = draw(st.integers(1, max_blocks))
    kind = draw(st.sampled_from(kinds))
    seed = draw(st.integers(0, 2**32 - 1))
    return make_rows(kind, seed, nrows, nblocks * block, block, finite)


@st.composite
def finite_arrays(draw, block, max_rows=2, max_blocks=3):
    """Arbitrary finite float32 values chosen by hypothesis (which likes 0, ±min, ±max, subnormals, integers)."""
    shape = (draw(st.integers(1, max_rows)), draw(st.integers(1, max_blocks)) * block)
    return draw(arrays(np.float32, shape, elements=st.floats(width=32, allow_nan=False, allow_infinity=False)))


@st.composite
def float_bits(draw, block, max_rows=2, max_blocks=3, sprinkled=False):
    """Arbitrary float32 bit patterns — NaN with any payload and sign, ±inf, subnormals, :data:`SPECIAL_BITS` and
    ordinary numbers mixed — in rows of 1 … ``max_blocks`` blocks.

    ``sprinkled=True``: a background of ordinary Gaussian numbers (on a drawn scale) with 1 … 12 of its elements
    replaced by such bit patterns, for encoders where one odd value per block is the interesting case.
    """
    shape = (draw(st.integers(1, max_rows)), draw(st.integers(1, max_blocks)) * block)
    special = st.sampled_from(SPECIAL_BITS)
    if not sprinkled:
        ordinary = st.floats(width=32).map(lambda f: int(np.float32(f).view(np.uint32)))
        bits = draw(arrays(np.uint32, shape, elements=st.one_of(ordinary, special, st.integers(0, 2**32 - 1))))
        return bits.view(np.float32)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = (rng.standard_normal(shape) * 10.0 ** draw(st.integers(-40, 30))).astype(np.float32)
    k = draw(st.integers(1, 12))
    bits = draw(arrays(np.uint32, k, elements=st.one_of(special, st.integers(0, 2**32 - 1))))
    flat = x.reshape(-1)
    flat[draw(arrays(np.int64, k, elements=st.integers(0, flat.size - 1)))] = bits.view(np.float32)
    return x


@st.composite
def block_bytes(draw, qtype, max_rows=3, max_blocks=6, uniform=False):
    """Arbitrary bytes shaped as rows of ``qtype`` blocks, and the number of elements per row.

    ``uniform=True``: half of the examples are uniformly random bytes instead (hypothesis shrinks bytes towards 0).
    """
    block, size = TYPE_SIZES[GGMLType[qtype]]
    nrows = draw(st.integers(1, max_rows))
    nb = draw(st.integers(1, max_blocks))
    shape = (nrows, nb * size)
    if uniform and draw(st.booleans()):
        raw = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, 256, shape, dtype=np.uint8)
    else:
        raw = draw(arrays(np.uint8, shape))
    return raw, nb * block
