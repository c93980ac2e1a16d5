"""``refllm quantize [options] IN.gguf [OUT.gguf] TYPE [NTHREADS]``: quantize a GGUF model with a llama.cpp file type
(Q4_K_M, Q8_0, ...), byte-identical to ``llama-quantize`` (see refllm.quantize and docs/quantize.md)."""

from __future__ import annotations

import re
import sys
import time

from ..errors import RefllmError
from ..quantize.ftypes import QUANT_OPTIONS, parse_ftype
from ..quantize.pipeline import default_output_name, quantize_file


class ProgressBar:
    """A one-line bar at the bottom of a terminal; the log lines scroll above it.  Off when stderr is not a
    terminal (then only the log lines are printed)."""

    def __init__(self, stream=None, enabled: bool | None = None):
        self.stream = stream = stream if stream is not None else sys.stderr
        self.enabled = stream.isatty() if enabled is None else enabled
        self.t0 = time.perf_counter()
        self.last = (0, 1)
        self.shown = False

    def log(self, line: str) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
        self.stream.write(line + "\n")
        if self.shown:
            self._draw(*self.last)
        self.stream.flush()

    def update(self, done: int, total: int) -> None:
        self.last = (done, total)
        if self.enabled:
            self._draw(done, total)
            self.shown = True

    def _draw(self, done: int, total: int) -> None:
        frac = done / total if total else 1.0
        width = 30
        filled = int(frac * width)
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        self.stream.write(f"\r[{'=' * filled}{'>' if filled < width else ''}{' ' * (width - filled - 1)}] "
                          f"{100 * frac:5.1f}%  {done / 1e9:.2f}/{total / 1e9:.2f} GB  {elapsed:5.0f} s "
                          f"(~{eta:.0f} s left)\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def _is_type_argument(text: str) -> bool:
    """The second positional argument is the TYPE (not the output file) if it is a file type name or a number."""
    if any(name.lower() == text.lower() for name, _ in QUANT_OPTIONS):
        return True
    return re.fullmatch(r"\s*\d+\s*", text) is not None


def run(args) -> int:
    pos = args.positional
    if len(pos) < 2 or len(pos) > 4:
        raise RefllmError("usage: refllm quantize [options] IN.gguf [OUT.gguf] TYPE [NTHREADS]")
    inp = pos[0]
    if _is_type_argument(pos[1]):
        _, ftype_name = parse_ftype(pos[1])
        out = default_output_name(inp, ftype_name)
        rest = pos[2:]
    else:
        if len(pos) < 3:
            raise RefllmError("missing TYPE (usage: refllm quantize [options] IN.gguf [OUT.gguf] TYPE [NTHREADS])")
        out = pos[1]
        _, ftype_name = parse_ftype(pos[2])
        rest = pos[3:]
    nthreads = None
    if rest:
        if len(rest) > 1:
            raise RefllmError(f"unexpected arguments: {' '.join(rest[1:])}")
        try:
            nthreads = int(rest[0])
        except ValueError:
            raise RefllmError(f"invalid nthread {rest[0]!r}") from None
    tensor_types = []
    for item in args.tensor_type or ():
        name, sep, qtype = item.partition("=")
        if not sep or not name or not qtype:
            raise RefllmError(f"malformed --tensor-type {item!r} (expected PATTERN=TYPE, e.g. attn_q=q8_0)")
        tensor_types.append((name.lower(), qtype))

    bar = ProgressBar(enabled=False if args.no_progress else None)
    try:
        quantize_file(inp, out, ftype_name, nthreads=nthreads, dry_run=args.dry_run, log=bar.log,
                      progress=bar.update, imatrix=args.imatrix, include_weights=args.include_weights or (),
                      exclude_weights=args.exclude_weights or (), pure=args.pure,
                      output_tensor_type=args.output_tensor_type, token_embedding_type=args.token_embedding_type,
                      leave_output_tensor=args.leave_output_tensor, allow_requantize=args.allow_requantize,
                      tensor_types=tensor_types)
    finally:
        bar.close()
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("quantize", help="quantize a GGUF model with a llama.cpp file type (like llama-quantize)",
                       usage="refllm quantize [options] IN.gguf [OUT.gguf] TYPE [NTHREADS]",
                       description=__doc__.split("\n\n")[0].replace("``", ""),
                       epilog="TYPE: " + ", ".join(name for name, _ in QUANT_OPTIONS)
                       + " (or the file type's number). NTHREADS: threads for the encoding (default: all cores).")
    p.add_argument("positional", nargs="+", metavar="IN.gguf [OUT.gguf] TYPE [NTHREADS]")
    p.add_argument("--imatrix", metavar="FILE", help="importance matrix (llama-imatrix's GGUF or legacy .dat file)")
    p.add_argument("--include-weights", action="append", metavar="NAME",
                   help="use the imatrix only for tensors whose name contains NAME (repeatable)")
    p.add_argument("--exclude-weights", action="append", metavar="NAME",
                   help="do not use the imatrix for tensors whose name contains NAME (repeatable)")
    p.add_argument("--pure", action="store_true", help="no mixture: every quantized tensor gets the default type")
    p.add_argument("--output-tensor-type", metavar="TYPE", help="ggml type of output.weight (e.g. q8_0)")
    p.add_argument("--token-embedding-type", metavar="TYPE", help="ggml type of token_embd.weight")
    p.add_argument("--leave-output-tensor", action="store_true", help="leave output.weight un(re)quantized")
    p.add_argument("--allow-requantize", action="store_true",
                   help="allow re-quantizing tensors that are already quantized (loses quality)")
    p.add_argument("--tensor-type", action="append", metavar="PATTERN=TYPE",
                   help="quantize the tensors whose name matches the regular expression PATTERN to TYPE (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="only show the type and size each tensor would get")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is only drawn on a terminal)")
    p.set_defaults(func=run)
