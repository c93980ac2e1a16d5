"""``refllm golden model|quant ... --out DIR``: write golden outputs for other implementations — a prompt's
intermediate tensors under llama.cpp's graph names, or known-answer vectors of ggml's block formats
(see refllm.golden and docs/golden-format.md)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import RefllmError
from ..golden.model import golden_model
from ..golden.quant import golden_quant, parse_types
from ..model.phi3 import MODES
from ..model.rope import POLICIES


def _log(line: str) -> None:
    print(line, file=sys.stderr)


def run_model(args) -> int:
    if (args.prompt is None) == (args.file is None):
        raise RefllmError("give the prompt with exactly one of -p PROMPT or -f FILE")
    prompt = args.prompt
    if args.file is not None:
        try:
            prompt = Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise RefllmError(f"{args.file}: cannot read the prompt ({e})") from None
        prompt = prompt.removesuffix("\n")  # as llama.cpp's -f
    golden_model(args.model, prompt, args.out, n_predict=args.n_predict, mode=args.mode,
                 rope_policy=args.rope_policy, sliding_window=args.sliding_window == "on", n_ctx=args.ctx_size,
                 layers=args.layers, positions=args.positions, threads=args.threads,
                 greedy_logits=args.greedy_logits, log=_log)
    print(args.out)
    return 0


def run_quant(args) -> int:
    golden_quant(parse_types(args.type), args.out, n_rows=args.rows, n_cols=args.cols, seed=args.seed,
                 imatrix=args.imatrix, log=_log)
    print(args.out)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("golden", help="write golden outputs (model intermediates, quant known answers)",
                       description=__doc__.split("\n\n")[0].replace("``", ""))
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")

    m = kinds.add_parser("model", help="every intermediate tensor of a prompt's forward pass, and its greedy "
                                       "continuation",
                         description="Run PROMPT through MODEL and write DIR/manifest.json and "
                                     "DIR/tensors.safetensors: per position the embedding, each layer's attn_norm, "
                                     "Qcur/Kcur/Vcur (after RoPE), kqv_out, ffn_norm, ffn_out, l_out, then "
                                     "result_norm and result_output (llama.cpp's graph names).")
    m.add_argument("-m", "--model", required=True, metavar="FNAME", help="phi3 GGUF file")
    m.add_argument("-p", "--prompt", help="the prompt text (tokenized with the file's vocabulary, BOS as it says)")
    m.add_argument("-f", "--file", metavar="FNAME", help="read the prompt from a file")
    m.add_argument("-n", "--n-predict", type=int, default=0, metavar="N",
                   help="greedy continuation tokens to record (default: 0)")
    m.add_argument("-c", "--ctx-size", type=int, metavar="N", help="context size (default: the training context)")
    m.add_argument("--mode", choices=MODES, default="ggml",
                   help="numerics: ggml (llama.cpp's CPU arithmetic, the default) or f32 (float32 throughout)")
    m.add_argument("--rope-policy", choices=POLICIES, default="ctx",
                   help="LongRoPE factor choice: ctx (by context size, as llama.cpp; the default) or seq (by "
                        "sequence length, as transformers)")
    m.add_argument("--sliding-window", choices=["on", "off"], default="off",
                   help="apply the file's sliding window (default: off, as llama.cpp)")
    m.add_argument("--layers", metavar="LIST", help="layers to record: all (default), or e.g. 0,7 or 0:4 or -1")
    m.add_argument("--positions", metavar="LIST", help="prompt positions to record: all (default), or e.g. "
                                                       "0,-1 or 0:8")
    m.add_argument("--greedy-logits", action="store_true", help="also record the logits of each continuation step")
    m.add_argument("-t", "--threads", type=int, metavar="N", help="threads (the numbers do not depend on it)")
    m.add_argument("--out", required=True, metavar="DIR", help="output directory (created; its two files replaced)")
    m.set_defaults(func=run_model)

    q = kinds.add_parser("quant", help="known-answer vectors of ggml block formats: floats, bytes, decoded floats",
                         description="Encode edge-case rows (zeros, constant, outlier, subnormal, huge) and ROWS "
                                     "seeded Gaussian rows of COLS floats into each TYPE, as ggml does; write the "
                                     "input, the bytes and the decoded floats to DIR.")
    q.add_argument("--type", required=True, metavar="TYPE", help="a ggml type (Q4_K), a comma list, or all")
    q.add_argument("--rows", type=int, default=8, help="seeded Gaussian rows after the edge rows (default 8)")
    q.add_argument("--cols", type=int, default=256, help="floats per row, a multiple of the block size (default 256)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--imatrix", action="store_true",
                   help="encode with a seeded importance matrix where the type takes one (stored as TYPE.imatrix)")
    q.add_argument("--out", required=True, metavar="DIR", help="output directory")
    q.set_defaults(func=run_quant)
