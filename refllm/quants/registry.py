"""The table of block formats: which kernels encode and decode each ggml type.

Every family module (``floats``, ``legacy``, ``k_quants``, ...) lists its formats as :class:`BlockFormat` entries in a
module-level ``FORMATS`` list; :mod:`refllm.quants` collects them.  The kernels follow one calling convention so the
public functions can validate once and dispatch:

* ``quantize(x, imatrix, out)`` — ``x`` float32 ``[nrows, n_per_row]`` (C-contiguous), ``imatrix`` float32
  ``[n_per_row]`` or an empty float32 array for "no importance matrix", ``out`` uint8 ``[nrows, row_bytes]`` to fill.
* ``dequantize(q, out)`` — ``q`` uint8 ``[nrows, row_bytes]``, ``out`` float32 ``[nrows, n_per_row]`` to fill.

Both are parallel over rows (one row per ``prange`` iteration), so their results do not depend on the thread count.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from ..ggml_types import GGMLType


class Imatrix(enum.Enum):
    """How a format's encoder treats an importance matrix (``quant_weights`` of ``ggml_quantize_chunk``)."""

    NONE = "none"  # the format has no importance-matrix path; passing one is an error
    IGNORED = "ignored"  # ggml accepts one and ignores it (Q8_0, TQ*, MXFP4, NVFP4, Q1_0, Q2_0)
    OPTIONAL = "optional"  # a separate weighted algorithm when given (K-quants, Q4_0…Q5_1)
    REQUIRED = "required"  # ggml cannot encode without one


@dataclass(frozen=True)
class BlockFormat:
    qtype: GGMLType
    quantize: Callable | None  # None: refllm does not encode this type (yet)
    dequantize: Callable | None
    imatrix: Imatrix = Imatrix.NONE
    finite_only: bool = True  # the encoder rejects NaN and ±inf (ggml's output is undefined for them)
