"""refllm: the readable, executable specification of the llama.cpp pipeline for Microsoft's Phi-3 family.

Layout — formats: :mod:`refllm.gguf` (the file format), :mod:`refllm.quants` (ggml's block formats),
:mod:`refllm.ggml_types` (type ids and block sizes); kernels: :mod:`refllm.jit` (the one Numba configuration);
CLI: :mod:`refllm.cli`; benchmarks: :mod:`refllm.bench`; the llama.cpp reference for tests: :mod:`refllm.reference`.
"""

__version__ = "0.1.0"
