"""Benchmarks: refllm measured next to the reference implementations in the same run (``python -m refllm bench``)."""

from __future__ import annotations

import time
from collections.abc import Callable


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
