"""ggml's tensor types: the ids stored in GGUF files and the size of one block of each.

A ggml tensor row is a sequence of *blocks*.  A block holds ``block_size`` elements in ``type_size`` bytes, so a
row of ``n`` elements takes ``n // block_size * type_size`` bytes and ``n`` must be a multiple of ``block_size``.
Float and integer types are blocks of one element.  The table mirrors ``type_traits`` in ``ggml/src/ggml.c``;
:mod:`tests.test_reference` checks it against ``ggml_get_type_traits`` of the reference build.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import numpy as np


class GGMLType(enum.IntEnum):
    """``enum ggml_type`` of ``ggml/include/ggml.h`` (ids 4, 5, 31–33 and 36–38 were removed from ggml)."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41
    Q2_0 = 42


class TypeSize(NamedTuple):
    block_size: int  # elements per block
    type_size: int  # bytes per block


QK_K = 256  # elements in a K-quant super-block

TYPE_SIZES: dict[GGMLType, TypeSize] = {
    GGMLType.F32: TypeSize(1, 4),
    GGMLType.F16: TypeSize(1, 2),
    GGMLType.Q4_0: TypeSize(32, 18),
    GGMLType.Q4_1: TypeSize(32, 20),
    GGMLType.Q5_0: TypeSize(32, 22),
    GGMLType.Q5_1: TypeSize(32, 24),
    GGMLType.Q8_0: TypeSize(32, 34),
    GGMLType.Q8_1: TypeSize(32, 36),
    GGMLType.Q2_K: TypeSize(QK_K, 84),
    GGMLType.Q3_K: TypeSize(QK_K, 110),
    GGMLType.Q4_K: TypeSize(QK_K, 144),
    GGMLType.Q5_K: TypeSize(QK_K, 176),
    GGMLType.Q6_K: TypeSize(QK_K, 210),
    GGMLType.Q8_K: TypeSize(QK_K, 292),
    GGMLType.IQ2_XXS: TypeSize(QK_K, 66),
    GGMLType.IQ2_XS: TypeSize(QK_K, 74),
    GGMLType.IQ3_XXS: TypeSize(QK_K, 98),
    GGMLType.IQ1_S: TypeSize(QK_K, 50),
    GGMLType.IQ4_NL: TypeSize(32, 18),
    GGMLType.IQ3_S: TypeSize(QK_K, 110),
    GGMLType.IQ2_S: TypeSize(QK_K, 82),
    GGMLType.IQ4_XS: TypeSize(QK_K, 136),
    GGMLType.I8: TypeSize(1, 1),
    GGMLType.I16: TypeSize(1, 2),
    GGMLType.I32: TypeSize(1, 4),
    GGMLType.I64: TypeSize(1, 8),
    GGMLType.F64: TypeSize(1, 8),
    GGMLType.IQ1_M: TypeSize(QK_K, 56),
    GGMLType.BF16: TypeSize(1, 2),
    GGMLType.TQ1_0: TypeSize(QK_K, 54),
    GGMLType.TQ2_0: TypeSize(QK_K, 66),
    GGMLType.MXFP4: TypeSize(32, 17),
    GGMLType.NVFP4: TypeSize(64, 36),
    GGMLType.Q1_0: TypeSize(128, 18),
    GGMLType.Q2_0: TypeSize(64, 18),
}

# Types whose elements are plain numbers: a GGUF reader shows them as numpy arrays of this dtype
# (bfloat16 has no numpy dtype and is shown as its raw uint16 bits).
ELEMENT_DTYPES: dict[GGMLType, np.dtype] = {
    GGMLType.F32: np.dtype("<f4"),
    GGMLType.F16: np.dtype("<f2"),
    GGMLType.BF16: np.dtype("<u2"),
    GGMLType.I8: np.dtype("i1"),
    GGMLType.I16: np.dtype("<i2"),
    GGMLType.I32: np.dtype("<i4"),
    GGMLType.I64: np.dtype("<i8"),
    GGMLType.F64: np.dtype("<f8"),
}


def ggml_type(qtype) -> GGMLType:
    """Accept a :class:`GGMLType`, a ``gguf.GGMLQuantizationType``, an id or a name ("Q4_K", "q4_k")."""
    if isinstance(qtype, str):
        try:
            return GGMLType[qtype.upper()]
        except KeyError:
            raise ValueError(f"unknown ggml type {qtype!r}; known: {', '.join(t.name for t in GGMLType)}") from None
    try:
        return GGMLType(int(qtype))
    except (ValueError, TypeError):
        raise ValueError(f"unknown ggml type {qtype!r}") from None


def row_bytes(qtype: GGMLType, n_per_row: int) -> int:
    """Bytes in one row of ``n_per_row`` elements (which must be a multiple of the block size)."""
    block_size, type_size = TYPE_SIZES[qtype]
    if n_per_row % block_size:
        raise ValueError(f"{qtype.name} rows must hold a multiple of {block_size} elements, not {n_per_row}")
    return n_per_row // block_size * type_size


def bits_per_weight(qtype: GGMLType) -> float:
    block_size, type_size = TYPE_SIZES[qtype]
    return type_size * 8 / block_size
