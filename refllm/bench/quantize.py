"""``bench quantize``: quantize one GGUF file with refllm and with ``llama-quantize``; time and peak memory.

Both run as child processes on the same input with the same file type and thread count, one after the other, after
the input has been read once (so both find it in the page cache); each is measured with ``wait4`` (wall time, peak
resident set size of that child).  The outputs are then compared byte for byte.  Either give an F16/BF16/F32 GGUF
file or let the benchmark make one (``--preset``: a seeded checkpoint from the checkpoint maker, converted to F16;
``phi3.5-mini`` at full size is 3.8 B parameters, a 7.6 GB F16 file)::

    python -m refllm bench quantize --preset phi3.5-mini --scratch /tmp/bench --type Q4_K_M --threads 2
    python -m refllm bench quantize model-f16.gguf --type Q8_0
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from . import side_by_side


def _warm(path: Path, chunk: int = 64 << 20) -> float:
    """Read the file once (into the page cache); return the seconds it took."""
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(chunk)
        while f.readinto(buf):
            pass
    return time.perf_counter() - t0


def main(args) -> int:
    from ..reference.build import ensure_reference

    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    if args.model:
        model = Path(args.model)
    else:
        suffix = "".join(f"-{k}{v}" for k, v in (("l", args.layers), ("h", args.hidden)) if v is not None)
        model = scratch / f"{args.preset}{suffix}-f16.gguf"
        if not model.exists():
            from ..convert import convert, make_checkpoint

            t0 = time.perf_counter()
            kwargs = {k: v for k, v in (("layers", args.layers), ("hidden", args.hidden)) if v is not None}
            checkpoint = scratch / f"{args.preset}{suffix}-checkpoint"
            if not (checkpoint / "config.json").exists():
                make_checkpoint(checkpoint, args.preset, seed=0, progress=True, **kwargs)
            convert(checkpoint, model, "f16", progress=True)
            print(f"made {model} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    tool = ensure_reference().tool("llama-quantize")
    ours_out, ref_out = scratch / f"refllm-{args.type}.gguf", scratch / f"reference-{args.type}.gguf"
    warm = _warm(model)
    threads = str(args.threads)
    jobs = [("refllm quantize", [sys.executable, "-m", "refllm", "quantize", "--no-progress", str(model),
                                 str(ours_out), args.type, threads], None),
            ("llama-quantize", [str(tool), str(model), str(ref_out), args.type, threads], None)]
    return side_by_side(jobs, ours_out, ref_out, lambda: (
        f"input {model} ({model.stat().st_size / 1e9:.2f} GB, read into the page cache in {warm:.1f} s), "
        f"type {args.type}, {args.threads} threads, output {ours_out.stat().st_size / 1e9:.2f} GB"), args.keep)


def add_parser(sub) -> None:
    p = sub.add_parser("quantize", help="quantization time and peak memory: refllm vs llama-quantize")
    p.add_argument("model", nargs="?", metavar="GGUF", help="F16/BF16/F32 GGUF file to quantize (default: make one)")
    p.add_argument("--preset", default="phi3.5-mini", help="preset of the model to make (default phi3.5-mini, full "
                   "size: a 7.6 GB F16 file)")
    p.add_argument("--layers", type=int, help="make a smaller model: this many layers")
    p.add_argument("--hidden", type=int, help="make a smaller model: this hidden size")
    p.add_argument("--scratch", default="bench-quantize", help="directory for the made model and the outputs")
    p.add_argument("--type", default="Q4_K_M", help="llama.cpp file type (default Q4_K_M)")
    p.add_argument("--threads", type=int, default=2, help="threads for both tools (default 2)")
    p.add_argument("--keep", action="store_true", help="keep the two output files")
    p.set_defaults(func=main)
