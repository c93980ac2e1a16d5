"""Importance matrices: llama.cpp's ``imatrix`` files, read as ``llama-quantize --imatrix`` reads them.

An importance matrix holds, for every weight matrix of a model, one non-negative number per *column* (per input
feature, ``ne[0]`` values; for a 3-D expert tensor one such vector per expert): the mean of the squared activations
that column met while a calibration text ran through the model.  The quantizers use it as per-element weights of
their error (``quant_weights`` of ``ggml_quantize_chunk``), so the columns that matter are rounded more carefully.

``llama-imatrix`` writes two formats; both are read here (``common/imatrix-loader.cpp``, then ``load_imatrix`` of
``tools/quantize/quantize.cpp``):

**GGUF** (the default since 2025).  A GGUF file with the keys ``general.type = "imatrix"``, ``imatrix.datasets``
(array of strings), ``imatrix.chunk_count`` and ``imatrix.chunk_size`` (u32), and two F32 tensors per entry:
``NAME.in_sum2`` of shape ``[ne0, n_mat]`` (sums of squared activations) and ``NAME.counts`` of shape ``[1, n_mat]``
(how many activations were summed, per expert matrix).  The value used is ``in_sum2 / counts`` (float32, the count
rounded to an integer first); a matrix that was never reached (count 0) gets all ones.  All three keys must be
present.

**Legacy ``.dat``**.  Little-endian, no header::

    int32 n_entries
    n_entries times:  int32 len | len bytes name | int32 ncall | int32 nval | nval float32 values
    optional:         int32 chunk_count | int32 len | len bytes dataset name

The stored values are already means multiplied by ``ncall``; the value used is ``value / ncall`` (float32), or the
value itself when ``ncall`` is 0.

:func:`load` returns an :class:`ImportanceMatrix`; :func:`write_gguf` and :func:`write_legacy` write either format
(the tests use them to make imatrix files for ``llama-quantize`` and refllm alike).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import RefllmError
from ..ggml_types import GGMLType
from ..gguf import TensorSpec, Value, ValueType, read, write
from ..gguf.constants import GGUF_MAGIC

KEY_DATASETS = "imatrix.datasets"
KEY_CHUNK_COUNT = "imatrix.chunk_count"
KEY_CHUNK_SIZE = "imatrix.chunk_size"
SUFFIX_SUMS = ".in_sum2"
SUFFIX_COUNTS = ".counts"


@dataclass
class ImportanceMatrix:
    """The loaded matrix: ``entries`` maps a tensor name to its float32 weights (``ne0 * n_mat`` values, expert
    after expert); ``datasets`` the calibration files named in it; ``chunk_count`` the number of chunks it was
    computed on (0 if unknown)."""

    path: str
    entries: dict[str, np.ndarray]
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    is_legacy: bool = False

    def select(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> ImportanceMatrix:
        """``--include-weights`` / ``--exclude-weights`` (``prepare_imatrix``): keep the entries whose name contains
        one of ``include``, or drop those containing one of ``exclude``."""
        entries = dict(self.entries)
        if exclude:
            entries = {k: v for k, v in entries.items() if not any(x in k for x in exclude)}
        if include:
            entries = {k: v for k, v in entries.items() if any(x in k for x in include)}
        return ImportanceMatrix(self.path, entries, list(self.datasets), self.chunk_count, self.is_legacy)


def _fail(path, message: str) -> RefllmError:
    return RefllmError(f"{path}: imatrix: {message}")


def load(path: str | os.PathLike) -> ImportanceMatrix:
    """Read an imatrix file in either format (a file that does not start with "GGUF" is read as legacy)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise _fail(path, f"cannot open: {e.strerror or e}") from None
    if magic == GGUF_MAGIC:
        return _load_gguf(path)
    return _load_legacy(path)


def _load_gguf(path: Path) -> ImportanceMatrix:
    with read(path) as f:
        if not f.tensors:
            raise _fail(path, "no data in the file")
        datasets: list[str] = []
        v = f.metadata.get(KEY_DATASETS)
        if v is not None and v.type == ValueType.ARRAY and v.item_type == ValueType.STRING:
            datasets = [s.split("\0", 1)[0] for s in v.to_python()]
        missing = [k for k in (KEY_DATASETS, KEY_CHUNK_COUNT, KEY_CHUNK_SIZE) if k not in f.metadata]
        if missing:  # llama-quantize: "missing imatrix metadata"
            raise _fail(path, f"missing imatrix metadata (no {', '.join(missing)})")
        for key in (KEY_CHUNK_COUNT, KEY_CHUNK_SIZE):
            if f.metadata[key].type != ValueType.UINT32:
                raise _fail(path, f"{key} must be UINT32, not {f.metadata[key].type.name}")
        chunk_count = f.metadata[KEY_CHUNK_COUNT].data

        pairs: dict[str, list] = {}
        for t in f.tensors:
            if t.name.endswith(SUFFIX_SUMS):
                pairs.setdefault(t.name[: -len(SUFFIX_SUMS)], [None, None])[0] = t
            elif t.name.endswith(SUFFIX_COUNTS):
                pairs.setdefault(t.name[: -len(SUFFIX_COUNTS)], [None, None])[1] = t
        entries: dict[str, np.ndarray] = {}
        for name in sorted(pairs, key=lambda s: s.encode("utf-8", "surrogateescape")):
            sums_t, counts_t = pairs[name]
            if sums_t is None or counts_t is None:
                raise _fail(path, f"mismatched sums and counts for {name}")
            if sums_t.type != GGMLType.F32 or counts_t.type != GGMLType.F32:
                raise _fail(path, f"sums and counts for {name} must be F32")
            sums = np.array(sums_t.data, dtype=np.float32).reshape(-1)
            # the counts are rounded to integers (std::lround: halves away from zero), then used as float32
            raw_counts = np.array(counts_t.data, dtype=np.float64).reshape(-1)
            counts = (np.sign(raw_counts) * np.floor(np.abs(raw_counts) + 0.5)).astype(np.float32)
            if counts.size == 0:
                raise _fail(path, f"{name}.counts is empty")
            ne0 = sums.size // counts.size
            values = np.empty(sums.size, np.float32)
            for j, count in enumerate(counts):
                part = slice(j * ne0, (j + 1) * ne0)
                values[part] = sums[part] / count if count > 0 else np.float32(1)
            entries[name] = values
    return ImportanceMatrix(str(path), entries, datasets, int(chunk_count), is_legacy=False)


def _load_legacy(path: Path) -> ImportanceMatrix:
    data = path.read_bytes()
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if n < 0 or pos + n > len(data):
            raise _fail(path, f"byte {pos}: the file ends inside {what} (not an imatrix file?)")
        chunk = data[pos : pos + n]
        pos += n
        return chunk

    def i32(what: str) -> int:
        return struct.unpack("<i", take(4, what))[0]

    n_entries = i32("the entry count")
    if n_entries < 1:
        raise _fail(path, "no data in the file (legacy format: the entry count is < 1)")
    entries: dict[str, np.ndarray] = {}
    for i in range(n_entries):
        length = i32(f"entry {i + 1}'s name length")
        name = take(length, f"entry {i + 1}'s name").split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        ncall = i32(f"entry {i + 1}'s call count")
        nval = i32(f"entry {i + 1}'s value count")
        if nval < 1:
            raise _fail(path, f"entry {i + 1} ({name!r}): {nval} values")
        sums = np.frombuffer(take(4 * nval, f"entry {i + 1}'s values"), "<f4").astype(np.float32)
        # legacy values are (sum/count)*ncall: divide by ncall again (float / int64 is a float32 division in C++)
        entries[name] = sums / np.float32(ncall) if ncall > 0 else sums.copy()
    chunk_count, datasets = 0, []
    if pos + 4 <= len(data):  # the optional trailer: chunk count and the dataset's name
        chunk_count = struct.unpack_from("<i", data, pos)[0]
        pos += 4
        if pos + 4 <= len(data):
            length = struct.unpack_from("<i", data, pos)[0]
            pos += 4
            if 0 < length <= len(data) - pos:
                datasets.append(data[pos : pos + length].split(b"\0", 1)[0].decode("utf-8", "surrogateescape"))
    return ImportanceMatrix(str(path), entries, datasets, chunk_count, is_legacy=True)


# -- writing (what llama-imatrix's save_imatrix / save_imatrix_legacy produce) ---------------------------------------


def write_gguf(path: str | os.PathLike, sums: Mapping[str, np.ndarray], counts: Mapping[str, Sequence[float]], *,
               datasets: Iterable[str] = (), chunk_count: int = 0, chunk_size: int = 512) -> Path:
    """An imatrix in the GGUF format.  ``sums[name]`` is float32 ``[n_mat, ne0]`` (or ``[ne0]``) of summed squared
    activations, ``counts[name]`` the ``n_mat`` counts; entries are written in name order, as llama-imatrix does."""
    metadata = {
        "general.type": Value.string("imatrix"),
        KEY_DATASETS: Value.array(ValueType.STRING, list(datasets)),
        KEY_CHUNK_COUNT: Value.uint32(chunk_count),
        KEY_CHUNK_SIZE: Value.uint32(chunk_size),
    }
    tensors = []
    for name in sorted(sums):
        s = np.asarray(sums[name], np.float32)
        s = s.reshape(1, -1) if s.ndim == 1 else s
        c = np.asarray(counts[name], np.float32).reshape(-1)
        if c.size != s.shape[0]:
            raise ValueError(f"{name}: {s.shape[0]} matrices but {c.size} counts")
        tensors.append(TensorSpec(name + SUFFIX_SUMS, GGMLType.F32, (s.shape[1], s.shape[0]), s))
        tensors.append(TensorSpec(name + SUFFIX_COUNTS, GGMLType.F32, (1, c.size), c))
    return write(path, metadata, tensors)


def write_legacy(path: str | os.PathLike, values: Mapping[str, np.ndarray], ncall: Mapping[str, int] | int = 1, *,
                 chunk_count: int | None = None, dataset: str | None = None) -> Path:
    """An imatrix in the legacy ``.dat`` format: ``values[name]`` are the stored float32 values (mean times
    ``ncall``), written in name order; ``chunk_count`` and ``dataset`` make the optional trailer."""
    path = Path(path)
    parts = [struct.pack("<i", len(values))]
    for name in sorted(values):
        raw = name.encode("utf-8", "surrogateescape")
        v = np.asarray(values[name], "<f4").reshape(-1)
        n = ncall if isinstance(ncall, int) else ncall[name]
        parts.append(struct.pack("<i", len(raw)) + raw + struct.pack("<ii", n, v.size) + v.tobytes())
    if chunk_count is not None:
        parts.append(struct.pack("<i", chunk_count))
        ds = (dataset or "").encode("utf-8", "surrogateescape")
        parts.append(struct.pack("<i", len(ds)) + ds)
    path.write_bytes(b"".join(parts))
    return path
