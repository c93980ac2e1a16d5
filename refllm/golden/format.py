"""The golden-output format on disk (docs/golden-format.md): a directory with ``manifest.json`` and one safetensors
file — and the reader for it and for other engines' dumps (a ``.safetensors`` file, or a directory of ``NAME.npy``).

A model golden's tensors carry the names llama.cpp's graph gives them (``cb(cur, "attn_norm", il)`` in
``src/models/phi3.cpp`` becomes ``attn_norm-0``), so a dump from llama.cpp's eval callback maps onto it by name.
Every tensor is laid out ``[n_rows, ...]`` in C order — ggml's ``ne`` read backwards: ``Qcur``, ``ne = {D, H, n}``
in ggml, is ``[n, H, D]`` here.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from ..fileio import atomic_path, file_sha256
from ..errors import RefllmError

FORMAT_NAME = "refllm-golden"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TENSOR_FILE = "tensors.safetensors"

# A model golden's tensors, by llama.cpp graph name (without the "-<layer>" suffix), in forward-pass order:
# name -> (axes, what the tensor holds).  E = n_embd, H / Hkv = query / key-value heads, D = head_dim, V = n_vocab.
MODEL_TENSORS: dict[str, tuple[list[str], str]] = {
    "embd": (["position", "E"],
             "the token embeddings: rows of token_embd.weight (ggml_get_rows), decoded to float32"),
    "attn_norm": (["position", "E"],
                  "the attention input: RMSNorm of the residual stream times attn_norm.weight"),
    "Qcur": (["position", "H", "D"],
             "the queries after RoPE (before the 1/sqrt(D) scaling, which llama.cpp also names Qcur-<il>)"),
    "Kcur": (["position", "Hkv", "D"], "the keys after RoPE (what goes into the KV cache)"),
    "Vcur": (["position", "Hkv", "D"], "the values (what goes into the KV cache)"),
    "kqv_out": (["position", "H*D"],
                ("the attention result softmax(q·Kᵀ/sqrt(D) + mask)·V, heads concatenated, before the output "
                 "projection attn_output.weight")),
    "ffn_norm": (["position", "E"],
                 "the FFN input: RMSNorm of (residual + attention projection) times ffn_norm.weight"),
    "ffn_out": (["position", "E"], "the FFN output (silu(gate)·up)·ffn_downᵀ, before it is added to the residual"),
    "l_out": (["position", "E"], "the layer output: the residual stream after the layer"),
    "result_norm": (["position", "E"], "the final RMSNorm times output_norm.weight"),
    "result_output": (["position", "V"], "the logits"),
    "greedy_logits": (["step", "V"],
                      ("refllm only: row i holds the logits whose arg-max is continuation token i (row 0 is the "
                       "last prompt position, row i > 0 the position after continuation token i-1)")),
}
LAYER_TENSORS = ("attn_norm", "Qcur", "Kcur", "Vcur", "kqv_out", "ffn_norm", "ffn_out", "l_out")

_LAYER_SUFFIX = re.compile(r"^(.*)-(\d+)$")


def split_name(name: str) -> tuple[str, int | None]:
    """``"Qcur-7"`` -> ``("Qcur", 7)``; ``"result_norm"`` -> ``("result_norm", None)``."""
    m = _LAYER_SUFFIX.match(name)
    return (m.group(1), int(m.group(2))) if m else (name, None)


def forward_order(name: str) -> tuple:
    """A sort key that puts tensor names in the order the forward pass computes them: ``embd``, then layer by
    layer (attn_norm, Qcur, ... l_out), then ``result_norm``, ``result_output``; other names after, by name."""
    base, il = split_name(name)
    if il is not None and base in LAYER_TENSORS:
        return (1, il, LAYER_TENSORS.index(base), name)
    if base == "embd":
        return (0, 0, 0, name)
    if base in MODEL_TENSORS:
        return (2, 0, list(MODEL_TENSORS).index(base), name)
    return (3, 0, 0, name)


def parse_selection(spec: str | None, n: int, what: str) -> list[int]:
    """Indices into ``0 … n-1`` from ``"all"`` / ``None`` (all), a comma list of indices and ``a:b`` ranges
    (Python's: ``b`` excluded, either end may be left out); negative indices count from the end."""
    if spec is None or spec.strip().lower() == "all":
        return list(range(n))
    chosen: set[int] = set()
    for item in spec.split(","):
        item = item.strip()
        try:
            if ":" in item:
                lo, _, hi = item.partition(":")
                chosen.update(range(n)[slice(int(lo) if lo.strip() else None, int(hi) if hi.strip() else None)])
                continue
            i = int(item)
        except ValueError:
            raise RefllmError(f"--{what}: {item!r} is not an index or a range a:b (in {spec!r})") from None
        if not -n <= i < n:
            raise RefllmError(f"--{what}: {i} is out of range: there are {n} {what} (0 … {n - 1})")
        chosen.add(i % n)
    if not chosen:
        raise RefllmError(f"--{what} {spec!r} selects nothing (there are {n} {what})")
    return sorted(chosen)


def check_output_dir(directory: str | os.PathLike) -> Path:
    """``--out`` as a Path, checked before any work is done: it may exist (its manifest and tensor file are
    replaced, nothing else is touched) but must then be a directory."""
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise RefllmError(f"{out}: --out must be a directory (a golden is {MANIFEST} and {TENSOR_FILE} in it)")
    return out


_DTYPE_NAMES = {np.dtype(t): name for t, name in [
    (np.float64, "F64"), (np.float32, "F32"), (np.float16, "F16"), (np.int64, "I64"), (np.int32, "I32"),
    (np.int16, "I16"), (np.int8, "I8"), (np.uint64, "U64"), (np.uint32, "U32"), (np.uint16, "U16"),
    (np.uint8, "U8"), (np.bool_, "BOOL")]}


def dtype_name(dtype) -> str:
    """safetensors' name of a numpy dtype: ``float32`` -> ``"F32"``, ``uint8`` -> ``"U8"``."""
    return _DTYPE_NAMES[np.dtype(dtype).newbyteorder("=")]


def tensor_entries(tensors: dict[str, np.ndarray], meanings: dict[str, tuple[list[str], str]]) -> list[dict]:
    """The manifest's ``tensors`` list: name, dtype, shape, layer, axes and meaning, in forward-pass order."""
    entries = []
    for name in sorted(tensors, key=forward_order):
        base, il = split_name(name)
        axes, holds = meanings.get(base, (None, None))
        entry = {"name": name, "dtype": dtype_name(tensors[name].dtype), "shape": list(tensors[name].shape),
                 "layer": il}
        if axes is not None:
            entry["axes"], entry["holds"] = axes, holds
        entries.append(entry)
    return entries


def _json(value, indent: str = "") -> str:
    """JSON with one key per line, but lists of plain values (token ids, shapes) on one line."""
    inner = indent + " "
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {_json(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return "[\n" + ",\n".join(inner + _json(v, inner) for v in value) + f"\n{indent}]"
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def write_golden(directory: str | os.PathLike, manifest: dict, tensors: dict[str, np.ndarray]) -> Path:
    """Write ``tensors`` (one safetensors file) and ``manifest`` (completed with the format fields, the tensor
    file's name and sha256 and the tensor list) into ``directory``; each file atomically, the manifest last."""
    out = check_output_dir(directory)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.ascontiguousarray(a) for name, a in tensors.items()}
    with atomic_path(out / TENSOR_FILE) as tmp:
        save_file(arrays, tmp, metadata={"format": FORMAT_NAME})
    manifest = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **manifest, "file": TENSOR_FILE,
                "file_sha256": file_sha256(out / TENSOR_FILE)}
    text = _json(manifest) + "\n"
    with atomic_path(out / MANIFEST) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out


# -- reading ----------------------------------------------------------------------------------------------------


class DumpError(RefllmError):
    """A golden directory or a foreign dump that cannot be read."""


@dataclass
class Dump:
    """Tensors by name, from a golden directory (with its manifest) or another engine's dump (manifest None)."""

    path: Path
    tensors: dict[str, np.ndarray]
    manifest: dict | None = None
    kind: str = "foreign"  # "model", "quant" (a golden's manifest kind) or "foreign"



def _check_array(path: Path, name: str, a: np.ndarray) -> np.ndarray:
    if a.dtype.kind not in "fiub":
        raise DumpError(f"{path}: tensor {name!r} has dtype {a.dtype}, expected a numeric dtype")
    return a


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        with safe_open(path, framework="numpy") as f:
            return {name: _check_array(path, name, np.asarray(f.get_tensor(name))) for name in f.keys()}
    except DumpError:
        raise
    except Exception as e:  # the library's errors for malformed files are of several types
        raise DumpError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None


def _read_npy(path: Path) -> np.ndarray:
    try:
        a = np.array(np.load(path, mmap_mode="r", allow_pickle=False))  # mmap: a header's huge shape fails cleanly
    except Exception as e:  # numpy raises ValueError, OSError, EOFError, SyntaxError, ... for malformed files
        raise DumpError(f"{path}: not a readable .npy file ({type(e).__name__}: {e})") from None
    return _check_array(path, path.stem, a)


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DumpError(f"{path / MANIFEST}: not a readable JSON manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise DumpError(f"{path / MANIFEST}: \"format\" is not {FORMAT_NAME!r}")
    version = manifest.get("version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise DumpError(f"{path / MANIFEST}: format version {version!r}; this refllm reads versions "
                        f"1 … {FORMAT_VERSION}")
    file = manifest.get("file")
    if not isinstance(file, str) or Path(file).name != file:
        raise DumpError(f"{path / MANIFEST}: \"file\" must name the tensor file in the same directory")
    return manifest


def read_dump(path: str | os.PathLike) -> Dump:
    """Read a golden directory (``manifest.json`` + its safetensors file), a ``.safetensors`` file, or a directory
    of ``NAME.npy`` files (or holding exactly one ``.safetensors`` file)."""
    path = Path(path)
    if not path.exists():
        raise DumpError(f"{path}: no such file or directory")
    if path.is_file():
        return Dump(path, _read_safetensors(path))
    if (path / MANIFEST).exists():
        manifest = _read_manifest(path)
        tensor_path = path / manifest["file"]
        if not tensor_path.is_file():
            raise DumpError(f"{tensor_path}: missing (named by {path / MANIFEST})")
        expected = manifest.get("file_sha256")
        if expected is not None and file_sha256(tensor_path) != expected:
            raise DumpError(f"{tensor_path}: sha256 differs from the manifest's file_sha256 (a partial or "
                            f"mismatched golden)")
        kind = manifest.get("kind") if manifest.get("kind") in ("model", "quant") else "foreign"
        return Dump(path, _read_safetensors(tensor_path), manifest, kind)
    files = sorted(path.glob("*.safetensors"))
    npys = sorted(path.glob("*.npy"))
    if len(files) == 1 and not npys:
        return Dump(path, _read_safetensors(files[0]))
    if npys and not files:
        return Dump(path, {f.stem: _read_npy(f) for f in npys})
    raise DumpError(f"{path}: expected a {MANIFEST}, exactly one .safetensors file, or NAME.npy files "
                    f"(found {len(files)} .safetensors and {len(npys)} .npy)")
