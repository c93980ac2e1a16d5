"""Typed GGUF metadata values, shared by the reader and the writer.

A GGUF value always carries its type tag: ``uint32 7`` and ``int32 7`` are different values, and a file only
round-trips byte for byte if the tag is kept.  So refllm keeps every value as a :class:`Value` — the tag, the data
and, for arrays, the element tag.

=========================  =================================================================================
``Value.type``             ``Value.data``
=========================  =================================================================================
UINT8 … FLOAT64, BOOL      a Python ``int`` / ``float`` / ``bool``
STRING                     a Python ``str`` (bytes that are not UTF-8 survive as surrogate escapes)
ARRAY of numbers / bools   a 1-D numpy array (a read-only view into the file when it comes from the reader)
ARRAY of STRING            a :class:`StringArray` (lazy: a string is decoded when indexed) or a list of ``str``
ARRAY of ARRAY             a list of :class:`Value` (each itself an ARRAY)
=========================  =================================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .constants import SCALAR_DTYPES, ValueType


def encode_string(text: str) -> bytes:
    """The UTF-8 bytes of a GGUF string (the inverse of :func:`decode_string`)."""
    return text.encode("utf-8", "surrogateescape")


def decode_string(raw) -> str:
    """Decode GGUF string bytes; invalid UTF-8 is kept as surrogate escapes so that it can be written back."""
    return str(raw, "utf-8", "surrogateescape")


class StringArray(Sequence):
    """The strings of a GGUF string array, decoded on demand.

    ``buffer`` holds the array as stored in the file (for each string: a uint64 length, then the bytes);
    ``starts[i]`` and ``lengths[i]`` locate the bytes of string ``i`` in it.  Indexing decodes one string, so opening
    a file with a 262,144-token vocabulary costs one pass over the lengths and no Python objects per token.
    """

    def __init__(self, buffer: memoryview, starts: np.ndarray, lengths: np.ndarray):
        self.buffer = buffer  # the whole array's bytes, length prefixes included
        self.starts = starts
        self.lengths = lengths

    def __len__(self) -> int:
        return len(self.starts)

    def raw(self, i: int) -> bytes:
        start = int(self.starts[i])
        return bytes(self.buffer[start : start + int(self.lengths[i])])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("string index out of range")
        return decode_string(self.raw(i))

    def tolist(self) -> list[str]:
        return [self[i] for i in range(len(self))]

    def __eq__(self, other) -> bool:
        if isinstance(other, StringArray):
            return bytes(self.buffer) == bytes(other.buffer)
        if isinstance(other, Sequence):
            return len(self) == len(other) and self.tolist() == list(other)
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return f"StringArray({len(self)} strings)"


@dataclass(frozen=True, eq=False)
class Value:
    """One typed metadata value: ``type``, ``data`` and, for an ARRAY, ``item_type``.

    ``offset`` is the byte offset of the key/value pair in the file it was read from (``None`` for values made in
    memory); it is only used in messages.
    """

    type: ValueType
    data: Any
    item_type: ValueType | None = None
    offset: int | None = field(default=None, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "type", ValueType(self.type))
        if self.type == ValueType.ARRAY:
            if self.item_type is None:
                raise ValueError("an ARRAY value needs item_type")
            object.__setattr__(self, "item_type", ValueType(self.item_type))
            if self.item_type in SCALAR_DTYPES and not isinstance(self.data, np.ndarray):
                object.__setattr__(self, "data", np.asarray(self.data, dtype=SCALAR_DTYPES[self.item_type]))

    def __len__(self) -> int:
        return len(self.data) if self.type == ValueType.ARRAY else 1

    def to_python(self):
        """Plain Python: a scalar, a ``str`` or (for arrays) a list, nested for arrays of arrays."""
        if self.type != ValueType.ARRAY:
            return self.data
        if self.item_type == ValueType.ARRAY:
            return [v.to_python() for v in self.data]
        if self.item_type == ValueType.STRING:
            return list(self.data) if not isinstance(self.data, StringArray) else self.data.tolist()
        return self.data.tolist()

    def __eq__(self, other) -> bool:
        if not isinstance(other, Value):
            return NotImplemented
        if (self.type, self.item_type) != (other.type, other.item_type):
            return False
        if self.type == ValueType.ARRAY and self.item_type in SCALAR_DTYPES:
            return self.data.tobytes() == other.data.tobytes()
        if self.type == ValueType.FLOAT32 or self.type == ValueType.FLOAT64:
            return np.array(self.data).tobytes() == np.array(other.data).tobytes()  # NaN == NaN, bitwise
        return self.to_python() == other.to_python()

    __hash__ = None

    # Short constructors for the common cases.
    @classmethod
    def string(cls, text: str) -> "Value":
        return cls(ValueType.STRING, text)

    @classmethod
    def uint32(cls, n: int) -> "Value":
        return cls(ValueType.UINT32, int(n))

    @classmethod
    def int32(cls, n: int) -> "Value":
        return cls(ValueType.INT32, int(n))

    @classmethod
    def float32(cls, x: float) -> "Value":
        return cls(ValueType.FLOAT32, float(np.float32(x)))

    @classmethod
    def bool(cls, b: bool) -> "Value":
        return cls(ValueType.BOOL, bool(b))

    @classmethod
    def array(cls, item_type: ValueType, items) -> "Value":
        return cls(ValueType.ARRAY, items, item_type)
