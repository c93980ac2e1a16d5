"""Constants of the GGUF file format (``ggml/include/gguf.h``, ``ggml/src/gguf.cpp``)."""

from __future__ import annotations

import enum

import numpy as np

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # version 1 used 32-bit counts and lengths; refllm does not read it
DEFAULT_ALIGNMENT = 32  # used when the file has no general.alignment
KEY_ALIGNMENT = "general.alignment"
GGML_MAX_DIMS = 4
GGML_MAX_NAME = 64  # a tensor name has at most 63 bytes (ggml keeps it in a char[64] with a terminating 0)
MAX_ARRAY_NESTING = 16  # arrays of arrays: refllm refuses deeper nesting instead of recursing without bound


class ValueType(enum.IntEnum):
    """``enum gguf_type``: the type tag in front of every metadata value."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# Fixed-size value types: their little-endian numpy dtype (a GGUF bool is one byte, 0 or 1).
SCALAR_DTYPES: dict[ValueType, np.dtype] = {
    ValueType.UINT8: np.dtype("<u1"),
    ValueType.INT8: np.dtype("<i1"),
    ValueType.UINT16: np.dtype("<u2"),
    ValueType.INT16: np.dtype("<i2"),
    ValueType.UINT32: np.dtype("<u4"),
    ValueType.INT32: np.dtype("<i4"),
    ValueType.FLOAT32: np.dtype("<f4"),
    ValueType.BOOL: np.dtype("?"),
    ValueType.UINT64: np.dtype("<u8"),
    ValueType.INT64: np.dtype("<i8"),
    ValueType.FLOAT64: np.dtype("<f8"),
}

# struct formats of the same types, for single values.
SCALAR_FORMATS: dict[ValueType, str] = {
    ValueType.UINT8: "<B",
    ValueType.INT8: "<b",
    ValueType.UINT16: "<H",
    ValueType.INT16: "<h",
    ValueType.UINT32: "<I",
    ValueType.INT32: "<i",
    ValueType.FLOAT32: "<f",
    ValueType.BOOL: "<?",
    ValueType.UINT64: "<Q",
    ValueType.INT64: "<q",
    ValueType.FLOAT64: "<d",
}
