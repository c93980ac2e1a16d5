"""``refllm compare A B``: tensor by tensor, how far dump B is from dump A, and where it first leaves the tolerance.

For each tensor name in either dump (in forward-pass order)::

    max_abs = max |a − b|
    max_rel = max |a − b| / |b|                  (over b ≠ 0; where b = 0 and a ≠ 0 it is inf)
    nmse    = Σ (a − b)² / Σ a²                  (0 when both sums are 0)
    close   = |a − b| <= atol + rtol·|b|         (numpy.isclose(a, b); NaN == NaN, equal infinities are equal)

and the first element (C order — so the first row, i.e. position, then the first column) that is not close.
Integer tensors (a quant golden's bytes) are compared exactly, whatever the tolerance.  A tensor present in only one
dump, or with different shapes, or float in one and integer in the other, is a failure too.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import RefllmError
from .format import MODEL_TENSORS, Dump, forward_order, split_name

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-4


@dataclass
class TensorResult:
    """The comparison of one tensor.  ``status``: ``ok``, ``fail`` (values), ``missing`` (in one dump only),
    ``shape`` or ``dtype`` (cannot be compared)."""

    name: str
    status: str
    layer: int | None = None
    shape: list[int] | None = None
    exact: bool = False  # compared bit for bit (integer tensors)
    max_abs: float | None = None
    max_rel: float | None = None
    nmse: float | None = None
    n_bad: int = 0
    n: int = 0
    first_bad: list[int] | None = None  # the index of the first element out of tolerance
    where: str | None = None  # that element's row as the manifest names it: "position 5", "row 'huge'"
    a: float | None = None  # the two values there
    b: float | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Report:
    a: str
    b: str
    atol: float
    rtol: float
    results: list[TensorResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # manifest differences that make the comparison meaningless

    @property
    def ok(self) -> bool:
        return not self.notes and all(r.ok for r in self.results)

    @property
    def first_failure(self) -> TensorResult | None:
        return next((r for r in self.results if not r.ok), None)

    def to_json(self) -> dict:
        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return str(v)  # "inf", "-inf", "nan": JSON has no such numbers
            return v

        first = self.first_failure
        return {"a": self.a, "b": self.b, "atol": self.atol, "rtol": self.rtol, "ok": self.ok, "notes": self.notes,
                "first_failure": first.name if first else None,
                "tensors": [{k: clean(v) for k, v in asdict(r).items()} for r in self.results]}


def _row_label(dump: Dump | None, name: str, index: int) -> str | None:
    """What row ``index`` of tensor ``name`` is, by the golden's manifest: a position, or a quant row's label."""
    if dump is None or dump.manifest is None:
        return None
    base, _ = split_name(name)
    if dump.kind == "model" and MODEL_TENSORS.get(base, ([None],))[0][0] == "position":
        positions = dump.manifest.get("positions") or []
        return f"position {positions[index]}" if index < len(positions) else None
    if dump.kind == "quant" and not name.endswith(".imatrix"):
        labels = dump.manifest.get("rows") or []
        return f"row {index} ({labels[index]})" if index < len(labels) else None
    return None


def compare_arrays(name: str, a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> TensorResult:
    """Compare one tensor; see the module docstring for the measures."""
    _, il = split_name(name)
    result = TensorResult(name, "ok", layer=il, shape=list(a.shape), n=int(a.size))
    if a.shape != b.shape:
        result.status = "shape"
        result.message = f"shape {list(a.shape)} in A, {list(b.shape)} in B"
        return result
    a_float, b_float = a.dtype.kind == "f", b.dtype.kind == "f"
    if a_float != b_float:
        result.status = "dtype"
        result.message = f"dtype {a.dtype} in A, {b.dtype} in B (float against integer)"
        return result
    result.exact = not a_float
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(all="ignore"):
        same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
        diff = np.where(same, 0.0, np.abs(a64 - b64))
        diff[np.isnan(diff)] = np.inf  # a NaN against a number
        scale = np.abs(b64)
        rel = np.where(diff == 0, 0.0, diff / scale)  # inf where b = 0 (or b = ±inf and a is not)
        rel[np.isnan(rel)] = np.inf
        close = same if result.exact else same | (diff <= atol + rtol * scale)
        sum_sq = float(np.sum(np.where(np.isfinite(a64), a64, 0.0) ** 2))
        err_sq = float(np.sum(diff ** 2))
    if a.size:
        result.max_abs, result.max_rel = float(diff.max()), float(rel.max())
    else:
        result.max_abs = result.max_rel = 0.0
    result.nmse = 0.0 if err_sq == 0 else err_sq / sum_sq if sum_sq > 0 else math.inf
    bad = ~close
    result.n_bad = int(bad.sum())
    if result.n_bad:
        result.status = "fail"
        index = np.unravel_index(int(np.argmax(bad.reshape(-1))), a.shape)
        result.first_bad = [int(i) for i in index]
        result.a, result.b = float(a64[index]), float(b64[index])
    return result


def compare(a: Dump, b: Dump, *, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL,
            pattern: str | None = None) -> Report:
    """Compare every tensor of ``a`` and ``b`` (those whose name ``pattern`` matches, by ``re.search``)."""
    report = Report(str(a.path), str(b.path), atol, rtol)
    if a.manifest is not None and b.manifest is not None:
        for key in ("tokens", "positions", "rows"):
            if a.manifest.get(key) != b.manifest.get(key):
                report.notes.append(f"the manifests' {key!r} differ: the tensors' rows are not the same inputs")
    names = set(a.tensors) | set(b.tensors)
    if pattern is not None:
        try:
            regex = re.compile(pattern)
        except re.error as e:
            raise RefllmError(f"--tensors {pattern!r}: not a regular expression ({e})") from None
        names = {n for n in names if regex.search(n)}
    for name in sorted(names, key=forward_order):
        if name not in b.tensors or name not in a.tensors:
            side = "B" if name not in b.tensors else "A"
            present = a.tensors.get(name, b.tensors.get(name))
            report.results.append(TensorResult(name, "missing", layer=split_name(name)[1], shape=list(present.shape),
                                               message=f"not in {side}"))
            continue
        result = compare_arrays(name, a.tensors[name], b.tensors[name], atol, rtol)
        if result.first_bad is not None:
            result.where = _row_label(a, name, result.first_bad[0]) or _row_label(b, name, result.first_bad[0])
        report.results.append(result)
    return report


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    return "0" if v == 0 else f"{v:.3g}"


def format_table(report: Report) -> str:
    """The report as a terminal table, in forward-pass order, with a verdict line naming the first failure."""
    lines = [f"A: {report.a}", f"B: {report.b}",
             f"tolerance: |a-b| <= {report.atol:g} + {report.rtol:g}*|b| (NaN equals NaN; integer tensors exact)",
             ""]
    width = max([len(r.name) for r in report.results] + [6])
    lines.append(f"{'status':7s} {'tensor':{width}s} {'shape':18s} {'max_abs':>9s} {'max_rel':>9s} {'nmse':>9s} "
                 f"{'bad':>8s}  first failure")
    for r in report.results:
        if r.status in ("ok", "fail"):
            first = "-"
            if r.first_bad is not None:
                first = f"{r.where + ', ' if r.where else ''}at {r.first_bad}: a={r.a:.9g} b={r.b:.9g}"
            detail = (f"{_num(r.max_abs):>9s} {_num(r.max_rel):>9s} {_num(r.nmse):>9s} {r.n_bad:>8d}  {first}"
                      f"{' (exact)' if r.exact and r.status == 'fail' else ''}")
        else:
            detail = f"{'':>9s} {'':>9s} {'':>9s} {'':>8s}  {r.message}"
        status = "ok" if r.ok else r.status.upper()
        lines.append(f"{status:7s} {r.name:{width}s} {r.shape!s:18s} {detail}")
    lines.append("")
    lines.extend(f"note: {n}" for n in report.notes)
    failed = [r for r in report.results if not r.ok]
    if not report.results:
        lines.append("FAIL: no tensors to compare")
    elif report.ok:
        lines.append(f"OK: all {len(report.results)} tensors agree")
    elif failed:
        first = failed[0]
        layer = f"layer {first.layer}, " if first.layer is not None else ""
        at = f", {first.where}" if first.where else f", element {first.first_bad}" if first.first_bad else ""
        lines.append(f"FAIL: {len(failed)} of {len(report.results)} tensors; first: {first.name} ({layer}"
                     f"{first.status}{at})")
    else:
        lines.append("FAIL: the dumps are not of the same inputs")
    return "\n".join(lines)
