"""``refllm golden quant``: known-answer vectors for ggml's block formats — float rows, the bytes ggml encodes them
into, and the floats those bytes decode to — for every type refllm encodes.

Each type gets the same rows: the edge cases (:data:`EDGE_ROWS`) and then ``rows`` seeded Gaussian rows.  Tensors,
per type ``T``::

    T.input    F32 [R, C]          the floats
    T.encoded  U8  [R, row_bytes]  ggml_quantize_chunk(T, input, imatrix) (Q8_1, Q8_K: quantize_row_*_ref)
    T.decoded  F32 [R, C]          dequantize(encoded) (ggml's to_float / dequantize_row_*)
    T.imatrix  F32 [C]             the importance matrix given to the encoder (only for types that use one)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import __version__, quants
from ..errors import RefllmError
from ..ggml_types import TYPE_SIZES, GGMLType, ggml_type, row_bytes
from ..quants import FORMATS, Imatrix
from .format import check_output_dir, write_golden
from .model import environment, reference_info

EDGE_ROWS = {
    "zeros": "all 0",
    "constant": "all 0.75",
    "outlier": "N(0, 0.01²) with one element (column C/3) set to 100",
    "subnormal": "N(0, (1e-39)²): float32 subnormals",
    "huge": "N(0, (1e30)²): scales overflow float16",
}

QUANT_TENSORS = {
    "input": (["row", "C"], "the float32 rows handed to the encoder"),
    "encoded": (["row", "row_bytes"], "ggml's blocks for each row, as stored in a GGUF tensor"),
    "decoded": (["row", "C"], "the encoded rows decoded back to float32"),
    "imatrix": (["C"], "the importance matrix (quant_weights of ggml_quantize_chunk)"),
}


def encodable_types() -> list[GGMLType]:
    return [t for t, f in FORMATS.items() if f.quantize is not None]


def parse_types(spec: str) -> list[GGMLType]:
    """``"all"`` or a comma list of type names (``Q4_K,q8_0``)."""
    if spec.strip().lower() == "all":
        return encodable_types()
    types = []
    for name in spec.split(","):
        try:
            qtype = ggml_type(name.strip())
        except ValueError as e:
            raise RefllmError(f"--type: {e}") from None
        if qtype not in encodable_types():
            raise RefllmError(f"--type {qtype.name}: refllm does not encode it (encodable: "
                              f"{', '.join(t.name for t in encodable_types())})")
        types.append(qtype)
    return types


def input_rows(n_rows: int, n_cols: int, seed: int) -> tuple[list[str], np.ndarray]:
    """The row labels and float32 rows [len(EDGE_ROWS) + n_rows, n_cols]: the edge rows, then Gaussian rows."""
    rng = np.random.default_rng(seed)
    outlier = rng.normal(0, 0.01, n_cols)
    outlier[n_cols // 3] = 100.0
    rows = [np.zeros(n_cols), np.full(n_cols, 0.75), outlier, rng.normal(0, 1e-39, n_cols),
            rng.normal(0, 1e30, n_cols)]
    rows += list(rng.standard_normal((n_rows, n_cols)))
    labels = list(EDGE_ROWS) + [f"gaussian-{i}" for i in range(n_rows)]
    return labels, np.array(rows, dtype=np.float32)


def make_imatrix(n_cols: int, seed: int) -> np.ndarray:
    """A seeded importance matrix: mean squared activations, so positive and spread over two decades."""
    rng = np.random.default_rng([seed, 1])
    return (rng.lognormal(0.0, 1.0, n_cols) ** 2).astype(np.float32)


def golden_quant(types: list[GGMLType], out: str | os.PathLike, *, n_rows: int = 8, n_cols: int = 256,
                 seed: int = 0, imatrix: bool = False, log=print) -> dict:
    """Write the known-answer vectors of ``types`` into the directory ``out``; return the manifest.

    ``imatrix``: encode with an importance matrix every type whose ggml encoder uses one (types that require one
    always get it; the types whose encoder ignores it are encoded without).
    """
    check_output_dir(out)
    if n_rows < 0 or n_cols <= 0:
        raise RefllmError(f"--rows {n_rows} --cols {n_cols}: need rows >= 0 and cols > 0")
    for qtype in types:
        block = TYPE_SIZES[qtype].block_size
        if n_cols % block:
            raise RefllmError(f"--cols {n_cols} is not a multiple of {qtype.name}'s block size {block}")
    labels, x = input_rows(n_rows, n_cols, seed)
    weights = make_imatrix(n_cols, seed)
    tensors: dict[str, np.ndarray] = {}
    entries = []
    for qtype in types:
        fmt = FORMATS[qtype]
        use = fmt.imatrix == Imatrix.REQUIRED or (imatrix and fmt.imatrix == Imatrix.OPTIONAL)
        encoded = quants.quantize(x, qtype, imatrix=weights if use else None)
        tensors[f"{qtype.name}.input"] = x
        tensors[f"{qtype.name}.encoded"] = encoded
        tensors[f"{qtype.name}.decoded"] = quants.dequantize(encoded, qtype)
        if use:
            tensors[f"{qtype.name}.imatrix"] = weights
        block_size, type_size = TYPE_SIZES[qtype]
        ignored = imatrix and fmt.imatrix == Imatrix.IGNORED
        row_ref = f"quantize_row_{qtype.name.lower().replace('_k', '_K')}_ref"  # not in ggml_quantize_chunk
        entries.append({"type": qtype.name, "ggml_type_id": int(qtype), "block_size": block_size,
                        "type_size": type_size, "row_bytes": row_bytes(qtype, n_cols),
                        "imatrix": "used" if use else "ignored by ggml" if ignored else None,
                        "encoder": row_ref if qtype in (GGMLType.Q8_1, GGMLType.Q8_K) else "ggml_quantize_chunk"})
        log(f"golden quant: {qtype.name:7s} {len(labels)} rows x {n_cols} -> {encoded.shape[1]} bytes/row"
            f"{' (imatrix)' if use else ''}")
    manifest = {
        "kind": "quant",
        "refllm_version": __version__,
        "settings": {"rows": n_rows, "cols": n_cols, "seed": seed, "imatrix": bool(imatrix)},
        "rows": labels,
        "edge_rows": EDGE_ROWS,
        "types": entries,
        "environment": environment(),
        "reference": reference_info(),
        "tensors": [{"name": name, "dtype": "U8" if a.dtype == np.uint8 else "F32", "shape": list(a.shape),
                     "type": name.split(".")[0], "axes": QUANT_TENSORS[name.split(".")[1]][0],
                     "holds": QUANT_TENSORS[name.split(".")[1]][1]} for name, a in tensors.items()],
    }
    write_golden(out, manifest, tensors)
    log(f"golden quant: wrote {len(tensors)} tensors for {len(types)} types to {Path(out)}")
    return manifest
