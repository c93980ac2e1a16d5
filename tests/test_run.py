"""``refllm run`` and :class:`refllm.Model`: generation, chat, streaming, the CLI's flags, logs and errors — and the
whole run against llama.cpp's ``llama-completion`` (same seed, same text)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import numpy as np
import pytest

import refllm.generate
from refllm import Model
from refllm.cli.main import main
from refllm.convert import convert, make_checkpoint
from refllm.errors import RefllmError
from refllm.gguf import GGUFFile, TensorSpec, Value, ValueType, write

END = 32007  # <|end|>


@pytest.fixture(scope="module")
def files(tmp_path_factory, reference):
    """A tiny Phi-3 (2 layers, E = 64) as F32, and broken copies of it."""
    root = tmp_path_factory.mktemp("run")
    ck = make_checkpoint(root / "ck", "phi3-mini-4k", layers=2, hidden=64, heads=2, intermediate=128, seed=3,
                         vocab_path=reference.models_dir() / "ggml-vocab-phi-3.gguf")
    made = {"tiny": convert(ck, root / "tiny-f32.gguf", "f32")}
    made["Q8_0"] = root / "tiny-q8_0.gguf"
    subprocess.run([str(reference.tool("llama-quantize")), str(made["tiny"]), str(made["Q8_0"]), "Q8_0"],
                   check=True, capture_output=True)
    f = GGUFFile(made["tiny"])
    metadata = dict(f.metadata)
    metadata["general.architecture"] = Value(ValueType.STRING, "llama")
    made["arch"] = write(root / "arch.gguf", metadata, f.tensors)
    made["missing"] = write(root / "missing.gguf", f.metadata,
                            [t for t in f.tensors if t.name != "blk.1.ffn_down.weight"])
    made["shape"] = write(root / "shape.gguf", f.metadata, [
        TensorSpec(t.name, t.type, t.shape[::-1], t.data) if t.name == "blk.0.ffn_down.weight" else t
        for t in f.tensors])
    made["text"] = root / "text.gguf"
    made["text"].write_text("not a model\n")
    return made


@pytest.fixture(scope="module")
def model(files):
    return Model(files["tiny"])


def cli(capsys, *args) -> tuple[int, str, str]:
    rc = main(["run", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


# -- the API ----------------------------------------------------------------------------------------------------------


def test_same_seed_same_text_different_seed_different(model):
    a = "".join(model.generate("Once upon a time", n_predict=12, seed=5))
    tokens = list(model.tokens)
    assert len(tokens) == 12 and model.stop_reason == "n_predict"
    assert "".join(model.generate("Once upon a time", n_predict=12, seed=5)) == a and model.tokens == tokens
    assert "".join(model.generate("Once upon a time", n_predict=12, seed=6)) != a


def test_greedy_is_the_argmax_of_the_logits(model):
    prompt = model.tokenize("The capital of France is")
    "".join(model.generate(prompt, n_predict=6, temp=0))
    logits = model.logits(prompt + model.tokens[:-1])  # float32 [n, n_vocab] from an empty cache
    assert logits.dtype == np.float32 and logits.shape == (len(prompt) + 5, model.params.n_vocab)
    assert model.tokens == [int(np.argmax(row)) for row in logits[len(prompt) - 1:]]


def _boost(model, monkeypatch, token: int, after: int):
    """Make ``token`` the model's favourite from the ``after``-th generated token on."""
    forward = model.model.forward
    calls = []

    def boosted(tokens, pos0=None, *, last_only=False):
        logits = forward(tokens, pos0, last_only=last_only)
        calls.append(1)
        if len(calls) > after:
            logits[:, token] = 100.0
        return logits

    monkeypatch.setattr(model.model, "forward", boosted)


def test_stops_at_end_of_generation_unless_ignore_eos(model, monkeypatch):
    _boost(model, monkeypatch, END, after=3)  # the prompt's call and two more
    text = "".join(model.generate("Hi", n_predict=20, seed=1))
    assert model.stop_reason == "eog" and len(model.tokens) == 3 and "<|end|>" not in text
    text = "".join(model.generate("Hi", n_predict=20, seed=1, ignore_eos=True))
    assert model.stop_reason == "n_predict" and len(model.tokens) == 20
    assert not set(model.tokens) & model.tokenizer.eog_ids


def test_streaming_holds_back_split_characters(model, monkeypatch):
    """🦙 arrives as four byte tokens: nothing is yielded until the last one, then the whole character."""
    script = iter([model.tokenizer.vocab.tokens.index(f"<0x{b:02X}>") for b in "a🦙".encode()] + [END])

    class Scripted(refllm.generate.Sampler):
        def sample(self, logits):
            return next(script)

    monkeypatch.setattr(refllm.generate, "Sampler", Scripted)
    pieces = []
    for piece in model.generate("Hi", seed=1):
        pieces.append((piece, len(model.tokens)))
    assert pieces == [("a", 1), ("🦙", 5)]


def test_prompt_too_long_and_full_context(files):
    small = Model(files["tiny"], n_ctx=16)
    with pytest.raises(RefllmError, match=r"prompt is too long \(13 tokens, max 12\)"):
        small.generate([1] * 13)
    "".join(small.generate([1] * 12, n_predict=-1, ignore_eos=True, seed=1))
    assert small.stop_reason == "context" and len(small.tokens) == 4  # positions 12 … 15


def test_chat_reuses_the_cache_and_agrees_with_a_fresh_model(files, model):
    first = [{"role": "user", "content": "Hello"}]
    reply = "".join(model.chat(first, n_predict=6, seed=3))
    second = first + [{"role": "assistant", "content": reply}, {"role": "user", "content": "And then?"}]
    before = model.timings.n_prompt_eval
    answer = "".join(model.chat(second, n_predict=6, seed=3))
    n_prompt = len(model.tokenizer.encode_chat(second))
    assert model.timings.n_prompt_eval - before < n_prompt - 10  # most of the conversation came from the cache
    fresh = Model(files["tiny"])
    assert "".join(fresh.chat(second, n_predict=6, seed=3)) == answer
    assert fresh.timings.n_prompt_eval == n_prompt


# -- the command line -------------------------------------------------------------------------------------------------


def test_cli_flags_logs_and_timings(files, model, capsys):
    rc, out, err = cli(capsys, "-m", files["tiny"], "-p", "Once upon a time", "-n", 12, "-s", 5, "-t", 1,
                       "--temp", 0.8, "--top-k", 40, "--top-p", 0.95, "--min-p", 0.05, "--repeat-penalty", 1.0,
                       "--repeat-last-n", 64)
    assert rc == 0
    expected = "".join(model.generate("Once upon a time", n_predict=12, seed=5))
    assert out == " Once upon a time" + expected + "\n"  # the prompt echoed as llama-completion does
    assert "print_info: arch             = phi3" in err and "sampler seed: 5" in err
    assert "sampler chain: logits -> ?penalties -> ?dry -> ?top-n-sigma -> top-k -> ?typical -> top-p -> min-p -> " \
           "?xtc -> temp-ext -> dist" in err  # llama-completion's line
    assert re.search(r"prompt eval time = +[\d.]+ ms / +5 tokens \(", err)  # BOS + 4 tokens
    assert re.search(r" eval time = +[\d.]+ ms / +11 runs", err)  # the 12th token is not evaluated

    rc, out, err = cli(capsys, "-m", files["tiny"], "-p", "Hi", "-n", 4, "--temp", 0, "--top-k", 0,
                       "--repeat-penalty", 1.2, "--repeat-last-n", 8, "--no-display-prompt", "-c", 64)
    assert rc == 0 and not out.startswith(" Hi")
    assert "-> penalties -> ?dry -> ?top-n-sigma -> ?top-k -> ?typical -> top-p -> min-p -> ?xtc -> temp-ext" in err
    assert "llama_context: n_ctx         = 64" in err


def test_cli_prompt_file(files, tmp_path, capsys):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Once upon a time\n")
    assert cli(capsys, "-m", files["tiny"], "-f", prompt, "-n", 3, "-s", 1)[1].startswith(" Once upon a time")


@pytest.mark.parametrize("name, message", [
    ("text", "header.magic: expected b'GGUF'"),
    ("arch", "general.architecture is 'llama'; refllm runs phi3 models"),
    ("missing", "missing tensor 'blk.1.ffn_down.weight'"),
    ("shape", "tensor 'blk.0.ffn_down.weight' has shape [64, 128]; expected [128, 64]"),
])
def test_cli_bad_files_give_one_line(files, capsys, name, message):
    rc, out, err = cli(capsys, "-m", files[name], "-p", "Hi")
    assert rc == 1 and out == "" and err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_cli_prompt_too_long(files, capsys):
    rc, _, err = cli(capsys, "-m", files["tiny"], "-p", "Once upon a time there was", "-c", 8)
    assert rc == 1 and "error: prompt is too long (" in err.splitlines()[-1]


def test_cli_conversation(files, monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("Tell me more\n"))
    rc, out, _ = cli(capsys, "-m", files["tiny"], "-cnv", "-sys", "Be brief.", "-p", "Hello", "-n", 5, "-s", 2)
    assert rc == 0 and out.count("\n> ") == 2  # after the first answer, after the second; then end of input
    expected = Model(files["tiny"])
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    reply = "".join(expected.chat(messages, 5, seed=2))
    assert out.startswith(reply + "\n\n> ")


def test_cli_ctrl_c_stops_with_timings(files):
    proc = subprocess.Popen([sys.executable, "-m", "refllm", "run", "-m", str(files["tiny"]), "-p", "Hi", "-n", "-1",
                             "--ignore-eos", "-c", "4096"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout.read(3)  # generating
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err.decode() and "eval time =" in err.decode()


# -- against llama.cpp ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, seed", [("tiny", 42), ("Q8_0", 3)])
def test_same_text_as_llama_completion(files, reference, capsys, name, seed):
    """llama-completion and ``refllm run`` with the same seed and settings print the same text: the same logits (to
    float rounding, ggml mode) and the same sampler chain and random numbers.  (Bytes that are not UTF-8, which a
    random model emits now and then, llama.cpp prints raw and refllm as U+FFFD.)

    llama.cpp's log thread sometimes loses the end of stdout when the process exits on a busy machine: the longest of
    three runs counts."""
    args = ["-m", str(files[name]), "-p", "Hello world", "-n", "24", "-s", str(seed), "-t", "2"]
    rc, out, _ = cli(capsys, *args)
    assert rc == 0
    runs = []
    for _ in range(3):
        theirs = subprocess.run([str(reference.tool("llama-completion")), *args, "-no-cnv", "-nr"],
                                capture_output=True, timeout=300, check=False)
        assert theirs.returncode == 0, theirs.stderr[-2000:]
        runs.append(theirs.stdout.decode("utf-8", "replace").rstrip("\n"))
        if runs[-1] == out.rstrip("\n"):
            break
    assert out.rstrip("\n") == max(runs, key=len)
