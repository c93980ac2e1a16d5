"""File helpers shared by the readers and writers: atomic output and checksums.

Atomic output: write beside the target under a temporary name, rename over the target at the end.  An error or
Ctrl-C while writing leaves no file at the target (and an old target untouched); the finished file gets the
permissions a plain ``open(path, "w")`` would give (``0o666`` less the umask), not ``mkstemp``'s private 0600.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory to write; on success it becomes ``path``.

    >>> with atomic_path("out.gguf") as tmp:
    ...     tmp.write_bytes(b"GGUF...")
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, as a hex string (read 4 MiB at a time)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()
