"""``bench gguf``: the time to open a GGUF file with refllm's reader and with gguf-py's ``GGUFReader``.

Opening means: parse the header (all metadata and tensor infos) and be ready to hand out tensor data.  refllm's
reader is timed warm (its string-scan kernel compiled and cached, the file in the page cache) as the best of
several opens; GGUFReader likewise, with fewer repeats because it is slow.
"""

from __future__ import annotations

from pathlib import Path

from ..gguf import read
from . import best_time


def bench_open(paths: list[Path], repeat: int = 5, gguf_py_repeat: int = 2) -> list[dict]:
    from gguf import GGUFReader

    rows = []
    for path in paths:
        read(path).close()  # warm: compile/load the kernel, fill the page cache
        ours = best_time(lambda: read(path).close(), repeat)
        theirs = best_time(lambda: GGUFReader(path), gguf_py_repeat)
        rows.append({"file": str(path), "refllm_s": ours, "gguf_py_s": theirs, "speedup": theirs / ours})
    return rows


def main(args) -> int:
    rows = bench_open([Path(p) for p in args.files], args.repeat)
    print(f"{'file':50} {'refllm':>10} {'GGUFReader':>11} {'ratio':>8}")
    for r in rows:
        print(f"{Path(r['file']).name:50} {r['refllm_s'] * 1e3:8.2f}ms {r['gguf_py_s'] * 1e3:9.1f}ms "
              f"{r['speedup']:7.0f}×")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("gguf", help="time opening GGUF files: refllm's reader vs gguf-py's GGUFReader")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--repeat", type=int, default=5, help="opens per file for refllm (best time counts)")
    p.set_defaults(func=main)
