"""A readable listing of a GGUF file, in the manner of gguf-py's ``gguf-dump``, and the same as JSON."""

from __future__ import annotations

import math
from collections import defaultdict


from ..ggml_types import TYPE_SIZES
from .constants import ValueType
from .reader import GGUFFile
from .values import StringArray, Value

ARRAY_PREVIEW = 6  # items shown of a long array
STRING_PREVIEW = 60  # characters shown of a long string


def _type_name(v: Value) -> str:
    if v.type != ValueType.ARRAY:
        return v.type.name
    depth, item = 1, v.item_type
    inner = v
    while item == ValueType.ARRAY and len(inner.data):
        inner = inner.data[0]
        depth, item = depth + 1, inner.item_type
    return "[" * depth + item.name + "]" * depth


def _preview(v: Value) -> str:
    if v.type == ValueType.STRING:
        text = v.data if len(v.data) <= STRING_PREVIEW else v.data[: STRING_PREVIEW - 3] + "..."
        return repr(text)
    if v.type != ValueType.ARRAY:
        return repr(v.data)
    n = len(v.data)
    if v.item_type == ValueType.ARRAY:
        items = [_preview(item) for item in v.data[:ARRAY_PREVIEW]]
    elif v.item_type == ValueType.STRING:
        items = [repr(v.data[i]) for i in range(min(n, ARRAY_PREVIEW))]
    else:
        items = [repr(x) for x in v.data[:ARRAY_PREVIEW].tolist()]
    return "[" + ", ".join(items) + (", ...]" if n > ARRAY_PREVIEW else "]")


def type_totals(f: GGUFFile) -> list[dict]:
    """Per tensor type: number of tensors, elements, bytes and bits per weight; then a row for all of them."""
    totals: dict = defaultdict(lambda: [0, 0, 0])
    for t in f.tensors:
        row = totals[t.type.name]
        row[0] += 1
        row[1] += t.n_elements
        row[2] += t.n_bytes
    rows = [{"type": name, "tensors": c, "elements": e, "bytes": b, "bpw": 8 * b / e if e else 0.0}
            for name, (c, e, b) in sorted(totals.items(), key=lambda kv: -kv[1][2])]
    c, e, b = (sum(r[k] for r in rows) for k in ("tensors", "elements", "bytes"))
    rows.append({"type": "total", "tensors": c, "elements": e, "bytes": b, "bpw": 8 * b / e if e else 0.0})
    return rows


def listing(f: GGUFFile, tensors: bool = True) -> str:
    lines = [f"* File {f.path}: GGUF version {f.version}, little endian, {f.file_size} bytes, "
             f"alignment {f.alignment}, data at byte {f.data_offset}",
             f"* Dumping {len(f.metadata)} key/value pair(s)"]
    for n, (key, v) in enumerate(f.metadata.items(), 1):
        lines.append(f"  {n:5}: {_type_name(v):10} | {len(v):8} | {key} = {_preview(v)}")
    if not tensors:
        return "\n".join(lines)
    lines.append(f"* Dumping {len(f.tensors)} tensor(s)")
    for n, t in enumerate(f.tensors, 1):
        dims = ", ".join(f"{d:6}" for d in list(t.shape) + [1] * (4 - len(t.shape)))
        lines.append(f"  {n:5}: {t.n_elements:10} | {dims} | {t.type.name:7} | {t.name} @ {t.file_offset}")
    lines.append("* Totals per type")
    for row in type_totals(f):
        lines.append(f"  {row['type']:>8}: {row['tensors']:5} tensors | {row['elements']:12} elements | "
                     f"{row['bytes'] / 2**20:10.2f} MiB | {row['bpw']:7.4f} bpw")
    return "\n".join(lines)


def _json_value(v: Value):
    if v.type == ValueType.ARRAY:
        if v.item_type == ValueType.ARRAY:
            items = [_json_value(item) for item in v.data]
        elif v.item_type == ValueType.STRING:
            items = v.data.tolist() if isinstance(v.data, StringArray) else list(v.data)
        else:
            items = [_json_float(x) for x in v.data.tolist()]
        return {"type": "ARRAY", "item_type": v.item_type.name, "count": len(v.data), "value": items}
    return {"type": v.type.name, "value": _json_float(v.data)}


def _json_float(x):
    """JSON has no NaN or infinity: those floats become the strings "nan", "inf" and "-inf"."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def as_json(f: GGUFFile, tensors: bool = True) -> dict:
    """Everything in the header, complete (no abbreviation), as JSON-ready Python objects."""
    out = {
        "path": str(f.path),
        "version": f.version,
        "file_size": f.file_size,
        "alignment": f.alignment,
        "data_offset": f.data_offset,
        "metadata": {key: {"offset": v.offset, **_json_value(v)} for key, v in f.metadata.items()},
    }
    if tensors:
        out["tensors"] = [
            {"name": t.name, "type": t.type.name, "shape": list(t.shape), "n_elements": t.n_elements,
             "n_bytes": t.n_bytes, "offset": t.offset, "file_offset": t.file_offset,
             "bpw": 8 * TYPE_SIZES[t.type].type_size / TYPE_SIZES[t.type].block_size}
            for t in f.tensors
        ]
        out["totals"] = type_totals(f)
    return out


__all__ = ["listing", "as_json", "type_totals"]
