"""``refllm convert HF_DIR --outfile OUT.gguf --outtype f32|f16|bf16|q8_0|auto``: a Hugging Face Phi-3 checkpoint to
GGUF, byte-identical to llama.cpp's convert_hf_to_gguf.py (see refllm.convert and docs/convert.md)."""

from __future__ import annotations

import logging
import sys

from ..convert import OUTTYPES, convert


def run(args) -> int:
    # log lines like convert_hf_to_gguf.py's: "INFO:hf-to-gguf:token_embd.weight, torch.bfloat16 --> F16, ..."
    log = logging.getLogger("hf-to-gguf")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
    saved = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    log.propagate = False
    try:
        convert(args.model, args.outfile, args.outtype, model_name=args.model_name, progress=True)
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert a Hugging Face Phi-3 checkpoint to GGUF (like convert_hf_to_gguf.py)",
                       description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("model", metavar="HF_DIR", help="checkpoint directory (config.json, *.safetensors, tokenizer)")
    p.add_argument("--outfile", help="output file, or a directory; may contain {ftype} (default: a name like "
                   "Phi-3.5-mini-instruct-F16.gguf in HF_DIR)")
    p.add_argument("--outtype", choices=[*OUTTYPES, "auto"], default="f16",
                   help="tensor type of the 2-D weights (auto: bf16 or f16, as the checkpoint stores them)")
    p.add_argument("--model-name", help="general.name to write instead of the one found in the model card")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=run)
