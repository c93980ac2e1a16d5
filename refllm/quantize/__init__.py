"""``llama-quantize`` in Python: a GGUF model quantized with llama.cpp's file types and mixtures, byte-identical to
the reference (see docs/quantize.md).

>>> from refllm.quantize import quantize_file
>>> quantize_file("phi-f16.gguf", "phi-Q4_K_M.gguf", "Q4_K_M", nthreads=2)
>>> quantize_file("phi-f16.gguf", "phi-Q4_0.gguf", "Q4_0", imatrix="imatrix.gguf")

* :mod:`~refllm.quantize.ftypes` — the file types (``Q4_K_M`` = 15, ...) and their default tensor types;
* :mod:`~refllm.quantize.mixtures` — which type each tensor gets (``src/llama-quant.cpp``);
* :mod:`~refllm.quantize.imatrix` — importance-matrix files, GGUF and legacy ``.dat``;
* :mod:`~refllm.quantize.pipeline` — the whole run: plan, checks, metadata, streaming.
"""

from .ftypes import QUANT_OPTIONS, FType, parse_ftype
from .imatrix import ImportanceMatrix
from .imatrix import load as load_imatrix
from .mixtures import Category, ModelInfo, Options, choose_types, weights_order
from .pipeline import Plan, Result, make_plan, quantize_file

__all__ = ["QUANT_OPTIONS", "FType", "parse_ftype", "ImportanceMatrix", "load_imatrix", "Category", "ModelInfo",
           "Options", "choose_types", "weights_order", "Plan", "Result", "make_plan", "quantize_file"]
