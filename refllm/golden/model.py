"""``refllm golden model``: every intermediate of one prompt's forward pass, under llama.cpp's graph names, plus the
greedy continuation — the reference numbers another engine can check itself against.

    prompt --tokenize--> ids --Phi3Model.forward (capture on)--> embd, attn_norm-<il>, Qcur-<il>, ... result_output
                                                        --greedy, one token a step (capture off)--> continuation

The tensors come from :class:`refllm.model.phi3.Phi3Model`'s capture hook; only the chosen layers and positions
(rows) are kept.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numba
import numpy as np
import safetensors

from .. import __version__
from ..errors import RefllmError
from ..fileio import file_sha256
from ..jit import num_threads, set_num_threads
from ..model import Phi3Model
from ..reference.build import LLAMA_CPP_COMMIT, SDIST_PACKAGE, SDIST_VERSION
from ..tokenizer import Tokenizer
from .format import (MODEL_TENSORS, check_output_dir, parse_selection, split_name, tensor_entries,
                     write_golden)


# what the ggml mode's arithmetic is bit-exact with (docs/phi3.md, "Numeric modes")
GGML_NUMERICS = ("the x86-64 CPU backend built by gcc with -march=native on an AVX512 (F, VL, DQ, BW, VNNI, BF16, "
                 "FP16) CPU, llama.cpp's default settings (F16 KV cache, flash attention, n_ubatch 512, tiled mul_mat)")


def environment() -> dict:
    """The software versions and platform that made a golden."""
    return {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
            "safetensors": safetensors.__version__, "platform": platform.platform(), "machine": platform.machine()}


def reference_info() -> dict:
    """The llama.cpp refllm follows (and whose graph names a model golden's tensors carry)."""
    return {"llama_cpp_commit": LLAMA_CPP_COMMIT, "vendored_in": f"{SDIST_PACKAGE}=={SDIST_VERSION}",
            "ggml_numerics": GGML_NUMERICS}


class _Collector:
    """The capture hook: keeps a copy of the chosen rows of each tensor of the chosen layers."""

    def __init__(self, positions: list[int], layers: set[int]):
        self.positions = np.array(positions)
        self.layers = layers
        self.tensors: dict[str, np.ndarray] = {}

    def __call__(self, name: str, x: np.ndarray) -> None:
        _, il = split_name(name)
        if il is None or il in self.layers:
            self.tensors[name] = np.array(x[self.positions], dtype=np.float32)  # [n_pos, ...], a copy


def capture(model: Phi3Model, tokens: list[int], *, n_predict: int = 0, layers: list[int] | None = None,
            positions: list[int] | None = None, greedy_logits: bool = False) -> tuple[dict, list[int]]:
    """Run ``tokens`` from an empty cache with the capture on, then ``n_predict`` greedy steps with it off.

    Returns ``(tensors, continuation)``: {llama.cpp name: float32 [len(positions), ...]} (plus ``greedy_logits``
    [n_predict, n_vocab] if asked) and the continuation's token ids (each the first arg-max of the logits; end of
    generation is not special, as with llama.cpp's ``--ignore-eos``).
    """
    n = len(tokens)
    collector = _Collector(list(range(n)) if positions is None else positions,
                           set(range(model.params.n_layer)) if layers is None else set(layers))
    model.reset()
    model.capture = collector
    try:
        logits = model.forward(tokens, 0)[-1]
    finally:
        model.capture = None
    steps, continuation = [], []
    for i in range(n_predict):
        if i:
            logits = model.forward([continuation[-1]])[0]
        steps.append(logits)
        continuation.append(int(np.argmax(logits)))
    tensors = collector.tensors
    if greedy_logits and n_predict:
        tensors["greedy_logits"] = np.stack(steps).astype(np.float32)
    return tensors, continuation


def golden_model(model_path: str | os.PathLike, prompt: str, out: str | os.PathLike, *, n_predict: int = 0,
                 mode: str = "ggml", rope_policy: str = "ctx", sliding_window: bool = False,
                 n_ctx: int | None = None, layers: str | None = None, positions: str | None = None,
                 threads: int | None = None, greedy_logits: bool = False, add_bos: bool | None = None,
                 log=print) -> dict:
    """Write a model golden for ``prompt`` into the directory ``out``; return its manifest.

    The defaults are llama.cpp's behaviour (ggml arithmetic, the ``ctx`` RoPE policy, no sliding window); see
    :class:`~refllm.model.Phi3Model` for the options.  ``layers`` / ``positions`` are selections as
    :func:`refllm.golden.format.parse_selection` reads them (default: all); ``threads`` sets the kernels' thread
    count for the run (the numbers do not depend on it).
    """
    check_output_dir(out)
    if n_predict < 0:
        raise RefllmError(f"-n {n_predict}: the number of tokens to predict cannot be negative")
    model_path = Path(model_path)
    saved_threads = num_threads()
    if threads is not None:
        if threads < 1:
            raise RefllmError(f"-t {threads}: the thread count must be at least 1")
        set_num_threads(threads)
    try:
        with Phi3Model.from_gguf(model_path, n_ctx=n_ctx, rope_policy=rope_policy, sliding_window=sliding_window,
                                 mode=mode) as model:
            p = model.params
            tokenizer = Tokenizer.from_gguf(model.gguf)
            tokens = tokenizer.encode(prompt, add_bos=add_bos)
            if not tokens:
                raise RefllmError("the prompt gives no tokens")
            if len(tokens) + max(n_predict - 1, 0) > model.n_ctx:
                raise RefllmError(f"{len(tokens)} prompt tokens + {n_predict} predicted do not fit the context of "
                                  f"{model.n_ctx} (-c)")
            chosen_layers = parse_selection(layers, p.n_layer, "layers")
            chosen_positions = parse_selection(positions, len(tokens), "positions")
            log(f"golden: {model_path.name}: {len(tokens)} tokens, {len(chosen_positions)} positions, "
                f"{len(chosen_layers)} of {p.n_layer} layers, mode {mode}, {num_threads()} threads")
            tensors, continuation = capture(model, tokens, n_predict=n_predict, layers=chosen_layers,
                                            positions=chosen_positions, greedy_logits=greedy_logits)
            manifest = {
                "kind": "model",
                "refllm_version": __version__,
                "model": {
                    "file": model_path.name,
                    "sha256": file_sha256(model_path),
                    "size": model_path.stat().st_size,
                    "architecture": "phi3",
                    "n_vocab": p.n_vocab, "n_embd": p.n_embd, "n_layer": p.n_layer, "n_head": p.n_head,
                    "n_head_kv": p.n_head_kv, "head_dim": p.head_dim, "n_ff": p.n_ff, "n_rot": p.n_rot,
                    "n_ctx_train": p.n_ctx_train, "longrope": p.longrope,
                },
                "settings": {
                    "mode": mode, "rope_policy": rope_policy, "sliding_window": bool(sliding_window),
                    "window": model.window, "n_ctx": model.n_ctx, "long_factors": bool(model.long_factors),
                    "n_predict": n_predict, "greedy_logits": bool(greedy_logits and n_predict), "threads":
                    num_threads(), "batch": "the whole prompt in one forward call, from an empty cache",
                },
                "prompt": prompt,
                "add_bos": tokenizer.add_bos if add_bos is None else add_bos,
                "tokens": [int(t) for t in tokens],
                "positions": chosen_positions,
                "layers": chosen_layers,
                "continuation": {"tokens": continuation, "text": tokenizer.decode(continuation)},
                "environment": environment(),
                "reference": reference_info(),
                "tensors": tensor_entries(tensors, MODEL_TENSORS),
            }
    finally:
        set_num_threads(saved_threads)
    write_golden(out, manifest, tensors)
    size = sum(a.nbytes for a in tensors.values())
    log(f"golden: wrote {len(tensors)} tensors ({size / 1e6:.1f} MB) to {Path(out) / 'tensors.safetensors'}")
    if continuation:
        log(f"golden: continuation {continuation} {manifest['continuation']['text']!r}")
    return manifest
