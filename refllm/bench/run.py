"""``bench run``: prompt processing and generation speed of refllm's forward pass next to ``llama-bench``.

The same file, prompt length, generation length and thread count for both, measured in the same run one after the
other, as ``llama-bench`` defines its two tests:

* **pp** (prompt processing): ``-p`` random tokens in one forward call from an empty cache; tokens per second.
* **tg** (text generation): ``-n`` tokens, one forward call each, from an empty cache; tokens per second.

refllm runs in a child process (so its peak resident set size is its own: the weights are an mmap of the file, the
KV cache grows as it is filled), after a warm-up call that also loads the compiled kernels, so Numba's compile time
is not measured.  The peak RSS is compared with the budget *file size + KV cache + 10 %*::

    python -m refllm bench run -m phi35-Q4_K_M.gguf -p 64 -n 32 -t 2
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import run_measured

# llama-bench crashes with SIGILL on some CPUs when it repacks weights into its extra buffer types (AMX); it is
# then rerun with them off, which is also the matrix-product path refllm's ggml mode follows.
_SIGILL = (-4, 128 + 4)


def measure(model: str, n_prompt: int, n_gen: int, threads: int, mode: str, repetitions: int) -> dict:
    """refllm's pp and tg speed (tokens per second, best of ``repetitions``) on random tokens."""
    from ..jit import set_num_threads
    from ..model import Phi3Model

    set_num_threads(threads)
    m = Phi3Model.from_gguf(model, mode=mode, n_ctx=n_prompt + n_gen, rope_policy="ctx", sliding_window=False)
    tokens = np.random.default_rng(0).integers(0, m.params.n_vocab, n_prompt + n_gen)
    m.forward(tokens[:2])  # warm-up: loads (or compiles) the kernels of both the batch and the one-token path
    m.forward(tokens[2:3])
    pp = tg = 0.0
    for _ in range(repetitions):
        m.reset()
        t0 = time.perf_counter()
        m.forward(tokens[:n_prompt], last_only=True)
        pp = max(pp, n_prompt / (time.perf_counter() - t0))
        m.reset()
        t0 = time.perf_counter()
        for i in range(n_gen):
            m.forward(tokens[i:i + 1])
        tg = max(tg, n_gen / (time.perf_counter() - t0))
    p = m.params
    kv_bytes = 2 * p.n_layer * p.n_head_kv * m.cache.capacity * p.head_dim * m.cache.k[0].itemsize
    return {"pp": pp, "tg": tg, "kv_bytes": kv_bytes}


def _llama_bench(tool: Path, args) -> tuple[dict, dict, str]:
    """Run llama-bench (JSON on stderr, so that run_measured can time it); return its pp and tg results (by test),
    its run_measured record and a note on the options it needed."""
    base = [str(tool), "-m", str(args.model), "-p", str(args.prompt), "-n", str(args.gen), "-t", str(args.threads),
            "-r", str(args.repetitions), "-o", "md", "-oe", "json"]
    note = ""
    r = run_measured(base)
    if r["returncode"] in _SIGILL:
        note = "llama-bench run with --repack 0: its extra buffer types (AMX repacking) die with SIGILL here"
        r = run_measured(base + ["--repack", "0"])
    if r["returncode"] != 0:
        raise RuntimeError(f"llama-bench failed (exit {r['returncode']}):\n{r['stderr'][-2000:]}")
    text = r["stderr"]
    results = json.loads(text[text.index("["):text.rindex("]") + 1])
    by_test = {("pp" if row["n_prompt"] else "tg"): row["avg_ts"] for row in results}
    return by_test, r, note


def main(args) -> int:
    from ..reference.build import ensure_reference

    model = Path(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "refllm.json"
        env = {**os.environ, "NUMBA_NUM_THREADS": str(max(args.threads, 1))}
        ours = run_measured([sys.executable, "-m", "refllm.bench.run", str(model), str(args.prompt), str(args.gen),
                             str(args.threads), args.mode, str(args.repetitions), str(out)], env)
        if ours["returncode"] != 0:
            print(ours["stderr"][-3000:], file=sys.stderr)
            print(f"refllm failed (exit {ours['returncode']})", file=sys.stderr)
            return 1
        result = json.loads(out.read_text())
    theirs, ref, note = _llama_bench(ensure_reference().tool("llama-bench"), args)

    size_mb = model.stat().st_size / 1e6
    kv_mb = result["kv_bytes"] / 1e6
    budget = (size_mb + kv_mb) * 1.1
    pp, tg = f"pp{args.prompt}", f"tg{args.gen}"
    print(f"model {model} ({size_mb / 1e3:.2f} GB), {args.threads} threads, {pp} and {tg}, refllm mode "
          f"{args.mode}")
    if note:
        print(note)
    print(f"{'':22} {pp + ' tok/s':>12} {tg + ' tok/s':>12} {'peak RSS':>10}")
    print(f"{'refllm':22} {result['pp']:12.2f} {result['tg']:12.2f} {ours['peak_rss_mb']:7.0f} MB")
    print(f"{'llama.cpp':22} {theirs['pp']:12.2f} {theirs['tg']:12.2f} {ref['peak_rss_mb']:7.0f} MB")
    print(f"{'refllm / llama.cpp':22} {result['pp'] / theirs['pp']:11.2f}x {result['tg'] / theirs['tg']:11.2f}x")
    print(f"refllm peak RSS {ours['peak_rss_mb']:.0f} MB; budget {budget:.0f} MB = (file {size_mb:.0f} MB + KV cache "
          f"{kv_mb:.0f} MB) + 10 %: {'within' if ours['peak_rss_mb'] <= budget else 'OVER'}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="forward-pass speed (pp, tg tokens/s) and peak memory: refllm vs llama-bench")
    p.add_argument("-m", "--model", required=True, metavar="GGUF", help="phi3 GGUF file")
    p.add_argument("-p", "--prompt", type=int, default=64, help="prompt tokens of the pp test (default 64)")
    p.add_argument("-n", "--gen", type=int, default=32, help="generated tokens of the tg test (default 32)")
    p.add_argument("-t", "--threads", type=int, default=2, help="threads for both (default 2)")
    p.add_argument("-r", "--repetitions", type=int, default=1, help="repetitions of each test, both sides (default 1)")
    p.add_argument("--mode", default="ggml", choices=["ggml", "f32"], help="refllm's numeric mode (default ggml)")
    p.set_defaults(func=main)


if __name__ == "__main__":  # the measured child: MODEL N_PROMPT N_GEN THREADS MODE REPETITIONS OUT_JSON
    m_, p_, n_, t_, mode_, r_, out_ = sys.argv[1:]
    Path(out_).write_text(json.dumps(measure(m_, int(p_), int(n_), int(t_), mode_, int(r_))))
