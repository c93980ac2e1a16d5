"""The Phi-3 forward pass over a GGUF file (see docs/phi3.md).

>>> from refllm.model import Phi3Model
>>> model = Phi3Model.from_gguf("phi3.gguf", rope_policy="seq", sliding_window=True, mode="f32")
>>> logits = model.forward([1, 32010, 1815], 0)      # float32 [3, n_vocab]; the KV cache now holds 3 positions
>>> logits = model.forward([366])                    # position 3
>>> model.reset()

Modules, in reading order: :mod:`~refllm.model.params` (the hyperparameters in the GGUF metadata),
:mod:`~refllm.model.phi3` (the forward pass), :mod:`~refllm.model.rope` (RoPE, LongRoPE and the two factor
policies), :mod:`~refllm.model.kernels` (the compiled kernels: matrix products over the quantized weights, RMSNorm,
SwiGLU, RoPE rotation, attention).
"""

from .params import Phi3Params
from .phi3 import KVCache, Layer, Phi3Model, Weight, prompt_logits

__all__ = ["KVCache", "Layer", "Phi3Model", "Phi3Params", "Weight", "prompt_logits"]
