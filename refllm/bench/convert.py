"""``bench convert``: convert one checkpoint with refllm and with ``convert_hf_to_gguf.py``; time and peak memory.

Both run as child processes on the same directory with the same output type, one after the other; each is
measured with ``wait4`` (wall time, peak resident set size of that child).  Their outputs are then compared byte
for byte.  Either give a checkpoint directory or let the benchmark make one (``--preset``, seeded random weights;
``phi3-mini-4k`` at full size is 3.8 B parameters, 7.6 GB of bf16)::

    python -m refllm bench convert --preset phi3-mini-4k --scratch /tmp/bench --outtype f16
    python -m refllm bench convert path/to/Phi-3.5-mini-instruct --outtype q8_0
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..reference.convert import converter_command
from . import side_by_side


def main(args) -> int:
    from ..convert.checkpoint import make_checkpoint

    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    if args.model:
        model = Path(args.model)
    else:
        model = scratch / args.preset
        if not (model / "config.json").exists():
            t0 = time.perf_counter()
            kwargs = {k: v for k, v in (("layers", args.layers), ("hidden", args.hidden)) if v is not None}
            make_checkpoint(model, args.preset, seed=0, progress=True, **kwargs)
            print(f"made {model} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    size = sum(p.stat().st_size for p in model.glob("*.safetensors")) / 1e9
    ours_out, ref_out = scratch / f"refllm-{args.outtype}.gguf", scratch / f"reference-{args.outtype}.gguf"
    ref_cmd, ref_env = converter_command(model, ref_out, args.outtype)
    jobs = [("refllm convert", [sys.executable, "-m", "refllm", "convert", str(model), "--outfile", str(ours_out),
                                "--outtype", args.outtype], None),
            ("convert_hf_to_gguf.py", ref_cmd, ref_env)]
    return side_by_side(jobs, ours_out, ref_out, lambda: f"checkpoint {model} ({size:.2f} GB of safetensors), "
                        f"--outtype {args.outtype}, output {ours_out.stat().st_size / 1e9:.2f} GB", args.keep)


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="HF -> GGUF conversion time and peak memory: refllm vs convert_hf_to_gguf.py")
    p.add_argument("model", nargs="?", metavar="HF_DIR", help="checkpoint to convert (default: make one)")
    p.add_argument("--preset", default="phi3-mini-4k", help="preset of the checkpoint to make (default phi3-mini-4k, "
                   "full size)")
    p.add_argument("--layers", type=int, help="make a smaller checkpoint: this many layers")
    p.add_argument("--hidden", type=int, help="make a smaller checkpoint: this hidden size")
    p.add_argument("--scratch", default="bench-convert", help="directory for the made checkpoint and the outputs")
    p.add_argument("--outtype", default="f16", choices=["f32", "f16", "bf16", "q8_0"])
    p.add_argument("--keep", action="store_true", help="keep the two GGUF files")
    p.set_defaults(func=main)
