"""llama.cpp's *file types* (``enum llama_ftype``): the names ``llama-quantize`` accepts and each one's default
tensor type.

A file type names a whole-model recipe ("Q4_K_M"), not a block format: the per-tensor choice is made by the mixture
rules in :mod:`refllm.quantize.mixtures`.  Sources: ``include/llama.h`` (the ids), ``tools/quantize/quantize.cpp``
(``QUANT_OPTIONS``, ``try_parse_ftype``, ``parse_ggml_type``) and ``src/llama-quant.cpp``
(``llama_ftype_get_default_type``).
"""

from __future__ import annotations

import enum
import re

from ..errors import RefllmError
from ..ggml_types import GGMLType

T = GGMLType


class FType(enum.IntEnum):
    """``enum llama_ftype`` (``include/llama.h``); ids 4-6 and 33-35 were removed."""

    ALL_F32 = 0
    MOSTLY_F16 = 1
    MOSTLY_Q4_0 = 2
    MOSTLY_Q4_1 = 3
    MOSTLY_Q8_0 = 7
    MOSTLY_Q5_0 = 8
    MOSTLY_Q5_1 = 9
    MOSTLY_Q2_K = 10
    MOSTLY_Q3_K_S = 11
    MOSTLY_Q3_K_M = 12
    MOSTLY_Q3_K_L = 13
    MOSTLY_Q4_K_S = 14
    MOSTLY_Q4_K_M = 15
    MOSTLY_Q5_K_S = 16
    MOSTLY_Q5_K_M = 17
    MOSTLY_Q6_K = 18
    MOSTLY_IQ2_XXS = 19
    MOSTLY_IQ2_XS = 20
    MOSTLY_Q2_K_S = 21
    MOSTLY_IQ3_XS = 22
    MOSTLY_IQ3_XXS = 23
    MOSTLY_IQ1_S = 24
    MOSTLY_IQ4_NL = 25
    MOSTLY_IQ3_S = 26
    MOSTLY_IQ3_M = 27
    MOSTLY_IQ2_S = 28
    MOSTLY_IQ2_M = 29
    MOSTLY_IQ4_XS = 30
    MOSTLY_IQ1_M = 31
    MOSTLY_BF16 = 32
    MOSTLY_TQ1_0 = 36
    MOSTLY_TQ2_0 = 37
    MOSTLY_MXFP4_MOE = 38
    MOSTLY_NVFP4 = 39
    MOSTLY_Q1_0 = 40
    MOSTLY_Q2_0 = 41


LLAMA_FTYPE_GUESSED = 1024  # or-ed into a file type the loader guessed from the tensor types

F = FType

# QUANT_OPTIONS of tools/quantize/quantize.cpp, in its order: the names llama-quantize accepts.  The order matters:
# a number is looked up as the first option with that id, so "0" means F32, never COPY.
QUANT_OPTIONS: tuple[tuple[str, FType], ...] = (
    ("Q1_0", F.MOSTLY_Q1_0), ("Q2_0", F.MOSTLY_Q2_0), ("Q4_0", F.MOSTLY_Q4_0), ("Q4_1", F.MOSTLY_Q4_1),
    ("MXFP4_MOE", F.MOSTLY_MXFP4_MOE), ("Q5_0", F.MOSTLY_Q5_0), ("Q5_1", F.MOSTLY_Q5_1),
    ("IQ2_XXS", F.MOSTLY_IQ2_XXS), ("IQ2_XS", F.MOSTLY_IQ2_XS), ("IQ2_S", F.MOSTLY_IQ2_S), ("IQ2_M", F.MOSTLY_IQ2_M),
    ("IQ1_S", F.MOSTLY_IQ1_S), ("IQ1_M", F.MOSTLY_IQ1_M), ("TQ1_0", F.MOSTLY_TQ1_0), ("TQ2_0", F.MOSTLY_TQ2_0),
    ("Q2_K", F.MOSTLY_Q2_K), ("Q2_K_S", F.MOSTLY_Q2_K_S), ("IQ3_XXS", F.MOSTLY_IQ3_XXS), ("IQ3_S", F.MOSTLY_IQ3_S),
    ("IQ3_M", F.MOSTLY_IQ3_M), ("Q3_K", F.MOSTLY_Q3_K_M), ("IQ3_XS", F.MOSTLY_IQ3_XS), ("Q3_K_S", F.MOSTLY_Q3_K_S),
    ("Q3_K_M", F.MOSTLY_Q3_K_M), ("Q3_K_L", F.MOSTLY_Q3_K_L), ("IQ4_NL", F.MOSTLY_IQ4_NL),
    ("IQ4_XS", F.MOSTLY_IQ4_XS), ("Q4_K", F.MOSTLY_Q4_K_M), ("Q4_K_S", F.MOSTLY_Q4_K_S), ("Q4_K_M", F.MOSTLY_Q4_K_M),
    ("Q5_K", F.MOSTLY_Q5_K_M), ("Q5_K_S", F.MOSTLY_Q5_K_S), ("Q5_K_M", F.MOSTLY_Q5_K_M), ("Q6_K", F.MOSTLY_Q6_K),
    ("Q8_0", F.MOSTLY_Q8_0), ("F16", F.MOSTLY_F16), ("BF16", F.MOSTLY_BF16), ("F32", F.ALL_F32),
    ("COPY", F.ALL_F32),  # only copy the tensors; the file type becomes the input's
)

# llama_ftype_get_default_type (src/llama-quant.cpp): the tensor type a file type starts every tensor from.
# NVFP4 (39) has no entry there, so llama-quantize rejects it ("invalid output file type 39").
DEFAULT_TYPE: dict[FType, GGMLType] = {
    F.MOSTLY_Q4_0: T.Q4_0, F.MOSTLY_Q4_1: T.Q4_1, F.MOSTLY_Q5_0: T.Q5_0, F.MOSTLY_Q5_1: T.Q5_1,
    F.MOSTLY_Q8_0: T.Q8_0, F.MOSTLY_F16: T.F16, F.MOSTLY_BF16: T.BF16, F.ALL_F32: T.F32,
    F.MOSTLY_Q1_0: T.Q1_0, F.MOSTLY_Q2_0: T.Q2_0, F.MOSTLY_MXFP4_MOE: T.MXFP4,
    F.MOSTLY_Q2_K_S: T.Q2_K, F.MOSTLY_Q2_K: T.Q2_K, F.MOSTLY_IQ3_XS: T.IQ3_S,
    F.MOSTLY_Q3_K_S: T.Q3_K, F.MOSTLY_Q3_K_M: T.Q3_K, F.MOSTLY_Q3_K_L: T.Q3_K,
    F.MOSTLY_Q4_K_S: T.Q4_K, F.MOSTLY_Q4_K_M: T.Q4_K, F.MOSTLY_Q5_K_S: T.Q5_K, F.MOSTLY_Q5_K_M: T.Q5_K,
    F.MOSTLY_Q6_K: T.Q6_K, F.MOSTLY_TQ1_0: T.TQ1_0, F.MOSTLY_TQ2_0: T.TQ2_0,
    F.MOSTLY_IQ2_XXS: T.IQ2_XXS, F.MOSTLY_IQ2_XS: T.IQ2_XS, F.MOSTLY_IQ2_S: T.IQ2_XS, F.MOSTLY_IQ2_M: T.IQ2_S,
    F.MOSTLY_IQ3_XXS: T.IQ3_XXS, F.MOSTLY_IQ1_S: T.IQ1_S, F.MOSTLY_IQ1_M: T.IQ1_M, F.MOSTLY_IQ4_NL: T.IQ4_NL,
    F.MOSTLY_IQ4_XS: T.IQ4_XS, F.MOSTLY_IQ3_S: T.IQ3_S, F.MOSTLY_IQ3_M: T.IQ3_S,
}

# ggml_type_name() of ggml/src/ggml.c: the lower-case names llama-quantize prints and parses ("q4_K", "bf16").
TYPE_NAMES: dict[GGMLType, str] = {
    T.F32: "f32", T.F16: "f16", T.Q4_0: "q4_0", T.Q4_1: "q4_1", T.Q5_0: "q5_0", T.Q5_1: "q5_1", T.Q8_0: "q8_0",
    T.Q8_1: "q8_1", T.Q2_K: "q2_K", T.Q3_K: "q3_K", T.Q4_K: "q4_K", T.Q5_K: "q5_K", T.Q6_K: "q6_K",
    T.Q8_K: "q8_K", T.IQ2_XXS: "iq2_xxs", T.IQ2_XS: "iq2_xs", T.IQ3_XXS: "iq3_xxs", T.IQ1_S: "iq1_s",
    T.IQ4_NL: "iq4_nl", T.IQ3_S: "iq3_s", T.IQ2_S: "iq2_s", T.IQ4_XS: "iq4_xs", T.I8: "i8", T.I16: "i16",
    T.I32: "i32", T.I64: "i64", T.F64: "f64", T.IQ1_M: "iq1_m", T.BF16: "bf16", T.TQ1_0: "tq1_0",
    T.TQ2_0: "tq2_0", T.MXFP4: "mxfp4", T.NVFP4: "nvfp4", T.Q1_0: "q1_0", T.Q2_0: "q2_0",
}


def type_name(qtype: GGMLType) -> str:
    """``ggml_type_name``: "q4_K", "f16", ..."""
    return TYPE_NAMES[GGMLType(qtype)]


def parse_ftype(text: str) -> tuple[FType, str]:
    """``try_parse_ftype``: a name of ``QUANT_OPTIONS`` (any case) or a file-type number; returns the file type and
    its canonical name ("q4_k_m" -> (MOSTLY_Q4_K_M, "Q4_K_M"), "15" -> the same)."""
    for name, ftype in QUANT_OPTIONS:
        if name.lower() == text.lower():
            return ftype, name
    match = re.match(r"\s*([+-]?\d+)", text)  # std::stoi: leading blanks, a sign, digits; the rest is ignored
    number = int(match.group(1)) if match else None
    for name, ftype in QUANT_OPTIONS:
        if ftype == number:
            return ftype, name
    raise RefllmError(f"unknown quantization type {text!r}; llama-quantize's types are: "
                      f"{', '.join(name for name, _ in QUANT_OPTIONS)} (or their numbers)")


def is_ftype_name(text: str) -> bool:
    try:
        parse_ftype(text)
    except RefllmError:
        return False
    return True


def parse_ggml_type(text: str) -> GGMLType:
    """``parse_ggml_type`` of quantize.cpp: a ggml type name in any case ("q6_k", "Q8_0", "f16")."""
    for qtype, name in TYPE_NAMES.items():
        if name.lower() == text.lower():
            return qtype
    raise RefllmError(f"invalid ggml_type {text!r}; known: {', '.join(TYPE_NAMES.values())}")


def is_quantized(qtype: GGMLType) -> bool:
    """``ggml_is_quantized``: a block type (more than one element per block)."""
    from ..ggml_types import TYPE_SIZES

    return TYPE_SIZES[GGMLType(qtype)].block_size > 1
