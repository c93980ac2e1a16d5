"""``bench quants``: encode and decode speed of every block format — refllm with 1 and 2 threads, ggml's C code
(``ggml_quantize_chunk`` / ``to_float`` of the reference build, through ctypes, 1 thread) and gguf-py's numpy
code where it has the type — measured in the same run on the same Gaussian matrix, with the ratios."""

from __future__ import annotations

import numpy as np

from .. import quants
from ..ggml_types import TYPE_SIZES, GGMLType, ggml_type
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
    from ..reference import ggml

    fmt = FORMATS[qtype]
    imatrix = np.ones(x.shape[1], np.float32) if fmt.imatrix == Imatrix.REQUIRED else None
    n = x.size
    row = {"type": qtype.name}
    threads = num_threads()
    if qtype in NOT_IN_CHUNK:
        ggml_encode = lambda: ggml.quantize_row_ref(x, qtype)  # noqa: E731
        ggml_decode = (lambda q: ggml.dequantize_row(q, qtype, x.shape[1])) if qtype == GGMLType.Q8_K else None
    else:
        ggml_encode = lambda: ggml.quantize_chunk(x, qtype, imatrix=imatrix)  # noqa: E731
        ggml_decode = lambda q: ggml.to_float(q, qtype, x.shape[1])  # noqa: E731
    q = ggml_encode()
    enc_py, dec_py = _gguf_py(qtype) if with_gguf_py else (None, None)
    for label, nthreads in (("refllm_1t", 1), ("refllm_2t", 2)):
        set_num_threads(nthreads)
        if fmt.quantize is not None:
            quants.quantize(x[:2], qtype, imatrix=imatrix)  # compile
            row[f"encode_{label}"] = n / best_time(lambda: quants.quantize(x, qtype, imatrix=imatrix), repeat) / 1e6
        quants.dequantize(q[:2], qtype)
        row[f"decode_{label}"] = n / best_time(lambda: quants.dequantize(q, qtype), repeat) / 1e6
    set_num_threads(threads)
    if fmt.quantize is not None:
        row["encode_ggml"] = n / best_time(ggml_encode, repeat) / 1e6
    if ggml_decode is not None:
        row["decode_ggml"] = n / best_time(lambda: ggml_decode(q), repeat) / 1e6
    if enc_py is not None:
        row["encode_gguf_py"] = n / best_time(lambda: enc_py(x), 1) / 1e6
    if dec_py is not None:
        row["decode_gguf_py"] = n / best_time(lambda: dec_py(q), 1) / 1e6
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
