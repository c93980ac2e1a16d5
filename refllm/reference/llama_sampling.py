"""llama.cpp's sampler chain, through ctypes on the reference build's ``libllama.so``.

What :mod:`refllm.sampling` is compared with.  :class:`LlamaSampler` builds the chain ``common_sampler_init`` builds
for llama-cli's settings (the stages that are off are left out, as llama.cpp replaces them with empty samplers) and
runs it on given logits, without a model::

    llama_sampler_chain_init → llama_sampler_chain_add(logit_bias, penalties, top_k, top_p, min_p, temp_ext, dist)
    llama_sampler_apply(chain, candidates) → candidates.selected;  llama_sampler_accept(chain, token)
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from ..sampling import SamplerParams
from .llama_logits import library


class _TokenData(ctypes.Structure):
    _fields_ = [("id", ctypes.c_int32), ("logit", ctypes.c_float), ("p", ctypes.c_float)]


_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # the same, for numpy


class _TokenDataArray(ctypes.Structure):
    _fields_ = [("data", ctypes.POINTER(_TokenData)), ("size", ctypes.c_size_t), ("selected", ctypes.c_int64),
                ("sorted", ctypes.c_bool)]


class _LogitBias(ctypes.Structure):
    _fields_ = [("token", ctypes.c_int32), ("bias", ctypes.c_float)]


class _ChainParams(ctypes.Structure):
    _fields_ = [("no_perf", ctypes.c_bool)]


@functools.cache
def _lib() -> ctypes.CDLL:
    lib = library()
    p, i32, f32, size_t = ctypes.c_void_p, ctypes.c_int32, ctypes.c_float, ctypes.c_size_t
    signatures = {
        "llama_sampler_chain_default_params": (_ChainParams, []),
        "llama_sampler_chain_init": (p, [_ChainParams]),
        "llama_sampler_chain_add": (None, [p, p]),
        "llama_sampler_init_logit_bias": (p, [i32, i32, ctypes.POINTER(_LogitBias)]),
        "llama_sampler_init_penalties": (p, [i32, i32, f32, f32, f32]),
        "llama_sampler_init_top_k": (p, [i32]),
        "llama_sampler_init_top_p": (p, [f32, size_t]),
        "llama_sampler_init_min_p": (p, [f32, size_t]),
        "llama_sampler_init_temp_ext": (p, [f32, f32, f32]),
        "llama_sampler_init_dist": (p, [ctypes.c_uint32]),
        "llama_sampler_apply": (None, [p, ctypes.POINTER(_TokenDataArray)]),
        "llama_sampler_accept": (None, [p, i32]),
        "llama_sampler_free": (None, [p]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


class LlamaSampler:
    """llama.cpp's default chain for ``params`` over a vocabulary of ``n_vocab`` tokens."""

    def __init__(self, params: SamplerParams, n_vocab: int):
        lib = self.lib = _lib()
        self.n_vocab = n_vocab
        self.chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        stages = []
        if params.logit_bias:
            biases = (_LogitBias * len(params.logit_bias))(*params.logit_bias.items())
            stages.append(lib.llama_sampler_init_logit_bias(n_vocab, len(params.logit_bias), biases))
        stages += [
            lib.llama_sampler_init_penalties(n_vocab, params.repeat_last_n, params.repeat_penalty,
                                             params.frequency_penalty, params.presence_penalty),
            lib.llama_sampler_init_top_k(params.top_k),
            lib.llama_sampler_init_top_p(params.top_p, 0),
            lib.llama_sampler_init_min_p(params.min_p, 0),
            lib.llama_sampler_init_temp_ext(params.temp, 0.0, 1.0),
            lib.llama_sampler_init_dist(params.seed & 0xFFFFFFFF),
        ]
        for stage in stages:
            lib.llama_sampler_chain_add(self.chain, stage)

    def accept(self, token: int) -> None:
        self.lib.llama_sampler_accept(self.chain, int(token))

    def candidates(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Run the chain on float32 logits [n_vocab] (without accepting): the candidates' ids and logits as the
        chain leaves them, and the index ``dist`` selected."""
        data = np.zeros(self.n_vocab, _TOKEN_DATA)
        data["id"] = np.arange(self.n_vocab)
        data["logit"] = logits
        array = _TokenDataArray(data.ctypes.data_as(ctypes.POINTER(_TokenData)), self.n_vocab, -1, False)
        self.lib.llama_sampler_apply(self.chain, ctypes.byref(array))
        assert ctypes.addressof(array.data.contents) == data.ctypes.data  # the stages work in place
        out = data[:array.size]
        return out["id"].copy(), out["logit"].copy(), int(array.selected)

    def sample(self, logits: np.ndarray) -> int:
        """Draw a token and accept it (what ``llama_sampler_sample`` does with a context's logits)."""
        ids, _, selected = self.candidates(logits)
        token = int(ids[selected])
        self.accept(token)
        return token

    def close(self) -> None:
        if self.chain:
            self.lib.llama_sampler_free(self.chain)
            self.chain = None

    def __del__(self):
        self.close()


__all__ = ["LlamaSampler"]
