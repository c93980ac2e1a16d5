"""``refllm make-checkpoint OUTDIR --preset NAME [--layers N --hidden N ...] --seed S``: a Phi-3 Hugging Face
checkpoint with seeded random weights and the real config and tokenizer files (see refllm.convert.checkpoint)."""

from __future__ import annotations

from ..convert.checkpoint import DEFAULT_SHARD_SIZE, PRESETS, make_checkpoint, parse_size


def run(args) -> int:
    out = make_checkpoint(args.outdir, args.preset, layers=args.layers, hidden=args.hidden, heads=args.heads,
                          kv_heads=args.kv_heads, intermediate=args.intermediate, seed=args.seed,
                          config_schema=args.config_schema, rope_type=args.rope_type, dtype=args.dtype,
                          shard_size=parse_size(args.shard_size), vocab_path=args.vocab, progress=True)
    print(out)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("make-checkpoint", help="write a Phi-3 Hugging Face checkpoint with seeded random weights",
                       description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("outdir", metavar="OUTDIR", help="directory to create (must not exist, or be empty)")
    p.add_argument("--preset", choices=list(PRESETS), default="phi3.5-mini")
    p.add_argument("--layers", type=int, help="num_hidden_layers (default: the preset's)")
    p.add_argument("--hidden", type=int, help="hidden_size")
    p.add_argument("--heads", type=int, help="num_attention_heads")
    p.add_argument("--kv-heads", type=int, help="num_key_value_heads")
    p.add_argument("--intermediate", type=int, help="intermediate_size (the FFN width)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config-schema", choices=["legacy", "transformers5"], default="legacy",
                   help="legacy: rope_scaling + rope_theta (transformers 4); transformers5: rope_parameters")
    p.add_argument("--rope-type", choices=["su", "longrope"], help="override the LongRoPE type name in config.json")
    p.add_argument("--dtype", choices=["bf16", "f16", "f32"], default="bf16", help="weight dtype (default bf16)")
    p.add_argument("--shard-size", default=str(DEFAULT_SHARD_SIZE),
                   help="max bytes per safetensors shard, e.g. 5GB (the default) or 200MB")
    p.add_argument("--vocab", metavar="GGUF", help="vocabulary GGUF (default: models/ggml-vocab-phi-3.gguf of the "
                   "reference sdist, fetched on first use)")
    p.set_defaults(func=run)
