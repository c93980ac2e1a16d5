"""Every ggml block format, encoded and decoded exactly as ggml does — the gguf-py-compatible entry points.

>>> from refllm import quants
>>> q = quants.quantize(x, "Q4_K")             # float32 [..., n] -> uint8 [..., row_bytes]
>>> y = quants.dequantize(q, "Q4_K")           # uint8 [..., row_bytes] -> float32 [..., n]

``qtype`` is a :class:`~refllm.ggml_types.GGMLType`, a ``gguf.GGMLQuantizationType``, an id or a name.
Validation happens here, in plain Python; the kernels in the family modules assume valid input.
"""

from __future__ import annotations

import numpy as np

from ..errors import RefllmError
from ..ggml_types import TYPE_SIZES, GGMLType, ggml_type, row_bytes
from . import floats, fp4, i_quants, k_quants, legacy, low_bit, ternary
from .registry import BlockFormat, Imatrix

FORMATS: dict[GGMLType, BlockFormat] = {
    f.qtype: f for module in (floats, legacy, k_quants, ternary, fp4, low_bit, i_quants) for f in module.FORMATS
}

__all__ = ["quantize", "dequantize", "FORMATS", "BlockFormat", "Imatrix", "QuantError", "can_quantize",
           "can_dequantize"]


class QuantError(RefllmError, ValueError):
    """Input that a block format cannot take: wrong dtype or row length, a missing or misshapen imatrix, ..."""


def _format(qtype) -> BlockFormat:
    try:
        qtype = ggml_type(qtype)
    except ValueError as e:
        raise QuantError(str(e)) from None
    fmt = FORMATS.get(qtype)
    if fmt is None:
        raise QuantError(f"refllm has no block format for {qtype.name}")
    return fmt


def can_quantize(qtype) -> bool:
    fmt = FORMATS.get(ggml_type(qtype))
    return fmt is not None and fmt.quantize is not None


def can_dequantize(qtype) -> bool:
    fmt = FORMATS.get(ggml_type(qtype))
    return fmt is not None and fmt.dequantize is not None


def quantize(data, qtype, imatrix=None) -> np.ndarray:
    """Encode float rows (``[..., n_per_row]``, n_per_row a multiple of the block size) into ggml blocks.

    ``imatrix`` (``[n_per_row]``, non-negative) is the importance matrix of ``ggml_quantize_chunk``; formats that
    ignore it in ggml ignore it here too.
    """
    fmt = _format(qtype)
    qtype = fmt.qtype
    if fmt.quantize is None:
        raise QuantError(f"refllm does not encode {qtype.name} (decode only)")
    x = np.asarray(data)
    if x.dtype.kind != "f":
        raise QuantError(f"quantize({qtype.name}): expected a float array, got dtype {x.dtype}")
    if x.ndim == 0:
        raise QuantError(f"quantize({qtype.name}): expected an array of rows, got a scalar")
    n = x.shape[-1]
    block_size = TYPE_SIZES[qtype].block_size
    if n % block_size or n == 0:
        raise QuantError(f"quantize({qtype.name}): the row length {n} is not a positive multiple of the "
                         f"block size {block_size}")
    rows = np.ascontiguousarray(x.reshape(-1, n), dtype=np.float32)
    if fmt.finite_only and not np.isfinite(rows).all():
        raise QuantError(f"quantize({qtype.name}): the input holds NaN or ±inf; ggml's {qtype.name} encoder "
                         f"has no defined output for them")
    weights = np.empty(0, np.float32)
    if imatrix is not None and fmt.imatrix != Imatrix.IGNORED:
        if fmt.imatrix == Imatrix.NONE:
            raise QuantError(f"quantize({qtype.name}): this format takes no importance matrix")
        weights = np.ascontiguousarray(imatrix, dtype=np.float32)
        if weights.shape != (n,):
            raise QuantError(f"quantize({qtype.name}): the imatrix has shape {weights.shape}, expected ({n},)")
        if not np.isfinite(weights).all() or (weights < 0).any():
            raise QuantError(f"quantize({qtype.name}): the imatrix must be finite and non-negative")
    elif imatrix is None and fmt.imatrix == Imatrix.REQUIRED:
        raise QuantError(f"quantize({qtype.name}): this format requires an importance matrix")
    out = np.empty((rows.shape[0], row_bytes(qtype, n)), np.uint8)
    if rows.shape[0]:
        fmt.quantize(rows, weights, out)
    return out.reshape(*x.shape[:-1], out.shape[1])


def dequantize(data, qtype) -> np.ndarray:
    """Decode ggml blocks (uint8 ``[..., row_bytes]``) into float32 ``[..., n_per_row]``."""
    fmt = _format(qtype)
    qtype = fmt.qtype
    if fmt.dequantize is None:
        raise QuantError(f"refllm does not decode {qtype.name}")
    q = np.asarray(data)
    if q.dtype != np.uint8:
        raise QuantError(f"dequantize({qtype.name}): expected uint8 blocks, got dtype {q.dtype}")
    if q.ndim == 0:
        raise QuantError(f"dequantize({qtype.name}): expected an array of rows, got a scalar")
    block_size, type_size = TYPE_SIZES[qtype]
    nbytes = q.shape[-1]
    if nbytes % type_size:
        raise QuantError(f"dequantize({qtype.name}): a row of {nbytes} bytes is not a whole number of "
                         f"{type_size}-byte blocks")
    rows = np.ascontiguousarray(q.reshape(-1, nbytes))
    out = np.empty((rows.shape[0], nbytes // type_size * block_size), np.float32)
    if rows.shape[0]:
        fmt.dequantize(rows, out)
    return out.reshape(*q.shape[:-1], out.shape[1])
