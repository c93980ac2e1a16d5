"""``refllm bench gguf|quants|convert|quantize|run``: benchmarks that measure refllm and the reference side by side in one run."""

from __future__ import annotations

from ..bench import convert as bench_convert
from ..bench import gguf as bench_gguf
from ..bench import quantize as bench_quantize
from ..bench import quants as bench_quants
from ..bench import run as bench_run


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks against llama.cpp / gguf-py, measured in the same run")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    bench_gguf.add_parser(kinds)
    bench_quants.add_parser(kinds)
    bench_convert.add_parser(kinds)
    bench_quantize.add_parser(kinds)
    bench_run.add_parser(kinds)
