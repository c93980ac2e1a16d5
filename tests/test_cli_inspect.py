"""``python -m refllm inspect``: the listing, the JSON, and errors."""

from __future__ import annotations

import json
import subprocess
import sys

from gguf import GGUFReader


def _run(*args):
    return subprocess.run([sys.executable, "-m", "refllm", *map(str, args)], capture_output=True, text=True)


def test_listing(gemma3_path):
    r = _run("inspect", gemma3_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "* Dumping 33 key/value pair(s)" in out
    assert "[STRING]   |   262144 | tokenizer.ggml.tokens = ['<pad>', '<eos>', '<bos>'" in out
    assert "* Dumping 236 tensor(s)" in out
    assert "167772160 |    640, 262144,      1,      1 | Q8_0    | token_embd.weight @ 6527680" in out
    assert "Q4_K:    27 tensors" in out and "total:   236 tensors" in out


def test_no_tensors(gemma3_path):
    out = _run("inspect", gemma3_path, "--no-tensors").stdout
    assert "key/value" in out and "tensor(s)" not in out


def test_json_is_complete(vocab_paths):
    path = next(p for p in vocab_paths if p.name == "ggml-vocab-phi-3.gguf")
    r = _run("inspect", path, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    theirs = GGUFReader(path)
    tokens = doc["metadata"]["tokenizer.ggml.tokens"]
    assert tokens["type"] == "ARRAY" and tokens["item_type"] == "STRING"
    assert tokens["value"] == theirs.fields["tokenizer.ggml.tokens"].contents()
    assert doc["metadata"]["tokenizer.ggml.scores"]["value"] == theirs.fields["tokenizer.ggml.scores"].contents()
    assert doc["tensors"] == [] and doc["version"] == 3


def test_json_tensors(gemma3_path):
    doc = json.loads(_run("inspect", gemma3_path, "--json").stdout)
    emb = next(t for t in doc["tensors"] if t["name"] == "token_embd.weight")
    assert emb == {"name": "token_embd.weight", "type": "Q8_0", "shape": [640, 262144], "n_elements": 167772160,
                   "n_bytes": 178257920, "offset": 2560, "file_offset": 6527680, "bpw": 8.5}
    assert doc["totals"][-1]["tensors"] == 236


def test_bad_file_is_one_line_and_exit_1(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00")
    r = _run("inspect", bad)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and "x.gguf: byte 8: header.n_tensors" in r.stderr
