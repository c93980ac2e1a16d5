"""llama.cpp's tokenizer, called through ctypes on the reference build's ``libllama.so``.

This is what :mod:`refllm.tokenizer` is compared with.  It loads a GGUF's vocabulary only (``vocab_only``: no
weights, no context), exactly as ``llama-tokenize`` does, and exposes the public C API that tokenizes and
detokenizes:

* :meth:`LlamaVocab.tokenize` — ``llama_tokenize(vocab, text, add_special, parse_special)``;
* :meth:`LlamaVocab.token_to_piece` — ``llama_token_to_piece(vocab, token, lstrip, special)`` (raw bytes);
* :meth:`LlamaVocab.detokenize` — ``llama_detokenize(vocab, tokens, remove_special, unparse_special)`` (raw bytes);
* the special ids, the ``add_bos`` flag, ``llama_vocab_is_eog`` and the per-token attributes.

One call costs microseconds, so the tests can compare thousands of strings; ``llama-tokenize`` (one process per
string, ~80 ms) is used for a few end-to-end checks only.
"""

from __future__ import annotations

import ctypes
import functools
import os

from ..errors import RefllmError
from .build import ensure_reference


class _ModelParams(ctypes.Structure):
    """``struct llama_model_params`` of ``include/llama.h`` at the reference commit."""

    _fields_ = [
        ("devices", ctypes.c_void_p),
        ("tensor_buft_overrides", ctypes.c_void_p),
        ("n_gpu_layers", ctypes.c_int32),
        ("split_mode", ctypes.c_int),
        ("load_mode", ctypes.c_int),
        ("lazy_mode", ctypes.c_int),
        ("main_gpu", ctypes.c_int32),
        ("tensor_split", ctypes.c_void_p),
        ("progress_callback", ctypes.c_void_p),
        ("progress_callback_user_data", ctypes.c_void_p),
        ("kv_overrides", ctypes.c_void_p),
        ("vocab_only", ctypes.c_bool),
        ("check_tensors", ctypes.c_bool),
        ("use_extra_bufts", ctypes.c_bool),
        ("no_host", ctypes.c_bool),
        ("no_alloc", ctypes.c_bool),
        ("load_mtp", ctypes.c_bool),
    ]


_LOG_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


@_LOG_CALLBACK
def _quiet(level, text, user_data):  # llama.cpp logs every vocabulary load at INFO level; drop it
    return None


@functools.cache
def library() -> ctypes.CDLL:
    """``libllama.so`` of the reference build (built on first use), with the vocabulary API declared."""
    lib = ctypes.CDLL(str(ensure_reference().bin_dir / "libllama.so"), mode=os.RTLD_LOCAL)
    p, i32, b = ctypes.c_void_p, ctypes.c_int32, ctypes.c_bool
    signatures = {
        "llama_log_set": (None, [_LOG_CALLBACK, p]),
        "llama_backend_init": (None, []),
        "llama_model_default_params": (_ModelParams, []),
        "llama_model_load_from_file": (p, [ctypes.c_char_p, _ModelParams]),
        "llama_model_free": (None, [p]),
        "llama_model_get_vocab": (p, [p]),
        "llama_vocab_n_tokens": (i32, [p]),
        "llama_vocab_bos": (i32, [p]),
        "llama_vocab_eos": (i32, [p]),
        "llama_vocab_eot": (i32, [p]),
        "llama_vocab_get_add_bos": (b, [p]),
        "llama_vocab_get_add_eos": (b, [p]),
        "llama_vocab_get_attr": (ctypes.c_int, [p, i32]),
        "llama_vocab_is_eog": (b, [p, i32]),
        "llama_tokenize": (i32, [p, ctypes.c_char_p, i32, ctypes.POINTER(i32), i32, b, b]),
        "llama_token_to_piece": (i32, [p, i32, ctypes.c_char_p, i32, i32, b]),
        "llama_detokenize": (i32, [p, ctypes.POINTER(i32), i32, ctypes.c_char_p, i32, b, b]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    lib.llama_log_set(_quiet, None)
    lib.llama_backend_init()
    return lib


class LlamaVocab:
    """The vocabulary of one GGUF file as libllama loads it (``vocab_only``)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._lib = library()
        params = self._lib.llama_model_default_params()
        params.vocab_only = True
        self._model = self._lib.llama_model_load_from_file(self.path.encode(), params)
        if not self._model:
            raise RefllmError(f"libllama could not load the vocabulary of {self.path}")
        self._vocab = self._lib.llama_model_get_vocab(self._model)

    def close(self) -> None:
        if self._model:
            self._lib.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> "LlamaVocab":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # --- properties -------------------------------------------------------------------------------------------

    @property
    def n_tokens(self) -> int:
        return self._lib.llama_vocab_n_tokens(self._vocab)

    @property
    def bos(self) -> int:
        return self._lib.llama_vocab_bos(self._vocab)

    @property
    def eos(self) -> int:
        return self._lib.llama_vocab_eos(self._vocab)

    @property
    def eot(self) -> int:
        return self._lib.llama_vocab_eot(self._vocab)

    @property
    def add_bos(self) -> bool:
        return self._lib.llama_vocab_get_add_bos(self._vocab)

    @property
    def add_eos(self) -> bool:
        return self._lib.llama_vocab_get_add_eos(self._vocab)

    def attr(self, token: int) -> int:
        """``llama_token_attr`` bit set of a token (after llama.cpp's load-time overrides)."""
        return self._lib.llama_vocab_get_attr(self._vocab, token)

    def is_eog(self, token: int) -> bool:
        return self._lib.llama_vocab_is_eog(self._vocab, token)

    def eog_ids(self) -> set[int]:
        return {t for t in range(self.n_tokens) if self.is_eog(t)}

    # --- tokenize / detokenize --------------------------------------------------------------------------------

    def tokenize(self, text: str | bytes, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """``llama_tokenize``; ``add_special`` adds BOS if the vocabulary asks for it (``add_bos_token``)."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        capacity = len(data) + 8
        while True:
            out = (ctypes.c_int32 * capacity)()
            n = self._lib.llama_tokenize(self._vocab, data, len(data), out, capacity, add_special, parse_special)
            if n >= 0:
                return list(out[:n])
            if n == -(2**31):
                raise RefllmError("llama_tokenize: overflow")
            capacity = -n

    def token_to_piece(self, token: int, lstrip: int = 0, special: bool = False) -> bytes:
        """``llama_token_to_piece``: the bytes of one token (CONTROL/UNKNOWN tokens only if ``special``)."""
        capacity = 64
        while True:
            buf = ctypes.create_string_buffer(capacity)
            n = self._lib.llama_token_to_piece(self._vocab, token, buf, capacity, lstrip, special)
            if n >= 0:
                return buf.raw[:n]
            capacity = -n

    def detokenize(self, tokens, remove_special: bool = False, unparse_special: bool = False) -> bytes:
        """``llama_detokenize``: the bytes of a token sequence."""
        tokens = list(tokens)
        arr = (ctypes.c_int32 * max(1, len(tokens)))(*tokens)
        capacity = 16 + 8 * len(tokens)
        while True:
            buf = ctypes.create_string_buffer(capacity)
            n = self._lib.llama_detokenize(self._vocab, arr, len(tokens), buf, capacity, remove_special,
                                           unparse_special)
            if n >= 0:
                return buf.raw[:n]
            capacity = -n
