"""Read GGUF files: the header is parsed on open, tensor data are zero-copy numpy views over an mmap.

Layout of a GGUF file (version 2 and 3; all numbers little-endian; see docs/gguf.md for the full picture)::

    header        magic "GGUF" | version u32 | n_tensors u64 | n_kv u64
    KV section    n_kv × ( key: string | type: u32 | value )
    tensor infos  n_tensors × ( name: string | n_dims u32 | ne[n_dims] u64 | type u32 | offset u64 )
    padding       zeros up to a multiple of general.alignment (default 32)
    data          the tensors, each at data_start + offset, each offset a multiple of the alignment

    string = length u64 | that many UTF-8 bytes (no terminating zero)
    value  = a fixed-size number / bool, a string, or an array: item type u32 | count u64 | count items

Every read is checked before it happens: a length or a count is compared with the bytes left in the file before
anything is allocated for it, so a malformed file costs at most its own size in memory and ends in a
:class:`~refllm.errors.GGUFError` that names the file, the byte offset and the field.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GGUFError
from ..ggml_types import ELEMENT_DTYPES, TYPE_SIZES, GGMLType
from ..jit import kernel
from .constants import (
    DEFAULT_ALIGNMENT,
    GGML_MAX_DIMS,
    GGML_MAX_NAME,
    GGUF_MAGIC,
    KEY_ALIGNMENT,
    MAX_ARRAY_NESTING,
    SCALAR_DTYPES,
    SCALAR_FORMATS,
    SUPPORTED_VERSIONS,
    ValueType,
)
from .values import StringArray, Value, decode_string

INT64_MAX = 2**63 - 1
MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, a 1-byte key, type, the smallest value
MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 4 + 8  # name length, a 1-byte name, n_dims (0 dims), type, offset


@kernel
def scan_strings(buf, pos, count):
    """Walk ``count`` GGUF strings (u64 length + bytes) in ``buf`` starting at ``pos``.

    Returns ``(starts, lengths, end)``: where each string's bytes start, their lengths, and the position after the
    last string.  If a length runs past the end of ``buf`` the walk stops there and ``end`` is ``-1 - i`` for the
    failing string ``i`` (its length prefix is at ``starts[i] - 8``).
    """
    starts = np.empty(count, np.int64)
    lengths = np.empty(count, np.int64)
    size = buf.shape[0]
    for i in range(count):
        starts[i] = pos + 8
        if size - pos < 8 or buf[pos + 7] >= 128:  # no room for the length, or a length >= 2**63
            return starts, lengths, -1 - i
        n = np.int64(0)
        for b in range(7, -1, -1):  # the little-endian u64 length
            n = (n << 8) | np.int64(buf[pos + b])
        if n > size - pos - 8:
            return starts, lengths, -1 - i
        lengths[i] = n
        pos += 8 + n
    return starts, lengths, pos


@dataclass(eq=False)
class TensorInfo:
    """One tensor of a GGUF file.

    ``shape`` is in ggml order (``ne[0]`` first: the row length), ``offset`` is relative to the start of the data
    section, ``info_offset`` is where the tensor's info record starts in the file.
    """

    name: str
    type: GGMLType
    shape: tuple[int, ...]
    offset: int
    info_offset: int
    n_elements: int
    n_bytes: int
    _file: "GGUFFile | None" = None

    @property
    def file_offset(self) -> int:
        """Absolute byte offset of the tensor's data in the file."""
        return self._file.data_offset + self.offset

    @property
    def raw(self) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view over the mmap."""
        return self._file._view(self.file_offset, self.n_bytes)

    @property
    def data(self) -> np.ndarray:
        """The tensor as a zero-copy numpy view over the mmap.

        Float and integer types: an array of the element type (bfloat16 as raw ``uint16`` bits) shaped like the
        tensor in numpy order (``ne[0]`` last).  Block types: ``uint8[rows, row_bytes]``.
        """
        raw = self.raw
        dtype = ELEMENT_DTYPES.get(self.type)
        if dtype is not None:
            return raw.view(dtype).reshape(self.shape[::-1] or (1,))
        rows = self.n_elements // self.shape[0] if self.shape and self.shape[0] else 0
        return raw.reshape(rows, self.n_bytes // rows if rows else 0)


class _Cursor:
    """A position in the mmap with checked little-endian reads; every error names the field being read."""

    def __init__(self, gguf: "GGUFFile", pos: int = 0):
        self.gguf = gguf
        self.buf = gguf._mm
        self.size = gguf.file_size
        self.pos = pos

    def error(self, field: str, message: str, offset: int | None = None) -> GGUFError:
        return GGUFError(self.gguf.path, self.pos if offset is None else offset, field, message)

    def need(self, n: int, field: str) -> None:
        if n > self.size - self.pos:
            raise self.error(field, f"needs {n} bytes but the file ends after {self.size - self.pos} (truncated?)")

    def scalar(self, vtype: ValueType, field: str):
        fmt = SCALAR_FORMATS[vtype]
        n = struct.calcsize(fmt)
        self.need(n, field)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value

    def u32(self, field: str) -> int:
        return self.scalar(ValueType.UINT32, field)

    def u64(self, field: str) -> int:
        return self.scalar(ValueType.UINT64, field)

    def string(self, field: str) -> str:
        start = self.pos
        n = self.u64(f"{field} length")
        if n > self.size - self.pos:
            raise self.error(f"{field} length", f"string of {n} bytes is longer than the rest of the file "
                             f"({self.size - self.pos} bytes)", start)
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return decode_string(raw)

    def value_type(self, field: str) -> ValueType:
        start = self.pos
        tag = self.u32(field)
        try:
            return ValueType(tag)
        except ValueError:
            raise self.error(field, f"unknown GGUF value type {tag} (expected 0..12)", start) from None

    def value(self, vtype: ValueType, field: str, depth: int = 0):
        """The data of one value of type ``vtype`` (for ARRAY: the element type and count come first)."""
        if vtype == ValueType.STRING:
            return self.string(field)
        if vtype != ValueType.ARRAY:
            return self.scalar(vtype, field)
        item_type = self.value_type(f"{field} array type")
        count_at = self.pos
        count = self.u64(f"{field} array count")
        left = self.size - self.pos
        if item_type in SCALAR_DTYPES:
            itemsize = SCALAR_DTYPES[item_type].itemsize
            if count > left // itemsize:
                raise self.error(f"{field} array count", f"{count} × {item_type.name} needs {count * itemsize} "
                                 f"bytes but only {left} remain", count_at)
            data = np.frombuffer(self.buf, SCALAR_DTYPES[item_type], count, self.pos)
            self.pos += count * itemsize
            return item_type, data
        if item_type == ValueType.STRING:
            if count > left // 8:
                raise self.error(f"{field} array count", f"{count} strings need at least {count * 8} bytes "
                                 f"but only {left} remain", count_at)
            return item_type, self.string_array(count, field)
        # an array of arrays
        if depth >= MAX_ARRAY_NESTING:
            raise self.error(f"{field} array type", f"arrays nested deeper than {MAX_ARRAY_NESTING} levels")
        if count > left // 12:
            raise self.error(f"{field} array count", f"{count} nested arrays need at least {count * 12} bytes "
                             f"but only {left} remain", count_at)
        items = []
        for i in range(count):
            at = self.pos
            sub_type, sub_data = self.value(ValueType.ARRAY, f"{field}[{i}]", depth + 1)
            items.append(Value(ValueType.ARRAY, sub_data, sub_type, at))
        return item_type, items

    def string_array(self, count: int, field: str) -> StringArray:
        begin = self.pos
        window = np.frombuffer(self.buf, np.uint8, self.size - begin, begin)
        starts, lengths, end = scan_strings(window, 0, count)
        if end < 0:
            i = -1 - end
            at = begin + int(starts[i]) - 8
            raise self.error(f"{field}[{i}] length", "string runs past the end of the file", at)
        self.pos = begin + int(end)
        return StringArray(memoryview(window[:end]), starts, lengths)


class GGUFFile:
    """An open GGUF file: ``version``, ``alignment``, ``metadata`` (key → :class:`Value`, in file order),
    ``tensors`` (a list of :class:`TensorInfo`, in file order) and ``data_offset``.

    Only the header is read on open; tensor data are views into the mmap, read by the OS when touched.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, buffer=None):
        """Open ``path``; or, with ``buffer`` (any bytes-like object), parse that and use ``path`` only in messages."""
        self.path = Path(path)
        self._mm = None
        if buffer is not None:
            self._mm = memoryview(buffer).cast("B")
            self.file_size = len(self._mm)
        else:
            try:
                with open(self.path, "rb") as f:
                    self.file_size = os.fstat(f.fileno()).st_size
                    if self.file_size > 0:
                        self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except OSError as e:
                raise GGUFError(self.path, None, "file", e.strerror or str(e)) from None
        if self.file_size == 0:
            raise GGUFError(self.path, 0, "header.magic", "the file is empty")
        try:
            self._parse()
        except BaseException:
            self.close()
            raise

    # -- parsing ------------------------------------------------------------------------------------------------

    def _parse(self) -> None:
        c = _Cursor(self)
        c.need(4, "header.magic")
        magic = bytes(self._mm[0:4])
        if magic != GGUF_MAGIC:
            raise c.error("header.magic", f"expected b'GGUF', found {magic!r}: not a GGUF file")
        c.pos = 4
        self.version = c.u32("header.version")
        if self.version not in SUPPORTED_VERSIONS:
            if self.version & 0xFFFF == 0 and (self.version >> 24) in SUPPORTED_VERSIONS + (1,):
                msg = "big-endian GGUF files are not supported"
            elif self.version == 1:
                msg = "GGUF version 1 is not supported (refllm reads versions 2 and 3)"
            else:
                msg = f"unsupported GGUF version {self.version} (refllm reads versions 2 and 3)"
            raise c.error("header.version", msg, 4)
        n_tensors = c.u64("header.n_tensors")
        n_kv = c.u64("header.n_kv")
        left = self.file_size - c.pos
        if n_kv > left // MIN_KV_BYTES:
            raise c.error("header.n_kv", f"{n_kv} key/value pairs cannot fit in the {left} bytes left", 16)
        if n_tensors > left // MIN_TENSOR_INFO_BYTES:
            raise c.error("header.n_tensors", f"{n_tensors} tensor infos cannot fit in the {left} bytes left", 8)

        self.metadata: dict[str, Value] = {}
        for i in range(n_kv):
            at = c.pos
            key = c.string(f"kv[{i}].key")
            if not key:
                raise c.error(f"kv[{i}].key", "empty key", at)
            if key in self.metadata:
                raise c.error(f"kv[{i}].key", f"duplicate key {key!r}", at)
            field = f"kv[{i}] {key!r}"
            vtype = c.value_type(f"{field} type")
            data = c.value(vtype, f"{field} value")
            if vtype == ValueType.ARRAY:
                item_type, data = data
                self.metadata[key] = Value(vtype, data, item_type, at)
            else:
                self.metadata[key] = Value(vtype, data, None, at)

        self.alignment = DEFAULT_ALIGNMENT
        if KEY_ALIGNMENT in self.metadata:
            v = self.metadata[KEY_ALIGNMENT]
            if v.type != ValueType.UINT32:
                raise c.error(KEY_ALIGNMENT, f"must be UINT32, not {v.type.name}", v.offset)
            if v.data == 0 or v.data & (v.data - 1):
                raise c.error(KEY_ALIGNMENT, f"{v.data} is not a power of 2", v.offset)
            self.alignment = v.data

        self.tensors: list[TensorInfo] = []
        self._by_name: dict[str, TensorInfo] = {}
        for i in range(n_tensors):
            info = self._tensor_info(c, i)
            if info.name in self._by_name:
                raise c.error(f"tensor[{i}].name", f"duplicate tensor name {info.name!r}", info.info_offset)
            self._by_name[info.name] = info
            self.tensors.append(info)

        self.header_size = c.pos
        padded = -(-c.pos // self.alignment) * self.alignment
        self.data_offset = padded if n_tensors else c.pos
        self._check_tensor_placement()

    def _tensor_info(self, c: _Cursor, i: int) -> TensorInfo:
        at = c.pos
        name = c.string(f"tensor[{i}].name")
        field = f"tensor[{i}] {name!r}"
        if len(name.encode("utf-8", "surrogateescape")) >= GGML_MAX_NAME:
            raise c.error(f"{field} name", f"name is longer than {GGML_MAX_NAME - 1} bytes", at)
        dims_at = c.pos
        n_dims = c.u32(f"{field} n_dims")
        if n_dims > GGML_MAX_DIMS:
            raise c.error(f"{field} n_dims", f"{n_dims} dimensions (at most {GGML_MAX_DIMS})", dims_at)
        shape = []
        n_elements = 1
        for d in range(n_dims):
            ne_at = c.pos
            ne = c.u64(f"{field} ne[{d}]")
            if ne > INT64_MAX:
                raise c.error(f"{field} ne[{d}]", f"{ne} is not a valid dimension (negative as int64)", ne_at)
            n_elements *= ne
            if n_elements > INT64_MAX:
                raise c.error(f"{field} ne[{d}]", "the number of elements overflows int64", ne_at)
            shape.append(ne)
        type_at = c.pos
        type_id = c.u32(f"{field} type")
        try:
            ggml_type = GGMLType(type_id)
        except ValueError:
            raise c.error(f"{field} type", f"unknown ggml type {type_id}", type_at) from None
        block_size, type_size = TYPE_SIZES[ggml_type]
        row = shape[0] if shape else 1
        if row % block_size:
            raise c.error(f"{field} ne[0]", f"{row} elements per row is not a multiple of the "
                          f"{ggml_type.name} block size {block_size}", dims_at + 4)
        offset = c.u64(f"{field} offset")
        return TensorInfo(name, ggml_type, tuple(shape), offset, at,
                          n_elements, n_elements // block_size * type_size, self)

    def _check_tensor_placement(self) -> None:
        space = self.file_size - self.data_offset
        for t in self.tensors:
            field = f"tensor {t.name!r} offset"
            if t.offset % self.alignment:
                raise GGUFError(self.path, t.info_offset, field,
                                f"data offset {t.offset} is not a multiple of the alignment {self.alignment}")
            if t.offset > space or t.n_bytes > space - t.offset:
                raise GGUFError(self.path, t.info_offset, field,
                                f"data [{t.offset}, {t.offset + t.n_bytes}) lies outside the data section "
                                f"of {max(space, 0)} bytes (file truncated?)")
        placed = sorted((t for t in self.tensors if t.n_bytes), key=lambda t: t.offset)
        for before, after in zip(placed, placed[1:]):
            if before.offset + before.n_bytes > after.offset:
                raise GGUFError(self.path, after.info_offset, f"tensor {after.name!r} offset",
                                f"data overlaps tensor {before.name!r}")

    # -- access -------------------------------------------------------------------------------------------------

    def _view(self, offset: int, n: int) -> np.ndarray:
        return np.frombuffer(self._mm, np.uint8, n, offset)

    def tensor(self, name: str) -> TensorInfo:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None

    def get(self, key: str, default=None):
        """The plain-Python value of a metadata key (see :meth:`Value.to_python`), or ``default``."""
        value = self.metadata.get(key)
        return default if value is None else value.to_python()

    def close(self) -> None:
        mm = getattr(self, "_mm", None)
        if isinstance(mm, mmap.mmap):
            try:
                mm.close()
            except BufferError:
                pass  # numpy views are still alive: the mapping goes away with the last of them
        self._mm = None

    def __enter__(self) -> "GGUFFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"GGUFFile({str(self.path)!r}, version={self.version}, {len(self.metadata)} keys, "
                f"{len(self.tensors)} tensors)")


def read(path: str | os.PathLike) -> GGUFFile:
    """Open a GGUF file (see :class:`GGUFFile`)."""
    return GGUFFile(path)
