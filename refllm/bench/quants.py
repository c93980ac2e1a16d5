"""``bench quants``: encode and decode speed of every block format — refllm with 1 and 2 threads, ggml's C code
(``ggml_quantize_chunk`` / ``to_float`` of the reference build, through ctypes, 1 thread) and gguf-py's numpy
code where it has the type — measured in the same run on the same Gaussian matrix, with the ratios."""

from __future__ import annotations

import numpy as np

from ..ggml_types import TYPE_SIZES, GGMLType, ggml_type, row_bytes
from ..jit import num_threads, set_num_threads
from ..quants import FORMATS, Imatrix
from . import best_time

NOT_IN_CHUNK = (GGMLType.Q8_K, GGMLType.Q8_1)  # ggml_quantize_chunk has no case for the activation formats


def _gguf_py(qtype: GGMLType):
    """gguf-py's (quantize, dequantize) for this type, or None where it has none."""
    import gguf

    try:
        their_type = gguf.GGMLQuantizationType[qtype.name]
    except KeyError:
        return None, None
    enc = (lambda x: gguf.quants.quantize(x, their_type))
    dec = (lambda q: gguf.quants.dequantize(q, their_type))
    try:
        enc(np.zeros((1, TYPE_SIZES[qtype].block_size), np.float32))
    except (NotImplementedError, TypeError, ValueError):
        enc = None
    try:
        dec(np.zeros((1, TYPE_SIZES[qtype].type_size), np.uint8))
    except (NotImplementedError, TypeError, ValueError):
        dec = None
    return enc, dec


def bench_type(qtype: GGMLType, x: np.ndarray, repeat: int, with_gguf_py: bool) -> dict:
    """Melem/s of each side.  refllm's kernels and ggml's functions write into preallocated outputs, so both are
    timed on the work itself, not on page faults of fresh 50 MB arrays; encode and decode are timed in separate
    passes."""
    from ..reference import ggml

    fmt = FORMATS[qtype]
    nrows, n = x.shape
    imatrix = np.ones(n, np.float32) if fmt.imatrix == Imatrix.REQUIRED else None
    weights = imatrix if imatrix is not None else np.empty(0, np.float32)
    q = np.empty((nrows, row_bytes(qtype, n)), np.uint8)
    y = np.empty((nrows, n), np.float32)
    if qtype in NOT_IN_CHUNK:  # ggml_quantize_chunk has no case for the activation formats
        ggml_encode = lambda: q.__setitem__(slice(None), ggml.quantize_row_ref(x, qtype))  # noqa: E731
        ggml_decode = (lambda: ggml.dequantize_row(q, qtype, n)) if qtype == GGMLType.Q8_K else None
    else:
        ggml_encode = lambda: ggml.quantize_chunk(x, qtype, imatrix=imatrix, out=q)  # noqa: E731
        ggml_decode = lambda: ggml.to_float(q, qtype, n, out=y)  # noqa: E731
    if qtype == GGMLType.F32:  # ggml has no to_float for F32 (its "decode" is the bytes themselves)
        ggml_decode = None
    ggml_encode()
    row = {"type": qtype.name}
    threads = num_threads()
    if fmt.quantize is not None:
        fmt.quantize(x[:2], weights, q[:2].copy())  # compile outside the timing
        for label, nthreads in (("refllm_1t", 1), ("refllm_2t", 2)):
            set_num_threads(nthreads)
            row[f"encode_{label}"] = x.size / best_time(lambda: fmt.quantize(x, weights, q), repeat) / 1e6
        set_num_threads(threads)
        row["encode_ggml"] = x.size / best_time(ggml_encode, repeat) / 1e6
    ggml_encode()  # the blocks every decoder reads: ggml's
    fmt.dequantize(q[:2], y[:2].copy())
    for label, nthreads in (("refllm_1t", 1), ("refllm_2t", 2)):
        set_num_threads(nthreads)
        row[f"decode_{label}"] = x.size / best_time(lambda: fmt.dequantize(q, y), repeat) / 1e6
    set_num_threads(threads)
    if ggml_decode is not None:
        row["decode_ggml"] = x.size / best_time(ggml_decode, repeat) / 1e6
    enc_py, dec_py = _gguf_py(qtype) if with_gguf_py else (None, None)
    if enc_py is not None:
        row["encode_gguf_py"] = x.size / best_time(lambda: enc_py(x), 1) / 1e6
    if dec_py is not None:
        row["decode_gguf_py"] = x.size / best_time(lambda: dec_py(q), 1) / 1e6
    return row


def _cell(row, key):
    v = row.get(key)
    return f"{v:9.1f}" if v is not None else f"{'-':>9}"


def _ratio(row, a, b):
    if row.get(a) is None or row.get(b) is None:
        return f"{'-':>6}"
    return f"{row[a] / row[b]:5.2f}×"


def main(args) -> int:
    types = [ggml_type(t) for t in args.types] if args.types else list(FORMATS)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, args.cols)).astype(np.float32)
    print(f"matrix {args.rows}×{args.cols} float32 Gaussian; Melem/s (best of {args.repeat}); "
          f"ratios are refllm ÷ ggml (1 thread)")
    head = (f"{'type':8} | {'enc 1t':>9} {'enc 2t':>9} {'ggml':>9} {'gguf-py':>9} {'1t/ggml':>7} {'2t/ggml':>7} | "
            f"{'dec 1t':>9} {'dec 2t':>9} {'ggml':>9} {'gguf-py':>9} {'1t/ggml':>7} {'2t/ggml':>7}")
    print(head)
    print("-" * len(head))
    for qtype in types:
        if args.cols % TYPE_SIZES[qtype].block_size:
            continue
        row = bench_type(qtype, x, args.repeat, not args.no_gguf_py)
        print(f"{row['type']:8} | {_cell(row, 'encode_refllm_1t')} {_cell(row, 'encode_refllm_2t')} "
              f"{_cell(row, 'encode_ggml')} {_cell(row, 'encode_gguf_py')} "
              f"{_ratio(row, 'encode_refllm_1t', 'encode_ggml'):>7} {_ratio(row, 'encode_refllm_2t', 'encode_ggml'):>7} | "
              f"{_cell(row, 'decode_refllm_1t')} {_cell(row, 'decode_refllm_2t')} {_cell(row, 'decode_ggml')} "
              f"{_cell(row, 'decode_gguf_py')} "
              f"{_ratio(row, 'decode_refllm_1t', 'decode_ggml'):>7} {_ratio(row, 'decode_refllm_2t', 'decode_ggml'):>7}",
              flush=True)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("quants", help="encode/decode speed per block format: refllm vs ggml vs gguf-py")
    p.add_argument("--types", nargs="*", metavar="TYPE", help="types to measure (default: all)")
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--cols", type=int, default=3072)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-gguf-py", action="store_true", help="skip gguf-py (it is slow)")
    p.set_defaults(func=main)
