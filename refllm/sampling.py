"""Choosing the next token from the logits: llama.cpp's sampler chain, as ``llama-cli`` / ``llama-completion`` build
it (``common_sampler_init`` in ``common/sampling.cpp``, the samplers in ``src/llama-sampler.cpp``).

The chain works on a list of *candidates* — (token id, logit) pairs, at first the whole vocabulary in id order — and
each stage removes candidates or changes their logits; the last stage draws one::

    logits → logit-bias → penalties → top-k → top-p → min-p → temperature → dist (seeded draw)

llama.cpp's defaults (``common_params_sampling``, ``common/common.h``): ``top_k = 40``, ``top_p = 0.95``,
``min_p = 0.05``, ``temp = 0.80``, ``repeat_last_n = 64``, ``repeat_penalty = 1.0`` (so the penalties are off),
seed ``0xFFFFFFFF`` = a random seed.  A GGUF file may override them with ``general.sampling.*`` keys
(:func:`SamplerParams.from_gguf`).  ``temp <= 0`` is greedy: the temperature stage keeps only the largest logit.

The stages reproduce llama.cpp's float32 arithmetic and candidate order, and :class:`MT19937` plus
:func:`uniform_canonical` reproduce ``std::mt19937`` and libstdc++'s ``uniform_real_distribution<double>``, so the
same seed gives the same tokens as llama.cpp (tests/test_sampling.py runs both on the same logits).  The one thing
not reproduced is the order of candidates with *exactly equal* logits, which ``std::partial_sort`` leaves
unspecified; refllm keeps them in id order.
"""

from __future__ import annotations

import math
import secrets
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .errors import RefllmError

LLAMA_DEFAULT_SEED = 0xFFFFFFFF  # llama.h: "use a random seed"


# -- the random numbers: std::mt19937 and std::uniform_real_distribution<double>(0, 1) --------------------------------


class MT19937:
    """The 32-bit Mersenne Twister, ``std::mt19937`` (and numpy's legacy ``RandomState(seed)``).

    Seeding (``init_genrand``): ``mt[0] = seed``, ``mt[i] = 1812433253 · (mt[i-1] ⊕ (mt[i-1] ≫ 30)) + i`` mod 2³².
    Every 624 outputs the state is *twisted*; each output is a state word *tempered* by four shift-xor steps.
    """

    N, M = 624, 397

    def __init__(self, seed: int):
        mt = [seed & 0xFFFFFFFF]
        for i in range(1, self.N):
            mt.append((1812433253 * (mt[-1] ^ (mt[-1] >> 30)) + i) & 0xFFFFFFFF)
        self.mt = mt
        self.index = self.N

    def _twist(self) -> None:
        mt, n = self.mt, self.N
        for i in range(n):
            y = (mt[i] & 0x80000000) | (mt[(i + 1) % n] & 0x7FFFFFFF)
            mt[i] = mt[(i + self.M) % n] ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)
        self.index = 0

    def next_u32(self) -> int:
        """The next output, 0 … 2³²-1."""
        if self.index >= self.N:
            self._twist()
        y = self.mt[self.index]
        self.index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C5680
        y ^= (y << 15) & 0xEFC60000
        return y ^ (y >> 18)


def uniform_canonical(rng: MT19937) -> float:
    """libstdc++'s ``std::generate_canonical<double, 53>`` (what ``uniform_real_distribution<double>(0, 1)`` returns):
    two 32-bit draws ``x0, x1`` make ``(x0 + x1 · 2³²) / 2⁶⁴`` in double precision (the sum rounds to 53 bits), and a
    result that rounds up to 1 becomes the largest double below 1."""
    x0 = rng.next_u32()
    x1 = rng.next_u32()
    u = (float(x0) + float(x1) * 2.0**32) / 2.0**64
    return u if u < 1.0 else math.nextafter(1.0, 0.0)


# -- the candidates and the stages ------------------------------------------------------------------------------------


@dataclass
class Candidates:
    """``llama_token_data_array``: token ids and their logits (float32), and whether they are sorted by logit,
    largest first.  The order matters: the final draw walks the candidates in this order."""

    ids: np.ndarray  # int32 [n]
    logits: np.ndarray  # float32 [n]
    sorted: bool = False

    @classmethod
    def from_logits(cls, logits: np.ndarray) -> Candidates:
        """The whole vocabulary in id order."""
        logits = np.array(logits, dtype=np.float32).reshape(-1)
        return cls(np.arange(logits.size, dtype=np.int32), logits)

    def __len__(self) -> int:
        return self.ids.size

    def take(self, index, *, sorted: bool) -> Candidates:
        return Candidates(self.ids[index], self.logits[index], sorted)


def _sort(c: Candidates) -> Candidates:
    """Largest logit first (``llama_token_data_array_partial_sort_inplace``; equal logits stay in the order they
    have, where ``std::partial_sort`` may not keep it)."""
    if c.sorted:
        return c
    return c.take(np.argsort(-c.logits, kind="stable"), sorted=True)


def _expf(x: np.ndarray) -> np.ndarray:
    """C's ``expf`` on float32: the exponential, rounded once to float32."""
    return np.exp(x.astype(np.float64)).astype(np.float32)


def _softmax(c: Candidates) -> np.ndarray:
    """``llama_sampler_softmax_impl`` without sorting: ``pᵢ = expf(lᵢ - max l) / Σⱼ expf(lⱼ - max l)``, float32, the
    sum taken one candidate after the other in the current order."""
    e = _expf(c.logits - c.logits.max())
    return e / np.cumsum(e, dtype=np.float32)[-1]


def logit_bias(c: Candidates, bias: Mapping[int, float]) -> Candidates:
    """``logit-bias``: ``lᵢ += bias[idᵢ]``.  ``--ignore-eos`` is a bias of -∞ on every end-of-generation token."""
    if not bias:
        return c
    logits = c.logits.copy()
    for i in np.flatnonzero(np.isin(c.ids, list(bias))):
        logits[i] += np.float32(bias[int(c.ids[i])])
    return Candidates(c.ids, logits, c.sorted)


def penalties(c: Candidates, history: Iterable[int], repeat: float, frequency: float = 0.0,
              presence: float = 0.0) -> Candidates:
    """``penalties``: for each token seen ``count > 0`` times in ``history`` (the last ``repeat_last_n`` tokens,
    prompt included)::

        l = l · repeat   if l <= 0
        l = l / repeat   otherwise
        l = l - (count · frequency + 1 · presence)

    (dividing a negative logit would make the token *more* likely, hence the two cases).  Off when ``repeat = 1``
    and ``frequency = presence = 0``."""
    counts = Counter(history)
    repeat, frequency, presence = np.float32(repeat), np.float32(frequency), np.float32(presence)
    if not counts or (repeat == 1 and frequency == 0 and presence == 0):
        return c
    logits = c.logits.copy()
    for i in np.flatnonzero(np.isin(c.ids, list(counts))):
        count = np.float32(counts[int(c.ids[i])])
        logits[i] = logits[i] * repeat if logits[i] <= 0 else logits[i] / repeat
        logits[i] -= count * frequency + np.float32(1.0) * presence
    return Candidates(c.ids, logits, sorted=False)


def top_k(c: Candidates, k: int) -> Candidates:
    """``top-k``: keep the ``k`` largest logits (sorted, largest first).  ``k <= 0``: off."""
    if k <= 0:
        return c
    if k >= len(c) or c.sorted:
        s = _sort(c)
        return s.take(slice(0, min(k, len(s))), sorted=True)
    # the same k as a full stable sort would keep, without sorting the whole vocabulary: every logit above the k-th
    # largest value, then that value's holders in their current order until there are k
    kth = np.partition(c.logits, len(c) - k)[len(c) - k]
    above = np.flatnonzero(c.logits > kth)
    tied = np.flatnonzero(c.logits == kth)[:k - above.size]
    keep = np.concatenate([above, tied])
    keep.sort()
    return _sort(c.take(keep, sorted=False))


def top_p(c: Candidates, p: float) -> Candidates:
    """``top-p`` (nucleus): sort; keep the shortest prefix whose probabilities add up to at least ``p``::

        keep candidates 0 … m,  m = min { i : p₀ + … + pᵢ >= p }

    with ``pᵢ`` the softmax over the current candidates (float32, summed in order).  ``p >= 1``: off."""
    p = np.float32(p)  # llama.cpp's settings are float32: the tests below are on the rounded value
    if p >= 1:
        return c
    probs = _softmax(c)  # normalized in the current order ...
    order = np.arange(len(c)) if c.sorted else np.argsort(-c.logits, kind="stable")
    cumulative = np.cumsum(probs[order], dtype=np.float32)  # ... accumulated in sorted order
    reached = np.flatnonzero(cumulative >= p)
    keep = reached[0] + 1 if reached.size else len(c)
    return c.take(order[:keep], sorted=True)


def min_p(c: Candidates, p: float) -> Candidates:
    """``min-p``: keep the tokens at least ``p`` times as probable as the most probable one::

        pᵢ >= p · p_max  ⇔  lᵢ >= max l + logf(p)

    (order kept).  ``p <= 0``: off."""
    p = np.float32(p)
    if p <= 0 or len(c) == 0:
        return c
    threshold = c.logits.max() + np.float32(math.log(p))
    keep = c.logits >= threshold
    if not keep.any():  # every logit is -inf: llama.cpp's sorted fallback keeps them all
        return _sort(c)
    return c.take(keep, sorted=c.sorted)


def temperature(c: Candidates, temp: float) -> Candidates:
    """``temp``: ``lᵢ = lᵢ / temp`` (float32).  ``temp <= 0`` is greedy: the first largest logit stays, every other
    becomes -∞.  ``temp = 1``: off."""
    temp = np.float32(temp)
    if len(c) == 0 or temp == 1:
        return c
    if temp <= 0:
        logits = np.full_like(c.logits, -np.inf)
        best = int(np.argmax(c.logits))
        logits[best] = c.logits[best]
    else:
        with np.errstate(over="ignore"):  # a tiny temperature overflows to ±inf, as the float32 division in C does
            logits = c.logits / temp
    return Candidates(c.ids, logits, c.sorted)


def dist(c: Candidates, rng: MT19937) -> int:
    """``dist``: draw one candidate with probability ``pᵢ = expf(lᵢ - max l) / Σ``; return its index.

    The draw, as llama.cpp makes it: ``u`` = :func:`uniform_canonical`, the first ``i`` with
    ``p₀ + … + pᵢ >= u · Σ`` (unnormalized ``pᵢ`` in float32, sums in double, candidates in their current order).
    A single candidate still consumes one ``u``."""
    if len(c) == 0:
        raise RefllmError("sampling: no candidates left")
    u = uniform_canonical(rng)
    if len(c) == 1:
        return 0
    weights = _expf(c.logits - c.logits.max()).astype(np.float64)
    running = np.cumsum(weights)  # float64, one after the other
    hit = np.flatnonzero(running >= running[-1] * u)
    return int(hit[0]) if hit.size else len(c) - 1


# -- the chain --------------------------------------------------------------------------------------------------------


#: the settings a GGUF file may give as ``general.sampling.<key>`` (``common_init_sampler_from_model``)
GGUF_SAMPLING_KEYS = {"top_k": "top_k", "top_p": "top_p", "min_p": "min_p", "temp": "temp",
                      "repeat_last_n": "penalty_last_n", "repeat_penalty": "penalty_repeat"}


@dataclass
class SamplerParams:
    """The sampling settings, with llama.cpp's defaults (``common_params_sampling``)."""

    seed: int = LLAMA_DEFAULT_SEED  # 0xFFFFFFFF (or -1): a random seed
    top_k: int = 40  # <= 0: off
    top_p: float = 0.95  # 1.0: off
    min_p: float = 0.05  # 0.0: off
    temp: float = 0.80  # <= 0: greedy
    repeat_last_n: int = 64  # 0: off
    repeat_penalty: float = 1.0  # 1.0: off
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)

    def validate(self) -> None:
        if not (math.isfinite(self.repeat_penalty) and self.repeat_penalty > 0):
            raise RefllmError(f"repeat_penalty = {self.repeat_penalty}: must be finite and greater than 0")
        if self.repeat_last_n < 0:
            raise RefllmError(f"repeat_last_n = {self.repeat_last_n}: must be >= 0")
        for name in ("top_p", "min_p", "temp", "frequency_penalty", "presence_penalty"):
            if not math.isfinite(getattr(self, name)):
                raise RefllmError(f"{name} = {getattr(self, name)}: must be finite")

    @classmethod
    def from_gguf(cls, metadata: Mapping, **given) -> SamplerParams:
        """llama.cpp's defaults, overridden by the file's ``general.sampling.*`` keys, overridden by ``given``
        (the values the user set; ``None`` counts as not set)."""
        values = {}
        for name, key in GGUF_SAMPLING_KEYS.items():
            value = metadata.get(f"general.sampling.{key}")
            if value is not None:
                values[name] = type(getattr(cls, name))(value)
        values.update({k: v for k, v in given.items() if v is not None})
        return cls(**values)


class Sampler:
    """llama.cpp's default sampler chain with its state: the penalty history and the random generator.

    >>> sampler = Sampler(SamplerParams(seed=42))
    >>> sampler.accept_many(prompt_ids)        # llama-completion feeds the prompt to the penalty history
    >>> token = sampler.sample(logits)         # and accepts the drawn token
    """

    def __init__(self, params: SamplerParams | None = None):
        self.params = params = params or SamplerParams()
        params.validate()
        seed = params.seed & 0xFFFFFFFF
        #: the seed in use (a random one for LLAMA_DEFAULT_SEED), as ``sampler seed:`` reports it
        self.seed = secrets.randbits(32) if seed == LLAMA_DEFAULT_SEED else seed
        self.rng = MT19937(self.seed)
        self.history: deque[int] = deque(maxlen=max(params.repeat_last_n, 0))

    def reset(self) -> None:
        """Forget the history and restart the generator from the seed (``llama_sampler_reset``)."""
        self.history.clear()
        self.rng = MT19937(self.seed)

    def accept(self, token: int) -> None:
        """Add a token to the penalty history (``llama_sampler_accept``)."""
        if self.params.repeat_last_n > 0:
            self.history.append(int(token))

    def accept_many(self, tokens: Iterable[int]) -> None:
        for t in tokens:
            self.accept(t)

    def apply(self, logits: np.ndarray) -> Candidates:
        """Every stage but the draw: the candidates ``dist`` chooses from."""
        p = self.params
        c = Candidates.from_logits(logits)
        c = logit_bias(c, p.logit_bias)
        if p.repeat_last_n > 0:
            c = penalties(c, self.history, p.repeat_penalty, p.frequency_penalty, p.presence_penalty)
        c = top_k(c, p.top_k)
        c = top_p(c, p.top_p)
        c = min_p(c, p.min_p)
        return temperature(c, p.temp)

    def sample(self, logits: np.ndarray) -> int:
        """Draw the next token from float32 logits [n_vocab] and accept it (``llama_sampler_sample``)."""
        c = self.apply(logits)
        token = int(c.ids[dist(c, self.rng)])
        self.accept(token)
        return token

    def describe(self) -> str:
        """The chain as llama.cpp prints it (``sampler chain: logits -> …``): ``?name`` marks a stage that is off —
        among them llama.cpp's DRY, top-n-σ, typical-p and XTC, which refllm leaves out (off by default)."""
        p = self.params
        stages = [
            ("penalties", p.repeat_last_n > 0 and (p.repeat_penalty != 1.0 or p.frequency_penalty != 0.0
                                                   or p.presence_penalty != 0.0)),
            ("dry", False), ("top-n-sigma", False), ("top-k", p.top_k > 0), ("typical", False),
            ("top-p", p.top_p < 1.0), ("min-p", p.min_p > 0.0), ("xtc", False), ("temp-ext", p.temp != 1.0),
        ]
        names = ["logit-bias"] if p.logit_bias else []
        names += [name if on else f"?{name}" for name, on in stages]
        return "logits -> " + " -> ".join(names + ["dist"])

    def describe_params(self) -> str:
        """The settings line of llama.cpp's ``sampler params:`` log."""
        p = self.params
        return (f"repeat_last_n = {p.repeat_last_n}, repeat_penalty = {p.repeat_penalty:.3f}, "
                f"frequency_penalty = {p.frequency_penalty:.3f}, presence_penalty = {p.presence_penalty:.3f}\n"
                f"top_k = {p.top_k}, top_p = {p.top_p:.3f}, min_p = {p.min_p:.3f}, temp = {p.temp:.3f}")


__all__ = ["LLAMA_DEFAULT_SEED", "MT19937", "Candidates", "Sampler", "SamplerParams", "dist", "logit_bias", "min_p",
           "penalties", "temperature", "top_k", "top_p", "uniform_canonical"]
