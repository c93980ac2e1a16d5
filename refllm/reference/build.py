"""Fetch and build the llama.cpp reference, once per machine.

The reference is the llama.cpp tree vendored in the PyPI sdist of ``llama-cpp-python==0.3.36`` (llama.cpp commit
0c1e570).  :func:`ensure_reference` downloads the sdist with pip, unpacks ``vendor/llama.cpp`` and builds, with
cmake and the machine's C compiler, the tools refllm compares against (``llama-quantize``, ``llama-completion``,
``llama-tokenize``, ``llama-perplexity``, ``llama-bench``) and the shared library ``libggml-base.so`` whose
quantizers :mod:`refllm.reference.ggml` calls through ctypes.

Everything goes to a per-user cache directory (``$REFLLM_CACHE``, else ``$XDG_CACHE_HOME/refllm``, else
``~/.cache/refllm``).  A file lock makes concurrent test processes wait for one build instead of starting several;
a stamp file marks a finished build, so later calls return at once.

Bit-exactness is defined against this build on x86-64 with gcc: ggml-base (which holds the reference quantizers) is
compiled without ``-march=native``, so it contains no fused multiply-add.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import RefllmError

SDIST_PACKAGE = "llama-cpp-python"
SDIST_VERSION = "0.3.36"
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
TOOLS = ("llama-quantize", "llama-completion", "llama-tokenize", "llama-perplexity", "llama-bench")
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
)
_STAMP = ".refllm-build-complete"


def cache_dir() -> Path:
    """refllm's per-user cache directory (created on demand)."""
    env = os.environ.get("REFLLM_CACHE")
    if env:
        path = Path(env)
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "refllm"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Reference:
    """A finished reference build."""

    source_dir: Path  # vendor/llama.cpp of the sdist
    build_dir: Path

    @property
    def bin_dir(self) -> Path:
        return self.build_dir / "bin"

    def tool(self, name: str) -> Path:
        """Path of a built tool, e.g. ``tool("llama-quantize")``."""
        return self.bin_dir / name

    @property
    def libggml_base(self) -> Path:
        return self.bin_dir / "libggml-base.so"

    def models_dir(self) -> Path:
        """``models/`` of the vendored tree: the ``ggml-vocab-*.gguf`` files and their tokenizer test vectors."""
        return self.source_dir / "models"


def _log(message: str) -> None:
    print(f"refllm: {message}", file=sys.stderr, flush=True)


def _run(cmd: list[str], log, cwd: Path | None = None) -> None:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    result = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RefllmError(f"reference build: `{' '.join(cmd)}` failed (exit {result.returncode}); see {log.name}")


def _root() -> Path:
    root = cache_dir() / f"llama-cpp-python-{SDIST_VERSION}"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _fetch_source(root: Path, log) -> Path:
    """Download the sdist (once) and unpack its ``vendor/llama.cpp`` into ``root/llama.cpp``."""
    source = root / "llama.cpp"
    if (source / _STAMP).exists():
        return source
    downloads = root / "downloads"
    downloads.mkdir(exist_ok=True)
    tarball = downloads / f"llama_cpp_python-{SDIST_VERSION}.tar.gz"
    if not tarball.exists():
        _log(f"downloading the {SDIST_PACKAGE}=={SDIST_VERSION} sdist from PyPI (76 MB)")
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
              f"{SDIST_PACKAGE}=={SDIST_VERSION}", "-d", str(downloads)], log)
    prefix = f"llama_cpp_python-{SDIST_VERSION}/vendor/llama.cpp/"
    partial = root / "llama.cpp.partial"
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(tarball) as tar:
        members = []
        for member in tar.getmembers():
            if member.name.startswith(prefix):
                member.name = member.name[len(prefix):]
                members.append(member)
        tar.extractall(partial, members=members, filter="data")
    (partial / _STAMP).write_text(LLAMA_CPP_COMMIT + "\n")
    shutil.rmtree(source, ignore_errors=True)
    partial.rename(source)
    return source


def reference_source() -> Path:
    """The vendored llama.cpp source tree (downloaded and unpacked once; no build)."""
    root = _root()
    source = root / "llama.cpp"
    if (source / _STAMP).exists():
        return source
    with open(root / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(root / "fetch.log", "w") as log:
            return _fetch_source(root, log)


def ensure_reference(jobs: int | None = None) -> Reference:
    """Return the reference build, building it first if this machine has none yet."""
    root = _root()
    build = root / "build"
    reference = Reference(source_dir=root / "llama.cpp", build_dir=build)
    if (build / _STAMP).exists():
        return reference
    with open(root / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building: wait for it
        if (build / _STAMP).exists():
            return reference
        for program in ("cmake", "cc", "c++"):
            if shutil.which(program) is None:
                raise RefllmError(f"reference build: `{program}` is not installed; it is needed to build llama.cpp")
        log_path = root / "build.log"
        _log(f"building the llama.cpp reference ({SDIST_PACKAGE} {SDIST_VERSION}, commit {LLAMA_CPP_COMMIT[:7]}) "
             f"in {root} — once per machine, a few minutes; log: {log_path}")
        with open(log_path, "w") as log:
            source = _fetch_source(root, log)
            _run(["cmake", "-S", str(source), "-B", str(build), *CMAKE_OPTIONS], log)
            _run(["cmake", "--build", str(build), "--parallel", str(jobs or os.cpu_count() or 2),
                  "--target", "ggml-base", *TOOLS], log)
        (build / _STAMP).write_text(LLAMA_CPP_COMMIT + "\n")
        _log("reference build finished")
    return reference


if __name__ == "__main__":  # python -m refllm.reference.build
    print(ensure_reference().build_dir)
