"""Regenerate tests/data/known_answers.npz from the llama.cpp reference build:

    python tests/make_known_answers.py

For every ggml type refllm handles: four rows of 256 inputs (Gaussian, heavy-tailed with an outlier, constant,
zeros), an importance matrix, ggml's encoded bytes without and (where ggml uses one) with the importance matrix,
and ggml's decoding of them; for decode-only types, random blocks and ggml's decoding.  The fast path of the suite
(``pytest -m "not reference"``) checks refllm against this file without building llama.cpp.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from refllm.ggml_types import TYPE_SIZES, GGMLType
from refllm.quants import FORMATS, Imatrix
from refllm.reference import ggml

PATH = Path(__file__).parent / "data" / "known_answers.npz"
N = 256
NOT_IN_CHUNK = (GGMLType.Q8_K, GGMLType.Q8_1)


def inputs(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    heavy = rng.standard_t(2, N)
    heavy[17] = 40.0
    return np.stack([rng.standard_normal(N), heavy, np.full(N, 0.3), np.zeros(N)]).astype(np.float32)


def _encode(x, qtype, imatrix=None):
    if qtype in NOT_IN_CHUNK:
        return ggml.quantize_row_ref(x, qtype)
    return ggml.quantize_chunk(x, qtype, imatrix=imatrix)


def _decode(q, qtype):
    if qtype == GGMLType.Q8_1:
        return None  # ggml has no Q8_1 decoder
    if qtype == GGMLType.F32:
        return q.view(np.float32)  # ggml has no to_float for F32: the bytes are the floats
    if qtype == GGMLType.Q8_K:
        return ggml.dequantize_row(q, qtype, N)
    return ggml.to_float(q, qtype, N)


def main() -> None:
    arrays = {}
    for qtype, fmt in FORMATS.items():
        name = qtype.name
        x = inputs(int(qtype))
        imatrix = np.random.default_rng(1000 + int(qtype)).random(N).astype(np.float32)
        if fmt.quantize is None:
            q = np.random.default_rng(int(qtype)).integers(0, 256, (4, N // TYPE_SIZES[qtype].block_size
                                                                    * TYPE_SIZES[qtype].type_size), dtype=np.uint8)
            arrays[f"{name}/q"] = q
        else:
            arrays[f"{name}/x"] = x
            if fmt.imatrix != Imatrix.REQUIRED:
                arrays[f"{name}/q"] = _encode(x, qtype)
            if fmt.imatrix in (Imatrix.OPTIONAL, Imatrix.REQUIRED):
                arrays[f"{name}/imatrix"] = imatrix
                arrays[f"{name}/q_imatrix"] = _encode(x, qtype, imatrix)
        for key in (f"{name}/q", f"{name}/q_imatrix"):
            if key in arrays and (y := _decode(arrays[key], qtype)) is not None:
                arrays[key.replace("/q", "/y")] = y
    PATH.parent.mkdir(exist_ok=True)
    np.savez_compressed(PATH, **arrays)
    print(f"wrote {PATH} ({PATH.stat().st_size} bytes, {len(FORMATS)} types)")


if __name__ == "__main__":
    main()
