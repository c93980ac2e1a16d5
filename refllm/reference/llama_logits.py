"""llama.cpp's logits, through ctypes on the reference build's ``libllama.so``.

What :mod:`refllm.model` is compared with.  One call loads a GGUF, makes a context with the given settings, decodes
the tokens (in one batch, or one token per ``llama_decode``) with every position's logits requested, and returns
them as float32 [n, n_vocab]::

    llama_model_load_from_file → llama_init_from_model(ctx_params) → llama_decode(batch) → llama_get_logits_ith(i)

The settings that change the numbers: ``n_ctx`` (and with it the LongRoPE factor choice, see
:mod:`refllm.model.rope`), ``type_k`` / ``type_v`` (the KV cache type: llama.cpp's default is F16), ``flash_attn``
(``"auto"``, llama.cpp's default, enables it on the CPU), the batch split (``n_ubatch``) and the thread count.
"""

from __future__ import annotations

import ctypes
import functools
import os

import numpy as np

from ..errors import RefllmError
from ..ggml_types import ggml_type
from .build import ensure_reference
from .llama_vocab import _LOG_CALLBACK, _ModelParams, _quiet

FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}


class _ContextParams(ctypes.Structure):
    """``struct llama_context_params`` of ``include/llama.h`` at the reference commit."""

    _fields_ = [
        ("n_ctx", ctypes.c_uint32),
        ("n_batch", ctypes.c_uint32),
        ("n_ubatch", ctypes.c_uint32),
        ("n_seq_max", ctypes.c_uint32),
        ("n_rs_seq", ctypes.c_uint32),
        ("n_outputs_max", ctypes.c_uint32),
        ("n_outputs_max_per_seq", ctypes.c_uint32),
        ("n_threads", ctypes.c_int32),
        ("n_threads_batch", ctypes.c_int32),
        ("ctx_type", ctypes.c_int),
        ("rope_scaling_type", ctypes.c_int),
        ("pooling_type", ctypes.c_int),
        ("attention_type", ctypes.c_int),
        ("flash_attn_type", ctypes.c_int),
        ("rope_freq_base", ctypes.c_float),
        ("rope_freq_scale", ctypes.c_float),
        ("yarn_ext_factor", ctypes.c_float),
        ("yarn_attn_factor", ctypes.c_float),
        ("yarn_beta_fast", ctypes.c_float),
        ("yarn_beta_slow", ctypes.c_float),
        ("yarn_orig_ctx", ctypes.c_uint32),
        ("defrag_thold", ctypes.c_float),
        ("cb_eval", ctypes.c_void_p),
        ("cb_eval_user_data", ctypes.c_void_p),
        ("type_k", ctypes.c_int),
        ("type_v", ctypes.c_int),
        ("abort_callback", ctypes.c_void_p),
        ("abort_callback_data", ctypes.c_void_p),
        ("embeddings", ctypes.c_bool),
        ("offload_kqv", ctypes.c_bool),
        ("no_perf", ctypes.c_bool),
        ("op_offload", ctypes.c_bool),
        ("swa_full", ctypes.c_bool),
        ("kv_unified", ctypes.c_bool),
        ("samplers", ctypes.c_void_p),
        ("n_samplers", ctypes.c_size_t),
        ("ctx_other", ctypes.c_void_p),
    ]


class _Batch(ctypes.Structure):
    """``struct llama_batch``."""

    _fields_ = [
        ("n_tokens", ctypes.c_int32),
        ("token", ctypes.POINTER(ctypes.c_int32)),
        ("embd", ctypes.POINTER(ctypes.c_float)),
        ("pos", ctypes.POINTER(ctypes.c_int32)),
        ("n_seq_id", ctypes.POINTER(ctypes.c_int32)),
        ("seq_id", ctypes.POINTER(ctypes.POINTER(ctypes.c_int32))),
        ("logits", ctypes.POINTER(ctypes.c_int8)),
    ]




@functools.cache
def library() -> ctypes.CDLL:
    """``libllama.so`` of the reference build (built on first use), with the calls used here declared."""
    lib = ctypes.CDLL(str(ensure_reference().bin_dir / "libllama.so"), mode=os.RTLD_LOCAL)
    p, i32 = ctypes.c_void_p, ctypes.c_int32
    signatures = {
        "llama_log_set": (None, [_LOG_CALLBACK, p]),
        "llama_backend_init": (None, []),
        "llama_model_default_params": (_ModelParams, []),
        "llama_context_default_params": (_ContextParams, []),
        "llama_model_load_from_file": (p, [ctypes.c_char_p, _ModelParams]),
        "llama_model_free": (None, [p]),
        "llama_model_get_vocab": (p, [p]),
        "llama_vocab_n_tokens": (i32, [p]),
        "llama_init_from_model": (p, [p, _ContextParams]),
        "llama_free": (None, [p]),
        "llama_batch_init": (_Batch, [i32, i32, i32]),
        "llama_batch_free": (None, [_Batch]),
        "llama_decode": (i32, [p, _Batch]),
        "llama_get_logits_ith": (ctypes.POINTER(ctypes.c_float), [p, i32]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    lib.llama_log_set(_quiet, None)
    lib.llama_backend_init()
    return lib


class LlamaSession:
    """One llama.cpp model and context (sequence 0) that tokens can be fed to bit by bit — a KV cache in
    llama.cpp's hands.  See :func:`llama_logits` for the settings.

    >>> with LlamaSession("model.gguf", n_ctx=512) as s:
    ...     logits = s.decode([1, 32010, 1815])     # [3, n_vocab]: positions 0, 1, 2
    ...     logits = s.decode([366])                # [1, n_vocab]: position 3
    """

    def __init__(self, model_path, *, n_ctx: int = 0, n_batch: int = 512, type_k="F16", type_v="F16",
                 flash_attn: str = "auto", n_ubatch: int = 512, n_threads: int = 2, extra_bufts: bool = False,
                 cb_eval=None):
        self.lib = lib = library()
        self._cb_eval = cb_eval  # a ctypes callback (ggml_backend_sched_eval_callback): kept alive with the context
        self.ctx = None
        mparams = lib.llama_model_default_params()
        mparams.use_extra_bufts = extra_bufts
        self.model = lib.llama_model_load_from_file(os.fsencode(os.fspath(model_path)), mparams)
        if not self.model:
            raise RefllmError(f"{model_path}: llama.cpp could not load the model")
        try:
            self.n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self.model))
            cparams = lib.llama_context_default_params()
            cparams.n_ctx = n_ctx
            cparams.n_batch = n_batch
            cparams.n_ubatch = min(n_ubatch, n_batch)
            cparams.n_threads = cparams.n_threads_batch = n_threads
            cparams.flash_attn_type = FLASH_ATTN[flash_attn]
            cparams.type_k = int(ggml_type(type_k))
            cparams.type_v = int(ggml_type(type_v))
            cparams.no_perf = True
            if cb_eval is not None:
                cparams.cb_eval = ctypes.cast(cb_eval, ctypes.c_void_p)
            self.ctx = lib.llama_init_from_model(self.model, cparams)
            if not self.ctx:
                raise RefllmError(f"{model_path}: llama.cpp could not make a context")
        except BaseException:
            self.close()
            raise
        self.n_batch = n_batch
        self.n_past = 0

    def decode(self, tokens) -> np.ndarray:
        """Feed ``tokens`` at the next positions (at most ``n_batch`` per ``llama_decode``); return their logits,
        float32 [n, n_vocab]."""
        ids = [int(t) for t in tokens]
        out = np.empty((len(ids), self.n_vocab), np.float32)
        for start in range(0, len(ids), self.n_batch):
            chunk = ids[start:start + self.n_batch]
            batch = self.lib.llama_batch_init(len(chunk), 0, 1)
            try:
                batch.n_tokens = len(chunk)
                for i, t in enumerate(chunk):
                    batch.token[i] = t
                    batch.pos[i] = self.n_past + i
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = 0
                    batch.logits[i] = 1
                rc = self.lib.llama_decode(self.ctx, batch)
                if rc != 0:
                    raise RefllmError(f"llama_decode returned {rc}")
            finally:
                self.lib.llama_batch_free(batch)
            self.n_past += len(chunk)
            for i in range(len(chunk)):
                row = self.lib.llama_get_logits_ith(self.ctx, i)
                out[start + i] = np.ctypeslib.as_array(row, shape=(self.n_vocab,))
        return out

    def close(self) -> None:
        if self.ctx:
            self.lib.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            self.lib.llama_model_free(self.model)
            self.model = None

    def __enter__(self) -> LlamaSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def llama_logits(model_path, tokens, *, n_ctx: int = 0, step: int | None = None, **settings) -> np.ndarray:
    """llama.cpp's logits for every position of ``tokens``: float32 [n, n_vocab].

    ``n_ctx = 0`` means the training context, as in llama.cpp; ``type_k`` / ``type_v`` are the KV cache types
    (default F16); ``flash_attn`` is ``"auto"`` (llama.cpp's default), ``"on"`` or ``"off"``; ``step`` decodes the
    tokens ``step`` at a time (default: all in one ``llama_decode``); ``n_ubatch`` (512) and ``n_threads`` (2).

    ``extra_bufts`` (llama.cpp's default: on) lets the CPU backend move weights into its "extra" buffer types:
    repacked (interleaved) Q4_0 / Q4_K / IQ4_NL / Q8_0 for its gemm kernels, and AMX tiles on CPUs that have AMX.
    Off by default here: the AMX kernels die with SIGILL where the OS does not grant AMX state (as in some
    sandboxes), and without them every matrix product is the plain ``vec_dot`` path refllm's ``ggml`` mode follows.
    """
    ids = [int(t) for t in tokens]
    with LlamaSession(model_path, n_ctx=n_ctx, n_batch=step or max(len(ids), 1), **settings) as session:
        return session.decode(ids)


def llama_greedy(model_path, prompt, n_predict: int, *, n_ctx: int = 0, **settings) -> list[int]:
    """llama.cpp's greedy continuation of ``prompt``: ``n_predict`` token ids, each the first arg-max of the
    logits (``llama_sampler_init_greedy``), fed back one token per ``llama_decode``; end-of-generation tokens are
    not special here (``--ignore-eos``)."""
    ids = [int(t) for t in prompt]
    with LlamaSession(model_path, n_ctx=n_ctx, n_batch=max(len(ids), 1), **settings) as session:
        logits = session.decode(ids)[-1]
        out = []
        for _ in range(n_predict):
            out.append(int(np.argmax(logits)))
            logits = session.decode(out[-1:])[0]
        return out


__all__ = ["FLASH_ATTN", "LlamaSession", "library", "llama_greedy", "llama_logits"]
