"""refllm: the readable, executable specification of the llama.cpp pipeline for Microsoft's Phi-3 family.

Layout — formats: :mod:`refllm.gguf` (the file format), :mod:`refllm.quants` (ggml's block formats),
:mod:`refllm.ggml_types` (type ids and block sizes); kernels: :mod:`refllm.jit` (the one Numba configuration);
running a model: :class:`refllm.Model` (:mod:`refllm.generate`, :mod:`refllm.sampling`);
CLI: :mod:`refllm.cli`; benchmarks: :mod:`refllm.bench`; the llama.cpp reference for tests: :mod:`refllm.reference`.
"""

__version__ = "0.1.0"

__all__ = ["Model", "__version__"]


def __getattr__(name: str):
    """``refllm.Model`` (:class:`refllm.generate.Model`), imported on first use so that ``import refllm`` stays light."""
    if name == "Model":
        from .generate import Model

        return Model
    raise AttributeError(f"module 'refllm' has no attribute {name!r}")
