"""Shared by the block-format tests: hypothesis strategies for float rows and raw blocks, and exact comparisons."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from refllm.ggml_types import TYPE_SIZES, GGMLType

FLT_MAX = np.finfo(np.float32).max
TINY = np.float32(2.0**-149)
ALL_KINDS = ("gaussian", "student_t", "cauchy", "constant", "zeros", "outlier", "subnormal", "huge", "halves", "bits",
             "hypothesis")


def assert_same_bytes(ours, theirs):
    assert ours.dtype == np.uint8 and ours.shape == theirs.shape
    bad = np.argwhere(ours != theirs)
    assert bad.size == 0, f"{len(bad)} bytes differ, first at {bad[:5].tolist()}"


def assert_same_bits(ours, theirs):
    """Float arrays equal bit for bit (so NaN payloads and the sign of zero count)."""
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    a, b = ours.view(np.uint32), theirs.view(np.uint32)
    bad = np.argwhere(a != b)
    assert bad.size == 0, (f"{len(bad)} floats differ, first at {bad[:5].tolist()}: "
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


@st.composite
def block_bytes(draw, qtype, max_rows=3, max_blocks=6):
    """Arbitrary bytes shaped as rows of ``qtype`` blocks, and the number of elements per row."""
    block, size = TYPE_SIZES[GGMLType[qtype]]
    nrows = draw(st.integers(1, max_rows))
    nb = draw(st.integers(1, max_blocks))
    return draw(arrays(np.uint8, (nrows, nb * size))), nb * block
