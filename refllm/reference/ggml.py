"""ggml's own quantizers and type traits, called through ctypes on the reference build's ``libggml-base.so``.

This is what refllm's block formats are compared with, byte for byte:

* :func:`quantize_chunk` — ``ggml_quantize_chunk(type, src, dst, start, nrows, n_per_row, imatrix)``, the entry point
  llama-quantize uses (it picks the importance-matrix path or the ``_ref`` row quantizer as ggml does);
* :func:`to_float` — ``type_traits[type].to_float``, ggml's dequantizer;
* :func:`from_float_ref` — ``type_traits[type].from_float_ref``, the plain reference row quantizer;
* :func:`type_traits` — block size, type size and name as ggml reports them.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from ..ggml_types import GGMLType, ggml_type
from .build import ensure_reference

_to_float_t = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
_from_float_t = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class _TypeTraits(ctypes.Structure):
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


@functools.cache
def library() -> ctypes.CDLL:
    """``libggml-base.so`` of the reference build (built on first use)."""
    lib = ctypes.CDLL(str(ensure_reference().libggml_base))
    lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    return lib


def type_traits(qtype) -> dict:
    t = library().ggml_get_type_traits(int(ggml_type(qtype))).contents
    return {
        "name": t.type_name.decode(),
        "block_size": t.blck_size,
        "type_size": t.type_size,
        "is_quantized": t.is_quantized,
        "has_to_float": bool(t.to_float),
        "has_from_float_ref": bool(t.from_float_ref),
    }


def requires_imatrix(qtype) -> bool:
    return library().ggml_quantize_requires_imatrix(int(ggml_type(qtype)))


def row_size(qtype, n_per_row: int) -> int:
    return library().ggml_row_size(int(ggml_type(qtype)), n_per_row)


def _as_rows(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x.reshape(1, -1) if x.ndim == 1 else x.reshape(-1, x.shape[-1])


def quantize_chunk(x: np.ndarray, qtype, imatrix: np.ndarray | None = None, out: np.ndarray | None = None):
    """ggml's bytes for the float32 rows ``x`` (shape ``[..., n_per_row]``): uint8 ``[..., row_bytes]``.

    ``out`` (uint8 ``[nrows, row_bytes]``, C-contiguous) is filled instead of a new array when given.
    """
    qtype = ggml_type(qtype)
    rows = _as_rows(x)
    nrows, n_per_row = rows.shape
    rb = row_size(qtype, n_per_row)
    if out is None:
        out = np.zeros((nrows, rb), np.uint8)
    qw = None
    if imatrix is not None:
        imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
        assert imatrix.shape == (n_per_row,)
        qw = imatrix.ctypes.data
    written = library().ggml_quantize_chunk(int(qtype), rows.ctypes.data, out.ctypes.data, 0, nrows, n_per_row, qw)
    assert written == out.nbytes, (written, out.nbytes)
    return out.reshape(*np.shape(x)[:-1], rb)


def to_float(data: np.ndarray, qtype, n_per_row: int, out: np.ndarray | None = None) -> np.ndarray:
    """ggml's dequantization of uint8 rows ``data`` (``[..., row_bytes]``) into float32 ``[..., n_per_row]``.

    ``out`` (float32 ``[nrows, n_per_row]``, C-contiguous) is filled instead of a new array when given.
    """
    qtype = ggml_type(qtype)
    traits = library().ggml_get_type_traits(int(qtype)).contents
    if not traits.to_float:
        raise ValueError(f"ggml has no to_float for {qtype.name}")
    raw = np.ascontiguousarray(data, dtype=np.uint8)
    nrows = raw.size // row_size(qtype, n_per_row)
    if out is None:
        out = np.empty((nrows, n_per_row), np.float32)
    _to_float_t(traits.to_float)(raw.ctypes.data, out.ctypes.data, nrows * n_per_row)
    return out.reshape(*np.shape(data)[:-1], n_per_row)


def from_float_ref(x: np.ndarray, qtype) -> np.ndarray:
    """ggml's reference row quantizer (``type_traits[type].from_float_ref``) on float32 rows."""
    qtype = ggml_type(qtype)
    traits = library().ggml_get_type_traits(int(qtype)).contents
    if not traits.from_float_ref:
        raise ValueError(f"ggml has no from_float_ref for {qtype.name}")
    rows = _as_rows(x)
    nrows, n_per_row = rows.shape
    rb = row_size(qtype, n_per_row)
    out = np.zeros((nrows, rb), np.uint8)
    _from_float_t(traits.from_float_ref)(rows.ctypes.data, out.ctypes.data, nrows * n_per_row)
    return out.reshape(*np.shape(x)[:-1], rb)


def _symbol(prefix: str, qtype: GGMLType, suffix: str = ""):
    name = f"{prefix}{qtype.name.lower().replace('_k', '_K')}{suffix}"
    try:
        fn = getattr(library(), name)
    except AttributeError:
        raise ValueError(f"libggml-base has no {name}") from None
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    return fn


def quantize_row_ref(x: np.ndarray, qtype) -> np.ndarray:
    """ggml's ``quantize_row_<type>_ref`` by symbol name (also for types outside ``type_traits``, e.g. Q8_K, Q8_1)."""
    qtype = ggml_type(qtype)
    rows = _as_rows(x)
    nrows, n_per_row = rows.shape
    rb = row_size(qtype, n_per_row)
    out = np.zeros((nrows, rb), np.uint8)
    _symbol("quantize_row_", qtype, "_ref")(rows.ctypes.data, out.ctypes.data, rows.size)
    return out.reshape(*np.shape(x)[:-1], rb)


def dequantize_row(data: np.ndarray, qtype, n_per_row: int) -> np.ndarray:
    """ggml's ``dequantize_row_<type>`` by symbol name (also for Q8_K)."""
    qtype = ggml_type(qtype)
    raw = np.ascontiguousarray(data, dtype=np.uint8)
    nrows = raw.size // row_size(qtype, n_per_row)
    out = np.empty((nrows, n_per_row), np.float32)
    _symbol("dequantize_row_", qtype)(raw.ctypes.data, out.ctypes.data, nrows * n_per_row)
    return out.reshape(*np.shape(data)[:-1], n_per_row)


__all__ = ["quantize_row_ref", "dequantize_row", "GGMLType", "library", "type_traits", "requires_imatrix", "row_size", "quantize_chunk", "to_float",
           "from_float_ref"]
