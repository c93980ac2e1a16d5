"""Text generation: :class:`Model` ties the GGUF file, the forward pass, the tokenizer and the sampler together —
the loop of ``llama-completion`` / ``llama-cli`` (``tools/completion/completion.cpp``) in a few dozen lines.

>>> from refllm import Model
>>> model = Model("phi3.gguf")
>>> for piece in model.chat([{"role": "user", "content": "Hello!"}], seed=42):
...     print(piece, end="", flush=True)
>>> print("\n".join(model.timings.report()))   # llama.cpp's common_perf_print lines

One step of the loop::

    logits = forward(prompt)                           # the prompt in one batch ("prompt eval")
    repeat:
        token = sampler.sample(logits[-1])             # refllm.sampling: penalties … top-k … dist
        stop at an end-of-generation token, after n_predict tokens, or when the context is full
        yield the token's text                          # bytes of a split character wait for the rest
        logits = forward([token])                      # one position further ("eval")

The defaults are llama.cpp's, because ``python -m refllm run`` mirrors llama-cli: the ``ggml`` numeric mode (llama.cpp's
CPU arithmetic), the ``ctx`` RoPE policy (the LongRoPE factors chosen by the context size), no sliding window (llama.cpp
ignores it for phi3), the context size of the training (``-c 0``) and llama.cpp's sampling defaults
(:class:`refllm.sampling.SamplerParams`, which the file's ``general.sampling.*`` keys may change).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import RefllmError
from .gguf import GGUFFile
from .jit import set_num_threads
from .model import Phi3Model
from .sampling import Sampler, SamplerParams
from .tokenizer import Tokenizer

#: a prompt must leave this many positions free (llama-completion: "prompt is too long (N tokens, max n_ctx - 4)")
CTX_RESERVE = 4


@dataclass
class Timings:
    """The counters of llama.cpp's ``common_perf_print``, in milliseconds, summed over the generations of a
    :class:`Model` (as a llama.cpp context's are); ``t_start`` is the end of loading."""

    load_ms: float = 0.0
    prompt_eval_ms: float = 0.0
    n_prompt_eval: int = 0  # prompt tokens evaluated (a reused cache prefix is not evaluated again)
    eval_ms: float = 0.0
    n_eval: int = 0  # one-token forward passes
    sample_ms: float = 0.0
    n_sample: int = 0
    t_start: float = field(default_factory=time.perf_counter)

    def report(self) -> list[str]:
        """The ``common_perf_print`` lines, in llama.cpp's format."""
        def per_token(ms: float, n: int) -> str:
            each = ms / n if n else float("nan")
            rate = 1e3 * n / ms if ms else float("nan")
            return f"({each:8.2f} ms per token, {rate:8.2f} tokens per second)"

        total = 1e3 * (time.perf_counter() - self.t_start)
        unaccounted = total - (self.sample_ms + self.prompt_eval_ms + self.eval_ms)
        name = "common_perf_print"
        return [
            f"{name}:    sampling time = {self.sample_ms:10.2f} ms / {self.n_sample:5d} runs",
            f"{name}:        load time = {self.load_ms:10.2f} ms",
            (f"{name}: prompt eval time = {self.prompt_eval_ms:10.2f} ms / {self.n_prompt_eval:5d} tokens "
             + per_token(self.prompt_eval_ms, self.n_prompt_eval)),
            (f"{name}:        eval time = {self.eval_ms:10.2f} ms / {self.n_eval:5d} runs   "
             + per_token(self.eval_ms, self.n_eval)),
            f"{name}:       total time = {total:10.2f} ms / {self.n_prompt_eval + self.n_eval:5d} tokens",
            (f"{name}: unaccounted time = {unaccounted:10.2f} ms / {100 * unaccounted / total if total else 0:5.1f} %"
             "      (total - sampling - prompt eval - eval) / (total)"),
        ]


class Model:
    """A Phi-3 GGUF model ready to generate text.

    ``n_ctx``: the context size (None or 0: the training context, llama.cpp's ``-c 0``).  ``mode``, ``rope_policy``
    and ``sliding_window`` are :class:`refllm.model.Phi3Model`'s; the defaults reproduce llama.cpp.  ``threads``:
    the number of threads of the kernels (:func:`refllm.jit.set_num_threads`).  ``warmup``: run the kernels once
    before any timing (:meth:`warmup`; llama.cpp's ``--no-warmup`` turns it off).

    After a generation, :attr:`tokens` holds the generated token ids and :attr:`stop_reason` why it ended;
    :attr:`timings` sums the ``common_perf_print`` counters over all generations.  The KV cache is kept: a prompt
    that extends the cached tokens (the next turn of a chat) only evaluates the new tokens.
    """

    def __init__(self, path: str | os.PathLike, n_ctx: int | None = None, mode: str = "ggml",
                 rope_policy: str = "ctx", sliding_window: bool = False, threads: int | None = None,
                 warmup: bool = True):
        t0 = time.perf_counter()
        if threads is not None:
            if threads < 1:
                raise RefllmError(f"threads = {threads}: must be at least 1")
            set_num_threads(threads)
        self.path = os.fspath(path)
        self.gguf = GGUFFile(path)
        try:
            self.model = Phi3Model(self.gguf, n_ctx=n_ctx or None, rope_policy=rope_policy,
                                   sliding_window=sliding_window, mode=mode)
            self.tokenizer = Tokenizer.from_gguf(self.gguf)
        except BaseException:
            self.gguf.close()
            raise
        self.tokens: list[int] = []  # the token ids of the last generation
        self.stop_reason: str | None = None  # why it ended: "eog", "n_predict" or "context" (None: still running)
        if warmup:
            self.warmup()
        self.timings = Timings(load_ms=1e3 * (time.perf_counter() - t0))
        self.sampler: Sampler | None = None  # the sampler of the last generation

    def warmup(self) -> None:
        """Run a two-token prompt and one decode step, then empty the cache, as llama.cpp warms up a context: the
        kernels are compiled (or loaded from Numba's cache) and the weights paged in before anything is timed."""
        bos = self.tokenizer.bos_id if self.tokenizer.bos_id is not None else 0
        self.model.forward([bos, bos])
        self.model.forward([bos])
        self.model.reset()

    @property
    def n_ctx(self) -> int:
        return self.model.n_ctx

    @property
    def params(self):
        """The hyperparameters (:class:`refllm.model.Phi3Params`)."""
        return self.model.params

    def close(self) -> None:
        self.model.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- text ↔ tokens ----------------------------------------------------------------------------------------------

    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = True) -> list[int]:
        """Token ids of ``text`` (``llama_tokenize``): BOS as the file says unless ``add_bos`` is given;
        ``special``: recognize control tokens such as ``<|user|>`` written in the text."""
        return self.tokenizer.encode(text, add_bos=add_bos, parse_special=special)

    def detokenize(self, ids: Sequence[int], special: bool = False) -> str:
        """The text of ``ids`` (``llama_detokenize``); ``special``: render control tokens."""
        return self.tokenizer.decode(ids, special=special)

    # -- the model --------------------------------------------------------------------------------------------------

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """The logits of every position of ``tokens`` run from an empty cache: float32 [n, n_vocab]."""
        return self.model.prompt_logits(tokens)

    def sampler_params(self, **given) -> SamplerParams:
        """llama.cpp's sampling defaults, then the file's ``general.sampling.*`` keys, then ``given`` (None: unset)."""
        return SamplerParams.from_gguf(self.gguf, **given)

    def _prefill(self, prompt: list[int]) -> np.ndarray:
        """Evaluate the part of ``prompt`` that is not in the cache yet; return the last position's logits."""
        cached = self.model.tokens
        common = 0
        while common < min(len(cached), len(prompt)) and cached[common] == prompt[common]:
            common += 1
        common = min(common, len(prompt) - 1)  # evaluate at least one token: its logits are needed
        t0 = time.perf_counter()
        logits = self.model.forward(prompt[common:], common, last_only=True)[-1]
        self.timings.prompt_eval_ms += 1e3 * (time.perf_counter() - t0)
        self.timings.n_prompt_eval += len(prompt) - common
        return logits

    def generate(self, prompt: str | Sequence[int], n_predict: int = -1, *, temp: float | None = None,
                 top_k: int | None = None, top_p: float | None = None, min_p: float | None = None,
                 repeat_penalty: float | None = None, repeat_last_n: int | None = None,
                 frequency_penalty: float | None = None, presence_penalty: float | None = None,
                 seed: int | None = None, ignore_eos: bool = False) -> Iterator[str]:
        """Generate a continuation of ``prompt`` (text, tokenized with BOS as the file says, or token ids) and
        yield its text as it is produced.

        Stops at an end-of-generation token (``<|end|>``, ``<|endoftext|>``, ``</s>``; not printed) unless
        ``ignore_eos`` (then they are banned, as llama.cpp's ``--ignore-eos`` does), after ``n_predict`` tokens
        (-1: no limit), or when the context is full.  The sampling settings left at None take llama.cpp's defaults
        (:meth:`sampler_params`); ``seed`` None or -1 is a random seed.
        """
        ids = self.tokenize(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            if self.tokenizer.bos_id is None:
                raise RefllmError("the prompt is empty")
            ids = [self.tokenizer.bos_id]
        if len(ids) > self.n_ctx - CTX_RESERVE:
            raise RefllmError(f"prompt is too long ({len(ids)} tokens, max {self.n_ctx - CTX_RESERVE})")
        bias = {t: float("-inf") for t in self.tokenizer.eog_ids} if ignore_eos else {}
        params = self.sampler_params(temp=temp, top_k=top_k, top_p=top_p, min_p=min_p, repeat_penalty=repeat_penalty,
                                     repeat_last_n=repeat_last_n, frequency_penalty=frequency_penalty,
                                     presence_penalty=presence_penalty, seed=seed, logit_bias=bias)
        self.sampler = sampler = Sampler(params)
        self.tokens = []
        self.stop_reason = None
        return self._generate(ids, n_predict, sampler)

    def _generate(self, prompt: list[int], n_predict: int, sampler: Sampler) -> Iterator[str]:
        timings = self.timings
        sampler.accept_many(prompt)  # llama-completion puts the prompt in the penalty history
        logits = self._prefill(prompt)
        stream = self.tokenizer.stream(strip_leading_space=False)  # generated pieces are printed as they are
        while n_predict < 0 or len(self.tokens) < n_predict:
            t0 = time.perf_counter()
            token = sampler.sample(logits)
            timings.sample_ms += 1e3 * (time.perf_counter() - t0)
            timings.n_sample += 1
            if self.tokenizer.is_eog(token):
                self.stop_reason = "eog"
                break
            self.tokens.append(token)
            piece = stream.push(token)
            if piece:
                yield piece
            if len(self.tokens) == n_predict:
                self.stop_reason = "n_predict"
                break
            if self.model.n_past + 1 >= self.n_ctx:  # llama.cpp without context shift stops here
                self.stop_reason = "context"
                break
            t0 = time.perf_counter()
            logits = self.model.forward([token], last_only=True)[-1]
            timings.eval_ms += 1e3 * (time.perf_counter() - t0)
            timings.n_eval += 1
        else:  # n_predict = 0
            self.stop_reason = "n_predict"
        rest = stream.flush()
        if rest:
            yield rest

    def chat(self, messages: Sequence[dict], n_predict: int = -1, **sampling) -> Iterator[str]:
        """Render ``messages`` (``[{"role": "user", "content": …}, …]``) with the file's chat template, as llama.cpp
        does (:meth:`refllm.tokenizer.Tokenizer.encode_chat`), and :meth:`generate` the assistant's reply.
        For the next turn, append ``{"role": "assistant", "content": reply}`` and the next user message: the cached
        prefix of the conversation is not evaluated again."""
        return self.generate(self.tokenizer.encode_chat(messages), n_predict, **sampling)


__all__ = ["CTX_RESERVE", "Model", "Timings"]
