"""Golden outputs for other implementations (docs/golden-format.md).

* :mod:`~refllm.golden.format` — the on-disk format (a directory: ``manifest.json`` + one safetensors file), the
  tensor names (llama.cpp's graph names) and the reader for goldens and other engines' dumps.
* :mod:`~refllm.golden.model` — ``refllm golden model``: every intermediate of a prompt's forward pass.
* :mod:`~refllm.golden.quant` — ``refllm golden quant``: known-answer vectors for ggml's block formats.
* :mod:`~refllm.golden.compare` — ``refllm compare``: per tensor errors and the first place a tolerance breaks.
"""

from .compare import Report, compare
from .format import Dump, DumpError, read_dump
from .model import golden_model
from .quant import golden_quant

__all__ = ["Dump", "DumpError", "Report", "compare", "golden_model", "golden_quant", "read_dump"]
