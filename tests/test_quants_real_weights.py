"""Real weights: every tensor of the real Gemma-3-270M Q4_K_M GGUF (made by llama.cpp) is dequantized by refllm
and by ggml (bitwise equal), then rows of every tensor are re-encoded into every type refllm encodes, with and
without an importance matrix — bytes equal to ``ggml_quantize_chunk``'s."""

from __future__ import annotations

import math

import numpy as np
import pytest

from refllm import gguf, quants
from refllm.ggml_types import TYPE_SIZES, GGMLType
from refllm.quants import FORMATS, Imatrix

ROWS_PER_TENSOR = 16
NOT_IN_CHUNK = (GGMLType.Q8_K, GGMLType.Q8_1)


@pytest.fixture(scope="module")
def gemma_weights(gemma3_path, ggml):
    """name -> float32 values of every tensor, decoded by refllm (and checked against ggml on the way)."""
    weights = {}
    with gguf.read(gemma3_path) as f:
        for t in f.tensors:
            raw = t.raw.reshape(t.n_elements // t.shape[0], -1)  # uint8 [rows, row_bytes]
            ours = quants.dequantize(raw, t.type)
            if t.type == GGMLType.F32:  # ggml has no to_float for F32: the bytes are the floats
                theirs = raw.view(np.float32)
            else:
                theirs = ggml.to_float(raw, t.type, t.shape[0])
            assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32)), t.name
            weights[t.name] = (t.shape[0], ours.reshape(-1))
    return weights


def test_every_tensor_decodes_like_ggml(gemma_weights):
    assert len(gemma_weights) == 236


def _rows(ne0: int, flat: np.ndarray, block_size: int) -> np.ndarray | None:
    length = math.lcm(ne0, block_size)
    if flat.size % length:
        length = block_size
    n = min(flat.size // length, ROWS_PER_TENSOR)
    return flat[: n * length].reshape(n, length) if n else None


@pytest.mark.parametrize("qtype", [t for t, f in FORMATS.items() if f.quantize is not None], ids=lambda t: t.name)
def test_reencode_every_tensor(gemma_weights, ggml, qtype):
    fmt = FORMATS[qtype]
    rng = np.random.default_rng(int(qtype))
    for name, (ne0, flat) in gemma_weights.items():
        rows = _rows(ne0, flat, TYPE_SIZES[qtype].block_size)
        if rows is None:
            continue
        imatrices = [None]
        if fmt.imatrix in (Imatrix.OPTIONAL, Imatrix.REQUIRED):
            imatrices = [rng.random(rows.shape[1]).astype(np.float32) * 4, np.square(rows).mean(0)]
            if fmt.imatrix == Imatrix.OPTIONAL:
                imatrices.append(None)
        for imatrix in imatrices:
            ours = quants.quantize(rows, qtype, imatrix=imatrix)
            if qtype in NOT_IN_CHUNK:  # activation formats: ggml_quantize_chunk has no case for them
                theirs = ggml.quantize_row_ref(rows, qtype)
            else:
                theirs = ggml.quantize_chunk(rows, qtype, imatrix=imatrix)
            assert np.array_equal(ours, theirs), (name, qtype.name, imatrix is not None)
