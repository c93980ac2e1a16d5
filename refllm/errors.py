"""refllm's own exception types.

Everything that refllm rejects on purpose — a malformed file, an unsupported type, a bad argument — raises a
subclass of :class:`RefllmError`.  The command-line interface prints ``str(error)`` as one line and exits 1, so the
message must stand on its own: it names the file, the byte offset and the field, and says what was expected.
"""

from __future__ import annotations

import os


class RefllmError(Exception):
    """Base class of every error refllm raises deliberately."""


class GGUFError(RefllmError):
    """A GGUF file is malformed or uses a feature refllm does not support.

    ``path`` is the file, ``offset`` the byte offset of the offending field (``None`` when the problem is not at one
    place, e.g. a missing file) and ``field`` a short name of the field ("header.magic", "kv[3].value", ...).
    """

    def __init__(self, path: str | os.PathLike | None, offset: int | None, field: str, message: str):
        self.path = os.fspath(path) if path is not None else "<memory>"
        self.offset = offset
        self.field = field
        self.reason = message
        where = f"byte {offset}" if offset is not None else "-"
        super().__init__(f"{self.path}: {where}: {field}: {message}")
