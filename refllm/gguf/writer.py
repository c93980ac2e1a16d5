"""Write GGUF files: metadata and tensors in, one file out, atomically.

The layout is the one :mod:`refllm.gguf.reader` reads (see docs/gguf.md).  Tensor data are laid out in the order
given, each starting at a multiple of the alignment (``general.alignment`` if the metadata has it, else 32) and
padded with zeros to the next multiple, as llama.cpp and gguf-py write them — so ``write(read(f))`` reproduces
``f`` byte for byte.  A file without tensors ends right after its tensor-info section, as gguf-py writes it.

Tensors are streamed: each tensor's data may be given as an array or as a callable that produces the array when
it is the tensor's turn, so a converter never holds more than one tensor in memory; the callable may also return an
iterator of pieces (a generator), so that a quantizer holds only a slab of rows.

The file is written to a temporary file in the target's directory and renamed over the target at the end; an
error or an interrupt (Ctrl-C) removes the temporary file, so the target path never holds a partial file.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_path
from ..errors import RefllmError
from ..ggml_types import TYPE_SIZES, GGMLType, ggml_type
from .constants import DEFAULT_ALIGNMENT, GGUF_MAGIC, KEY_ALIGNMENT, SCALAR_DTYPES, SCALAR_FORMATS, ValueType
from .values import StringArray, Value, encode_string


@dataclass
class TensorSpec:
    """A tensor to write: ``shape`` in ggml order (``ne[0]`` = row length first); ``data`` is an array (any shape,
    ``n_bytes`` bytes in total), an iterator of arrays (the tensor's bytes in pieces, in order), or a zero-argument
    callable that returns either.

    The reader's :class:`~refllm.gguf.reader.TensorInfo` has the same four attributes, so the tensors of an open
    file can be passed to :func:`write` as they are.
    """

    name: str
    type: GGMLType
    shape: tuple[int, ...]
    data: Any


def tensor_nbytes(qtype: GGMLType, shape: tuple[int, ...]) -> int:
    block_size, type_size = TYPE_SIZES[qtype]
    n = 1
    for ne in shape:
        n *= ne
    return n // block_size * type_size


def _pad(n: int, alignment: int) -> int:
    return -n % alignment


def _string(text: str) -> bytes:
    raw = encode_string(text)
    return struct.pack("<Q", len(raw)) + raw


def _value_bytes(vtype: ValueType, data, item_type: ValueType | None = None) -> bytes:
    """The bytes of a value without its leading type tag."""
    if vtype == ValueType.STRING:
        return _string(data)
    if vtype != ValueType.ARRAY:
        return struct.pack(SCALAR_FORMATS[vtype], data)
    head = struct.pack("<IQ", item_type, len(data))
    if item_type in SCALAR_DTYPES:
        return head + np.ascontiguousarray(data, dtype=SCALAR_DTYPES[item_type]).tobytes()
    if item_type == ValueType.STRING:
        if isinstance(data, StringArray):
            return head + bytes(data.buffer)  # already in file layout
        return head + b"".join(_string(s) for s in data)
    # an array of arrays: each item is an array without a type tag of its own (the item type says ARRAY)
    return head + b"".join(_value_bytes(ValueType.ARRAY, v.data, v.item_type) for v in data)


def header_bytes(metadata: Mapping[str, Value], tensors: list[TensorSpec], alignment: int,
                 version: int = 3) -> tuple[bytes, list[int]]:
    """The header, KV section and tensor infos (without the padding after them) and each tensor's data offset."""
    parts = [GGUF_MAGIC, struct.pack("<IQQ", version, len(tensors), len(metadata))]
    for key, value in metadata.items():
        if not isinstance(value, Value):
            raise TypeError(f"metadata {key!r}: expected a refllm.gguf.Value, got {type(value).__name__}")
        parts.append(_string(key) + struct.pack("<I", value.type)
                     + _value_bytes(value.type, value.data, value.item_type))
    offsets = []
    offset = 0
    for t in tensors:
        offsets.append(offset)
        parts.append(_string(t.name) + struct.pack("<I", len(t.shape))
                     + struct.pack(f"<{len(t.shape)}Q", *t.shape) + struct.pack("<IQ", t.type, offset))
        size = tensor_nbytes(t.type, t.shape)
        offset += size + _pad(size, alignment)
    return b"".join(parts), offsets


def _check(metadata: Mapping[str, Value], tensors: list[TensorSpec]) -> int:
    alignment = DEFAULT_ALIGNMENT
    if KEY_ALIGNMENT in metadata:
        v = metadata[KEY_ALIGNMENT]
        if v.type != ValueType.UINT32 or v.data <= 0 or v.data & (v.data - 1):
            raise RefllmError(f"metadata {KEY_ALIGNMENT} must be a UINT32 power of 2, got {v.type.name} {v.data}")
        alignment = v.data
    names = set()
    for t in tensors:
        if t.name in names:
            raise RefllmError(f"duplicate tensor name {t.name!r}")
        names.add(t.name)
        block_size = TYPE_SIZES[t.type].block_size
        if len(t.shape) > 4 or (t.shape and t.shape[0] % block_size):
            raise RefllmError(f"tensor {t.name!r}: shape {t.shape} does not fit type {t.type.name} "
                              f"(at most 4 dims, ne[0] a multiple of {block_size})")
    return alignment


def _chunks(data) -> Iterator[np.ndarray]:
    """A tensor's data as contiguous arrays: an array-like is one chunk; an iterator (e.g. a generator) yields the
    tensor in pieces, in order, so that a large tensor never has to exist in memory as a whole."""
    if isinstance(data, Iterator):
        for chunk in data:
            yield np.ascontiguousarray(chunk)
    else:
        yield np.ascontiguousarray(data)


def write(path: str | os.PathLike, metadata: Mapping[str, Value], tensors: Iterable[TensorSpec] = (), *,
          version: int = 3, on_tensor: Callable[[int, TensorSpec], None] | None = None) -> Path:
    """Write a GGUF file at ``path`` atomically; return the path.

    ``on_tensor(i, tensor)`` is called after each tensor's data is written (for progress reporting).
    """
    path = Path(path)
    tensors = [TensorSpec(t.name, ggml_type(t.type), tuple(int(n) for n in t.shape), t.data) for t in tensors]
    alignment = _check(metadata, tensors)
    header, offsets = header_bytes(metadata, tensors, alignment, version)
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        out.write(header)
        if tensors:
            out.write(bytes(_pad(len(header), alignment)))
        for i, t in enumerate(tensors):
            data = t.data() if callable(t.data) else t.data
            expected = tensor_nbytes(t.type, t.shape)
            written, more = 0, ""
            for array in _chunks(data):
                if written + array.nbytes > expected:
                    # never write past the tensor's place; after earlier pieces the total is not known
                    written, more = written + array.nbytes, "at least " if written else ""
                    break
                out.write(memoryview(array).cast("B"))
                written += array.nbytes
            if written != expected:
                raise RefllmError(f"tensor {t.name!r}: data has {more}{written} bytes, but {t.type.name} "
                                  f"{list(t.shape)} needs {expected}")
            out.write(bytes(_pad(expected, alignment)))
            if on_tensor is not None:
                on_tensor(i, t)
    return path
