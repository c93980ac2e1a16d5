"""Convert a Hugging Face Phi-3 checkpoint directory to one GGUF file — the output of llama.cpp's
``convert_hf_to_gguf.py``, byte for byte.

>>> from refllm.convert import convert
>>> convert("Phi-3.5-mini-instruct", "phi35-f16.gguf", "f16")

Steps (see docs/convert.md):

1. ``config.json`` -> :class:`~refllm.convert.hf_config.Phi3Config` (architecture check, defaults, RoPE schema);
2. the safetensors headers -> the tensor plan: GGUF names, types, shapes, checked against the config
   (:mod:`refllm.convert.phi3`); no weights are read yet;
3. metadata in the reference's key order: ``general.architecture``, (``phi3.rope.scaling.attn_factor``),
   ``general.type``, the model card (:mod:`refllm.convert.model_card`), the ``phi3.*`` hyperparameters,
   ``general.quantization_version``, the vocabulary (:mod:`refllm.convert.vocab`);
4. :func:`refllm.gguf.write` streams the tensors: each one is read from its shard, widened to float32 and converted
   to its type in row chunks when it is (nearly) its turn — a worker thread prepares the next tensor while one is
   written — so memory holds at most two output tensors.  The file appears at its path only when it is complete.

Numerics, as in the reference: BF16 / F16 / F32 sources are widened to float32 exactly; F32 output keeps them, F16
rounds with numpy's float32→float16 (round to nearest even; NaN payloads kept, unlike ggml's C conversion), BF16
and Q8_0 round as ggml does (:mod:`refllm.quants`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .. import quants
from ..errors import RefllmError
from ..ggml_types import TYPE_SIZES, GGMLType
from ..gguf import TensorSpec, Value, write
from . import phi3
from .hf_config import load_config
from .model_card import general_metadata, model_card, size_label
from .safetensors import read_checkpoint
from .vocab import phi3_vocab_metadata

log = logging.getLogger("hf-to-gguf")

OUTTYPES = {"f32": (GGMLType.F32, 0), "f16": (GGMLType.F16, 1), "bf16": (GGMLType.BF16, 32),
            "q8_0": (GGMLType.Q8_0, 7)}  # --outtype -> (tensor type, general.file_type = llama_ftype)
QUANTIZATION_VERSION = 2  # GGML_QNT_VERSION
CHUNK_BYTES = 32 << 20  # float32 bytes converted at a time


def convert_rows(x: np.ndarray, qtype: GGMLType) -> np.ndarray:
    """float32 rows -> the bytes (or elements) of ``qtype``."""
    if qtype == GGMLType.F32:
        return x
    if qtype == GGMLType.F16:
        return x.astype(np.float16)  # numpy's conversion, as gguf-py's quantize(F16) does
    try:
        return quants.quantize(x, qtype)
    except quants.QuantError as e:
        raise RefllmError(str(e)) from None


def tensor_data(t: phi3.PlannedTensor) -> np.ndarray:
    """The converted data of one planned tensor (read and converted in row chunks)."""
    if isinstance(t.source, np.ndarray):
        return convert_rows(t.source.astype(np.float32), t.type)
    entry = t.source
    rows = t.shape[0] if len(t.shape) > 1 else 1
    row_len = t.shape[-1] if t.shape else 1
    block_size, type_size = TYPE_SIZES[t.type]
    row_bytes = row_len // block_size * type_size
    out = np.empty((rows, row_bytes), dtype=np.uint8)
    step = max(1, CHUNK_BYTES // max(1, 4 * row_len))
    for start in range(0, rows, step):
        n = min(step, rows - start)
        x = entry.read_f32(start, n) if len(t.shape) > 1 else entry.read_f32().reshape(1, -1)
        try:
            out[start : start + n] = convert_rows(x.reshape(n, row_len), t.type).reshape(n, -1).view(np.uint8)
        except RefllmError as e:
            raise RefllmError(f"{entry.path}: tensor {entry.name!r}: {e}") from None
    return out


def guess_outtype(entries) -> str:
    """``--outtype auto``: the 16-bit type of the first matrix stored in BF16 or F16, else f16 (the reference's
    heuristic; F32 matrices are skipped over)."""
    for entry in entries.values():
        if len(entry.shape) < 2:
            continue
        if entry.dtype == "BF16":
            log.info("heuristics detected bfloat16 tensor dtype, setting --outtype bf16")
            return "bf16"
        if entry.dtype == "F16":
            log.info("heuristics detected float16 tensor dtype, setting --outtype f16")
            return "f16"
    log.info("heuristics unable to detect tensor dtype, defaulting to --outtype f16")
    return "f16"


def naming_convention(card, output_type: str) -> str:
    """The default output file name, e.g. ``Phi-3.5-mini-instruct-F16`` (gguf-py ``naming_convention``)."""
    name = (card.basename or card.name or "ggml-model").strip().replace(" ", "-").replace("/", "-")
    parts = [name]
    if card.size_label:
        parts.append(card.size_label)
    if card.finetune:
        parts.append(card.finetune.strip().replace(" ", "-"))
    if card.version:
        parts.append(card.version.strip().replace(" ", "-"))
    parts.append(output_type.upper())
    return "-".join(parts)


class _Progress:
    """A one-line progress indicator on stderr (rewritten in place on a terminal, a few lines otherwise)."""

    def __init__(self, total: int, label: str = "Writing"):
        self.total, self.done, self.label, self.t0 = total, 0, label, time.time()
        self.tty = sys.stderr.isatty()
        self.next_report = 0.25

    def update(self, nbytes: int) -> None:
        self.done += nbytes
        frac = self.done / self.total if self.total else 1.0
        if self.tty or frac >= self.next_report or self.done >= self.total:
            elapsed = time.time() - self.t0
            rate = self.done / elapsed / 1e6 if elapsed > 0 else 0.0
            end = "\n" if self.done >= self.total or not self.tty else ""
            start = "\r" if self.tty else ""
            print(f"{start}{self.label}: {100 * frac:5.1f}% {self.done / 1e6:9.1f}/"
                  f"{self.total / 1e6:.1f} MB  {rate:6.0f} MB/s", end=end, file=sys.stderr, flush=True)
            while self.next_report <= frac:
                self.next_report += 0.25


def convert(model_dir: str | os.PathLike, outfile: str | os.PathLike | None = None, outtype: str = "f16", *,
            model_name: str | None = None, progress: bool = False) -> Path:
    """Convert ``model_dir`` to a GGUF file; return its path.

    ``outfile`` may be a directory or omitted (then the file is named like the reference names it, in that
    directory or in ``model_dir``), and may contain ``{ftype}`` (replaced by the output type).
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise RefllmError(f"{model_dir}: not a directory")
    if outtype not in OUTTYPES and outtype != "auto":
        raise RefllmError(f"--outtype {outtype!r}: choose one of {', '.join(OUTTYPES)} or auto")
    log.info(f"Loading model: {model_dir.name}")
    cfg = load_config(model_dir)
    log.info(f"Model architecture: {cfg.architecture}")
    entries = read_checkpoint(model_dir)
    if outtype == "auto":
        outtype = guess_outtype(entries)
    qtype, file_type = OUTTYPES[outtype]
    plan = phi3.plan_tensors(cfg, entries, qtype, warn=log.warning)

    metadata: dict[str, Value] = {"general.architecture": Value.string(phi3.ARCH)}
    if (factor := phi3.attn_factor(cfg)) is not None:
        metadata[f"{phi3.ARCH}.rope.scaling.attn_factor"] = Value.float32(factor)
    metadata["general.type"] = Value.string("model")
    total_params = sum(int(np.prod(t.shape)) for t in plan)
    card = model_card(model_dir, total_params, model_name)
    if card.size_label is None and total_params > 0:
        card.size_label = size_label(total_params)
    metadata.update(general_metadata(card))
    metadata.update(phi3.hparams_metadata(cfg, file_type))
    metadata["general.quantization_version"] = Value.uint32(QUANTIZATION_VERSION)
    metadata.update(phi3_vocab_metadata(model_dir, cfg.vocab_size))

    ftype_name = qtype.name  # the reference's output_type: "F32", "F16", "BF16", "Q8_0"
    if outfile is None:
        out = model_dir / f"{naming_convention(card, ftype_name)}.gguf"
    else:
        out = Path(outfile)
        if out.is_dir():
            out = out / f"{naming_convention(card, ftype_name)}.gguf"
        else:
            out = out.with_name(out.name.format(ftype_name.lower(), outtype=ftype_name.lower(),
                                                ftype=ftype_name.lower(), OUTTYPE=ftype_name.upper(),
                                                FTYPE=ftype_name.upper()))

    width = max(len(t.gguf_name) for t in plan) + 1
    specs = []
    for t in plan:
        log.info(f"{t.gguf_name + ',':<{width}} {t.source_dtype} --> {t.type.name}, "
                 f"shape = {{{', '.join(str(n) for n in t.ggml_shape)}}}")
        specs.append(TensorSpec(t.gguf_name, t.type, t.ggml_shape, lambda t=t: tensor_data(t)))
    total_bytes = sum(int(np.prod(t.shape)) // TYPE_SIZES[t.type][0] * TYPE_SIZES[t.type][1] for t in plan)
    log.info(f"Writing {out}: n_tensors = {len(plan)}, total_size = {total_bytes / 1e6:.1f}M")
    bar = _Progress(total_bytes) if progress else None
    nbytes = {t.gguf_name: int(np.prod(t.shape)) // TYPE_SIZES[t.type][0] * TYPE_SIZES[t.type][1] for t in plan}
    with _Lookahead(plan) as ahead:
        for i, spec in enumerate(specs):
            spec.data = lambda i=i: ahead.get(i)
        write(out, metadata, specs, on_tensor=(lambda i, t: bar.update(nbytes[t.name])) if bar else None)
    log.info(f"Model successfully exported to {out}")
    return out


class _Lookahead:
    """Produce tensor i+1 in a worker thread while tensor i is being written (numpy and file I/O release the GIL,
    so reading/converting and writing overlap).  At most two converted tensors are in memory."""

    def __init__(self, plan: list[phi3.PlannedTensor]):
        self.plan, self.pending = plan, {}
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refllm-convert")

    def get(self, i: int) -> np.ndarray:
        future = self.pending.pop(i, None) or self.pool.submit(tensor_data, self.plan[i])
        if i + 1 < len(self.plan):
            self.pending[i + 1] = self.pool.submit(tensor_data, self.plan[i + 1])
        return future.result()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pending.clear()
