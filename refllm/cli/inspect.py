"""``refllm inspect FILE [--json] [--no-tensors]``: list a GGUF file's metadata and tensors."""

from __future__ import annotations

import json

from ..gguf import read
from ..gguf.inspect import as_json, listing


def run(args) -> int:
    with read(args.file) as f:
        if args.json:
            print(json.dumps(as_json(f, tensors=not args.no_tensors), indent=1, ensure_ascii=False))
        else:
            print(listing(f, tensors=not args.no_tensors))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="list the metadata and tensors of a GGUF file (like gguf-dump)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="complete, machine-readable output")
    p.add_argument("--no-tensors", action="store_true", help="metadata only")
    p.set_defaults(func=run)
