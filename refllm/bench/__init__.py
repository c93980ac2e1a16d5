"""Benchmarks: refllm measured next to the reference implementations in the same run (``python -m refllm bench``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def best_time(fn: Callable[[], object], repeat: int = 5, min_time: float = 0.0) -> float:
    """The fastest of ``repeat`` calls of ``fn`` (seconds); keeps going until ``min_time`` seconds have passed."""
    best = float("inf")
    start = time.perf_counter()
    n = 0
    while n < repeat or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        n += 1
    return best


# Linux counts the memory of the process that forked a child into the child's peak RSS (the high-water mark of the
# address space replaced at exec).  So the measured command is started by a small fresh Python, whose own few MB are
# the floor, instead of by this process, which may be large: the launcher reports the grandchild's wait4 rusage.
_LAUNCHER = """
import json, os, sys, time
t0 = time.perf_counter()
pid = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ,
                     file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_mb": usage.ru_maxrss / 1024,
                  "returncode": os.waitstatus_to_exitcode(status)}))
"""


def run_measured(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd``; return its wall time (s), peak RSS (MB), exit status and the end of its stderr."""
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *map(str, cmd)], env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        return {"seconds": 0.0, "peak_rss_mb": 0.0, "returncode": proc.returncode or 1, "stderr": proc.stderr}
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "stderr": proc.stderr}


def same_bytes(a: Path, b: Path, chunk: int = 64 << 20) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if x != y:
                return False
            if not x:
                return True


def side_by_side(jobs: list[tuple[str, list[str], dict | None]], ours_out: Path, ref_out: Path,
                 describe: Callable[[], str], keep: bool) -> int:
    """Run two commands (refllm's and the reference's, each ``(label, cmd, env)``, refllm's first) one after the
    other; print their wall time and peak RSS, the ratios, and whether their outputs are byte-identical."""
    rows = []
    for label, cmd, env in jobs:
        r = run_measured(cmd, env)
        if r["returncode"] != 0:
            print(r["stderr"][-3000:], file=sys.stderr)
            print(f"{label} failed (exit {r['returncode']})", file=sys.stderr)
            return 1
        rows.append((label, r))
    identical = same_bytes(ours_out, ref_out)
    print(describe())
    width = max(len(label) for label, _ in rows) + 2
    print(f"{'':{width}} {'time':>9} {'peak RSS':>10}")
    for label, r in rows:
        print(f"{label:{width}} {r['seconds']:8.1f}s {r['peak_rss_mb']:7.0f} MB")
    (ours_label, ours), (ref_label, ref) = rows
    print(f"{ours_label} / {ref_label}: time {ours['seconds'] / ref['seconds']:.2f}x, "
          f"peak RSS {ours['peak_rss_mb'] / ref['peak_rss_mb']:.2f}x")
    print(f"outputs byte-identical: {'yes' if identical else 'NO'}")
    if not keep:
        ours_out.unlink()
        ref_out.unlink()
    return 0 if identical else 1
