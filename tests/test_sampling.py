"""refllm.sampling against llama.cpp's sampler chain (libllama's ``llama_sampler_*`` through ctypes, on the same
logits) and against the definitions of its stages.

* The random numbers: :class:`MT19937` is ``std::mt19937`` (the C++ standard fixes its 10000th output) and numpy's
  legacy ``RandomState``; the draw is libstdc++'s ``uniform_real_distribution<double>``.
* The whole chain: for random settings and logits, the surviving candidates (ids, float32 logits, order) and the
  drawn tokens over many steps are exactly llama.cpp's.
* Each stage (hypothesis): top-k keeps the k largest, top-p the shortest prefix reaching p, min-p the tokens within
  log(p) of the best, temperature divides (or keeps only the best), penalties follow their formula.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from refllm.errors import RefllmError
from refllm.sampling import (
    MT19937,
    Candidates,
    Sampler,
    SamplerParams,
    dist,
    min_p,
    penalties,
    temperature,
    top_k,
    top_p,
    uniform_canonical,
)

N_VOCAB = 32064

logit_arrays = st.integers(2, 200).flatmap(
    lambda n: arrays(np.float32, n, elements=st.floats(-30, 30, width=32), unique=True))
stage_examples = settings(max_examples=40)


# -- the random numbers -----------------------------------------------------------------------------------------------


def test_mt19937_is_the_standard_generator():
    """[rand.predef]: the 10000th consecutive invocation of a default-constructed mt19937 (seed 5489) produces
    4123659995."""
    rng = MT19937(5489)
    for _ in range(9999):
        rng.next_u32()
    assert rng.next_u32() == 4123659995


@given(st.integers(0, 2**32 - 1))
def test_mt19937_matches_numpy_legacy_seeding(seed):
    ours = MT19937(seed)
    assert [ours.next_u32() for _ in range(700)] == np.random.RandomState(seed).randint(
        0, 2**32, size=700, dtype=np.uint32).tolist()


@given(st.integers(0, 2**32 - 1))
def test_uniform_canonical_is_in_unit_interval(seed):
    rng = MT19937(seed)
    for _ in range(50):
        assert 0.0 <= uniform_canonical(rng) < 1.0


# -- the stages -------------------------------------------------------------------------------------------------------


@stage_examples
@given(logit_arrays, st.integers(1, 500))
def test_top_k_keeps_the_k_largest_sorted(logits, k):
    c = top_k(Candidates.from_logits(logits), k)
    assert len(c) == min(k, logits.size) and c.sorted
    assert np.all(np.diff(c.logits) <= 0)
    assert np.array_equal(np.sort(c.logits)[::-1], np.sort(logits)[::-1][:len(c)])
    assert np.array_equal(logits[c.ids], c.logits)


@stage_examples
@given(arrays(np.float32, st.integers(1, 300), elements=st.integers(-3, 3).map(float)), st.integers(1, 300))
def test_top_k_breaks_ties_as_a_stable_full_sort(logits, k):
    """top-k selects without sorting the whole vocabulary; with many equal logits it must still keep exactly what a
    stable sort of every candidate would put first."""
    c = top_k(Candidates.from_logits(logits), k)
    assert np.array_equal(c.ids, np.argsort(-logits, kind="stable")[:k])


@stage_examples
@given(logit_arrays, st.floats(0.01, 0.99))
def test_top_p_keeps_the_shortest_prefix_reaching_p(logits, p):
    c = top_p(Candidates.from_logits(logits), p)
    probs = np.exp(logits.astype(np.float64) - logits.max())
    probs /= probs.sum()
    kept = np.sort(probs)[::-1][:len(c)]
    assert c.sorted and np.array_equal(c.ids, np.argsort(-logits, kind="stable")[:len(c)])
    assert kept.sum() >= p - 1e-5  # enough mass (float32 sums in llama.cpp)
    assert kept[:-1].sum() < p + 1e-5  # and one fewer would not be


@stage_examples
@given(logit_arrays, st.floats(0.001, 1.0))
def test_min_p_keeps_tokens_within_log_p_of_the_best(logits, p):
    c = min_p(Candidates.from_logits(logits), p)
    threshold = logits.max() + math.log(p)
    assert np.array_equal(c.ids, np.flatnonzero(logits >= np.float32(threshold)))  # order kept
    assert logits.argmax() in c.ids


@stage_examples
@given(logit_arrays, st.floats(0.05, 5.0))
def test_temperature_divides(logits, temp):
    c = temperature(Candidates.from_logits(logits), temp)
    assert np.array_equal(c.logits, logits / np.float32(temp))


@stage_examples
@given(logit_arrays, st.floats(-3.0, 0.0))
def test_temperature_zero_or_below_is_greedy(logits, temp):
    c = temperature(Candidates.from_logits(logits), temp)
    assert np.isfinite(c.logits).sum() == 1 and np.argmax(c.logits) == np.argmax(logits)
    rng = MT19937(1)
    assert c.ids[dist(c, rng)] == np.argmax(logits)


@stage_examples
@given(logit_arrays, st.lists(st.integers(0, 399), max_size=80), st.floats(0.5, 2.0), st.floats(-1, 1),
       st.floats(-1, 1))
def test_penalties_formula(logits, history, repeat, frequency, presence):
    c = penalties(Candidates.from_logits(logits), history, repeat, frequency, presence)
    for t in range(logits.size):
        n = history.count(t)
        if n == 0:
            assert c.logits[t] == logits[t]
            continue
        x = float(logits[t])
        x = x * repeat if x <= 0 else x / repeat
        assert c.logits[t] == pytest.approx(x - (n * frequency + presence), rel=1e-5, abs=1e-5)


@stage_examples
@given(logit_arrays, st.integers(0, 2**32 - 1))
def test_dist_draws_a_candidate_with_positive_probability(logits, seed):
    c = Candidates.from_logits(logits)
    i = dist(c, MT19937(seed))
    assert 0 <= i < len(c) and np.exp(np.float64(logits[i]) - logits.max()) > 0


def test_same_seed_same_tokens_and_random_seed_reported():
    logits = np.random.default_rng(0).standard_normal(N_VOCAB).astype(np.float32) * 3
    def run(seed):
        sampler = Sampler(SamplerParams(seed=seed))
        return [sampler.sample(logits) for _ in range(20)]

    assert run(7) == run(7)
    assert run(7) != run(8)
    assert Sampler(SamplerParams(seed=-1)).seed != 0xFFFFFFFF  # -1 / 0xFFFFFFFF: a random seed, reported


def test_params_are_validated_and_read_from_the_file():
    with pytest.raises(RefllmError, match="repeat_penalty"):
        Sampler(SamplerParams(repeat_penalty=0.0))
    with pytest.raises(RefllmError, match="repeat_last_n"):
        Sampler(SamplerParams(repeat_last_n=-1))
    p = SamplerParams.from_gguf({"general.sampling.top_k": 20, "general.sampling.temp": 0.6}, temp=0.3, top_p=None)
    assert (p.top_k, p.temp, p.top_p) == (20, 0.3, 0.95)


def test_describe_marks_the_stages_that_are_off():
    assert Sampler(SamplerParams()).describe() == ("logits -> ?penalties -> ?dry -> ?top-n-sigma -> top-k -> "
                                                   "?typical -> top-p -> min-p -> ?xtc -> temp-ext -> dist")
    assert Sampler(SamplerParams(repeat_penalty=1.1, top_k=0, temp=1.0, logit_bias={2: -math.inf})).describe() == (
        "logits -> logit-bias -> penalties -> ?dry -> ?top-n-sigma -> ?top-k -> ?typical -> top-p -> min-p -> ?xtc "
        "-> ?temp-ext -> dist")


# -- against llama.cpp --------------------------------------------------------------------------------------------------

SETTINGS = [
    {},  # llama.cpp's defaults
    {"temp": 0.0},
    {"temp": 1.5, "top_k": 0, "top_p": 0.9, "min_p": 0.0},
    {"top_k": 200, "top_p": 1.0, "min_p": 0.1, "temp": 0.7},
    {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "temp": 1.0},  # the plain softmax draw over the whole vocabulary
    {"repeat_penalty": 1.3, "repeat_last_n": 16, "frequency_penalty": 0.2, "presence_penalty": 0.5, "top_k": 5},
    {"top_k": 1},
]


def distinct_logits(rng, scale: float) -> np.ndarray:
    """Normal logits without two equal values (the order of equal logits is the one thing llama.cpp leaves to
    ``std::partial_sort``), the first 40 tokens raised so that the penalized tokens are among the candidates."""
    logits = rng.standard_normal(N_VOCAB).astype(np.float32) * np.float32(scale)
    logits[:40] += np.float32(3)
    while True:  # move each repeated value up by one float32 step until there are none
        values, first = np.unique(logits, return_index=True)
        if values.size == N_VOCAB:
            return logits
        repeated = np.setdiff1d(np.arange(N_VOCAB), first)
        logits[repeated] = np.nextafter(logits[repeated], np.float32(np.inf))


@pytest.fixture(scope="module")
def llama_sampler(reference):
    from refllm.reference.llama_sampling import LlamaSampler

    return LlamaSampler


@pytest.mark.parametrize("index", range(len(SETTINGS)),
                         ids=[",".join(f"{k}={v}" for k, v in s.items()) or "default" for s in SETTINGS])
def test_chain_matches_llama_cpp(llama_sampler, index):
    """Same candidates (ids, logits, order) after the chain and the same drawn tokens, step after step, with the
    history of accepted tokens feeding the penalties."""
    settings = SETTINGS[index]
    rng = np.random.default_rng(index)
    for seed in (42, 3405691582):
        bias = {7: -math.inf, 32000: 2.5}
        params = SamplerParams(seed=seed, logit_bias=bias, **settings)
        ours, theirs, probe = Sampler(params), llama_sampler(params, N_VOCAB), llama_sampler(params, N_VOCAB)
        prompt = rng.integers(0, 40, 30)  # a small alphabet, so that the penalties meet repeated tokens
        for t in prompt:
            ours.accept(t)
            theirs.accept(t)
            probe.accept(t)
        for _ in range(25):
            logits = distinct_logits(rng, rng.choice([0.5, 2, 6]))
            ids, chosen, _ = probe.candidates(logits)
            c = ours.apply(logits)
            assert np.array_equal(c.ids, ids) and np.array_equal(c.logits, chosen)
            token = ours.sample(logits)
            assert token == theirs.sample(logits)
            probe.accept(token)


@stage_examples
@given(logit_arrays, st.integers(0, 2**32 - 2), st.integers(0, 60), st.floats(0.3, 1.0), st.floats(0.0, 0.3),
       st.floats(0.0, 2.0))
def test_chain_matches_llama_cpp_on_any_logits(llama_sampler, logits, seed, k, p, mp, temp):
    params = SamplerParams(seed=seed, top_k=k, top_p=p, min_p=mp, temp=temp)
    ours, theirs = Sampler(params), llama_sampler(params, logits.size)
    assert [ours.sample(logits) for _ in range(3)] == [theirs.sample(logits) for _ in range(3)]
