"""``refllm perplexity`` against the reference build's ``llama-perplexity``, both ways.

The models: a tiny random Phi-3 (2 layers, width 256, the Phi-3 vocabulary) whose ``output_norm`` is scaled by 8.
Unscaled, its logits are nearly uniform (std 0.3, PPL ≈ n_vocab) and nothing is tested; scaled, the logits span more
than 16 like a real model's, so the base file's clamp at 16 and the KL / Δp statistics are exercised.  F32, and
Q8_0 and Q4_K_M made by llama-quantize.  The text: the start of llama.cpp's ``docs/build.md``; 2 chunks of 128
tokens (126 scored tokens: enough for llama.cpp's summary statistics, which need 100).

llama-perplexity runs with ``-nr`` (no weight repacking: the AMX / repacked kernels die with SIGILL in this sandbox,
and refllm's ggml mode follows the plain path), ``-t 2`` and its default batch size (2048).  Two results:

* Given llama.cpp's own logits (through ctypes), refllm's perplexity and KL code prints *exactly* llama-perplexity's
  text — the tokenization, chunking, BOS, scoring, the base-file encoding and every statistic are llama.cpp's.
* With refllm's own ggml-mode logits, the results differ by what the logits differ.  llama.cpp's logits depend on its
  batch size (tiled flash attention from 64 queries on, other matmul paths), and the ggml mode follows the same
  choices, so refllm with its default batch size is compared with llama-perplexity with its default.  Measured here
  (2 chunks): the same PPL and ± to every printed digit, for F32, Q8_0 and Q4_K_M (the logits are llama.cpp's, bit
  for bit, on the AVX512 reference build) — while llama.cpp itself moves by 1.4e-4, 7e-4, 3.9e-3 in ln PPL between
  ``-b 32`` and ``-b 2048``.  The tolerances (PPL_TOL) are those of a build without AVX512, where the float orders
  differ (measured there before the ggml mode followed the SIMD code: a few 1e-5 … 1e-4).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refllm import perplexity as ppl
from refllm.cli.main import main
from refllm.errors import RefllmError

CTX = 128
CHUNKS = 2
SHARPEN = 8.0  # output_norm.weight × 8: logits with a real model's spread
PPL_TOL = {"F32": 2e-4, "Q8_0": 1e-3, "Q4_K_M": 2e-3}  # |ln(PPL_refllm / PPL_llama -b 32)|


# -- fixtures and helpers ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(small_models):
    """{"F32" | "Q8_0" | "Q4_K_M": path} of the sharpened tiny model."""
    return small_models("phi3-medium", ("Q8_0", "Q4_K_M"), seed=5, output_gain=SHARPEN, layers=2, hidden=256,
                        heads=4, kv_heads=2, intermediate=512)


@pytest.fixture(scope="module")
def text(tmp_path_factory, reference):
    path = tmp_path_factory.mktemp("ppl-text") / "build.md.txt"
    path.write_text((reference.source_dir / "docs" / "build.md").read_text(encoding="utf-8")[:1200], encoding="utf-8")
    return path


def llama_perplexity(reference, *args) -> str:
    """stdout + stderr of llama-perplexity (which prints its results on both).

    Its log lines go through an asynchronous logger that is never shut down (``common_log_main`` in
    common/log.cpp leaks it on purpose, llama.cpp issue 22142), so on a busy machine the last lines can be lost at
    exit although the run succeeded; a run whose final line is missing is repeated (at most 3 times).
    """
    final = "Same top p:" if "--kl-divergence" in args else "Final estimate:"
    for _ in range(3):
        r = subprocess.run([str(reference.tool("llama-perplexity")), *map(str, args), "-t", "2", "-nr"],
                           check=False, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        if final in r.stdout + r.stderr:
            break
    return r.stdout + r.stderr


def refllm_perplexity(*args) -> tuple[int, str, str]:
    """``refllm perplexity ARGS -t 2`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(["perplexity", *map(str, args), "-t", "2"])
    return rc, out.getvalue(), err.getvalue()


def final_estimate(output: str) -> tuple[float, float]:
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", output)
    assert m, output[-2000:]
    return float(m.group(1)), float(m.group(2))


def stat(output: str, name: str) -> float:
    """The first number of a summary line such as ``Mean    KLD:   0.076013 ±   0.001025``."""
    m = re.search(rf"^{re.escape(name)}\s*:\s*(-?[0-9.]+)", output, re.MULTILINE)
    assert m, f"{name!r} not in:\n{output[-3000:]}"
    return float(m.group(1))


def summary(output: str) -> str:
    """The statistics blocks: from the ``====== Perplexity statistics`` line to the ``Same top p`` line."""
    start = output.index("====== Perplexity statistics")
    return output[start:output.index("\n", output.index("Same top p", start))]


class LlamaCppLogits:
    """What :func:`refllm.perplexity.chunk_logits` needs of a model, answered by llama.cpp through ctypes: the
    logits of a whole chunk in one ``llama_decode`` — as llama-perplexity's default batch (2048) decodes it."""

    def __init__(self, path):
        self.path = path

    def reset(self):
        pass

    def forward(self, ids, pos0):
        from refllm.reference.llama_logits import llama_logits

        assert pos0 == 0, "one forward call per chunk (n_batch = n_ctx)"
        return llama_logits(self.path, ids, n_ctx=ids.size, n_threads=2)


def text_tokens(model_path, text_path) -> np.ndarray:
    from refllm.tokenizer import Tokenizer

    text = text_path.read_text(encoding="utf-8").removesuffix("\n")
    return np.array(Tokenizer.from_gguf(model_path).encode(text, parse_special=False), np.int32)


@pytest.fixture(scope="module")
def llama_base(models, text, tmp_path_factory, reference):
    """A base file written by llama-perplexity (F32 model), and its output."""
    path = tmp_path_factory.mktemp("ppl-llama") / "base.kld"
    out = llama_perplexity(reference, "-m", models["F32"], "-f", text, "-c", CTX, "--chunks", CHUNKS,
                           "--kl-divergence-base", path)
    return path, out


@pytest.fixture(scope="module")
def refllm_base(models, text, tmp_path_factory):
    """A base file written by refllm (F32 model), and its stdout."""
    path = tmp_path_factory.mktemp("ppl-refllm") / "base.kld"
    rc, out, err = refllm_perplexity("-m", models["F32"], "-f", text, "-c", CTX, "--chunks", CHUNKS,
                                     "--kl-divergence-base", path)
    assert rc == 0, err
    return path, out


# -- the algorithm is llama.cpp's: given llama.cpp's logits, the same text -------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["F32", "Q4_K_M"])
def test_perplexity_given_llama_cpp_logits_prints_llama_perplexitys_text(models, text, reference, name):
    tokens = text_tokens(models[name], text)
    running = ""
    for i, stats in enumerate(ppl.perplexity(LlamaCppLogits(models[name]), tokens, n_ctx=CTX, n_chunk=CHUNKS,
                                             n_batch=CTX, bos_id=1)):
        running += f"[{i + 1}]{stats.ppl:.4f},"
    value, error = stats.final_estimate()
    theirs = llama_perplexity(reference, "-m", models[name], "-f", text, "-c", CTX, "--chunks", CHUNKS)
    assert running in theirs
    assert f"Final estimate: PPL = {value:.4f} +/- {error:.5f}" in theirs


@pytest.mark.slow
def test_kl_statistics_given_llama_cpp_logits_are_llama_perplexitys(models, llama_base, reference):
    base, _ = llama_base
    with ppl.LogitsReader(base) as reader:
        rows = []
        for i, stats in enumerate(ppl.kl_divergence(LlamaCppLogits(models["Q4_K_M"]), reader, n_batch=CTX,
                                                    bos_id=1)):
            rows.append(ppl.kl_chunk_line(i + 1, stats))
    ours = "\n".join(ppl.kl_summary_lines(stats))
    theirs = llama_perplexity(reference, "-m", models["Q4_K_M"], "-c", CTX, "--kl-divergence-base", base,
                              "--kl-divergence")
    for row in rows:
        assert row in theirs
    assert ours == summary(theirs)


# -- refllm's own logits: (a) perplexity -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["F32", "Q8_0", "Q4_K_M"])
def test_perplexity_agrees_with_llama_perplexity(models, text, reference, name):
    rc, out, err = refllm_perplexity("-m", models[name], "-f", text, "-c", CTX, "--chunks", CHUNKS)
    assert rc == 0, err
    running = rf"(\[\d+\]\d+\.\d{{4}},){{{CHUNKS}}}\n"
    assert re.fullmatch(running + r"Final estimate: PPL = \d+\.\d{4} \+/- \d+\.\d{5}\n", out)
    assert f"calculating perplexity over {CHUNKS} chunks, n_ctx={CTX}" in err
    ours, ours_err = final_estimate(out)
    theirs, theirs_err = final_estimate(llama_perplexity(reference, "-m", models[name], "-f", text, "-c", CTX,
                                                         "--chunks", CHUNKS))
    b32, _ = final_estimate(llama_perplexity(reference, "-m", models[name], "-f", text, "-c", CTX,
                                             "-b", 32, "--chunks", CHUNKS))
    d = abs(math.log(ours / theirs))
    print(f"{name}: refllm {ours:.4f} ± {ours_err:.5f}, llama.cpp {theirs:.4f} ± {theirs_err:.5f}: "
          f"|ln ratio| {d:.2g}; llama.cpp -b 32 vs -b 2048 {abs(math.log(b32 / theirs)):.2g}")
    assert d <= PPL_TOL[name]
    assert abs(ours_err / theirs_err - 1) <= PPL_TOL[name]


@pytest.mark.slow
def test_chunk_logits_follow_the_batch_size_as_llama_cpps(models, text):
    """llama.cpp evaluates a chunk n_batch tokens per decode, and its algorithms depend on that (tiled flash
    attention from 64 queries); refllm's ggml mode makes the same choices.  Below 64 the split does not matter for
    Q8_0 weights (their sgemm sums as their vec_dot); a whole chunk of 64 gives llama.cpp's logits."""
    from refllm.model import Phi3Model
    from refllm.reference import ggml_cpu

    tokens = text_tokens(models["Q8_0"], text)[:64]
    model = Phi3Model.from_gguf(models["Q8_0"], n_ctx=CTX, rope_policy="ctx", sliding_window=False, mode="ggml")
    whole = ppl.chunk_logits(model, tokens, n_batch=64, bos_id=1)
    assert whole.shape == (ppl.n_scored(64), model.params.n_vocab)
    assert ppl.chunk_logits(model, tokens, n_batch=32, bos_id=1).tobytes() == \
        ppl.chunk_logits(model, tokens, n_batch=7, bos_id=1).tobytes()
    theirs = ppl.chunk_logits(LlamaCppLogits(models["Q8_0"]), tokens, n_batch=64, bos_id=1)
    if ggml_cpu.is_ggml_mode_build():  # the build the ggml mode follows
        assert whole.tobytes() == theirs.tobytes()
    else:
        assert float(np.abs(whole - theirs).max()) <= 5e-2


# -- (b) llama.cpp writes the base file, refllm reads it -------------------------------------------------------------


@pytest.mark.slow
def test_refllm_reads_llama_cpp_base_file(models, llama_base, reference):
    base, _ = llama_base
    rc, same, err = refllm_perplexity("-m", models["F32"], "-c", CTX, "--kl-divergence-base", base,
                                      "--kl-divergence")
    assert rc == 0, err
    assert ppl.KL_TABLE_HEADER in same and len(re.findall(r"^ {3}\d ", same, re.MULTILINE)) == CHUNKS
    print(f"same model: mean KLD {stat(same, 'Mean    KLD')}, RMS Δp {stat(same, 'RMS Δp')} %, "
          f"same top {stat(same, 'Same top p')} %")
    assert abs(stat(same, "Mean    KLD")) <= 1e-5  # measured: 0.000000
    assert stat(same, "RMS Δp") <= 0.01  # %, measured 0.000
    assert stat(same, "Same top p") >= 100 * (1 - 2 / (CHUNKS * ppl.n_scored(CTX)))  # measured 100 %

    rc, ours, err = refllm_perplexity("-m", models["Q4_K_M"], "-c", CTX, "--kl-divergence-base", base,
                                      "--kl-divergence")
    assert rc == 0, err
    theirs = llama_perplexity(reference, "-m", models["Q4_K_M"], "-c", CTX, "--kl-divergence-base", base,
                              "--kl-divergence")
    line = re.compile(r"^Mean PPL\(base\).*$", re.MULTILINE)
    assert line.search(ours).group(0) == line.search(theirs).group(0)  # from the file alone: the same figures
    for name, tol in (("Mean PPL(Q)", PPL_TOL["Q4_K_M"]), ("Mean    KLD", 0.02)):  # relative
        print(f"Q4_K_M vs F32 base: {name} refllm {stat(ours, name)} llama.cpp {stat(theirs, name)}")
        assert abs(stat(ours, name) / stat(theirs, name) - 1) <= tol
    assert abs(stat(ours, "Mean ln(PPL(Q)/PPL(base))") - stat(theirs, "Mean ln(PPL(Q)/PPL(base))")) <= 2e-3
    # near-ties of the top token may flip: two tokens of the 126
    assert abs(stat(ours, "Same top p") - stat(theirs, "Same top p")) <= 100 * 2 / (CHUNKS * ppl.n_scored(CTX))


# -- (c) refllm writes the base file, llama.cpp reads it -------------------------------------------------------------


@pytest.mark.slow
def test_llama_cpp_reads_refllm_base_file(models, refllm_base, reference):
    base, written = refllm_base
    theirs = llama_perplexity(reference, "-m", models["F32"], "-c", CTX, "--kl-divergence-base", base,
                              "--kl-divergence")
    rc, ours, err = refllm_perplexity("-m", models["F32"], "-c", CTX, "--kl-divergence-base", base,
                                      "--kl-divergence")
    assert rc == 0, err
    line = re.compile(r"^Mean PPL\(base\).*$", re.MULTILINE)
    assert line.search(ours).group(0) == line.search(theirs).group(0)
    # llama.cpp's perplexity of the same model over the same tokens is refllm's (to the logits' agreement)
    ppl_refllm, _ = final_estimate(written)
    print(f"refllm wrote PPL {ppl_refllm}; llama.cpp reading it: PPL(Q) {stat(theirs, 'Mean PPL(Q)')}, "
          f"KLD {stat(theirs, 'Mean    KLD')}, same top {stat(theirs, 'Same top p')} %")
    assert abs(math.log(stat(theirs, "Mean PPL(Q)") / ppl_refllm)) <= PPL_TOL["F32"]
    assert abs(stat(theirs, "Mean    KLD")) <= 1e-5
    assert stat(theirs, "Same top p") >= 100 * (1 - 2 / (CHUNKS * ppl.n_scored(CTX)))


# -- (d) the bytes ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_base_file_bytes(models, llama_base, refllm_base):
    """Header and tokens byte-identical; the log-probabilities equal to the logits' agreement — and byte-identical
    when refllm encodes llama.cpp's own logits."""
    (theirs_path, _), (ours_path, _) = llama_base, refllm_base
    theirs, ours = theirs_path.read_bytes(), ours_path.read_bytes()
    assert len(ours) == len(theirs)
    with ppl.LogitsReader(theirs_path) as a, ppl.LogitsReader(ours_path) as b:
        h = a.header
        assert ours[:h.data_offset] == theirs[:h.data_offset]  # magic, n_ctx, n_vocab, n_chunk, the tokens
        worst = 0.0
        for i in range(h.n_chunk):
            ra, rb = a.read_chunk(), b.read_chunk()
            (head_a, qa), (head_b, qb) = ppl.split_rows(ra, h.n_vocab), ppl.split_rows(rb, h.n_vocab)
            log_p_a = head_a[:, :1] * qa.astype(np.float32) + head_a[:, 1:]
            log_p_b = head_b[:, :1] * qb.astype(np.float32) + head_b[:, 1:]
            worst = max(worst, float(np.abs(log_p_a - log_p_b).max()))
            # refllm's encoder on llama.cpp's logits: the same bytes
            chunk = h.tokens[i * CTX:(i + 1) * CTX].copy()
            chunk[0] = 1
            logits = LlamaCppLogits(models["F32"]).forward(chunk, 0)[ppl.first_scored(CTX):CTX - 1]
            rows = np.zeros_like(ra)
            head, q = ppl.split_rows(rows, h.n_vocab)
            ppl.compress_log_probs(logits, chunk[ppl.first_scored(CTX) + 1:].astype(np.int64), head, q,
                                   np.empty(len(rows)))
            assert rows.tobytes() == ra.tobytes()
    print(f"refllm's vs llama.cpp's stored log-probabilities: max |difference| {worst:.3g}")
    assert worst <= 1e-2  # measured 0 (4e-3 on a build whose float orders differ): the logits', not the encoding


# -- (e) bad input ---------------------------------------------------------------------------------------------------


def _small_base_file(path, n_ctx=6, n_vocab=5, n_chunk=2, seed=0) -> bytes:
    """A valid base file with a tiny vocabulary, written by :class:`LogitsWriter` from random logits."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, n_vocab, n_ctx * n_chunk).astype(np.int32)
    header = ppl.LogitsHeader(n_ctx, n_vocab, n_chunk, tokens)
    with ppl.LogitsWriter(path, header) as w:
        for i in range(n_chunk):
            logits = (rng.standard_normal((ppl.n_scored(n_ctx), n_vocab)) * 5).astype(np.float32)
            rows = np.zeros((ppl.n_scored(n_ctx), ppl.row_width(n_vocab)), np.uint16)
            head, q = ppl.split_rows(rows, n_vocab)
            targets = tokens[i * n_ctx + ppl.first_scored(n_ctx) + 1:(i + 1) * n_ctx].astype(np.int64)
            ppl.compress_log_probs(logits, targets, head, q, np.empty(len(rows)))
            w.write_chunk(rows)
    return path.read_bytes()


def _read_all(path):
    with ppl.LogitsReader(path) as r:
        return r.header, [r.read_chunk() for _ in range(r.header.n_chunk)]


def test_base_file_layout(tmp_path):
    data = _small_base_file(tmp_path / "b.kld", n_ctx=6, n_vocab=5, n_chunk=2)
    # 20-byte header, 12 tokens, 2 chunks × 2 scored tokens × (4 + 5 + 1 padding) words
    assert len(data) == 20 + 4 * 12 + 2 * 2 * 10 * 2
    assert data[:8] == b"_logits_" and np.frombuffer(data[8:20], "<i4").tolist() == [6, 5, 2]
    header, chunks = _read_all(tmp_path / "b.kld")
    assert header.file_size == len(data)
    for rows in chunks:
        head, q = ppl.split_rows(rows, 5)
        assert (rows[:, -1] == 0).all()  # the padding word of an odd vocabulary
        assert (head[:, 0] > 0).all() and q.max() == 65535  # the top logit maps to the top of the range
    assert list(tmp_path.iterdir()) == [tmp_path / "b.kld"]  # no temporary file left


def test_writer_leaves_nothing_on_failure(tmp_path):
    header = ppl.LogitsHeader(6, 5, 2, np.zeros(12, np.int32))
    with pytest.raises(RuntimeError), ppl.LogitsWriter(tmp_path / "b.kld", header):
        raise RuntimeError("interrupted")
    with pytest.raises(RefllmError, match="1 of 2 chunks"), ppl.LogitsWriter(tmp_path / "b.kld", header) as w:
        w.write_chunk(np.zeros((2, 10), np.uint16))
    assert list(tmp_path.iterdir()) == []


@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_rejected_cleanly(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("kld") / "x.kld"
    path.write_bytes(data)
    with pytest.raises(RefllmError, match=re.escape(str(path))):
        _read_all(path)


@given(st.data())
def test_truncated_or_extended_files_are_rejected(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("kld")
    full = _small_base_file(root / "good.kld", n_ctx=data.draw(st.integers(3, 9)), n_vocab=data.draw(st.integers(1, 7)),
                            n_chunk=data.draw(st.integers(1, 3)))
    cut = data.draw(st.integers(0, len(full) - 1) | st.integers(len(full) + 1, len(full) + 40))
    bad = root / "bad.kld"
    bad.write_bytes(full[:cut] if cut < len(full) else full + bytes(cut - len(full)))
    with pytest.raises(RefllmError, match=r"bad\.kld: (magic|n_ctx|n_vocab|n_chunk|tokens|log_probs): "):
        _read_all(bad)


@given(st.data())
def test_bad_header_fields_never_allocate(tmp_path_factory, data):
    """Any values in n_ctx / n_vocab / n_chunk (e.g. 2**31-1 chunks): an error before anything is allocated."""
    root = tmp_path_factory.mktemp("kld")
    full = bytearray(_small_base_file(root / "good.kld"))
    offset, fmt = data.draw(st.sampled_from([(8, "<u4"), (12, "<i4"), (16, "<i4")]))  # n_ctx, n_vocab, n_chunk
    info = np.iinfo(fmt)
    value = data.draw(st.integers(int(info.min), int(info.max)))
    full[offset:offset + 4] = np.array([value], fmt).tobytes()
    path = root / "bad.kld"
    path.write_bytes(bytes(full))
    n_ctx = int(np.frombuffer(full, "<u4", 1, 8)[0])
    n_vocab, n_chunk = (int(v) for v in np.frombuffer(full, "<i4", 2, 12))
    consistent = (ppl.n_scored(n_ctx) >= 1 and n_vocab >= 1 and n_chunk >= 1
                  and ppl.LogitsHeader(n_ctx, n_vocab, n_chunk, None).file_size == len(full))
    if consistent:  # e.g. n_vocab 5 -> 6 keeps the row width: a valid file (if its tokens fit)
        _read_all(path)
    else:
        with pytest.raises(RefllmError, match=r"bad\.kld: (n_ctx|n_vocab|n_chunk|tokens|log_probs): "):
            _read_all(path)


def test_token_out_of_range_is_named(tmp_path):
    data = bytearray(_small_base_file(tmp_path / "b.kld"))
    data[20 + 4 * 3:20 + 4 * 4] = np.array([7], "<i4").tobytes()
    (tmp_path / "b.kld").write_bytes(bytes(data))
    with pytest.raises(RefllmError, match=r"tokens\[3\]: 7 is not a token id \(0 … 4\)"):
        _read_all(tmp_path / "b.kld")


def test_cli_errors(models, text, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Hello world, a short text.\n")
    rc, _, err = refllm_perplexity("-m", models["Q8_0"], "-f", short, "-c", CTX, "--kl-divergence-base",
                                   tmp_path / "never.kld")
    assert rc == 1
    assert re.search(r"short\.txt: you need at least 256 tokens to evaluate perplexity with a context of 128; the "
                     r"data file you provided tokenizes to only \d+ tokens", err)
    assert not (tmp_path / "never.kld").exists()

    small = tmp_path / "small.kld"
    _small_base_file(small)
    rc, _, err = refllm_perplexity("-m", models["Q8_0"], "--kl-divergence-base", small, "--kl-divergence")
    assert rc == 1 and "small.kld: n_vocab: inconsistent vocabulary (5 in the file vs 32064" in err

    big_ctx = tmp_path / "ctx.kld"
    _small_base_file(big_ctx, n_ctx=600, n_chunk=1)
    rc, _, err = refllm_perplexity("-m", models["Q8_0"], "--kl-divergence-base", big_ctx, "--kl-divergence")
    assert rc == 1 and "ctx.kld: n_ctx: the file has been computed with 600, while the current context is 512" in err

    rc, _, err = refllm_perplexity("-m", models["Q8_0"], "--kl-divergence")
    assert rc == 1 and "--kl-divergence-base" in err
    rc, _, err = refllm_perplexity("-m", models["Q8_0"], "-f", text, "-c", 2)
    assert rc == 1 and "at least 3 tokens" in err


_NO_JIT_SCRIPT = r"""
import json, numpy as np
from refllm import perplexity as ppl
rng = np.random.default_rng(3)
logits = (rng.standard_normal((3, 301)) * 6).astype(np.float32)
targets = np.array([0, 150, 300])
nll = np.empty(3)
ppl.token_nll(logits, targets, nll)
rows = np.zeros((3, ppl.row_width(301)), np.uint16)
head, q = ppl.split_rows(rows, 301)
nll2 = np.empty(3)
ppl.compress_log_probs(logits, targets, head, q, nll2)
other = logits + (rng.standard_normal(logits.shape) * 0.3).astype(np.float32)
out = [np.empty(3, np.float32), np.empty(3, np.float32), np.empty(3), np.empty(3, np.float32), np.empty(3, bool)]
ppl.kl_divergence_tokens(other, targets, head, q, *out)
print(json.dumps({"nll": nll.tolist(), "nll2": nll2.tolist(), "rows": rows.tobytes().hex(),
                  "kl": [a.astype(float).tolist() for a in out]}))
"""


def test_kernels_run_as_plain_python():
    """With NUMBA_DISABLE_JIT=1 the kernels give the same results: the stored bytes exactly; the exponentials then
    come from Python's double ``exp`` rounded to float32 instead of libm's ``expf`` (1 ulp apart on ~0.1% of
    inputs), so the sums agree to 1e-6."""
    runs = [subprocess.run([sys.executable, "-c", _NO_JIT_SCRIPT], capture_output=True, text=True, check=True,
                           env=dict(os.environ, NUMBA_DISABLE_JIT=flag)).stdout for flag in ("0", "1")]
    jit, plain = (json.loads(r) for r in runs)
    assert plain["rows"] == jit["rows"]
    for key in ("nll", "nll2"):
        np.testing.assert_allclose(plain[key], jit[key], rtol=1e-6)
    for a, b in zip(plain["kl"], jit["kl"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)

