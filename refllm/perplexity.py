"""Perplexity and KL divergence as ``llama-perplexity`` computes them (``tools/perplexity/perplexity.cpp``).

**Perplexity.**  The text is tokenized once, as llama.cpp's ``common_tokenize(ctx, text, add_special=true)`` does
(BOS first when the vocabulary says ``add_bos_token``; special-token text is *not* parsed), and cut into
``n_chunk = n_tokens // n_ctx`` chunks of ``n_ctx`` tokens (``--chunks N`` takes the first N; the rest of the text is
ignored).  Each chunk is evaluated from an empty KV cache, its first token replaced by BOS when the vocabulary adds
one.  Only the second half of a chunk is scored, so that every prediction sees at least ``n_ctx/2`` tokens of
context: with ``first = n_ctx // 2``, the logits at positions ``first … n_ctx-2`` predict the tokens at
``first+1 … n_ctx-1`` — ``n_ctx - 1 - first`` tokens per chunk.  For one prediction with logits ``z`` of the token
``t``::

    nll = -log softmax(z)[t] = max(z) + log Σ_j exp(z_j - max(z)) - z_t

and over the ``N`` tokens scored so far ``PPL = exp(mean nll)``.  The final estimate's error is the standard error
of the mean nll carried through ``exp``: ``PPL · sqrt((mean(nll²) - mean(nll)²) / (N - 1))``.

**KL divergence.**  A *base* run (usually the F16/F32 model) saves, for every scored token, the log-probabilities of
the whole vocabulary in a compact file (``--kl-divergence-base FILE``, see :class:`LogitsHeader` for the bytes).  A
second run (the quantized model, ``--kl-divergence``) reads the tokens from that file, evaluates the same chunks and
compares its distribution ``q`` with the base's ``p`` token by token::

    KL(p ‖ q) = Σ_j p_j (log p_j - log q_j)        (terms with log p_j ≤ -16 are left out)
    Δp        = q_t - p_t                          (the change of the probability of the right token)
    same top  = argmax q == argmax p

and prints the means with their uncertainties, the percentiles of KL and Δp, RMS Δp and the same-top rate.

**Batching.**  llama.cpp decodes ``n_batch`` tokens per call and packs ``n_batch / n_ctx`` chunks into one batch as
parallel sequences; here each chunk is evaluated alone, ``n_batch`` tokens per forward call.  llama.cpp's logits
move with the batch shape (tiled flash attention from 64 queries, tiled and sgemm matrix products), and the ``ggml``
mode makes the same choices by the number of tokens per call, so with ``n_ctx ≥ 64`` (or ``n_batch < n_ctx``) it
sees the shapes llama.cpp sees; see docs/perplexity.md for the measured agreement.

The per-token arithmetic is C's, in C's precisions: ``expf`` on float32 differences, the exponentials summed in
float64, ``log`` in float64 rounded to float32 where llama.cpp stores it in a ``float``.  The statistics follow the
C expressions, including where they round a product to float32 before summing it in float64.  Only the order of the
sums over tokens differs (llama.cpp's worker threads add their partial sums in whatever order they finish).
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .fileio import atomic_path
from .errors import RefllmError
from .jit import kernel, parallel_kernel, prange
from .quants.common import nearest_int

LOGITS_MAGIC = b"_logits_"
_HEADER = struct.Struct("<8sIii")  # magic, n_ctx (uint32), n_vocab (int32), n_chunk (int32): 20 bytes
LOG_PROB_RANGE = 16.0  # log-probabilities more than 16 below the top are stored as the bottom of the range


def first_scored(n_ctx: int) -> int:
    """``first = n_ctx / 2``: the first position whose logits are scored."""
    return n_ctx // 2


def n_scored(n_ctx: int) -> int:
    """Tokens scored per chunk: the logits at positions ``first … n_ctx-2`` predict ``first+1 … n_ctx-1``."""
    return n_ctx - 1 - first_scored(n_ctx)


def row_width(n_vocab: int) -> int:
    """uint16 words per scored token in the base file: 4 (two float32: scale, min log-prob) + n_vocab, padded to
    an even count (``nv = 2*((n_vocab + 1)/2) + 4``)."""
    return 2 * ((n_vocab + 1) // 2) + 4


# -- the per-token arithmetic (one token per prange iteration; each writes only its own outputs) ---------------------


@kernel
def expf(x):
    """C's ``expf``: float32 in, float32 out (Numba calls libm's ``expf``)."""
    return np.float32(math.exp(x))


@kernel
def _max_logit(row):
    """``max(z)`` and its first index (ties keep the earlier index, as ``std::max`` / a strict ``>`` scan)."""
    best = row[0]
    imax = 0
    for j in range(1, row.size):
        if row[j] > best:
            best = row[j]
            imax = j
    return best, imax


@kernel
def _sum_exp(row, max_logit):
    """``Σ_j expf(z_j - max z)``, summed in float64 in index order."""
    s = np.float64(0.0)  # (not 0.0: in plain Python, float + np.float32 would stay float32)
    for j in range(row.size):
        s += expf(row[j] - max_logit)
    return s


@parallel_kernel
def token_nll(logits, targets, nll):
    """Perplexity mode: ``nll[i] = -((z_t - max z) - log Σ exp(z - max z))`` in float64, for logits float32 [n, V]
    and the predicted tokens ``targets`` [n] (``log_softmax`` of perplexity.cpp)."""
    for i in prange(logits.shape[0]):
        row = logits[i]
        max_logit, _ = _max_logit(row)
        sum_exp = _sum_exp(row, max_logit)
        nll[i] = -(np.float64(row[targets[i]] - max_logit) - math.log(sum_exp))


@parallel_kernel
def compress_log_probs(logits, targets, head, q, nll):
    """Base-file mode: store every log-probability of every token in 16 bits, and return the nll.

    For one token with logits ``z`` (float32 arithmetic unless noted)::

        lo    = max(min z, max z - 16)
        lse   = float32(log Σ exp(z - max z))                      (sum and log in float64)
        head  = [scale, min_log_prob] = [(max z - lo) / 65535, lo - max z - lse]
        q_j   = nearest_int((z_j - lo) / scale)   if z_j > lo else 0            (0 … 65535)
        nll   = max z + lse - z_t

    so that ``log p_j ≈ scale · q_j + min_log_prob``.  ``scale = 0`` (all logits equal) stores all zeros.
    ``head`` is float32 [n, 2] (the first 4 words of each row), ``q`` uint16 [n, V]; ``nll`` float64 [n].
    """
    for i in prange(logits.shape[0]):
        row = logits[i]
        max_logit = row[0]
        min_logit = row[0]
        for j in range(1, row.size):
            max_logit = max(max_logit, row[j])
            min_logit = min(min_logit, row[j])
        min_logit = max(min_logit, max_logit - np.float32(LOG_PROB_RANGE))
        log_sum_exp = np.float32(math.log(_sum_exp(row, max_logit)))
        min_log_prob = min_logit - max_logit - log_sum_exp
        scale = (max_logit - min_logit) / np.float32(65535.0)
        head[i, 0] = scale
        head[i, 1] = min_log_prob
        if scale != 0:
            inv_scale = np.float32(1.0) / scale
            for j in range(row.size):
                q[i, j] = nearest_int(inv_scale * (row[j] - min_logit)) & 0xFFFF if row[j] > min_logit else 0
        else:
            for j in range(row.size):
                q[i, j] = 0
        nll[i] = max_logit + log_sum_exp - row[targets[i]]


@parallel_kernel
def kl_divergence_tokens(logits, targets, head, q, nll, nll_base, kld, p_diff, same_top):
    """KL mode: compare this model's logits [n, V] with the base's stored log-probabilities (``head`` float32 [n, 2],
    ``q`` uint16 [n, V]) token by token.

    With ``log p_j = scale · q_j + min_log_prob`` (base) and ``log q_j = z_j - max z - lse`` (this model)::

        nll[i]      = max z + lse - z_t                      (float32)
        nll_base[i] = -log p_t                               (float32)
        kld[i]      = Σ_{j: log p_j > -16} p_j (log p_j - log q_j)    (p_j = expf(log p_j); summed in float64)
        p_diff[i]   = expf(-nll) - expf(-nll_base)           (float32)
        same_top[i] = argmax z == argmax log p               (first index of the maximum on both sides)
    """
    for i in prange(logits.shape[0]):
        row = logits[i]
        scale = head[i, 0]
        min_log_prob = head[i, 1]
        base = q[i]
        max_logit, imax = _max_logit(row)
        log_sum_exp = np.float32(math.log(_sum_exp(row, max_logit)))
        t = targets[i]
        nll[i] = max_logit + log_sum_exp - row[t]
        nll_base[i] = -(scale * np.float32(base[t]) + min_log_prob)
        log_norm = max_logit + log_sum_exp  # log q_j = z_j - log_norm
        total = np.float64(0.0)
        imax_base = 0
        p_log_base_max = np.float32(0.0)
        for j in range(row.size):
            p_log_base = scale * np.float32(base[j]) + min_log_prob
            if j == 0 or p_log_base > p_log_base_max:
                p_log_base_max = p_log_base
                imax_base = j
            if p_log_base > np.float32(-LOG_PROB_RANGE):
                total += expf(p_log_base) * (p_log_base - row[j] + log_norm)
        kld[i] = total
        same_top[i] = imax == imax_base
        p_diff[i] = expf(-nll[i]) - expf(-nll_base[i])


# -- the base file ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogitsHeader:
    """The header of a ``--kl-divergence-base`` file, as ``perplexity()`` writes it and ``kl_divergence()`` reads it
    (all little-endian)::

        offset  size                    field
        0       8                       magic "_logits_"
        8       4                       n_ctx    uint32
        12      4                       n_vocab  int32
        16      4                       n_chunk  int32
        20      4·n_ctx·n_chunk         tokens   int32, the first n_chunk·n_ctx tokens of the text
        …       then, for each chunk, for each of its n_ctx-1-n_ctx/2 scored tokens,
                nv = 2·⌈n_vocab/2⌉ + 4 words:
                4                       scale         float32
                4                       min_log_prob  float32
                2·n_vocab               q[j]          uint16: log p_j ≈ scale · q[j] + min_log_prob
                2 if n_vocab is odd     padding       (zero)

    The file size is therefore exactly :attr:`file_size`.
    """

    n_ctx: int
    n_vocab: int
    n_chunk: int
    tokens: np.ndarray  # int32 [n_chunk * n_ctx]

    @property
    def n_scored(self) -> int:
        return n_scored(self.n_ctx)

    @property
    def row_width(self) -> int:
        return row_width(self.n_vocab)

    @property
    def chunk_bytes(self) -> int:
        return 2 * self.n_scored * self.row_width

    @property
    def data_offset(self) -> int:
        return _HEADER.size + 4 * self.n_ctx * self.n_chunk

    @property
    def file_size(self) -> int:
        return self.data_offset + self.n_chunk * self.chunk_bytes

    def header_bytes(self) -> bytes:
        return _HEADER.pack(LOGITS_MAGIC, self.n_ctx, self.n_vocab, self.n_chunk) + \
            np.ascontiguousarray(self.tokens, "<i4").tobytes()


def split_rows(rows: np.ndarray, n_vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """Views of base-file rows uint16 [n, nv]: ``head`` float32 [n, 2] (scale, min_log_prob) and ``q`` uint16
    [n, n_vocab]."""
    return rows[:, :4].view(np.float32), rows[:, 4:4 + n_vocab]


class LogitsReader:
    """Reads a ``--kl-divergence-base`` file: the header and tokens at once, then one chunk of rows at a time.

    Everything is checked against the file's size before anything is allocated, so a corrupt header can neither
    make a huge allocation nor fail in the middle of a run.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            self._f = open(self.path, "rb")
        except OSError as e:
            raise RefllmError(f"{self.path}: cannot open the base logits file: {e.strerror}") from None
        try:
            self.header = self._read_header()
        except BaseException:
            self._f.close()
            raise
        self._next_chunk = 0

    def _error(self, field: str, message: str) -> RefllmError:
        return RefllmError(f"{self.path}: {field}: {message}")

    def _read_header(self) -> LogitsHeader:
        size = os.fstat(self._f.fileno()).st_size
        raw = self._f.read(_HEADER.size)
        if raw[:8] != LOGITS_MAGIC:
            if LOGITS_MAGIC.startswith(raw):
                raise self._error("magic", f"file truncated: {len(raw)} bytes, the header needs {_HEADER.size}")
            raise self._error("magic", f"{raw[:8]!r} is not {LOGITS_MAGIC!r}: this does not look like a file "
                                       "containing log-probabilities (llama-perplexity --kl-divergence-base)")
        if len(raw) < _HEADER.size:
            field = ("n_ctx", "n_vocab", "n_chunk")[(len(raw) - 8) // 4]
            raise self._error(field, f"file truncated: {len(raw)} bytes, the header needs {_HEADER.size}")
        _, n_ctx, n_vocab, n_chunk = _HEADER.unpack(raw)
        if n_scored(n_ctx) < 1:
            raise self._error("n_ctx", f"{n_ctx}: a chunk must score at least one token (n_ctx >= 3)")
        if n_vocab < 1:
            raise self._error("n_vocab", f"{n_vocab}: must be positive")
        if n_chunk < 1:
            raise self._error("n_chunk", f"{n_chunk}: must be positive")
        sizes = LogitsHeader(n_ctx, n_vocab, n_chunk, np.empty(0, np.int32))
        if size < sizes.data_offset:
            raise self._error("tokens", f"file truncated: {n_chunk} chunks of {n_ctx} tokens need bytes "
                                        f"{_HEADER.size} … {sizes.data_offset - 1}, the file has {size} bytes")
        if size != sizes.file_size:
            complete = (size - sizes.data_offset) // sizes.chunk_bytes
            what = (f"truncated in chunk {complete} (of {n_chunk})" if size < sizes.file_size
                    else f"{size - sizes.file_size} bytes after the last chunk")
            raise self._error("log_probs", f"{what}: n_ctx={n_ctx}, n_vocab={n_vocab}, n_chunk={n_chunk} make a file "
                                           f"of {sizes.file_size} bytes, this one has {size}")
        tokens = np.frombuffer(self._f.read(4 * n_ctx * n_chunk), "<i4").astype(np.int32)
        bad = np.flatnonzero((tokens < 0) | (tokens >= n_vocab))
        if bad.size:
            raise self._error(f"tokens[{bad[0]}]", f"{tokens[bad[0]]} is not a token id (0 … {n_vocab - 1})")
        return LogitsHeader(n_ctx, n_vocab, n_chunk, tokens)

    def read_chunk(self) -> np.ndarray:
        """The next chunk's rows: uint16 [n_scored, row_width] (see :func:`split_rows`)."""
        h = self.header
        if self._next_chunk >= h.n_chunk:
            raise self._error("log_probs", f"all {h.n_chunk} chunks have been read")
        raw = self._f.read(h.chunk_bytes)
        if len(raw) != h.chunk_bytes:  # the file changed under us
            raise self._error("log_probs", f"failed reading log-probs for chunk {self._next_chunk}")
        self._next_chunk += 1
        return np.frombuffer(raw, "<u2").reshape(h.n_scored, h.row_width)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> LogitsReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LogitsWriter:
    """Writes a ``--kl-divergence-base`` file atomically (:func:`refllm.fileio.atomic_path`): the target appears
    when :meth:`commit` runs (on leaving a ``with`` block without an exception); after :meth:`abort` or an
    exception nothing is left."""

    def __init__(self, path: str | os.PathLike, header: LogitsHeader):
        self.path = Path(path)
        self.header = header
        self._chunks = 0
        self._stack = ExitStack()
        try:
            tmp = self._stack.enter_context(atomic_path(self.path))
            self._f = self._stack.enter_context(open(tmp, "wb"))
            self._f.write(header.header_bytes())
        except OSError as e:
            self.abort()
            raise RefllmError(f"{self.path}: failed to open for writing: {e.strerror}") from None
        except BaseException:
            self.abort()
            raise

    def write_chunk(self, rows: np.ndarray) -> None:
        """One chunk's rows, uint16 [n_scored, row_width]."""
        h = self.header
        if rows.shape != (h.n_scored, h.row_width) or rows.dtype != np.uint16:
            raise RefllmError(f"{self.path}: chunk rows must be uint16 [{h.n_scored}, {h.row_width}], "
                              f"got {rows.dtype} {list(rows.shape)}")
        self._f.write(np.ascontiguousarray(rows, "<u2").tobytes())
        self._chunks += 1

    def commit(self) -> None:
        """Rename the finished file over the target (after checking that every chunk was written)."""
        if self._chunks != self.header.n_chunk:
            self.abort()
            raise RefllmError(f"{self.path}: {self._chunks} of {self.header.n_chunk} chunks written")
        self._stack.close()

    def abort(self) -> None:
        """Remove the temporary file; the target stays as it was."""
        self._stack.__exit__(RefllmError, RefllmError("aborted"), None)

    def __enter__(self) -> LogitsWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


# -- the statistics --------------------------------------------------------------------------------------------------


@dataclass
class PerplexityStats:
    """The running sums of perplexity mode: ``nll`` = Σ nll, ``nll2`` = Σ nll² (float64), ``count`` tokens."""

    nll: float = 0.0
    nll2: float = 0.0
    count: int = 0

    def add(self, values: np.ndarray) -> None:
        """Add the nll of the tokens of one chunk (float64 [n])."""
        for v in values.astype(np.float64):
            self.nll += float(v)
            self.nll2 += float(v * v)
        self.count += values.size

    @property
    def ppl(self) -> float:
        return math.exp(self.nll / self.count)

    def final_estimate(self) -> tuple[float, float | None]:
        """``(PPL, error)``: error = PPL · sqrt((mean nll² - mean nll²) / (N-1)); None where llama.cpp reports
        "Unexpected negative standard deviation" (variance not positive, or a single token)."""
        mean = self.nll / self.count
        var = self.nll2 / self.count - mean * mean
        ppl = math.exp(mean)
        if var > 0 and self.count > 1:
            return ppl, math.sqrt(var / (self.count - 1)) * ppl
        return ppl, None


def _mean_and_uncertainty(total: float, total2: float, count: int) -> tuple[float, float]:
    """Mean of values from their sum and sum of squares, and the standard error of the mean (0 for 10 or fewer
    values, or a variance that is not positive)."""
    if count < 1:
        return 0.0, 0.0
    f = total / count
    df = total2 / count - f * f
    return f, (math.sqrt(df / (count - 1)) if df > 0 and count > 10 else 0.0)


def _covariance(a: float, b: float, ab: float, count: int) -> float:
    """Covariance of two means from the sums of a, b and a·b (0 for fewer than 10 values)."""
    if count < 10:
        return 0.0
    return (ab / count - (a / count) * (b / count)) / (count - 1)


def _percentile(values: np.ndarray, fraction: float) -> float:
    """Linear interpolation between the sorted float32 values, in float32 as llama.cpp's ``percentile``."""
    fraction = np.float32(fraction)
    if fraction <= 0:
        return float(values[0])
    if fraction >= 1:
        return float(values[-1])
    p = fraction * np.float32(values.size - 1)
    ip = int(p)
    p = p - np.float32(ip)
    return float((np.float32(1.0) - p) * values[ip] + p * values[min(ip + 1, values.size - 1)])


def _median(values: np.ndarray) -> float:
    """The middle value, or the float32 mean of the two middle values."""
    n = values.size
    return float(np.float32(0.5) * (values[n // 2] + values[n // 2 - 1]) if n % 2 == 0 else values[n // 2])


def _div(a: float, b: float) -> float:
    """``a / b`` with C's IEEE results (inf, nan) instead of ZeroDivisionError."""
    with np.errstate(all="ignore"):
        return float(np.float64(a) / np.float64(b))


def _sqrt(x: float) -> float:
    """C's ``sqrt``: for a negative argument the NaN x86 makes (sign bit set)."""
    return math.sqrt(x) if x >= 0 else -math.nan


def _c(x: float, spec: str) -> str:
    """``printf`` of a double: ``format(x, spec)``, except that a NaN is written as glibc writes it — ``-nan`` when
    its sign bit is set, as it is for every NaN that x86 arithmetic makes (0/0, sqrt(-1), inf·0)."""
    if math.isnan(x):
        width = int(spec.split(".")[0] or 0)
        return ("-nan" if math.copysign(1.0, x) < 0 else "nan").rjust(width)
    return format(x, spec)


@dataclass
class KLDivergenceStats:
    """``kl_divergence_result`` of perplexity.cpp (the sums, float64) and every token's KL and Δp (float32)."""

    sum_nll: float = 0.0
    sum_nll2: float = 0.0
    sum_nll_base: float = 0.0
    sum_nll_base2: float = 0.0
    sum_nll_nll_base: float = 0.0
    sum_kld: float = 0.0
    sum_kld2: float = 0.0
    sum_p_diff: float = 0.0
    sum_p_diff2: float = 0.0
    sum_p_diff4: float = 0.0
    n_same_top: int = 0
    count: int = 0
    kld_values: list = field(default_factory=list)  # float32 arrays, one per chunk
    p_diff_values: list = field(default_factory=list)

    def add(self, nll, nll_base, kld, p_diff, same_top) -> None:
        """Add one chunk's per-token values (see :func:`kl_divergence_tokens`).  Products of two float32 values are
        rounded to float32 before they are summed, as in the C code (``nll*nll`` with ``float nll``)."""
        f64 = np.float64
        self.sum_nll += float(np.sum(nll, dtype=f64))
        self.sum_nll2 += float(np.sum(nll * nll, dtype=f64))
        self.sum_nll_base += float(np.sum(nll_base, dtype=f64))
        self.sum_nll_base2 += float(np.sum(nll_base * nll_base, dtype=f64))
        self.sum_nll_nll_base += float(np.sum(nll * nll_base, dtype=f64))
        self.sum_kld += float(np.sum(kld))
        self.sum_kld2 += float(np.sum(kld * kld))
        p_diff2 = (p_diff * p_diff).astype(f64)
        self.sum_p_diff += float(np.sum(p_diff, dtype=f64))
        self.sum_p_diff2 += float(np.sum(p_diff2))
        self.sum_p_diff4 += float(np.sum(p_diff2 * p_diff2))
        self.n_same_top += int(np.count_nonzero(same_top))
        self.count += nll.size
        self.kld_values.append(kld.astype(np.float32))
        self.p_diff_values.append(p_diff.astype(np.float32))

    # the figures, named as in the printout

    def log_ppl(self) -> tuple[float, float]:
        return _mean_and_uncertainty(self.sum_nll, self.sum_nll2, self.count)

    def log_ppl_base(self) -> tuple[float, float]:
        return _mean_and_uncertainty(self.sum_nll_base, self.sum_nll_base2, self.count)

    def log_ppl_cov(self) -> float:
        return _covariance(self.sum_nll, self.sum_nll_base, self.sum_nll_nll_base, self.count)

    def log_ppl_ratio(self) -> tuple[float, float]:
        (a, da), (b, db) = self.log_ppl(), self.log_ppl_base()
        return a - b, _sqrt(da * da + db * db - 2.0 * self.log_ppl_cov())

    def kl_div(self) -> tuple[float, float]:
        return _mean_and_uncertainty(self.sum_kld, self.sum_kld2, self.count)

    def p_diff_rms(self) -> tuple[float, float]:
        mse, dmse = _mean_and_uncertainty(self.sum_p_diff2, self.sum_p_diff4, self.count)
        rms = math.sqrt(mse)
        return rms, _div(0.5, rms) * dmse

    def same_top(self) -> tuple[float, float]:
        p = self.n_same_top / self.count
        return p, _sqrt(_div(p * (1 - p), self.count - 1))


KL_TABLE_HEADER = ("chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              "
                   "Δp RMS            Same top p")


def kl_chunk_line(chunk: int, s: KLDivergenceStats) -> str:
    """The table row printed after each chunk (``chunk`` counts from 1)."""
    log_ppl, dlog_ppl = s.log_ppl()
    ppl = math.exp(log_ppl)
    ratio, dratio = s.log_ppl_ratio()
    kl, dkl = s.kl_div()
    rms, drms = s.p_diff_rms()
    top, dtop = s.same_top()
    return (f"{chunk:4d}    {_c(ppl, '9.4f')} ± {_c(ppl * dlog_ppl, '9.4f')}"
            f"    {_c(ratio, '10.5f')} ± {_c(dratio, '10.5f')}    {_c(kl, '10.5f')} ± {_c(dkl, '10.5f')}"
            f"    {_c(100 * rms, '6.3f')} ± {_c(100 * drms, '6.3f')} %"
            f"    {_c(100 * top, '6.3f')} ± {_c(100 * dtop, '6.3f')} %")


MIN_TOKENS_FOR_STATISTICS = 100  # llama.cpp prints the summary only from 100 scored tokens on


def kl_summary_lines(s: KLDivergenceStats) -> list[str]:
    """The three blocks printed at the end of a KL run (empty for fewer than 100 tokens)."""
    if s.count < MIN_TOKENS_FOR_STATISTICS:
        return []
    kld = np.sort(np.concatenate(s.kld_values))  # float32; printed as doubles (C's float -> double promotion)
    p_diff = np.sort(np.concatenate(s.p_diff_values))

    log_ppl, dlog_ppl = s.log_ppl()
    ppl, dppl = math.exp(log_ppl), math.exp(log_ppl) * dlog_ppl
    log_base, dlog_base = s.log_ppl_base()
    base, dbase = math.exp(log_base), math.exp(log_base) * dlog_base
    cov = s.log_ppl_cov()
    cor = _div(cov, dlog_ppl * dlog_base)
    ratio, dratio = s.log_ppl_ratio()
    dppl_diff = _sqrt(dppl * dppl + dbase * dbase - 2.0 * ppl * base * cov)
    lines = [
        "====== Perplexity statistics ======",
        f"Mean PPL(Q)                   : {_c(ppl, '10.6f')} ± {_c(dppl, '10.6f')}",
        f"Mean PPL(base)                : {_c(base, '10.6f')} ± {_c(dbase, '10.6f')}",
        f"Cor(ln(PPL(Q)), ln(PPL(base))): {_c(100.0 * cor, '6.2f')}%",
        f"Mean ln(PPL(Q)/PPL(base))     : {_c(ratio, '10.6f')} ± {_c(dratio, '10.6f')}",
        f"Mean PPL(Q)/PPL(base)         : {_c(math.exp(ratio), '10.6f')} ± {_c(math.exp(ratio) * dratio, '10.6f')}",
        f"Mean PPL(Q)-PPL(base)         : {_c(ppl - base, '10.6f')} ± {_c(dppl_diff, '10.6f')}",
        "",
        "====== KL divergence statistics ======",
    ]
    kl, dkl = s.kl_div()
    lines.append(f"Mean    KLD: {_c(kl, '10.6f')} ± {_c(dkl, '10.6f')}")
    lines.append(f"Maximum KLD: {_c(float(kld[-1]), '10.6f')}")
    for label, fraction in (("99.9%", 0.999), ("99.0%", 0.990), ("95.0%", 0.950), ("90.0%", 0.900)):
        lines.append(f"{label}   KLD: {_c(_percentile(kld, fraction), '10.6f')}")
    lines.append(f"Median  KLD: {_c(_median(kld), '10.6f')}")
    for label, fraction in (("10.0%", 0.100), (" 5.0%", 0.050), (" 1.0%", 0.010), (" 0.1%", 0.001)):
        lines.append(f"{label}   KLD: {_c(_percentile(kld, fraction), '10.6f')}")
    lines.append(f"Minimum KLD: {_c(float(kld[0]), '10.6f')}")
    lines += ["", "====== Token probability statistics ======"]
    mean, dmean = _mean_and_uncertainty(s.sum_p_diff, s.sum_p_diff2, s.count)
    lines.append(f"Mean    Δp: {_c(100.0 * mean, '6.3f')} ± {_c(100.0 * dmean, '5.3f')} %")
    lines.append(f"Maximum Δp: {_c(100.0 * float(p_diff[-1]), '6.3f')}%")
    for label, fraction in (("99.9%", 0.999), ("99.0%", 0.990), ("95.0%", 0.950), ("90.0%", 0.900),
                            ("75.0%", 0.750)):
        lines.append(f"{label}   Δp: {_c(100.0 * _percentile(p_diff, fraction), '6.3f')}%")
    lines.append(f"Median  Δp: {_c(100.0 * _median(p_diff), '6.3f')}%")
    for label, fraction in (("25.0%", 0.250), ("10.0%", 0.100), (" 5.0%", 0.050), (" 1.0%", 0.010),
                            (" 0.1%", 0.001)):
        lines.append(f"{label}   Δp: {_c(100.0 * _percentile(p_diff, fraction), '6.3f')}%")
    lines.append(f"Minimum Δp: {_c(100.0 * float(p_diff[0]), '6.3f')}%")
    rms, drms = s.p_diff_rms()
    lines.append(f"RMS Δp    : {_c(100.0 * rms, '6.3f')} ± {_c(100.0 * drms, '5.3f')} %")
    top, dtop = s.same_top()
    lines.append(f"Same top p: {_c(100.0 * top, '6.3f')} ± {_c(100.0 * dtop, '5.3f')} %")
    return lines


# -- the runs --------------------------------------------------------------------------------------------------------


def chunk_logits(model, tokens: np.ndarray, *, n_batch: int, bos_id: int | None) -> np.ndarray:
    """Evaluate one chunk of ``n_ctx`` tokens from an empty cache, ``n_batch`` tokens per forward call, the first
    token replaced by ``bos_id`` (None: kept); return the logits of the scored positions ``first … n_ctx-2``:
    float32 [n_scored, n_vocab]."""
    n_ctx = tokens.size
    first = first_scored(n_ctx)
    ids = np.array(tokens, dtype=np.int64)
    if bos_id is not None:
        ids[0] = bos_id
    model.reset()
    kept = []
    for start in range(0, n_ctx, n_batch):
        logits = model.forward(ids[start:start + n_batch], start)  # [batch, V] for positions start …
        if start + logits.shape[0] > first:
            kept.append(logits[max(0, first - start):])
    return np.concatenate(kept)[:n_scored(n_ctx)]


def perplexity(model, tokens: np.ndarray, *, n_ctx: int, n_chunk: int, n_batch: int, bos_id: int | None,
               writer: LogitsWriter | None = None) -> Iterator[PerplexityStats]:
    """Perplexity mode over the first ``n_chunk`` chunks of ``tokens``; yields the running sums after each chunk.
    With ``writer``, each chunk's log-probabilities go to the base file as well."""
    stats = PerplexityStats()
    first = first_scored(n_ctx)
    for i in range(n_chunk):
        chunk = tokens[i * n_ctx:(i + 1) * n_ctx]
        logits = chunk_logits(model, chunk, n_batch=n_batch, bos_id=bos_id)
        targets = chunk[first + 1:].astype(np.int64)
        nll = np.empty(targets.size, np.float64)
        if writer is None:
            token_nll(logits, targets, nll)
        else:
            rows = np.zeros((targets.size, row_width(logits.shape[1])), np.uint16)
            head, q = split_rows(rows, logits.shape[1])
            compress_log_probs(logits, targets, head, q, nll)
            writer.write_chunk(rows)
        stats.add(nll)
        yield stats


def kl_divergence(model, reader: LogitsReader, *, n_batch: int, bos_id: int | None) -> Iterator[KLDivergenceStats]:
    """KL mode over every chunk of the base file; yields the running statistics after each chunk."""
    h = reader.header
    stats = KLDivergenceStats()
    first = first_scored(h.n_ctx)
    for i in range(h.n_chunk):
        chunk = h.tokens[i * h.n_ctx:(i + 1) * h.n_ctx]
        logits = chunk_logits(model, chunk, n_batch=n_batch, bos_id=bos_id)
        head, q = split_rows(reader.read_chunk(), h.n_vocab)
        targets = chunk[first + 1:].astype(np.int64)
        n = targets.size
        nll, nll_base, p_diff = (np.empty(n, np.float32) for _ in range(3))
        kld = np.empty(n, np.float64)
        same_top = np.empty(n, np.bool_)
        kl_divergence_tokens(logits, targets, head, q, nll, nll_base, kld, p_diff, same_top)
        stats.add(nll, nll_base, kld, p_diff, same_top)
        yield stats


__all__ = ["LOGITS_MAGIC", "KLDivergenceStats", "LogitsHeader", "LogitsReader", "LogitsWriter", "PerplexityStats",
           "chunk_logits", "compress_log_probs", "first_scored", "kl_chunk_line", "kl_divergence",
           "kl_divergence_tokens", "kl_summary_lines", "n_scored", "perplexity", "row_width", "split_rows",
           "token_nll"]
