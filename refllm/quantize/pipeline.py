"""``llama-quantize`` in Python: one GGUF file in, the same model quantized with a llama.cpp file type out, byte for
byte what ``llama-quantize IN OUT TYPE`` writes (``llama_model_quantize_impl`` of ``src/llama-quant.cpp``).

The steps:

1. **Read the header** of the input (:func:`refllm.gguf.read`: metadata and tensor infos, no data).
2. **Order** the tensors as llama.cpp's loader does (:func:`~refllm.quantize.mixtures.weights_order`): the
   non-layer tensors by name, then ``blk.0.*`` by name, ``blk.1.*``, ...  The output file keeps this order.
3. **Choose** every tensor's type (:mod:`refllm.quantize.mixtures`) and check, before anything is written, every
   reason llama-quantize would stop for (a missing or misfitting importance matrix, an already quantized input
   without ``allow_requantize``) — so a failed run leaves no file.
4. **Metadata**: the input's key/value pairs in their order, then ``general.quantization_version`` = 2 and
   ``general.file_type`` = the file type moved to the end (llama.cpp's setters remove a key and append it),
   ``split.*`` keys dropped, and the ``quantize.imatrix.*`` keys appended when an importance matrix is used.
5. **Stream** the tensors: a tensor that keeps its type is copied; any other is read a slab of rows at a time,
   decoded to float32 exactly as ggml does (F16/BF16 widen exactly; quantized inputs go through ggml's ``to_float``),
   encoded with :func:`refllm.quants.quantize` (parallel over rows; the bytes do not depend on the thread count,
   because every ggml quantizer is row-local) and written.  A slab is at most :data:`SLAB_BYTES` of float32, and the
   next slab is read from disk while the current one is encoded.  The output file is written atomically.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import quants
from ..errors import RefllmError
from ..ggml_types import TYPE_SIZES, GGMLType, row_bytes
from ..gguf import GGUFFile, TensorSpec, Value, ValueType, read, write
from ..gguf.values import StringArray
from ..jit import num_threads, set_num_threads
from . import imatrix as imatrix_io
from .ftypes import LLAMA_FTYPE_GUESSED, QUANT_OPTIONS, FType, is_quantized, parse_ftype, parse_ggml_type, type_name
from .mixtures import Decision, ModelInfo, Options, choose_types, n_dims, ne, weights_order

GGML_QNT_VERSION = 2  # general.quantization_version (ggml/include/ggml.h)
GGUF_DEFAULT_ALIGNMENT = 32
SLAB_BYTES = 16 << 20  # float32 bytes of one slab of rows (at least one row)
COPY_BYTES = 32 << 20  # bytes per piece of a tensor that is copied
MiB = 1024.0 * 1024.0
# types ggml_quantize_chunk has no case for (llama-quantize would abort on them)
NOT_IN_QUANTIZE_CHUNK = (GGMLType.Q8_K, GGMLType.Q8_1, GGMLType.I8, GGMLType.I16, GGMLType.I32, GGMLType.I64,
                         GGMLType.F64)

KEY_FILE_TYPE = "general.file_type"
KEY_QUANTIZATION_VERSION = "general.quantization_version"
SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")
KEY_IMATRIX_FILE = "quantize.imatrix.file"
KEY_IMATRIX_DATASET = "quantize.imatrix.dataset"
KEY_IMATRIX_N_ENTRIES = "quantize.imatrix.entries_count"
KEY_IMATRIX_N_CHUNKS = "quantize.imatrix.chunks_count"


@dataclass
class Planned:
    """A tensor of the output: the input tensor, the decision, and the imatrix row used to encode it."""

    source: object  # refllm.gguf.TensorInfo
    decision: Decision
    imatrix: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)  # llama.cpp's per-tensor remarks ("did not find weights ...")

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(self.decision.shape[: n_dims(self.decision.shape)])

    @property
    def out_bytes(self) -> int:
        return self.source.n_elements // TYPE_SIZES[self.decision.target].block_size * \
            TYPE_SIZES[self.decision.target].type_size


@dataclass
class Plan:
    """Everything decided before a byte is written."""

    ftype: FType
    ftype_name: str
    file_type: int  # the value of general.file_type (the input's for COPY)
    model: ModelInfo
    tensors: list[Planned]
    metadata: dict[str, Value]
    messages: list[str]  # the warnings of the type choice (fallbacks, overrides), in order
    n_fallback: int
    imatrix: imatrix_io.ImportanceMatrix | None
    will_require_imatrix: bool = False  # a dry run found a tensor that needs an imatrix, and there is none


@dataclass
class Result:
    path: Path | None  # None after a dry run
    plan: Plan
    size_in: int  # bytes of tensor data in the input
    size_out: int
    n_elements: int
    seconds: float


def _c_string(text: str) -> str:
    """llama.cpp copies string values through ``c_str()``: a string stops at its first NUL."""
    return text.split("\0", 1)[0] if "\0" in text else text


def _has_nul(items: StringArray) -> bool:
    """Whether any string of the array holds a NUL byte (without decoding them: the zero bytes of the buffer, most of
    them in the length prefixes, are located among the strings' byte ranges)."""
    buf = np.frombuffer(items.buffer, np.uint8)
    zeros = np.flatnonzero(buf == 0)
    starts = np.asarray(items.starts, np.int64)
    if zeros.size == 0 or starts.size == 0:
        return False
    idx = np.searchsorted(starts, zeros, side="right") - 1
    ok = idx >= 0
    return bool(np.any(zeros[ok] < starts[idx[ok]] + np.asarray(items.lengths, np.int64)[idx[ok]]))


def _copy_value(value: Value) -> Value:
    if value.type == ValueType.STRING and "\0" in value.data:
        return Value(ValueType.STRING, _c_string(value.data))
    if value.type == ValueType.ARRAY and value.item_type == ValueType.STRING:
        items = value.data
        if isinstance(items, StringArray):
            if not _has_nul(items):
                return value
            items = items.tolist()
        if any("\0" in s for s in items):
            return Value.array(ValueType.STRING, [_c_string(s) for s in items])
    if value.type == ValueType.ARRAY and value.item_type == ValueType.ARRAY:
        raise RefllmError("llama.cpp cannot copy arrays of arrays (gguf_set_kv aborts)")
    return value


def _guess_file_type(f: GGUFFile) -> int:
    """``llama_model_loader``'s file type: ``general.file_type`` if present, else guessed from the most common tensor
    type (or-ed with LLAMA_FTYPE_GUESSED) — what COPY writes."""
    v = f.metadata.get(KEY_FILE_TYPE)
    if v is not None and v.type == ValueType.UINT32:
        return v.data
    guess = {GGMLType.F32: FType.ALL_F32, GGMLType.F16: FType.MOSTLY_F16, GGMLType.BF16: FType.MOSTLY_BF16,
             GGMLType.Q4_0: FType.MOSTLY_Q4_0, GGMLType.Q4_1: FType.MOSTLY_Q4_1, GGMLType.Q5_0: FType.MOSTLY_Q5_0,
             GGMLType.Q5_1: FType.MOSTLY_Q5_1, GGMLType.Q8_0: FType.MOSTLY_Q8_0, GGMLType.Q2_K: FType.MOSTLY_Q2_K,
             GGMLType.Q3_K: FType.MOSTLY_Q3_K_M, GGMLType.Q4_K: FType.MOSTLY_Q4_K_M,
             GGMLType.Q5_K: FType.MOSTLY_Q5_K_M, GGMLType.Q6_K: FType.MOSTLY_Q6_K, GGMLType.TQ1_0: FType.MOSTLY_TQ1_0,
             GGMLType.TQ2_0: FType.MOSTLY_TQ2_0, GGMLType.IQ2_XXS: FType.MOSTLY_IQ2_XXS,
             GGMLType.IQ2_XS: FType.MOSTLY_IQ2_XS, GGMLType.IQ2_S: FType.MOSTLY_IQ2_S,
             GGMLType.IQ3_XXS: FType.MOSTLY_IQ3_XXS, GGMLType.IQ1_S: FType.MOSTLY_IQ1_S,
             GGMLType.IQ1_M: FType.MOSTLY_IQ1_M, GGMLType.IQ4_NL: FType.MOSTLY_IQ4_NL,
             GGMLType.IQ4_XS: FType.MOSTLY_IQ4_XS, GGMLType.IQ3_S: FType.MOSTLY_IQ3_S,
             GGMLType.NVFP4: FType.MOSTLY_NVFP4, GGMLType.Q1_0: FType.MOSTLY_Q1_0, GGMLType.Q2_0: FType.MOSTLY_Q2_0}
    counts: dict[GGMLType, int] = {}
    best, best_type = 0, GGMLType.F32
    for name in weights_order([t.name for t in f.tensors]):  # the first type to reach the maximum wins
        qtype = f.tensor(name).type
        counts[qtype] = counts.get(qtype, 0) + 1
        if counts[qtype] > best:
            best, best_type = counts[qtype], qtype
    return int(guess.get(best_type, FType.ALL_F32)) | LLAMA_FTYPE_GUESSED


def _as_type(value, what: str) -> GGMLType | None:
    if value is None or isinstance(value, GGMLType):
        return value
    if isinstance(value, str):
        return parse_ggml_type(value)
    try:
        return GGMLType(int(value))
    except ValueError:
        raise RefllmError(f"{what}: unknown ggml type {value!r}") from None


def make_plan(f: GGUFFile, ftype: FType | str | int, *, imatrix=None, include_weights: Sequence[str] = (),
              exclude_weights: Sequence[str] = (), pure: bool = False, output_tensor_type=None,
              token_embedding_type=None, leave_output_tensor: bool = False, allow_requantize: bool = False,
              tensor_types: Sequence[tuple[str, object]] = (), imatrix_name: str | None = None,
              dry_run: bool = False) -> Plan:
    """Decide everything about the output of quantizing ``f``, and check it, without writing anything.

    ``imatrix`` is a path or an :class:`~refllm.quantize.imatrix.ImportanceMatrix`; ``imatrix_name`` is the file name
    recorded in ``quantize.imatrix.file`` (default: the path as given).  With ``dry_run`` only the types are decided
    (nothing is checked that needs the data, and refllm's own encoders need not exist for them).
    """
    if isinstance(ftype, str):
        ftype, ftype_name = parse_ftype(ftype)
    else:
        ftype = FType(int(ftype))
        ftype_name = next((n for n, t in QUANT_OPTIONS if t == ftype), ftype.name)
    only_copy = ftype_name == "COPY"
    where = str(f.path)

    # the importance matrix, as prepare_imatrix (tools/quantize/quantize.cpp) leaves it
    im = None
    if imatrix is not None:
        if include_weights and exclude_weights:
            raise RefllmError("--include-weights and --exclude-weights cannot be used together")
        if not isinstance(imatrix, imatrix_io.ImportanceMatrix):
            imatrix_name = imatrix_name if imatrix_name is not None else os.fspath(imatrix)
            imatrix = imatrix_io.load(imatrix)
        im = imatrix.select(include_weights, exclude_weights)
        if not im.entries:
            im = None  # nothing left: quantize as without one (and record nothing)
        else:
            for name, values in im.entries.items():
                if not np.isfinite(values).all():
                    raise RefllmError(f"{im.path}: imatrix contains non-finite value for {name}")
    options = Options(ftype, pure=pure, output_tensor_type=_as_type(output_tensor_type, "--output-tensor-type"),
                      token_embedding_type=_as_type(token_embedding_type, "--token-embedding-type"),
                      quantize_output_tensor=not leave_output_tensor, only_copy=only_copy,
                      tensor_types=[(p, _as_type(t, "--tensor-type")) for p, t in tensor_types],
                      has_imatrix=im is not None)

    split = f.metadata.get("split.count")
    if split is not None and split.to_python() not in (0, 1):
        raise RefllmError(f"{where}: a split GGUF ({split.to_python()} files); refllm quantizes single files")
    alignment = f.metadata.get("general.alignment")
    if alignment is not None and alignment.data != GGUF_DEFAULT_ALIGNMENT:
        raise RefllmError(f"{where}: general.alignment is {alignment.data}; llama-quantize would copy that key but lay "
                          f"the data out with alignment {GGUF_DEFAULT_ALIGNMENT}, an inconsistent file — refllm "
                          f"refuses")
    model = ModelInfo.from_metadata(f.metadata, where)

    order = weights_order([t.name for t in f.tensors])
    sources = [f.tensor(name) for name in order]
    decisions, messages = choose_types([(t.name, t.shape, t.type) for t in sources], model, options)
    n_fallback = sum(1 for m in messages if m.startswith("warning: "))

    planned = [Planned(t, d) for t, d in zip(sources, decisions)]
    # the preliminary loop: a tensor whose type needs an imatrix stops everything when there is none
    # (a dry run only notes it)
    will_require_imatrix = False
    for d in decisions:
        if im is None and d.allows_quantization and d.requires_imatrix:
            if not dry_run:
                raise RefllmError(f"this quantization requires an importance matrix (--imatrix): tensor {d.name!r} "
                                  f"would be {type_name(d.target)}")
            will_require_imatrix = True
    if dry_run:
        will_require_imatrix |= any(p.decision.converts and p.decision.requires_imatrix for p in planned)
    else:
        for p in planned:
            _check_tensor(p, im, allow_requantize, where, ftype_name)

    # the metadata: gguf_set_kv copies, the setters move their key to the end
    file_type = _guess_file_type(f) if only_copy else int(ftype)
    metadata = {k: _copy_value(v) for k, v in f.metadata.items()}
    for key, value in ((KEY_QUANTIZATION_VERSION, Value.uint32(GGML_QNT_VERSION)),
                       (KEY_FILE_TYPE, Value.uint32(file_type))):
        metadata.pop(key, None)
        metadata[key] = value
    for key in SPLIT_KEYS:
        metadata.pop(key, None)
    if im is not None:  # llama-quantize's kv overrides: each is removed and appended
        name = imatrix_name if imatrix_name is not None else im.path
        overrides = [(KEY_IMATRIX_FILE, Value.string(_truncate(name)))]
        if im.datasets:
            overrides.append((KEY_IMATRIX_DATASET, Value.string(_truncate(im.datasets[0]))))
        overrides.append((KEY_IMATRIX_N_ENTRIES, Value.uint32(len(im.entries))))
        if im.chunk_count > 0:
            overrides.append((KEY_IMATRIX_N_CHUNKS, Value.uint32(im.chunk_count)))
        for key, value in overrides:
            metadata.pop(key, None)
            metadata[key] = value
    return Plan(ftype, ftype_name, file_type, model, planned, metadata, messages, n_fallback, im,
                will_require_imatrix)


def _check_tensor(p: Planned, im, allow_requantize: bool, where: str, ftype_name: str) -> None:
    """The checks of llama.cpp's main loop for one tensor, in its order (made before anything is written), then
    what refllm itself cannot do; sets ``p.imatrix``."""
    d = p.decision
    if not d.converts:
        return  # copied as it is
    size = ne(d.shape, 0) * ne(d.shape, 2)
    if im is not None:
        values = im.entries.get(d.name)
        if values is None:
            p.notes.append(f"====== llama_model_quantize_impl: did not find weights for {d.name}")
        elif values.size == size:
            p.imatrix = values
        elif d.category.name != "TOKEN_EMBD":  # the embedding table is exempt: it "always causes this warning"
            raise RefllmError(f"imatrix size {values.size} is different from tensor size {size} for {d.name} (does "
                              f"the imatrix {im.path} belong to this model?)")
        else:
            p.notes.append(f"====== llama_model_quantize_impl: imatrix size {values.size} is different from "
                           f"tensor size {size} for {d.name}")
    if p.imatrix is None and d.requires_imatrix:
        raise RefllmError(f"Missing importance matrix for tensor {d.name} in a very low-bit quantization "
                          f"({type_name(d.target)})")
    if is_quantized(d.type) and not allow_requantize:
        raise RefllmError(f"{where}: tensor {d.name!r} is already quantized ({type_name(d.type)}); requantizing "
                          f"from type {type_name(d.type)} is disabled (use --allow-requantize)")
    # beyond this point llama-quantize would abort or write garbage; refllm says why
    if d.type not in (GGMLType.F32, GGMLType.F16, GGMLType.BF16) and not (
            is_quantized(d.type) and quants.can_dequantize(d.type)):
        raise RefllmError(f"{where}: tensor {d.name!r}: cannot convert from type {type_name(d.type)}")
    if d.target in NOT_IN_QUANTIZE_CHUNK:
        raise RefllmError(f"tensor {d.name!r}: ggml_quantize_chunk cannot produce type {type_name(d.target)}")
    if not quants.can_quantize(d.target):
        raise RefllmError(f"tensor {d.name!r} would be {type_name(d.target)}, and refllm does not encode "
                          f"{type_name(d.target)} yet (file type {ftype_name})")
    if ne(d.shape, 0) % TYPE_SIZES[d.target].block_size:
        raise RefllmError(f"tensor {d.name!r}: ne[0] = {ne(d.shape, 0)} is not a multiple of the "
                          f"{type_name(d.target)} block size {TYPE_SIZES[d.target].block_size}")
    if ne(d.shape, 3) > 1:
        raise RefllmError(f"tensor {d.name!r}: 4-D tensors cannot be quantized (llama.cpp converts ne[1]*ne[2] "
                          f"rows only)")


def _truncate(text: str, limit: int = 127) -> str:
    """``strncpy(val_str, s, 127)``: at most 127 bytes (and nothing after a NUL)."""
    raw = _c_string(text).encode("utf-8", "surrogateescape")[:limit]
    return raw.decode("utf-8", "surrogateescape")


# -- reading slabs ahead --------------------------------------------------------------------------------------------


class _Reader:
    """Reads the planned byte ranges of the input in order with ``pread``, one range ahead in a worker thread, into
    fresh buffers (so memory stays bounded by a few slabs, and no page of the input stays mapped)."""

    def __init__(self, path: Path, ranges: list[tuple[int, int]], ahead: int = 1):
        self.fd = os.open(path, os.O_RDONLY)
        self.ranges, self.next, self.ahead = ranges, 0, ahead
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refllm-quantize-read")
        self.pending = []

    def _read(self, offset: int, size: int) -> np.ndarray:
        buf = np.empty(size, np.uint8)
        view = memoryview(buf)
        done = 0
        while done < size:
            n = os.preadv(self.fd, [view[done:]], offset + done)
            if n <= 0:
                raise RefllmError(f"read error at byte {offset + done}: the input file is shorter than its header says")
            done += n
        return buf

    def get(self) -> np.ndarray:
        while len(self.pending) <= self.ahead and self.next < len(self.ranges):
            self.pending.append(self.pool.submit(self._read, *self.ranges[self.next]))
            self.next += 1
        return self.pending.pop(0).result()

    def close(self) -> None:
        for p in self.pending:
            p.cancel()
        self.pool.shutdown(wait=True)
        self.pending.clear()
        os.close(self.fd)


def _slabs(p: Planned) -> list[tuple[int, int, int]]:
    """``(first_row, n_rows, matrix)`` pieces of a tensor: converting tensors by slabs of rows that stay inside one
    expert matrix (each expert has its own imatrix row), copied tensors by pieces of :data:`COPY_BYTES`."""
    d = p.decision
    n_per_row, rows_per_mat, n_mat = ne(d.shape, 0), ne(d.shape, 1), ne(d.shape, 2) * ne(d.shape, 3)
    if not d.converts:
        src_row = row_bytes(d.type, n_per_row) if n_per_row else 0
        total_rows = rows_per_mat * n_mat
        step = max(1, COPY_BYTES // max(src_row, 1))
        return [(r, min(step, total_rows - r), 0) for r in range(0, total_rows, step)] or [(0, 0, 0)]
    step = max(1, SLAB_BYTES // (4 * n_per_row))
    return [(m * rows_per_mat + r, min(step, rows_per_mat - r), m)
            for m in range(n_mat) for r in range(0, rows_per_mat, step)]


def _produce(p: Planned, reader: _Reader, progress: Callable[[int], None]) -> Iterator[np.ndarray]:
    d = p.decision
    n_per_row = ne(d.shape, 0)
    for _, n_rows, mat in _slabs(p):
        raw = reader.get()
        if not d.converts:
            yield raw
            progress(raw.nbytes)
            continue
        rows = raw.reshape(n_rows, -1)
        if d.type == GGMLType.F32:
            x = rows.view(np.float32)
        else:  # F16 / BF16 widen exactly; quantized inputs decode with ggml's to_float
            x = quants.dequantize(rows, d.type)
        weights = None if p.imatrix is None else p.imatrix[mat * n_per_row : (mat + 1) * n_per_row]
        yield quants.quantize(x, d.target, weights)
        progress(raw.nbytes)


# -- the driver -----------------------------------------------------------------------------------------------------


def tensor_line(i: int, n: int, p: Planned, dry_run: bool = False) -> str:
    """llama-quantize's per-tensor log line."""
    d = p.decision
    shape = ", ".join(f"{ne(d.shape, k):6d}" for k in range(4))
    head = f"[{i:4d}/{n:4d}] {d.name:<36} - [{shape}], type = {type_name(d.type):>6}, "
    size_in = p.source.n_bytes / MiB
    if not d.converts:
        return head + f"size = {size_in:8.3f} MiB"
    if dry_run:
        return head + f"size = {size_in:8.2f} MiB -> {p.out_bytes / MiB:8.2f} MiB ({type_name(d.target)})"
    return head + f"converting to {type_name(d.target)} .. size = {size_in:8.2f} MiB -> {p.out_bytes / MiB:8.2f} MiB"


def quantize_file(input_path: str | os.PathLike, output_path: str | os.PathLike | None,
                  ftype: FType | str | int = "Q4_K_M", *, nthreads: int | None = None, dry_run: bool = False,
                  log: Callable[[str], None] | None = None, progress: Callable[[int, int], None] | None = None,
                  **options) -> Result:
    """Quantize ``input_path`` to ``output_path`` with a llama.cpp file type ("Q4_K_M", "Q8_0", 15, ...).

    ``options`` are those of :func:`make_plan` (``imatrix``, ``pure``, ``output_tensor_type``,
    ``token_embedding_type``, ``leave_output_tensor``, ``allow_requantize``, ``tensor_types``,
    ``include_weights``, ``exclude_weights``).  ``nthreads`` sets refllm's thread count for the encoding (default:
    all cores).  ``dry_run``: decide and report the types and sizes, write nothing.  ``log`` receives
    llama-quantize's log lines; ``progress(done, total)`` the input bytes processed so far.  Errors raise
    :class:`~refllm.errors.RefllmError` before the output file is created.
    """
    t0 = time.perf_counter()
    input_path = Path(input_path)
    output_path = None if dry_run or output_path is None else Path(output_path)
    if output_path is None and not dry_run:
        raise RefllmError("no output file given")
    if output_path is not None and output_path.exists() and os.path.samefile(input_path, output_path):
        raise RefllmError(f"input and output files are the same: '{input_path}'")
    say = log or (lambda line: None)
    previous_threads = num_threads()
    if nthreads is not None and nthreads > 0:
        set_num_threads(nthreads)
    try:
        with read(input_path) as f:
            plan = make_plan(f, ftype, dry_run=dry_run, **options)
            if plan.imatrix is not None:
                im = plan.imatrix
                if im.datasets:
                    say("load_imatrix: imatrix datasets=[" + ", ".join(f"'{d}'" for d in im.datasets) + "]")
                say(f"load_imatrix: loaded {len(im.entries)} importance matrix entries from {im.path} computed on "
                    f"{im.chunk_count} chunks")
            if dry_run:
                say(f"quantize: calculating quantization size for '{input_path}' as {plan.ftype_name}")
            else:
                say(f"quantize: quantizing '{input_path}' to '{output_path}' as {plan.ftype_name} using "
                    f"{num_threads()} threads")
            for message in plan.messages:
                say(message)
            n = len(plan.tensors)
            total_in = sum(p.source.n_bytes for p in plan.tensors)
            n_elements = sum(p.source.n_elements for p in plan.tensors)
            size_out = sum(p.out_bytes for p in plan.tensors)
            if dry_run:
                for i, p in enumerate(plan.tensors):
                    say(tensor_line(i + 1, n, p, dry_run=True))
            else:
                _stream(input_path, output_path, plan, say, progress, total_in)
    finally:
        set_num_threads(previous_threads)
    seconds = time.perf_counter() - t0
    if n_elements:
        say(f"llama_model_quantize_impl: model size  = {total_in / MiB:8.2f} MiB ({total_in * 8.0 / n_elements:.2f} "
            f"BPW)")
        say(f"llama_model_quantize_impl: quant size  = {size_out / MiB:8.2f} MiB ({size_out * 8.0 / n_elements:.2f} "
            f"BPW)")
    if dry_run and plan.imatrix is None and plan.will_require_imatrix:
        say("llama_model_quantize_impl: WARNING: dry run completed successfully, but actually completing this "
            "quantization will require an imatrix!")
    if plan.n_fallback:
        say(f"llama_model_quantize_impl: WARNING: {plan.n_fallback} of {n} tensor(s) required fallback quantization")
    say(f"quantize time = {seconds * 1000:8.2f} ms")
    return Result(output_path, plan, total_in, size_out, n_elements, seconds)


def _stream(input_path: Path, output_path: Path, plan: Plan, say, progress, total_in: int) -> None:
    """Write the output: every tensor read, converted and written slab by slab (see :func:`_produce`)."""
    done = [0]

    def advance(nbytes: int) -> None:
        done[0] += nbytes
        if progress is not None:
            progress(done[0], total_in)

    ranges = []
    for p in plan.tensors:
        n_per_row = ne(p.decision.shape, 0)
        src_row = row_bytes(p.decision.type, n_per_row) if n_per_row else 0
        for first, n_rows, _ in _slabs(p):
            ranges.append((p.source.file_offset + first * src_row, n_rows * src_row))
    reader = _Reader(input_path, ranges)

    def on_tensor(i: int, spec: TensorSpec) -> None:
        p = plan.tensors[i]
        for note in p.notes:
            say(note)
        say(tensor_line(i + 1, len(plan.tensors), p))

    specs = [TensorSpec(p.decision.name, p.decision.target, p.out_shape, (lambda p=p: _produce(p, reader, advance)))
             for p in plan.tensors]
    try:
        write(output_path, plan.metadata, specs, version=3, on_tensor=on_tensor)
    finally:
        reader.close()


def default_output_name(input_path: str | os.PathLike, ftype_name: str) -> Path:
    """llama-quantize's output name when none is given: ``ggml-model-TYPE.gguf`` next to the input."""
    return Path(input_path).parent / f"ggml-model-{ftype_name}.gguf"


__all__ = ["Plan", "Planned", "Result", "make_plan", "quantize_file", "tensor_line", "default_output_name"]
