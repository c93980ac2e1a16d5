"""The I-quant decoders (refllm.quants.i_quants) against ggml's to_float, bit for bit, for any bytes.

The grids and sign tables are expanded at import time from gguf-py; these tests are also the proof that the
expansion reproduces ggml's ``iq*_grid`` / ``ksigns_iq2xs`` tables: every grid index and every sign pattern of every
format goes through both decoders (``test_every_grid_point_and_sign``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_strategies import assert_same_bits, block_bytes, float_rows
from refllm import quants
from refllm.ggml_types import TYPE_SIZES, GGMLType
from refllm.quants import Imatrix, QuantError, i_quants

pytestmark = pytest.mark.reference

IQ_TYPES = ["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M", "IQ4_NL", "IQ4_XS"]
NEEDS_IMATRIX = {"IQ2_XXS", "IQ2_XS", "IQ1_S"}


def sizes(qtype):
    return TYPE_SIZES[GGMLType[qtype]]


@pytest.mark.parametrize("qtype", IQ_TYPES)
@settings(max_examples=100)
@given(data=st.data())
def test_decode_arbitrary_bytes(ggml, qtype, data):
    q, n = data.draw(block_bytes(qtype, max_blocks=3 if sizes(qtype).block_size == 256 else 8))
    assert_same_bits(quants.dequantize(q, qtype), ggml.to_float(q, qtype, n))


@pytest.mark.parametrize("qtype", IQ_TYPES)
def test_every_grid_point_and_sign(ggml, qtype):
    """Many random blocks (fixed seed), with ordinary fp16 scales: the test checks that they reach every grid index,
    sign pattern and sub-scale of the format, so the decode comparison covers the whole of each table."""
    block, size = sizes(qtype)
    rng = np.random.default_rng(7)
    nblocks = 8192 if block == 256 else 4096
    q = rng.integers(0, 256, (nblocks, size), dtype=np.uint8)
    if qtype == "IQ1_M":  # the fp16 d is spread over the top nibbles of the scales: make it a normal number
        d = rng.integers(0x2000, 0x5000, nblocks).astype(np.uint16)
        for k in range(4):
            q[:, 49 + 2 * k] = (q[:, 49 + 2 * k] & 0x0F) | (((d >> (4 * k)) & 0xF) << 4).astype(np.uint8)
    else:
        d = rng.integers(0x2000, 0x5000, nblocks).astype(np.uint16)
        q[:, 0] = d & 0xFF
        q[:, 1] = d >> 8
    y = quants.dequantize(q, qtype)
    assert np.isfinite(y).all()
    assert_same_bits(y, ggml.to_float(q, qtype, block))
    seen = _indices(qtype, q)
    for name, (values, count) in seen.items():
        assert len(np.unique(values)) == count, f"{qtype}: only {len(np.unique(values))} of {count} {name} seen"


def _indices(qtype, q):
    """The grid indices and 7-bit sign indices every block of ``q`` uses, decoded with numpy (independently)."""
    u16 = lambda k: q[:, k].astype(np.int64) | (q[:, k + 1].astype(np.int64) << 8)  # noqa: E731
    u32 = lambda k: u16(k) | (u16(k + 2) << 16)  # noqa: E731
    if qtype == "IQ2_XXS":
        grid = q[:, 2:66].reshape(-1, 8, 8)[:, :, :4].ravel()
        aux = np.stack([u32(2 + 8 * ib + 4) for ib in range(8)])
        signs = np.concatenate([(aux >> (7 * l)) & 127 for l in range(4)])
        return {"grid": (grid, 256), "signs": (signs, 128), "scales": (aux >> 28, 16)}
    if qtype == "IQ2_XS":
        qs = np.stack([u16(2 + 2 * k) for k in range(32)])
        return {"grid": (qs & 511, 512), "signs": (qs >> 9, 128), "scales": (q[:, 66:74], 256)}
    if qtype == "IQ2_S":
        idx = [q[:, 2 + 4 * ib + l].astype(np.int64) | ((q[:, 66 + ib].astype(np.int64) << (8 - 2 * l)) & 0x300)
               for ib in range(8) for l in range(4)]
        return {"grid": (np.concatenate(idx), 1024), "signs": (q[:, 34:66], 256), "scales": (q[:, 74:82], 256)}
    if qtype == "IQ3_XXS":
        aux = np.stack([u32(66 + 4 * ib) for ib in range(8)])
        signs = np.concatenate([(aux >> (7 * l)) & 127 for l in range(4)])
        return {"grid": (q[:, 2:66], 256), "signs": (signs, 128), "scales": (aux >> 28, 16)}
    if qtype == "IQ3_S":
        idx = [q[:, 2 + 8 * ib + k].astype(np.int64) | (((q[:, 66 + ib].astype(np.int64) >> k) & 1) << 8)
               for ib in range(8) for k in range(8)]
        return {"grid": (np.concatenate(idx), 512), "signs": (q[:, 74:106], 256), "scales": (q[:, 106:110], 256)}
    if qtype == "IQ1_S":
        qh = np.stack([u16(34 + 2 * ib) for ib in range(8)])
        idx = [q[:, 2 + 4 * ib + l].astype(np.int64) | (((qh[ib] >> (3 * l)) & 7) << 8)
               for ib in range(8) for l in range(4)]
        return {"grid": (np.concatenate(idx), 2048), "scale+delta": (qh >> 12, 16)}
    if qtype == "IQ1_M":
        idx = [q[:, 4 * ib + l].astype(np.int64) | (((q[:, 32 + 2 * ib + l // 2].astype(np.int64)
                                                       >> (4 * (l % 2))) & 7) << 8)
               for ib in range(8) for l in range(4)]
        deltas = q[:, 32:48] & 0x88
        scales = [(u16(48 + 2 * (ib // 2)) >> (6 * (ib % 2) + 3 * k)) & 7 for ib in range(8) for k in range(2)]
        return {"grid": (np.concatenate(idx), 2048), "deltas": (deltas, 4), "scales": (np.concatenate(scales), 8)}
    if qtype == "IQ4_NL":
        return {"levels": (np.concatenate([q[:, 2:] & 15, q[:, 2:] >> 4]), 16)}
    if qtype == "IQ4_XS":
        ls = [((q[:, 4 + ib // 2].astype(np.int64) >> (4 * (ib % 2))) & 0xF) | (((u16(2) >> (2 * ib)) & 3) << 4)
              for ib in range(8)]
        return {"levels": (np.concatenate([q[:, 8:] & 15, q[:, 8:] >> 4]), 16),
                "scales": (np.concatenate(ls), 64)}
    raise AssertionError(qtype)


@pytest.mark.parametrize("qtype", IQ_TYPES)
def test_special_scales(ggml, qtype):
    """fp16 d = every NaN kind, ±inf, ±0, subnormal, max; with zero sub-scales (IQ4_XS: ls - 32 = 0 → inf*0)."""
    block, size = sizes(qtype)
    halves = np.array([0x7C00, 0xFC00, 0x7C01, 0x7DFF, 0x7E00, 0x7FFF, 0xFC01, 0xFE00, 0x0000, 0x8000, 0x0001,
                       0x03FF, 0x7BFF, 0xFBFF, 0x3C00, 0xBC00], np.uint16)
    rng = np.random.default_rng(11)
    q = rng.integers(0, 256, (len(halves) * 2, size), dtype=np.uint8)
    h = np.concatenate([halves, halves])
    if qtype == "IQ1_M":
        for k in range(4):
            q[:, 49 + 2 * k] = (q[:, 49 + 2 * k] & 0x0F) | (((h >> (4 * k)) & 0xF) << 4).astype(np.uint8)
    else:
        q[:, 0] = h & 0xFF
        q[:, 1] = h >> 8
    if qtype == "IQ4_XS":  # second half: every sub-scale ls = 32, so dl = d * 0
        q[len(halves):, 2:4] = 0xAA
        q[len(halves):, 4:8] = 0x00
    assert_same_bits(quants.dequantize(q, qtype), ggml.to_float(q, qtype, block))


def moderate_rows():
    """Finite rows of moderate values for ggml's I-quant encoders (whose output the decoders then read)."""
    return float_rows(256, max_rows=2, max_blocks=2, exponents=(-6, 6), extreme=False,
                      kinds=("gaussian", "student_t", "cauchy", "constant", "zeros", "outlier", "subnormal"))


@pytest.mark.parametrize("qtype", IQ_TYPES)
@settings(max_examples=25)
@given(data=st.data())
def test_decode_what_ggml_encodes(ggml, qtype, data):
    """Real encoder output: quantize with ggml (imatrix where it needs one or, sometimes, random), decode both."""
    x = data.draw(moderate_rows())
    imatrix = None
    if qtype in NEEDS_IMATRIX or data.draw(st.booleans()):
        imatrix = np.random.default_rng(5).random(x.shape[1]).astype(np.float32) + np.float32(0.1)
    q = ggml.quantize_chunk(x, qtype, imatrix=imatrix)
    assert_same_bits(quants.dequantize(q, qtype), ggml.to_float(q, qtype, x.shape[1]))


def test_gaussian_matrix(ggml):
    """A larger Gaussian matrix in every format, several rows (the row loop runs in parallel)."""
    x = np.random.default_rng(0).standard_normal((8, 1024)).astype(np.float32)
    ones = np.ones(1024, np.float32)
    for qtype in IQ_TYPES:
        q = ggml.quantize_chunk(x, qtype, imatrix=ones if qtype in NEEDS_IMATRIX else None)
        y = quants.dequantize(q, qtype)
        assert_same_bits(y, ggml.to_float(q, qtype, 1024))
        assert np.abs(y - x).mean() < 0.7 * np.abs(x).mean(), qtype  # and it does approximate x


def test_formats_are_decode_only_with_ggml_imatrix_rules(ggml):
    for qtype in IQ_TYPES:
        fmt = quants.FORMATS[GGMLType[qtype]]
        assert fmt.quantize is None and fmt.dequantize is not None
        assert (fmt.imatrix == Imatrix.REQUIRED) == ggml.requires_imatrix(qtype)
        assert quants.can_dequantize(qtype) and not quants.can_quantize(qtype)
        with pytest.raises(QuantError, match="decode only"):
            quants.quantize(np.zeros((1, 256), np.float32), qtype)


def test_batch_shape_and_tables():
    q = np.zeros((2, 3, 2 * 66), np.uint8)
    assert quants.dequantize(q, "IQ2_XXS").shape == (2, 3, 512)
    assert i_quants.IQ2XXS_GRID.shape == (256, 8) and set(np.unique(i_quants.IQ2XXS_GRID)) == {8, 25, 43}
    assert i_quants.IQ2XS_GRID.shape == (512, 8) and i_quants.IQ2S_GRID.shape == (1024, 8)
    assert i_quants.IQ3XXS_GRID.shape == (256, 4) and i_quants.IQ3S_GRID.shape == (512, 4)
    assert i_quants.IQ1S_GRID.shape == (2048, 8) and set(np.unique(i_quants.IQ1S_GRID)) == {-1, 0, 1}
    # ksigns_iq2xs: the low 7 bits are the index, bit 7 makes the count of set bits even
    k = i_quants.KSIGNS_IQ2XS.astype(np.int64)
    assert ((k & 127) == np.arange(128)).all()
    assert all(bin(v).count("1") % 2 == 0 for v in k)
