"""safetensors, the weight format of Hugging Face checkpoints: a lazy reader and a streaming writer.

A ``.safetensors`` file is::

    u64 little-endian  N                 the length of the JSON header
    N bytes            JSON header       {"__metadata__": {"format": "pt"},
                                          "model.norm.weight": {"dtype": "BF16", "shape": [3072],
                                                                "data_offsets": [begin, end]}, ...}
    ...                tensor data       each tensor's bytes, C order, little-endian, at
                                         8 + N + begin ... 8 + N + end

The header is padded with spaces to a multiple of 8 bytes.  The ``safetensors`` library writes the tensors sorted by
dtype alignment and then by name, and lists them in the header in that order after ``__metadata__``; readers
(``safe_open(...).keys()``, gguf-py's ``SafetensorsLocal``) hand them out **sorted by name**, and
``convert_hf_to_gguf.py`` converts them in that order — which is why a GGUF's tensor order is alphabetical per
shard (``output.weight`` before ``token_embd.weight``, ``blk.10`` before ``blk.2``).

A checkpoint larger than a few GB is split into shards ``model-00001-of-0000N.safetensors`` ... with an index
``model.safetensors.index.json`` whose ``weight_map`` says which shard holds which tensor.

The reader here parses only the header and reads a tensor's bytes when asked, with ``pread``-style file reads (not
``mmap``), so converting never holds more than one tensor of the model in memory.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fileio import atomic_path
from ..errors import RefllmError

# safetensors dtype name -> numpy dtype of one element (BF16 is read as its raw uint16 bits: numpy has no bfloat16)
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit


class SafetensorsError(RefllmError):
    """A safetensors file or index is malformed, incomplete or holds something refllm does not convert."""


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) -> float32: the 16 bits become the top half of the float32 (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, rounded to nearest even (``torch.Tensor.to(torch.bfloat16)``; finite input)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file: where its bytes are and what they mean."""

    name: str
    dtype: str  # safetensors name: "BF16", "F32", ...
    shape: tuple[int, ...]  # numpy / PyTorch order (rows first)
    path: Path  # the file that holds it
    offset: int  # absolute byte offset of the data in the file
    nbytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def read_raw(self, start_row: int = 0, n_rows: int | None = None) -> np.ndarray:
        """The stored elements of rows ``start_row ... start_row + n_rows`` (all rows by default), as a numpy array
        of :data:`DTYPES` ``[dtype]`` (raw uint16 bits for BF16), shaped ``[n_rows, *shape[1:]]``."""
        dtype = DTYPES[self.dtype]
        rows = self.shape[0] if self.shape else 1
        row_elems = self.n_elements // rows if rows else 0
        if n_rows is None:
            n_rows = rows - start_row
        count = n_rows * row_elems
        with open(self.path, "rb") as f:
            f.seek(self.offset + start_row * row_elems * dtype.itemsize)
            data = np.fromfile(f, dtype=dtype, count=count)
        if data.size != count:
            raise SafetensorsError(f"{self.path}: tensor {self.name!r}: the file ends inside its data "
                                   f"(truncated download?)")
        return data.reshape((n_rows, *self.shape[1:]) if self.shape else ())

    def read_f32(self, start_row: int = 0, n_rows: int | None = None) -> np.ndarray:
        """Rows of the tensor converted to float32 exactly (BF16 and F16 widen without rounding)."""
        if self.dtype not in FLOAT_DTYPES:
            raise SafetensorsError(f"{self.path}: tensor {self.name!r} has dtype {self.dtype}; "
                                   f"only float tensors ({', '.join(FLOAT_DTYPES)}) can be converted")
        raw = self.read_raw(start_row, n_rows)
        if self.dtype == "BF16":
            return bf16_bits_to_f32(raw)
        return raw.astype(np.float32)


def read_header(path: str | os.PathLike) -> dict[str, TensorEntry]:
    """The tensors of one ``.safetensors`` file, **sorted by name** (as ``safe_open().keys()`` returns them).

    Only the header is read.  Every entry is checked against the file: a known dtype, a byte range that matches
    the shape and lies inside the file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise SafetensorsError(f"{path}: not a safetensors file (only {len(head)} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise SafetensorsError(f"{path}: byte 0: header length {n} does not fit a {size}-byte file")
            raw = f.read(n)
    except FileNotFoundError:
        raise SafetensorsError(f"{path}: file not found") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path}: the JSON header is invalid: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: the JSON header is not an object")
    data_start = 8 + n
    entries: dict[str, TensorEntry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{path}: tensor {name!r}: malformed header entry {info!r}") from None
        if dtype not in DTYPES:
            raise SafetensorsError(f"{path}: tensor {name!r} has dtype {dtype!r}, which refllm does not read "
                                   f"(known: {', '.join(DTYPES)})")
        entry = TensorEntry(name, dtype, shape, path, data_start + begin, end - begin)
        expected = entry.n_elements * DTYPES[dtype].itemsize
        if end - begin != expected or begin < 0 or data_start + end > size:
            raise SafetensorsError(f"{path}: tensor {name!r}: data_offsets [{begin}, {end}] do not hold "
                                   f"{dtype} {list(shape)} ({expected} bytes) inside the {size}-byte file")
        entries[name] = entry
    return dict(sorted(entries.items()))


def checkpoint_parts(directory: str | os.PathLike) -> list[Path]:
    """The safetensors files of a checkpoint directory, in the order convert_hf_to_gguf.py reads them.

    With ``model.safetensors.index.json``: the files its ``weight_map`` names, sorted.  Without: every
    ``model*.safetensors`` in the directory, sorted.
    """
    directory = Path(directory)
    index_path = directory / "model.safetensors.index.json"
    if index_path.is_file():
        weight_map = _weight_map(index_path)
        return [directory / name for name in sorted(set(weight_map.values()))]
    parts = sorted(p for p in directory.iterdir() if p.name.startswith("model") and p.name.endswith(".safetensors"))
    if not parts:
        other = sorted(p.name for p in directory.iterdir() if p.suffix in (".bin", ".pt", ".pth"))
        hint = f" (found {', '.join(other)}: PyTorch pickles are not supported, only safetensors)" if other else ""
        raise SafetensorsError(f"{directory}: no model*.safetensors file and no model.safetensors.index.json{hint}")
    return parts


def _weight_map(index_path: Path) -> dict[str, str]:
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{index_path}: cannot read the index: {e}") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        raise SafetensorsError(f"{index_path}: no 'weight_map' object")
    return weight_map


def read_checkpoint(directory: str | os.PathLike) -> dict[str, TensorEntry]:
    """Every tensor of a (single-file or sharded) checkpoint: shard by shard, each shard sorted by name.

    With an index, the tensors found must be exactly the ones the index lists; a missing shard or tensor is an
    error naming the files and tensors (convert_hf_to_gguf.py checks the same).
    """
    directory = Path(directory)
    entries: dict[str, TensorEntry] = {}
    index_path = directory / "model.safetensors.index.json"
    weight_map = _weight_map(index_path) if index_path.is_file() else None
    missing_files = []
    for part in checkpoint_parts(directory):
        if not part.is_file():
            missing_files.append(part.name)
            continue
        for name, entry in read_header(part).items():
            if name in entries:
                raise SafetensorsError(f"{part}: tensor {name!r} is also in {entries[name].path.name}")
            entries[name] = entry
    if weight_map is not None:
        missing = sorted(set(weight_map) - set(entries))
        extra = sorted(set(entries) - set(weight_map))
        if missing_files or missing or extra:
            parts = []
            if missing_files:
                parts.append(f"missing shard files: {', '.join(missing_files)}")
            if missing:
                parts.append(f"tensors listed but not found: {', '.join(missing[:8])}"
                             + (f" and {len(missing) - 8} more" if len(missing) > 8 else ""))
            if extra:
                parts.append(f"tensors found but not listed: {', '.join(extra[:8])}")
            raise SafetensorsError(f"{index_path}: the index does not match the shards: {'; '.join(parts)}")
    return entries


# --------------------------------------------------------------------------------------------------------------------
# Writing (used by the checkpoint maker): header first, then each tensor's bytes as they are produced.


@dataclass
class TensorToWrite:
    name: str
    dtype: str
    shape: tuple[int, ...]
    chunks: object  # a zero-argument callable returning an iterator of numpy arrays (the tensor's bytes, in order)

    @property
    def nbytes(self) -> int:
        n = DTYPES[self.dtype].itemsize
        for d in self.shape:
            n *= d
        return n


def header_bytes(tensors: list[TensorToWrite], metadata: dict[str, str] | None = None) -> bytes:
    """The length prefix and JSON header for ``tensors`` laid out in the given order, as the safetensors library
    writes it (``__metadata__`` first, compact JSON, padded with spaces to a multiple of 8 bytes)."""
    header: dict[str, object] = {"__metadata__": metadata if metadata is not None else {"format": "pt"}}
    offset = 0
    for t in tensors:
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def write_file(path: str | os.PathLike, tensors: Iterable[TensorToWrite]) -> None:
    """Write one safetensors file, tensors sorted by name, streaming each tensor's chunks; atomic (temp + rename)."""
    path = Path(path)
    tensors = sorted(tensors, key=lambda t: t.name)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(header_bytes(tensors))
        for t in tensors:
            written = 0
            for chunk in t.chunks():
                chunk = np.ascontiguousarray(chunk, dtype=DTYPES[t.dtype])
                f.write(memoryview(chunk).cast("B"))
                written += chunk.nbytes
            if written != t.nbytes:
                raise RefllmError(f"{path}: tensor {t.name!r}: produced {written} bytes, expected {t.nbytes}")


def iter_rows(entry: TensorEntry, rows_per_chunk: int) -> Iterator[tuple[int, int]]:
    """``(start, n)`` row ranges covering ``entry`` in chunks of at most ``rows_per_chunk`` rows."""
    rows = entry.shape[0] if entry.shape else 1
    for start in range(0, rows, max(1, rows_per_chunk)):
        yield start, min(rows_per_chunk, rows - start)
