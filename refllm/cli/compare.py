"""``refllm compare A B [--atol X --rtol Y] [--tensors PATTERN] [--json]``: compare two golden directories, or a
golden and another engine's dump (a .safetensors file or a directory of NAME.npy), tensor by tensor.  Exit status:
0 all tensors agree, 1 a tensor is out of tolerance, missing or misshapen, 2 a dump cannot be read."""

from __future__ import annotations

import json
import sys

from ..errors import RefllmError
from ..golden.compare import DEFAULT_ATOL, DEFAULT_RTOL, compare, format_table
from ..golden.format import read_dump


def run(args) -> int:
    try:
        a, b = read_dump(args.a), read_dump(args.b)
        exact = "quant" in (a.kind, b.kind)  # known-answer vectors: bit for bit unless told otherwise
        atol = args.atol if args.atol is not None else 0.0 if exact else DEFAULT_ATOL
        rtol = args.rtol if args.rtol is not None else 0.0 if exact else DEFAULT_RTOL
        report = compare(a, b, atol=atol, rtol=rtol, pattern=args.tensors)
    except RefllmError as e:  # unreadable input or a bad pattern: nothing was compared
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        print(format_table(report))
    return 0 if report.ok and report.results else 1


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="compare two golden outputs / dumps tensor by tensor (exit 1 on failure)",
                       description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("a", metavar="A", help="the reference: a golden directory (or a dump)")
    p.add_argument("b", metavar="B", help="the candidate: a golden directory, a .safetensors file or a directory "
                                          "of NAME.npy files")
    p.add_argument("--atol", type=float, help=f"absolute tolerance (default {DEFAULT_ATOL:g}; 0 for quant goldens)")
    p.add_argument("--rtol", type=float, help=f"relative tolerance, times |b| (default {DEFAULT_RTOL:g}; 0 for "
                                              "quant goldens)")
    p.add_argument("--tensors", metavar="PATTERN", help="only tensors whose name matches this regular expression "
                                                        "(re.search, e.g. 'l_out|result_output')")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)
