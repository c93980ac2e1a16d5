"""``python -m refllm``: the command line.  Each subcommand lives in its own module and registers itself here."""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import RefllmError
from . import bench, compare, convert, golden, inspect, make_checkpoint, perplexity, quantize, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refllm", description=__doc__.split("\n")[0].strip("`: "))
    parser.add_argument("--version", action="version", version=f"refllm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (inspect, make_checkpoint, convert, quantize, bench, golden, compare, perplexity, run):
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except RefllmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `refllm inspect f.gguf | head`
        sys.stderr.close()
        return 0
