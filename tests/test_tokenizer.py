"""refllm.tokenizer against llama.cpp's tokenizer (the reference build).

* the 46 test vectors llama.cpp ships for Phi-3 (``models/ggml-vocab-phi-3.gguf.inp/.out``);
* ``llama-tokenize`` run as a program: the seed chat prompt with the ``general.name`` rule both ways, a batch of
  multilingual / whitespace-heavy / special-token strings, and the pieces it prints;
* ``libllama`` through ctypes (:mod:`refllm.reference.llama_vocab`, the same ``llama_tokenize`` the program calls)
  on hypothesis-generated text, for every flag combination, on five vocabulary files: the original (named
  ``Phi3``), renamed copies (``Phi 3.5 Mini Instruct``, ``microsoft/PHI-3-medium``, no name) and a Phi-3.5 model
  converted by refllm;
* the load-time rules: every token's attributes, the EOG set, BOS/EOS/EOT, ``add_bos``;
* detokenization: every token's piece, ``llama_detokenize`` on random id sequences (byte tokens splitting UTF-8
  characters included), streaming, round trips;
* ``whitespace="hf"`` against transformers' GGUF tokenizer with the hub's ``rstrip`` flags.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phi3_vocab_files import SEED_PROMPT, texts, vocab_files

from refllm.reference.llama_vocab import LlamaVocab
from refllm.tokenizer import ENGINES, Attr, Tokenizer, phi3_name_rule_applies


# spec §4.6: the seed prompt's ids
SEED_IDS_RULE = [1, 32010, 1815, 366, 14944, 869, 6006, 32007, 32001]  # (a) name matches phi3
SEED_IDS_NO_RULE = [1, 32010, 29871, 13, 6028, 366, 14944, 869, 6006, 32007, 29871, 13, 32001, 29871, 13]  # (b)
SEED_IDS_HF = [32010, 1815, 366, 14944, 869, 6006, 32007, 32001]  # (c) hub tokenizer, no special tokens added


@pytest.fixture(scope="module")
def files(reference, tmp_path_factory):
    return vocab_files(reference, tmp_path_factory.getbasetemp() / "phi3-vocab")


@pytest.fixture(scope="module")
def llama(files):
    """name → libllama's vocabulary of that file."""
    return {name: LlamaVocab(path) for name, path in files.items()}


@pytest.fixture(scope="module")
def ours(files):
    """(name, engine) → refllm's tokenizer of that file."""
    return {(name, engine): Tokenizer.from_gguf(path, engine=engine) for name, path in files.items()
            for engine in ENGINES}


def llama_tokenize_cli(reference, model, text: str, tmp_path, *, bos=True, parse_special=True, ids=True) -> bytes:
    """Run the ``llama-tokenize`` program on ``text`` (read verbatim from a file); its raw stdout."""
    prompt = tmp_path / "prompt.txt"
    prompt.write_bytes(text.encode("utf-8"))
    cmd = [str(reference.tool("llama-tokenize")), "-m", str(model), "-f", str(prompt), "--no-escape", "--log-disable"]
    cmd += ["--ids"] if ids else []
    cmd += [] if bos else ["--no-bos"]
    cmd += [] if parse_special else ["--no-parse-special"]
    result = subprocess.run(cmd, capture_output=True, check=True)
    return result.stdout


def parse_ids(stdout: bytes) -> list[int]:
    text = stdout.decode().strip()
    assert text.startswith("[") and text.endswith("]"), text
    return [int(x) for x in text[1:-1].split(",") if x.strip()]


# --- the test vectors ---------------------------------------------------------------------------------------------


def test_phi3_test_vectors(reference, ours, llama):
    """All 46 vectors of ggml-vocab-phi-3.gguf.inp/.out (no BOS, no special-token parsing, as llama.cpp's
    test-tokenizer-0 runs them), with both engines, and libllama agrees."""
    base = reference.models_dir() / "ggml-vocab-phi-3.gguf"
    cases = base.with_name(base.name + ".inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    assert cases[-1] == ""
    cases = cases[:-1]
    expected = base.with_name(base.name + ".out").read_text(encoding="utf-8").split("\n")
    assert expected[-1] == ""
    expected = [[int(x) for x in line.split()] for line in expected[:-1]]
    assert len(cases) == len(expected) == 46
    for text, ids in zip(cases, expected):
        assert llama["Phi3"].tokenize(text, add_special=False, parse_special=False) == ids, repr(text)
        for engine in ENGINES:
            assert ours["Phi3", engine].encode(text, add_bos=False, parse_special=False) == ids, (engine, repr(text))


# --- llama-tokenize, the program ----------------------------------------------------------------------------------


def test_seed_prompt_name_rule_both_ways(reference, files, ours, tmp_path):
    """spec §4.6 (a)/(b): the seed prompt keeps or loses the '\\n' after the special tokens depending on the
    file's general.name only; llama-tokenize and refllm agree on every file."""
    expected = {"Phi3": SEED_IDS_RULE, "microsoft/PHI-3-medium": SEED_IDS_RULE,
                "Phi 3.5 Mini Instruct": SEED_IDS_NO_RULE, "no name": SEED_IDS_NO_RULE,
                "converted 3.5": SEED_IDS_NO_RULE[1:]}  # the converted 3.5 file does not add BOS
    for name, ids in expected.items():
        cli = parse_ids(llama_tokenize_cli(reference, files[name], SEED_PROMPT, tmp_path))
        assert cli == ids, name
        for engine in ENGINES:
            assert ours[name, engine].encode(SEED_PROMPT) == ids, (name, engine)


def test_seed_prompt_hf_whitespace(files):
    """spec §4.6 (c): whitespace="hf" strips the '\\n' whatever the name (the Hugging Face hub tokenizer)."""
    for path in files.values():
        assert Tokenizer.from_gguf(path, whitespace="hf").encode(SEED_PROMPT, add_bos=False) == SEED_IDS_HF


CLI_TEXTS = [
    "Hello world",
    "   leading and trailing spaces   ",
    " " * 37 + "x" + "\n" * 5 + "\t\t y",
    "Привет, мир! 你好，世界。日本語 한국어 مرحبا",
    "emoji 🦙🤖👍🏽 and 🇫🇷 flags",
    "<|system|>\nYou are terse.<|end|>\n<|user|>\n  Hi \t<|end|>\n<|assistant|>\n",
    "text</s> after eos<s>and bos<unk>unk [PAD32011] pad <|endoftext|>   done",
    "<|user|>\u3000ideographic space<|end|>\u00a0nbsp",
]


@pytest.mark.parametrize("name", ["Phi3", "Phi 3.5 Mini Instruct"])
def test_llama_tokenize_program(reference, files, ours, tmp_path, name):
    """llama-tokenize on a batch of strings, with and without BOS and special-token parsing."""
    tok = ours[name, "tokenizers"]
    for text in CLI_TEXTS:
        for bos, parse_special in ((True, True), (False, False)):
            cli = parse_ids(llama_tokenize_cli(reference, files[name], text, tmp_path, bos=bos,
                                               parse_special=parse_special))
            assert tok.encode(text, add_bos=None if bos else False, parse_special=parse_special) == cli, repr(text)


def test_llama_tokenize_pieces(reference, files, ours, tmp_path):
    """The pieces llama-tokenize prints (``llama_token_to_piece(special=true)``, raw bytes: a character split over
    byte tokens is printed one byte per line) are refllm's ``token_to_piece(special=True)``."""
    tok = ours["Phi3", "tokenizers"]
    for text in ("emoji 🦙 split over byte tokens ខ្មែរ", SEED_PROMPT, "<s> a </s>\n\tb [PAD32011]"):
        ids = tok.encode(text)
        expected = b"".join(b"%6d -> '" % i + tok.token_to_piece(i, special=True) + b"'\n" for i in ids)
        assert llama_tokenize_cli(reference, files["Phi3"], text, tmp_path, ids=False) == expected


# --- libllama on generated text -----------------------------------------------------------------------------------


@settings(max_examples=300)
@given(text=texts)
def test_encode_matches_llama(ours, llama, text):
    for name, ref in llama.items():
        for add_special in (True, False):
            for parse_special in (True, False):
                expected = ref.tokenize(text, add_special=add_special, parse_special=parse_special)
                for engine in ENGINES:
                    got = ours[name, engine].encode(text, add_bos=None if add_special else False,
                                                    add_eos=None if add_special else False,
                                                    parse_special=parse_special)
                    assert got == expected, (name, engine, add_special, parse_special)


@settings(max_examples=200)
@given(words=st.lists(st.integers(259, 31999), min_size=1, max_size=16), glue=st.sampled_from(["", " ", "  "]))
def test_encode_vocabulary_words(ours, llama, words, glue):
    """Concatenated vocabulary pieces: the text where the order of merges matters most."""
    tok = ours["converted 3.5", "tokenizers"]
    text = glue.join(tok.token_text(i).replace("\u2581", " ") for i in words)
    expected = llama["converted 3.5"].tokenize(text, add_special=False, parse_special=False)
    for engine in ENGINES:
        assert ours["converted 3.5", engine].encode(text, add_bos=False, parse_special=False) == expected


def test_whitespace_runs(ours, llama):
    """Runs of 1..70 spaces alone, before a word, after a newline and after a special token: the whitespace tokens
    tie at score -1e9, and llama.cpp groups a run from the left in chunks of 16."""
    for n in range(1, 71):
        for text in (" " * n, " " * n + "Hello", "a\n" + " " * n + "b", "<|user|>" + " " * n + "x"):
            for name in ("Phi3", "converted 3.5"):
                expected = llama[name].tokenize(text, add_special=False, parse_special=True)
                for engine in ENGINES:
                    assert ours[name, engine].encode(text, add_bos=False) == expected, (n, repr(text))
    # 19 spaces + the prefix space = 20 "▁": [▁ × 16, ▁ × 4]
    assert ours["Phi3", "python"].encode(" " * 19, add_bos=False) == [462, 268]


# --- the load-time rules ------------------------------------------------------------------------------------------


def test_vocabulary_rules_match_llama(ours, llama):
    """Every token's attributes (type, CONTROL forced on EOG tokens, RSTRIP by the Phi-3 name rule), the EOG set,
    the special ids and the BOS/EOS flags are libllama's, on every file."""
    for name, ref in llama.items():
        vocab = ours[name, "tokenizers"].vocab
        assert len(vocab) == ref.n_tokens == 32064
        assert vocab.attrs == [ref.attr(i) for i in range(ref.n_tokens)], name
        assert set(vocab.eog_ids) == ref.eog_ids() == {2, 32000, 32007}, name
        assert (vocab.bos_id, vocab.eos_id, vocab.eot_id) == (ref.bos, ref.eos, ref.eot) == (1, 32000, 32007)
        assert (vocab.add_bos, vocab.add_eos) == (ref.add_bos, ref.add_eos)
    assert ours["Phi3", "tokenizers"].vocab.phi3_rstrip
    assert ours["microsoft/PHI-3-medium", "tokenizers"].vocab.phi3_rstrip
    assert not ours["Phi 3.5 Mini Instruct", "tokenizers"].vocab.phi3_rstrip
    assert not ours["converted 3.5", "tokenizers"].vocab.phi3_rstrip
    # </s> is USER_DEFINED in the file, made CONTROL because it is an EOG token
    assert ours["converted 3.5", "tokenizers"].vocab.attrs[2] == Attr.USER_DEFINED | Attr.CONTROL


def test_name_rule():
    assert phi3_name_rule_applies("Phi3")
    assert phi3_name_rule_applies("Phi-3-mini-4k-instruct")
    assert phi3_name_rule_applies("MICROSOFT PHI-3 MEDIUM")
    assert phi3_name_rule_applies("my-phi3.5")
    assert not phi3_name_rule_applies("Phi 3.5 Mini Instruct")
    assert not phi3_name_rule_applies("Phi 3 Mini 4k Instruct")
    assert not phi3_name_rule_applies("Phi_3")
    assert not phi3_name_rule_applies("")


def test_eog(ours):
    tok = ours["converted 3.5", "tokenizers"]
    assert tok.eog_ids == {2, 32000, 32007}
    assert tok.is_eog(32007) and tok.is_eog(32000) and tok.is_eog(2) and not tok.is_eog(32001)


# --- decoding -----------------------------------------------------------------------------------------------------


def test_every_piece_matches_llama(ours, llama):
    for name, ref in llama.items():
        tok = ours[name, "tokenizers"]
        for i in range(ref.n_tokens):
            for special in (False, True):
                for lstrip in (0, 1):
                    assert tok.token_to_piece(i, special, lstrip) == ref.token_to_piece(i, lstrip, special), (name, i)


token_ids = st.lists(st.one_of(st.integers(0, 32063), st.integers(3, 258), st.sampled_from([1, 2, 29871, 259])),
                     max_size=24)


@settings(max_examples=300)
@given(ids=token_ids)
def test_detokenize_matches_llama(ours, llama, ids):
    """``llama_detokenize`` on arbitrary ids (byte tokens make split and invalid UTF-8), every flag combination;
    streaming gives the same text as the whole decode."""
    for name in ("Phi3", "converted 3.5"):
        tok, ref = ours[name, "tokenizers"], llama[name]
        for special in (False, True):
            for remove_special in (False, True):
                expected = ref.detokenize(ids, remove_special=remove_special, unparse_special=special)
                assert tok.decode_bytes(ids, special=special, remove_special=remove_special) == expected
            whole = tok.decode(ids, special=special)
            stream = tok.stream(special=special)
            assert "".join(stream.push(i) for i in ids) + stream.flush() == whole


@settings(max_examples=200)
@given(text=texts)
def test_round_trip(ours, llama, text):
    """decode(encode(text)) gives the text back (spaces written as '▁' come back as spaces), and equals
    llama_detokenize(llama_tokenize(text))."""
    for name in ("Phi3", "converted 3.5"):
        tok, ref = ours[name, "tokenizers"], llama[name]
        ids = tok.encode(text, add_bos=False, parse_special=False)
        assert tok.decode(ids) == text.replace("\u2581", " ")
        ids = tok.encode(text)
        for special in (False, True):
            assert tok.decode_bytes(ids, special=special) == ref.detokenize(ids, unparse_special=special)
            stream = tok.stream(special=special)
            pieces = [stream.push(i) for i in ids] + [stream.flush()]
            assert "".join(pieces) == tok.decode(ids, special=special)


def test_stream_split_utf8(ours):
    """🦙 is not in the vocabulary: four byte tokens; the stream returns nothing until the fourth."""
    tok = ours["Phi3", "tokenizers"]
    ids = tok.encode("a🦙b", add_bos=False)
    assert ids[1:5] == [243, 162, 169, 156]  # <0xF0> <0x9F> <0xA6> <0x99>
    stream = tok.stream()
    out = [stream.push(i) for i in ids]
    assert out == ["a", "", "", "", "🦙", "b"]
    assert stream.pending == b"" and stream.flush() == ""
    stream = tok.stream()
    assert [stream.push(i) for i in (243, 162)] == ["", ""]
    assert stream.pending == b"\xf0\x9f"
    assert stream.flush() == "\ufffd"  # an unfinished character at the end of the stream


def test_stream_generated_text(ours, llama):
    """After a prompt (strip_leading_space=False) each token is its llama_token_to_piece(lstrip=0) — what
    llama-completion prints — and control tokens show only with special=True."""
    tok, ref = ours["converted 3.5", "tokenizers"], llama["converted 3.5"]
    ids = tok.encode(" Sure! Here is 🦙 and ✓.<|end|>", add_bos=False)
    for special in (False, True):
        stream = tok.stream(special=special, strip_leading_space=False)
        text = "".join(stream.push(i) for i in ids) + stream.flush()
        assert text.encode() == b"".join(ref.token_to_piece(i, 0, special) for i in ids)
    assert text.endswith("<|end|>") and text.startswith("  Sure!")


def test_hf_whitespace_matches_transformers(files):
    """whitespace="hf" = transformers' tokenizer built from the GGUF, with the hub's rstrip flags on </s> and
    <|assistant|> … <|user|> (Unicode whitespace is stripped too, unlike llama.cpp)."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    path = files["converted 3.5"]
    hf = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    hub = [AddedToken(hf.convert_ids_to_tokens(i), rstrip=True, normalized=False, special=True)
           for i in [2, *range(32001, 32011)]]
    hf.add_special_tokens({"additional_special_tokens": hub})
    ours = Tokenizer.from_gguf(path, whitespace="hf")

    @settings(max_examples=80)
    @given(text=texts)
    def check(text):
        assert ours.encode(text, add_bos=False) == hf.encode(text, add_special_tokens=False)

    check()
    for text in (SEED_PROMPT, "<|user|>\u3000\u00a0\u2003x<|end|>\x85y", "a</s> \n b"):
        assert ours.encode(text, add_bos=False) == hf.encode(text, add_special_tokens=False)


def test_errors(files, ours):
    from refllm.errors import RefllmError

    tok = ours["Phi3", "tokenizers"]
    with pytest.raises(TypeError):
        tok.encode(b"bytes")
    with pytest.raises(UnicodeEncodeError):
        tok.encode("lone surrogate \udc80")
    with pytest.raises(RefllmError):
        tok.token_to_piece(32064)
    with pytest.raises(RefllmError, match="whitespace"):
        Tokenizer.from_gguf(files["Phi3"], whitespace="nope")
    with pytest.raises(RefllmError, match="engine"):
        Tokenizer.from_gguf(files["Phi3"], engine="nope")
