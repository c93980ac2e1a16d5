"""``refllm run -m MODEL.gguf [-p PROMPT | -f FILE] [options]``: generate text with a Phi-3 GGUF model, with the flags,
defaults and log lines of llama.cpp's ``llama-completion`` / ``llama-cli`` (see refllm.generate and docs/run.md).

The generated text goes to stdout as it is produced; the log (model summary, sampler chain, timings) to stderr.
``-cnv`` chats: each line read from stdin is a user turn, rendered with the file's chat template."""

from __future__ import annotations

import os
import sys

from ..errors import RefllmError
from ..jit import num_threads
from ..model.rope import use_long_factors


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="generate text (llama-cli / llama-completion)", description=__doc__)
    p.add_argument("-m", "--model", required=True, help="the GGUF model file")
    p.add_argument("-p", "--prompt", help="the prompt (with -cnv: the first user message)")
    p.add_argument("-f", "--file", help="a file containing the prompt (one trailing newline removed)")
    p.add_argument("-n", "--n-predict", "--predict", type=int, default=-1,
                   help="number of tokens to predict (default: -1 = until end of generation or full context)")
    p.add_argument("-c", "--ctx-size", type=int, default=0,
                   help="size of the context (default: 0 = the model's training context)")
    p.add_argument("-s", "--seed", type=int, default=-1, help="RNG seed (default: -1 = a random seed)")
    p.add_argument("-t", "--threads", type=int, help="number of threads (default: Numba's; <= 0: every core)")
    p.add_argument("--temp", "--temperature", type=float, help="temperature (default: 0.80; <= 0 = greedy)")
    p.add_argument("--top-k", type=int, help="top-k sampling (default: 40, 0 = disabled)")
    p.add_argument("--top-p", type=float, help="top-p sampling (default: 0.95, 1.0 = disabled)")
    p.add_argument("--min-p", type=float, help="min-p sampling (default: 0.05, 0.0 = disabled)")
    p.add_argument("--repeat-penalty", type=float, help="penalize repeated tokens (default: 1.00 = disabled)")
    p.add_argument("--repeat-last-n", type=int, help="last n tokens to penalize (default: 64, 0 = disabled)")
    p.add_argument("--presence-penalty", type=float, help="presence penalty (default: 0.00 = disabled)")
    p.add_argument("--frequency-penalty", type=float, help="frequency penalty (default: 0.00 = disabled)")
    p.add_argument("--ignore-eos", action="store_true", help="ignore end-of-generation tokens and continue")
    p.add_argument("-cnv", "--conversation", action="store_true",
                   help="chat: read user turns from stdin (the file's chat template)")
    p.add_argument("-no-cnv", "--no-conversation", dest="conversation", action="store_false",
                   help="plain completion of the prompt (the default)")
    p.add_argument("-sys", "--system-prompt", help="system prompt (with -cnv)")
    p.add_argument("--no-display-prompt", dest="display_prompt", action="store_false",
                   help="do not print the prompt before the generated text")
    p.add_argument("--no-warmup", action="store_true", help="skip warming up the model with an empty run")
    p.add_argument("--mode", choices=("ggml", "f32"), default="ggml",
                   help="numeric mode (default: ggml = llama.cpp's CPU arithmetic)")
    p.add_argument("--rope-policy", choices=("ctx", "seq"), default="ctx",
                   help="LongRoPE factor choice (default: ctx = llama.cpp's, by the context size)")
    p.add_argument("--sliding-window", choices=("on", "off"), default="off",
                   help="apply the file's sliding window (default: off, as llama.cpp)")
    p.set_defaults(func=run)


def _log(line: str = "") -> None:
    print(line, file=sys.stderr, flush=True)


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _read_prompt(args) -> str | None:
    if args.file is None:
        return args.prompt
    try:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise RefllmError(f"{args.file}: cannot read the prompt file ({e.strerror})") from None
    return text.removesuffix("\n")


def _log_model(model, args) -> None:
    """The model summary, as llama.cpp's loader prints it (``print_info:`` lines)."""
    p, f = model.params, model.gguf
    _log(f"llama_model_loader: loaded meta data with {len(f.metadata)} key-value pairs and {len(f.tensors)} "
         f"tensors from {model.path}")
    n_params = sum(t.n_elements for t in f.tensors)
    size = sum(t.n_bytes for t in f.tensors)
    for key, value in (("arch", f.get("general.architecture")), ("n_ctx_train", p.n_ctx_train),
                       ("n_embd", p.n_embd), ("n_layer", p.n_layer), ("n_head", p.n_head),
                       ("n_head_kv", p.n_head_kv), ("n_rot", p.n_rot), ("n_swa", p.sliding_window),
                       ("n_ff", p.n_ff), ("n_ctx_orig_yarn", p.n_ctx_orig), ("n_vocab", p.n_vocab),
                       ("model params", f"{n_params / 1e6:.2f} M"),
                       ("file size", f"{size / 2**20:.2f} MiB ({8 * size / n_params:.2f} BPW)"),
                       ("general.name", f.get("general.name", "n/a"))):
        _log(f"print_info: {key:<16} = {value}")
    long = use_long_factors(args.rope_policy, p.n_ctx_orig, seq_len=0, n_ctx=model.n_ctx) if p.longrope else None
    _log(f"llama_context: n_ctx         = {model.n_ctx}")
    _log(f"refllm: mode = {args.mode}, rope policy = {args.rope_policy}"
         + ("" if long is None else f" ({'long' if long else 'short'} factors)")
         + f", sliding window = {args.sliding_window}, threads = {num_threads()}")


def _log_sampler(model) -> None:
    sampler = model.sampler
    _log(f"sampler seed: {sampler.seed}")
    _log("sampler params: \n\t" + sampler.describe_params().replace("\n", "\n\t"))
    _log(f"sampler chain: {sampler.describe()}")


def run(args) -> int:
    # the model code (Numba) is imported only by this command
    from ..generate import Model

    prompt = _read_prompt(args)
    sampling = {"temp": None if args.temp is None else max(args.temp, 0.0), "top_k": args.top_k,
                "top_p": args.top_p, "min_p": args.min_p, "repeat_penalty": args.repeat_penalty,
                "repeat_last_n": args.repeat_last_n, "presence_penalty": args.presence_penalty,
                "frequency_penalty": args.frequency_penalty, "seed": args.seed, "ignore_eos": args.ignore_eos}
    if args.ctx_size < 0:
        raise RefllmError(f"--ctx-size {args.ctx_size}: must be >= 0")
    model = Model(args.model, n_ctx=args.ctx_size, mode=args.mode, rope_policy=args.rope_policy,
                  sliding_window=args.sliding_window == "on", warmup=not args.no_warmup,
                  threads=args.threads if args.threads is None or args.threads > 0 else os.cpu_count())
    _log_model(model, args)
    try:
        if args.conversation:
            _chat(model, args, prompt, sampling)
        else:
            _complete(model, args, prompt or "", sampling)
    except KeyboardInterrupt:
        _out("\n")
        _log("interrupted")
        _log_perf(model)
        return 130
    _log_perf(model)
    return 0


def _log_perf(model) -> None:
    _log()
    for line in model.timings.report():
        _log(line)


def _stream(model, pieces) -> str:
    """Print the pieces as they come; return the text."""
    text = []
    for piece in pieces:
        _out(piece)
        text.append(piece)
    if model.stop_reason == "context":
        _log("\n\ncontext full and context shift is disabled => stopping")
    return "".join(text)


def _complete(model, args, prompt: str, sampling: dict) -> None:
    ids = model.tokenize(prompt)
    pieces = model.generate(ids, args.n_predict, **sampling)  # checks the prompt before anything is printed
    _log_sampler(model)
    _log(f"generate: n_ctx = {model.n_ctx}, n_predict = {args.n_predict}")
    _log()
    if args.display_prompt:  # llama-completion echoes the prompt tokens, each as its piece
        _out(b"".join(model.tokenizer.token_to_piece(t) for t in ids).decode("utf-8", "replace"))
    _stream(model, pieces)
    _out(" [end of text]\n" if model.stop_reason == "eog" else "\n")


def _chat(model, args, prompt: str | None, sampling: dict) -> None:
    messages = []
    if args.system_prompt:
        messages.append({"role": "system", "content": args.system_prompt})
    first = True

    def turn(user: str) -> None:
        nonlocal first
        messages.append({"role": "user", "content": user})
        pieces = model.chat(messages, args.n_predict, **sampling)
        if first:
            _log_sampler(model)
            _log(f"generate: n_ctx = {model.n_ctx}, n_predict = {args.n_predict}")
            _log()
            first = False
        reply = _stream(model, pieces)
        messages.append({"role": "assistant", "content": reply})
        _out("\n")

    if prompt:
        turn(prompt)
    while True:
        _out("\n> ")
        line = sys.stdin.readline()
        if not line:  # end of input
            _out("\n")
            return
        turn(line.rstrip("\n"))
