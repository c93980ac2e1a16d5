"""``refllm perplexity -m MODEL.gguf -f TEXT [-c CTX] [-b N] [-t N] [--chunks N] [--kl-divergence-base FILE]
[--kl-divergence] [--mode f32|ggml] [--rope-policy seq|ctx]``: perplexity and KL divergence as ``llama-perplexity``
computes them, reading and writing its base-logits file (see refllm.perplexity and docs/perplexity.md).

Three uses, as with llama-perplexity:

* ``-f TEXT``: perplexity of the text;
* ``-f TEXT --kl-divergence-base FILE``: the same, and save the log-probabilities to FILE;
* ``--kl-divergence-base FILE --kl-divergence``: KL divergence against FILE (the tokens come from FILE).

The results (the running ``[1]…,[2]…`` values, the final estimate, the KL table and statistics) go to stdout; the
log lines and the progress go to stderr.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from .. import perplexity as ppl
from ..errors import RefllmError
from ..jit import num_threads, set_num_threads
from ..model import Phi3Model
from ..model.phi3 import MODES
from ..model.rope import POLICIES
from ..tokenizer import Tokenizer


class _Progress:
    """``chunk i/n`` with the time left, on one line of a terminal's stderr (nothing when stderr is not a
    terminal); the per-pass time and ETA log line after the first chunk, as llama-perplexity prints it."""

    def __init__(self, prefix: str, n_chunk: int):
        self.prefix, self.n_chunk = prefix, n_chunk
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()

    def chunk_done(self, done: int) -> None:
        elapsed = time.perf_counter() - self.t0
        if done == 1:
            total = int(elapsed * self.n_chunk)
            hours = f"{total // 3600} hours " if total >= 3600 else ""
            self.clear()
            _log(f"{self.prefix}: {elapsed:.2f} seconds per pass - ETA {hours}{total % 3600 / 60.0:.2f} minutes")
        if self.tty and done < self.n_chunk:
            left = elapsed / done * (self.n_chunk - done)
            sys.stderr.write(f"\r{self.prefix}: chunk {done}/{self.n_chunk}, {elapsed:.0f} s "
                             f"(~{left:.0f} s left)\x1b[K")
            sys.stderr.flush()

    def clear(self) -> None:
        if self.tty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _out(text: str, end: str = "\n") -> None:
    print(text, end=end, flush=True)


def _read_text(path: str) -> str:
    """The text file as llama.cpp's ``-f`` reads it: the bytes, one trailing newline removed; UTF-8 required."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise RefllmError(f"{path}: cannot read the text file: {e.strerror}") from None
    if data.endswith(b"\n"):
        data = data[:-1]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RefllmError(f"{path}: byte {e.start}: the text is not valid UTF-8") from None


def _run_perplexity(args, model: Phi3Model, tokenizer: Tokenizer, bos_id: int | None) -> None:
    n_ctx = args.ctx_size
    _log("perplexity: tokenizing the input ..")
    t0 = time.perf_counter()
    tokens = np.array(tokenizer.encode(_read_text(args.file), parse_special=False), np.int32)
    _log(f"perplexity: tokenization took {1e3 * (time.perf_counter() - t0):g} ms")
    if tokens.size < 2 * n_ctx:
        raise RefllmError(f"{args.file}: you need at least {2 * n_ctx} tokens to evaluate perplexity with a context "
                          f"of {n_ctx}; the data file you provided tokenizes to only {tokens.size} tokens")
    n_chunk_max = tokens.size // n_ctx
    n_chunk = n_chunk_max if args.chunks < 0 else min(args.chunks, n_chunk_max)
    n_batch = min(args.batch_size, n_ctx)

    writer = None
    if args.kl_divergence_base:
        header = ppl.LogitsHeader(n_ctx, model.params.n_vocab, n_chunk, tokens[:n_chunk * n_ctx])
        writer = ppl.LogitsWriter(args.kl_divergence_base, header)
        _log(f"perplexity: saving all logits to {args.kl_divergence_base}")
    try:
        _log(f"perplexity: calculating perplexity over {n_chunk} chunks, n_ctx={n_ctx}, batch_size={n_batch}, "
             f"n_seq=1")
        progress = _Progress("perplexity", n_chunk)
        for i, stats in enumerate(ppl.perplexity(model, tokens, n_ctx=n_ctx, n_chunk=n_chunk, n_batch=n_batch,
                                                 bos_id=bos_id, writer=writer)):
            progress.chunk_done(i + 1)
            _out(f"[{i + 1}]{stats.ppl:.4f},", end="")
        progress.clear()
        if writer is not None:
            writer.commit()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    _out("")
    value, error = stats.final_estimate()
    if error is None:
        _log("Unexpected negative standard deviation of log(prob)")
    else:
        _out(f"Final estimate: PPL = {value:.4f} +/- {error:.5f}")


def _run_kl_divergence(args, model: Phi3Model, bos_id: int | None) -> None:
    with ppl.LogitsReader(args.kl_divergence_base) as reader:
        h = reader.header
        if h.n_ctx > args.ctx_size:
            raise RefllmError(f"{reader.path}: n_ctx: the file has been computed with {h.n_ctx}, while the current "
                              f"context is {args.ctx_size}. Increase it with -c and retry")
        if h.n_vocab != model.params.n_vocab:
            raise RefllmError(f"{reader.path}: n_vocab: inconsistent vocabulary ({h.n_vocab} in the file vs "
                              f"{model.params.n_vocab} in {args.model})")
        n_batch = min(args.batch_size, h.n_ctx)
        _log(f"kl_divergence: computing over {h.n_chunk} chunks, n_ctx={h.n_ctx}, batch_size={n_batch}, n_seq=1")
        progress = _Progress("kl_divergence", h.n_chunk)
        for i, stats in enumerate(ppl.kl_divergence(model, reader, n_batch=n_batch, bos_id=bos_id)):
            progress.chunk_done(i + 1)
            if i == 0:
                _out("")
                _out(ppl.KL_TABLE_HEADER)
            _out(ppl.kl_chunk_line(i + 1, stats))
        progress.clear()
    _out("")
    summary = ppl.kl_summary_lines(stats)
    if not summary:
        _log(f"kl_divergence: {stats.count} tokens scored; the statistics need at least "
             f"{ppl.MIN_TOKENS_FOR_STATISTICS}")
    for line in summary:
        _out(line)


def run(args) -> int:
    if args.ctx_size < 3:
        raise RefllmError(f"-c {args.ctx_size}: the context must hold at least 3 tokens (a chunk scores tokens "
                          "n_ctx/2+1 … n_ctx-1)")
    if args.batch_size < 1:
        raise RefllmError(f"-b {args.batch_size}: the batch size must be positive")
    if args.chunks == 0 or args.chunks < -1:
        raise RefllmError(f"--chunks {args.chunks}: give a positive number of chunks, or -1 for all")
    if args.kl_divergence and not args.kl_divergence_base:
        raise RefllmError("--kl-divergence: you must provide a name of a file containing the log probabilities of "
                          "the base model (--kl-divergence-base FILE)")
    if not args.kl_divergence and not args.file:
        raise RefllmError("-f TEXT is required (the text whose perplexity is computed)")
    if args.threads is not None:
        if args.threads < 1:
            raise RefllmError(f"-t {args.threads}: the thread count must be positive")
        set_num_threads(args.threads)

    model = Phi3Model.from_gguf(args.model, n_ctx=args.ctx_size, rope_policy=args.rope_policy,
                                sliding_window=False, mode=args.mode)
    with model:
        tokenizer = Tokenizer.from_gguf(model.gguf)
        if tokenizer.vocab.add_eos:
            raise RefllmError(f"{args.model}: the vocabulary adds EOS (tokenizer.ggml.add_eos_token); "
                              "llama-perplexity refuses such models")
        bos_id = tokenizer.bos_id if tokenizer.add_bos else None
        p = model.params
        _log(f"perplexity: {args.model}: {p.n_layer} layers, n_embd={p.n_embd}, n_vocab={p.n_vocab}; mode "
             f"{args.mode}, rope policy {args.rope_policy}, n_threads = {num_threads()}")
        if args.ctx_size > p.n_ctx_train:
            _log(f"perplexity: model was trained on only {p.n_ctx_train} context tokens ({args.ctx_size} specified)")
        if args.kl_divergence:
            _run_kl_divergence(args, model, bos_id)
        else:
            _run_perplexity(args, model, tokenizer, bos_id)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("perplexity", help="perplexity and KL divergence as llama-perplexity (reads and writes its "
                                          "--kl-divergence-base files)")
    p.add_argument("-m", "--model", required=True, metavar="MODEL.gguf")
    p.add_argument("-f", "--file", metavar="TEXT", help="the text (not needed with --kl-divergence)")
    p.add_argument("-c", "--ctx-size", type=int, default=512, metavar="N",
                   help="tokens per chunk; the second half of each chunk is scored (default: 512)")
    p.add_argument("-b", "--batch-size", type=int, default=2048, metavar="N",
                   help="tokens per forward call (default: 2048, at most one chunk)")
    p.add_argument("-t", "--threads", type=int, metavar="N", help="threads (default: all)")
    p.add_argument("--chunks", type=int, default=-1, metavar="N", help="max number of chunks (default: -1 = all)")
    p.add_argument("--kl-divergence-base", "--save-all-logits", metavar="FILE",
                   help="the base log-probabilities file: written by a perplexity run, read with --kl-divergence")
    p.add_argument("--kl-divergence", action="store_true",
                   help="compute the KL divergence to the log-probabilities in --kl-divergence-base")
    p.add_argument("--mode", choices=MODES, default="ggml",
                   help="numerics: ggml (llama.cpp's CPU arithmetic, default) or f32")
    p.add_argument("--rope-policy", choices=POLICIES, default="ctx",
                   help="LongRoPE factor choice: ctx (llama.cpp's, default) or seq (transformers')")
    p.set_defaults(func=run)
