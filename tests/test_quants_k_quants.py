"""The K-quants (refllm.quants.k_quants) against ggml, byte for byte and bit for bit.

* Encoders: ``quantize(x, T)`` == ``ggml_quantize_chunk(T, x)`` (``quantize_row_qX_K_ref``) and, with an importance
  matrix, == ``ggml_quantize_chunk(T, x, imatrix)`` (``quantize_row_qX_K_impl`` per row).  Q8_K is not in ggml's
  ``type_traits``: it is compared with ``quantize_row_q8_K_ref`` / ``dequantize_row_q8_K`` by symbol.
* The inputs cover the whole finite float32 range: ggml's arithmetic for huge values overflows (x² → inf, then
  inf - inf = NaN, nearest_int of those), which is deterministic IEEE arithmetic and reproduced exactly.
* NaN and ±inf have no meaningful encoding (ggml's nearest_int is undefined for them): refllm raises QuantError.
* Decoders: arbitrary bytes, including fp16 NaN/inf scales, decode to ggml's float32 bits (NaN payloads included).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from quant_strategies import PLAIN_PYTHON, assert_same_bits, assert_same_bytes, block_bytes, finite_arrays
from refllm import jit
from refllm.ggml_types import TYPE_SIZES, GGMLType
from refllm.quants import QuantError, dequantize, quantize
from refllm.quants import k_quants as kq
from refllm.quants import search

pytestmark = pytest.mark.reference

WEIGHT_TYPES = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
ALL_TYPES = WEIGHT_TYPES + ["Q8_K"]
QK_K = 256
# plain-Python runs (NUMBA_DISABLE_JIT=1) are ~1000x slower: fewer examples there
EXAMPLES = 15 if PLAIN_PYTHON else 120
FMAX = float(np.finfo(np.float32).max)

ROW_KINDS = ["gaussian", "student_t", "cauchy", "constant", "zeros", "outlier", "subnormal", "huge", "mixed_blocks",
             "few_values", "positive", "sparse", "ramp"]


def make_rows(kind: str, nrows: int, n: int, seed: int, scale_exp: int) -> np.ndarray:
    """Float32 rows of one of the ROW_KINDS, scaled by 10**scale_exp where that makes sense."""
    rng = np.random.default_rng(seed)
    s = 10.0 ** scale_exp
    with np.errstate(over="ignore"):
        if kind == "gaussian":
            x = rng.standard_normal((nrows, n)) * s
        elif kind == "student_t":
            x = rng.standard_t(rng.integers(1, 5), (nrows, n)) * s
        elif kind == "cauchy":
            x = rng.standard_cauchy((nrows, n)) * s
        elif kind == "constant":
            x = np.full((nrows, n), rng.standard_normal() * s)
        elif kind == "zeros":
            x = np.zeros((nrows, n))
            if rng.random() < 0.5:
                x = -x  # -0.0
        elif kind == "outlier":
            x = rng.standard_normal((nrows, n)) * 1e-3 * s
            for r in range(nrows):
                x[r, rng.integers(n)] = rng.choice([-1, 1]) * s * 10.0 ** rng.uniform(0, 6)
        elif kind == "subnormal":
            x = rng.integers(-(2**23), 2**23, (nrows, n)).astype(np.int32)
            x = (x.astype(np.uint32) & 0x807FFFFF).view(np.float32).astype(np.float64)
        elif kind == "huge":
            x = rng.standard_normal((nrows, n)) * 10.0 ** rng.uniform(15, 38.5)
            x = np.clip(x, -FMAX, FMAX)
            if rng.random() < 0.5:
                x[:, rng.integers(n)] = rng.choice([-FMAX, FMAX])
        elif kind == "mixed_blocks":  # sub-blocks of very different magnitude, some all zero
            x = rng.standard_normal((nrows, n))
            sub = 16 * rng.integers(1, 3)
            mags = 10.0 ** rng.uniform(-8, 8, (nrows, n // sub))
            mags[rng.random(mags.shape) < 0.3] = 0.0
            x = x * np.repeat(mags, sub, axis=1) * s
        elif kind == "few_values":
            x = rng.choice(rng.standard_normal(rng.integers(1, 4)) * s, (nrows, n))
        elif kind == "positive":
            x = np.abs(rng.standard_normal((nrows, n))) * s + rng.uniform(0, 3) * s
        elif kind == "sparse":
            x = rng.standard_normal((nrows, n)) * s
            x[rng.random((nrows, n)) < 0.9] = 0.0
        elif kind == "ramp":
            x = np.tile(np.linspace(-1, 1, n), (nrows, 1)) * s
        else:
            raise AssertionError(kind)
        x = np.clip(x, -FMAX, FMAX).astype(np.float32)
    assert np.isfinite(x).all()
    return x


IMATRIX_KINDS = ["uniform", "squares", "with_zeros", "all_zero", "one_hot", "wide_range", "subnormal"]


def make_imatrix(kind: str, n: int, seed: int) -> np.ndarray:
    """A finite, non-negative importance matrix (llama-quantize's are mean squared activations)."""
    rng = np.random.default_rng(seed + 1)
    if kind == "uniform":
        w = rng.uniform(0, 10, n)
    elif kind == "squares":
        w = rng.standard_normal(n) ** 2
    elif kind == "with_zeros":
        w = rng.uniform(0, 2, n) * (rng.random(n) < 0.5)
    elif kind == "all_zero":
        w = np.zeros(n)
    elif kind == "one_hot":
        w = np.zeros(n)
        w[rng.integers(n)] = 1.0
    elif kind == "wide_range":
        w = 10.0 ** rng.uniform(-20, 20, n)
    elif kind == "subnormal":
        w = rng.integers(0, 2**23, n).astype(np.uint32).view(np.float32).astype(np.float64)
    else:
        raise AssertionError(kind)
    return w.astype(np.float32)


def ggml_encode(ggml, x, qtype, imatrix=None):
    if qtype == "Q8_K":
        return ggml.quantize_row_ref(x, "Q8_K")
    return ggml.quantize_chunk(x, qtype, imatrix=imatrix)


def ggml_decode(ggml, q, qtype, n):
    if qtype == "Q8_K":
        return ggml.dequantize_row(q, "Q8_K", n)
    return ggml.to_float(q, qtype, n)


rows_shape = st.tuples(st.integers(1, 3), st.integers(1, 3))  # (nrows, super-blocks per row)


# -- encoders ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", ALL_TYPES)
@settings(max_examples=EXAMPLES)
@given(kind=st.sampled_from(ROW_KINDS), shape=rows_shape, seed=st.integers(0, 2**32 - 1),
       scale_exp=st.integers(-38, 30))
def test_encode_matches_ggml(ggml, qtype, kind, shape, seed, scale_exp):
    nrows, nb = shape
    x = make_rows(kind, nrows, nb * QK_K, seed, scale_exp)
    ours = quantize(x, qtype)
    assert_same_bytes(ours, ggml_encode(ggml, x, qtype), f"{qtype} {kind}")
    # and the round trip decodes like ggml
    assert_same_bits(dequantize(ours, qtype), ggml_decode(ggml, ours, qtype, nb * QK_K), f"{qtype} decode")


@pytest.mark.parametrize("qtype", WEIGHT_TYPES)
@settings(max_examples=EXAMPLES)
@given(kind=st.sampled_from(ROW_KINDS), wkind=st.sampled_from(IMATRIX_KINDS), shape=rows_shape,
       seed=st.integers(0, 2**32 - 1), scale_exp=st.integers(-38, 30))
def test_encode_with_imatrix_matches_ggml(ggml, qtype, kind, wkind, shape, seed, scale_exp):
    nrows, nb = shape
    n = nb * QK_K
    x = make_rows(kind, nrows, n, seed, scale_exp)
    w = make_imatrix(wkind, n, seed)
    assert_same_bytes(quantize(x, qtype, imatrix=w), ggml_encode(ggml, x, qtype, imatrix=w),
                      f"{qtype} {kind} imatrix={wkind}")


@pytest.mark.parametrize("qtype", ALL_TYPES)
@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_encode_arbitrary_floats_matches_ggml(ggml, qtype, data):
    """Hypothesis' own float32 values (it favours 0, ±min subnormal, ±max, powers of two, ...)."""
    x = data.draw(finite_arrays(QK_K, max_rows=2, max_blocks=1))
    w = None
    if qtype != "Q8_K" and data.draw(st.booleans()):
        w = data.draw(arrays(np.float32, QK_K, elements=st.floats(0, FMAX, width=32)))
    assert_same_bytes(quantize(x, qtype, imatrix=w), ggml_encode(ggml, x, qtype, imatrix=w), qtype)


@pytest.mark.parametrize("qtype", ALL_TYPES)
def test_encode_edge_rows(ggml, qtype):
    """Hand-picked rows: every element the same, ties, a lone extreme, sub-blocks of zeros, float32 extremes."""
    tiny = np.float32(1e-45)
    rows = [
        np.zeros(QK_K),
        np.full(QK_K, -0.0),
        np.full(QK_K, 1.0),
        np.full(QK_K, -7.25),
        np.full(QK_K, tiny),
        np.full(QK_K, FMAX),
        np.full(QK_K, -FMAX),
        np.where(np.arange(QK_K) % 2, FMAX, -FMAX),
        np.where(np.arange(QK_K) == 17, 1.0, 0.0),
        np.where(np.arange(QK_K) == 17, -FMAX, 0.0),
        np.where(np.arange(QK_K) == 200, 1e-40, 0.0),
        np.where(np.arange(QK_K) < 16, 3.0, 0.0),  # one non-zero sub-block of 16
        np.where(np.arange(QK_K) >= 224, -2.0, 1e-20),  # last sub-block of 32 dominates
        np.where(np.arange(QK_K) % 3 == 0, -1.0, 1.0),  # ties between +max and -max
        np.tile([1.0, -1.0, 0.5, -0.5], QK_K // 4),
        np.arange(QK_K) - 127.5,
        (np.arange(QK_K) % 16) * 1e-38,
        np.full(QK_K, 1e-15),  # at GROUP_MAX_EPS
        np.full(QK_K, 9.9e-16),  # just below it
        np.full(QK_K, 4194304.0),  # beyond nearest_int's range
    ]
    x = np.array(rows, dtype=np.float32)
    assert_same_bytes(quantize(x, qtype), ggml_encode(ggml, x, qtype), qtype)
    if qtype != "Q8_K":
        for w in (np.ones(QK_K, np.float32), np.zeros(QK_K, np.float32), np.full(QK_K, FMAX, np.float32),
                  np.full(QK_K, -0.0, np.float32)):
            assert_same_bytes(quantize(x, qtype, imatrix=w), ggml_encode(ggml, x, qtype, imatrix=w),
                              f"{qtype} imatrix {w[0]}")


@pytest.mark.parametrize("qtype", ALL_TYPES)
def test_encode_gaussian_matrix_and_thread_count(ggml, qtype):
    """A realistic weight matrix (64 x 2048); the bytes do not depend on the number of threads."""
    rng = np.random.default_rng(7)
    nrows, n = (4, 512) if PLAIN_PYTHON else (64, 2048)
    x = (rng.standard_normal((nrows, n)) * 0.02).astype(np.float32)
    w = (rng.standard_normal(n) ** 2).astype(np.float32)
    expected = ggml_encode(ggml, x, qtype)
    threads = jit.num_threads()
    try:
        for t in (1, 2):
            jit.set_num_threads(t)
            assert_same_bytes(quantize(x, qtype), expected, f"{qtype} threads={t}")
    finally:
        jit.set_num_threads(threads)
    if qtype != "Q8_K":
        assert_same_bytes(quantize(x, qtype, imatrix=w), ggml_encode(ggml, x, qtype, imatrix=w), qtype)


@pytest.mark.parametrize("qtype", ALL_TYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_encode_rejects_nan_and_inf(qtype, bad):
    """ggml's nearest_int is undefined for NaN/±inf (and its encoders give garbage): refllm refuses them."""
    x = np.zeros((2, QK_K), np.float32)
    x[1, 100] = bad
    with pytest.raises(QuantError, match="NaN"):
        quantize(x, qtype)


def test_imatrix_rules():
    x = np.zeros((1, QK_K), np.float32)
    w = np.ones(QK_K, np.float32)
    with pytest.raises(QuantError, match="no importance matrix"):
        quantize(x, "Q8_K", imatrix=w)  # ggml_quantize_chunk has no Q8_K path at all
    for qtype in WEIGHT_TYPES:
        with pytest.raises(QuantError, match="shape"):
            quantize(x, qtype, imatrix=w[:128])
        with pytest.raises(QuantError, match="non-negative"):
            quantize(x, qtype, imatrix=-w)


@pytest.mark.parametrize("qtype", ALL_TYPES)
def test_shapes(ggml, qtype):
    block_size, type_size = TYPE_SIZES[GGMLType[qtype]]
    x = np.random.default_rng(3).standard_normal((2, 3, 2 * block_size)).astype(np.float32)
    q = quantize(x, qtype)
    assert q.shape == (2, 3, 2 * type_size) and q.dtype == np.uint8
    assert_same_bytes(q.reshape(6, -1), ggml_encode(ggml, x.reshape(6, -1), qtype), qtype)
    assert dequantize(q, qtype).shape == x.shape
    assert quantize(np.zeros((0, block_size), np.float32), qtype).shape == (0, type_size)
    assert dequantize(np.zeros((0, type_size), np.uint8), qtype).shape == (0, block_size)
    with pytest.raises(QuantError):
        quantize(np.zeros(block_size + 32, np.float32), qtype)
    with pytest.raises(QuantError):
        dequantize(np.zeros(type_size + 1, np.uint8), qtype)


# -- decoders ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", ALL_TYPES)
@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_decode_arbitrary_bytes_matches_ggml(ggml, qtype, data):
    q, n = data.draw(block_bytes(qtype, max_blocks=3))
    assert_same_bits(dequantize(q, qtype), ggml_decode(ggml, q, qtype, n), qtype)


# where each format keeps its float scales: (offset, size) inside the block
SCALE_FIELDS = {"Q2_K": [(80, 2), (82, 2)], "Q3_K": [(108, 2)], "Q4_K": [(0, 2), (2, 2)], "Q5_K": [(0, 2), (2, 2)],
                "Q6_K": [(208, 2)], "Q8_K": [(0, 4)]}


@pytest.mark.parametrize("qtype", ALL_TYPES)
def test_decode_special_scales(ggml, qtype):
    """Random payloads under NaN (quiet and signalling, both signs), ±inf, ±0, subnormal and max scales."""
    type_size = TYPE_SIZES[GGMLType[qtype]].type_size
    rng = np.random.default_rng(11)
    fp16 = [0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7C01, 0xFD55, 0x7FFF, 0x0000, 0x8000, 0x0001, 0x83FF, 0x7BFF, 0x3C00]
    fp32 = [0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFBFFFFF, 0x00000001, 0x80000000,
            0x7F7FFFFF, 0x3F800000]
    specials = fp32 if qtype == "Q8_K" else fp16
    blocks = []
    for field_values in [(v, w) for v in specials for w in specials[:4] + specials[-2:]]:
        b = rng.integers(0, 256, type_size, dtype=np.uint8)
        for (off, size), v in zip(SCALE_FIELDS[qtype], field_values):
            b[off:off + size] = np.frombuffer(np.array(v, f"<u{size}").tobytes(), np.uint8)
        blocks.append(b)
    q = np.concatenate(blocks).reshape(-1, 2 * type_size)  # rows of two blocks
    assert_same_bits(dequantize(q, qtype), ggml_decode(ggml, q, qtype, 2 * QK_K), qtype)


# -- helpers -------------------------------------------------------------------------------------------------------


@settings(max_examples=50)
@given(ls=arrays(np.int64, 8, elements=st.integers(0, 63)), lm=arrays(np.int64, 8, elements=st.integers(0, 63)))
def test_scale_min_k4_round_trip(ls, lm):
    q = np.zeros(12, np.uint8)
    for j in range(8):
        kq.set_scale_min_k4(j, q, ls[j], lm[j])
    for j in range(8):
        assert tuple(kq.get_scale_min_k4(j, q)) == (ls[j], lm[j])


@settings(max_examples=50)
@given(x=arrays(np.float32, 16, elements=st.floats(-100, 100, width=32)))
def test_make_qx_quants_levels_in_range(x):
    """The levels of the symmetric search stay in [0, 2*nmax) and reconstruct x's sign pattern sensibly."""
    L = np.zeros(16, np.int8)
    scale = search.make_qx_quants(16, 32, x, L, 1, np.empty(0, np.float32))
    assert ((L >= 0) & (L < 64)).all()
    if np.abs(x).max() < 1e-15:
        assert scale == 0 and (L == 0).all()
