"""The Phi-3 checkpoint maker: real config fields, real-shaped seeded weights, the real Phi-3 tokenizer files.

Checked with the libraries a user would load them with: transformers (config, model, fast tokenizer),
``tokenizers``, ``sentencepiece`` and ``safetensors``; the tokenizer against the 46 test vectors llama.cpp ships
for Phi-3 (``models/ggml-vocab-phi-3.gguf.inp/.out``, made with the hub tokenizer).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from refllm.cli.main import main
from refllm.convert import safetensors as st
from refllm.convert import sentencepiece_model as spm
from refllm.convert.checkpoint import (DEFAULT_SHARD_SIZE, PHI35_LONG_FACTOR, PHI35_SHORT_FACTOR, PRESETS,
                                       longrope_factors, make_checkpoint, plan_shards, weight_specs)
from refllm.errors import RefllmError

pytestmark = pytest.mark.reference  # the vocabulary comes from the reference sdist

SMALL = dict(layers=2, hidden=192, heads=2, intermediate=384)  # head size 96, as in the real Phi-3 mini
SEED_PROMPT = "<|user|>\nCan you introduce .NET<|end|>\n<|assistant|>\n"


@pytest.fixture(scope="module")
def vocab_file():
    from refllm.reference.build import reference_source

    return reference_source() / "models" / "ggml-vocab-phi-3.gguf"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, vocab_file):
    root = tmp_path_factory.mktemp("checkpoints")
    made = {}
    for name, kwargs in {
        "phi3-mini-4k": dict(SMALL),
        "phi3-mini-128k": dict(SMALL),
        "phi3.5-mini": dict(SMALL),
        "phi3-medium": dict(layers=2, hidden=256, heads=4, kv_heads=1, intermediate=320),
    }.items():
        made[name] = make_checkpoint(root / name, name, seed=7, vocab_path=vocab_file, **kwargs)
    made["sharded"] = make_checkpoint(root / "sharded", "phi3.5-mini", seed=7, shard_size=5_000_000,
                                      vocab_path=vocab_file, **SMALL)
    made["v5"] = make_checkpoint(root / "v5", "phi3.5-mini", seed=7, config_schema="transformers5",
                                 vocab_path=vocab_file, **SMALL)
    return made


def test_files(checkpoints):
    for path in checkpoints.values():
        names = {p.name for p in path.iterdir()}
        assert {"config.json", "generation_config.json", "README.md", "tokenizer.model", "tokenizer.json",
                "tokenizer_config.json", "added_tokens.json", "special_tokens_map.json"} <= names
    assert "model.safetensors" in {p.name for p in checkpoints["phi3-mini-4k"].iterdir()}


def test_config_loads_in_transformers(checkpoints):
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(checkpoints["phi3-medium"])
    assert (c.model_type, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads,
            c.intermediate_size, c.max_position_embeddings, c.sliding_window, c.vocab_size) == \
        ("phi3", 256, 2, 4, 1, 320, 4096, 2047, 32064)
    c = AutoConfig.from_pretrained(checkpoints["phi3.5-mini"])
    assert c.rope_parameters["rope_type"] == "longrope"
    assert c.rope_parameters["long_factor"] == PHI35_LONG_FACTOR  # head size 96: the real factors
    assert c.rope_parameters["short_factor"] == PHI35_SHORT_FACTOR
    assert (c.max_position_embeddings, c.original_max_position_embeddings) == (131072, 4096)
    c5 = AutoConfig.from_pretrained(checkpoints["v5"])
    assert c5.rope_parameters == c.rope_parameters


def test_config_schemas(checkpoints):
    legacy = json.loads((checkpoints["phi3-mini-128k"] / "config.json").read_text())
    assert legacy["rope_scaling"]["type"] == "su" and legacy["rope_theta"] == 10000.0
    assert legacy["_name_or_path"] == "Phi-3-mini-128k-instruct" and legacy["torch_dtype"] == "bfloat16"
    assert json.loads((checkpoints["phi3-mini-4k"] / "config.json").read_text())["rope_scaling"] is None
    v5 = json.loads((checkpoints["v5"] / "config.json").read_text())
    assert "rope_scaling" not in v5 and "rope_theta" not in v5 and v5["dtype"] == "bfloat16"
    assert v5["rope_parameters"]["rope_type"] == "longrope"
    assert v5["rope_parameters"]["original_max_position_embeddings"] == 4096
    assert list(legacy) == sorted(legacy)


def test_longrope_factors_other_head_size():
    long, short = longrope_factors(32)  # head size 64
    assert len(long) == len(short) == 32
    assert long[0] == pytest.approx(PHI35_LONG_FACTOR[0]) and long[-1] == pytest.approx(PHI35_LONG_FACTOR[-1])
    assert all(a <= b for a, b in zip(long, long[1:]))  # same monotone shape


def test_model_loads_and_runs_in_transformers(checkpoints):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoints["phi3-medium"], dtype=torch.bfloat16)
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    with torch.no_grad():
        logits = model(torch.tensor([[1, 32010, 1815, 366]])).logits
    assert logits.shape == (1, 4, 32064) and torch.isfinite(logits).all()


def test_weights_match_the_transformers_state_dict(checkpoints):
    import torch
    from safetensors import safe_open
    from transformers import Phi3Config, Phi3ForCausalLM

    path = checkpoints["phi3.5-mini"]
    cfg = Phi3Config.from_pretrained(path)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Phi3ForCausalLM(cfg).state_dict().items()}
    with safe_open(path / "model.safetensors", framework="pt") as f:
        got = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        assert f.get_tensor("model.norm.weight").dtype == torch.bfloat16
        assert f.metadata() == {"format": "pt"}
        norm = f.get_tensor("model.norm.weight").float()
        w = f.get_tensor("model.layers.0.mlp.down_proj.weight").float()
    assert got == expected
    assert abs(float(norm.mean()) - 1.0) < 0.01 and abs(float(w.std()) - 0.02) < 0.002
    assert [w.name for w in weight_specs(PRESETS["phi3.5-mini"])][:7] == list(expected)[:7]  # state_dict order


def test_seeded_and_independent_of_sharding(checkpoints, tmp_path, vocab_file):
    single = st.read_checkpoint(checkpoints["phi3.5-mini"])
    sharded = st.read_checkpoint(checkpoints["sharded"])
    assert list(single) == sorted(single) and set(single) == set(sharded)
    for name in single:
        assert np.array_equal(single[name].read_raw(), sharded[name].read_raw()), name
    again = make_checkpoint(tmp_path / "again", "phi3.5-mini", seed=7, vocab_path=vocab_file, **SMALL)
    other = make_checkpoint(tmp_path / "other", "phi3.5-mini", seed=8, vocab_path=vocab_file, **SMALL)
    ref = (checkpoints["phi3.5-mini"] / "model.safetensors").read_bytes()
    assert (again / "model.safetensors").read_bytes() == ref
    assert (other / "model.safetensors").read_bytes() != ref


def test_sharding_like_save_pretrained(checkpoints):
    index = json.loads((checkpoints["sharded"] / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert files == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    sizes = sum(e.nbytes for f in files for e in st.read_header(checkpoints["sharded"] / f).values())
    assert index["metadata"]["total_size"] == sizes
    # the full-size Phi-3-mini: 3.82 B parameters in two shards of 4.97 GB and 2.67 GB, like the real download
    specs = weight_specs(PRESETS["phi3-mini-4k"])
    assert sum(int(np.prod(w.shape)) for w in specs) == 3_821_079_552
    sizes = [(w.name, int(np.prod(w.shape)) * 2) for w in specs]
    shards = plan_shards(sizes, DEFAULT_SHARD_SIZE)
    assert [sum(dict(sizes)[n] for n in s) for s in shards] == [4_972_474_368, 2_669_684_736]
    assert sum(int(np.prod(w.shape)) for w in weight_specs(PRESETS["phi3-medium"])) == 13_960_238_080


def _test_vectors(vocab_file: Path):
    inp = vocab_file.with_name(vocab_file.name + ".inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    out = vocab_file.with_name(vocab_file.name + ".out").read_text(encoding="utf-8").split("\n")
    cases = list(zip(inp[:-1], out))
    assert len(cases) == 46
    return [(text, [int(t) for t in ids.split()]) for text, ids in cases]


def test_tokenizer_json_passes_llama_cpp_test_vectors(checkpoints, vocab_file):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(checkpoints["phi3.5-mini"] / "tokenizer.json"))
    for text, ids in _test_vectors(vocab_file):
        assert tok.encode(text, add_special_tokens=False).ids == ids, text


def test_tokenizer_model_passes_test_vectors_and_matches_the_vocab(checkpoints, vocab_file):
    import sentencepiece

    from refllm import gguf

    path = checkpoints["phi3-mini-4k"] / "tokenizer.model"
    sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    for text, ids in _test_vectors(vocab_file):
        assert sp.encode(text) == ids, text
    with gguf.read(vocab_file) as f:
        tokens = f.get("tokenizer.ggml.tokens")
        scores = f.metadata["tokenizer.ggml.scores"].data
        assert [sp.id_to_piece(i) for i in range(sp.vocab_size())] == list(tokens[:32000])
        assert [sp.get_score(i) for i in range(3, 32000)] == [float(s) for s in scores[3:32000]]
    assert sp.is_unknown(0) and sp.is_control(1) and sp.is_control(2) and sp.is_byte(3) and sp.is_byte(258)
    model = spm.load(path)  # refllm's own protobuf reader, and a byte-exact round trip
    assert spm.encode(model) == path.read_bytes()
    assert model.trainer_spec["model_type"] == 2 and model.trainer_spec["byte_fallback"] is True


def test_transformers_tokenizer_and_chat_template(checkpoints, vocab_file):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoints["phi3.5-mini"])
    assert len(tok) == 32011 and tok.eos_token == "<|endoftext|>" and tok.pad_token_id == 32000
    for text, ids in _test_vectors(vocab_file)[:20]:
        assert tok.encode(text, add_special_tokens=False) == ids, text
    prompt = tok.apply_chat_template([{"role": "user", "content": "Can you introduce .NET"}], tokenize=False,
                                     add_generation_prompt=True)
    assert prompt == SEED_PROMPT  # shared/specs/phi3-spec.md §5
    # the hub tokenizer's rstrip on <|user|>, <|end|>, <|assistant|> eats the newlines (spec §4.6 case c)
    assert tok.encode(SEED_PROMPT, add_special_tokens=False) == [32010, 1815, 366, 14944, 869, 6006, 32007, 32001]
    assert tok.encode("hi")[0] != 1  # Phi-3.5: add_bos_token false
    tok4k = AutoTokenizer.from_pretrained(checkpoints["phi3-mini-4k"])
    assert tok4k.encode("hi")[0] == 1  # the 4k vocabulary file says add_bos_token true


def test_tokenizer_config(checkpoints):
    cfg = json.loads((checkpoints["phi3.5-mini"] / "tokenizer_config.json").read_text())
    decoder = cfg["added_tokens_decoder"]
    assert sorted(int(i) for i in decoder) == [0, 1, 2, *range(32000, 32011)]
    assert decoder["2"]["special"] is False and decoder["2"]["rstrip"] is True
    assert decoder["32000"]["rstrip"] is False and decoder["32007"]["rstrip"] is True
    assert cfg["tokenizer_class"] == "LlamaTokenizer" and cfg["model_max_length"] == 131072
    added = json.loads((checkpoints["phi3.5-mini"] / "added_tokens.json").read_text())
    assert added == {"<|assistant|>": 32001, "<|end|>": 32007, "<|endoftext|>": 32000, "<|placeholder1|>": 32002,
                     "<|placeholder2|>": 32003, "<|placeholder3|>": 32004, "<|placeholder4|>": 32005,
                     "<|placeholder5|>": 32008, "<|placeholder6|>": 32009, "<|system|>": 32006, "<|user|>": 32010}


def test_bad_arguments(tmp_path, vocab_file):
    with pytest.raises(RefllmError, match="unknown preset"):
        make_checkpoint(tmp_path / "x", "phi4")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("")
    with pytest.raises(RefllmError, match="not an empty directory"):
        make_checkpoint(tmp_path / "full", "phi3-mini-4k", vocab_path=vocab_file, **SMALL)
    with pytest.raises(RefllmError, match="multiple"):
        make_checkpoint(tmp_path / "y", "phi3-mini-4k", layers=1, hidden=100, heads=3, vocab_path=vocab_file)
    with pytest.raises(RefllmError, match="LongRoPE preset"):
        make_checkpoint(tmp_path / "z", "phi3-mini-4k", rope_type="su", vocab_path=vocab_file, **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]  # nothing half-made


def test_cli(tmp_path, vocab_file, capsys):
    out = tmp_path / "cli"
    assert main(["make-checkpoint", str(out), "--preset", "phi3-mini-4k", "--layers", "1", "--hidden", "64",
                 "--heads", "2", "--intermediate", "64", "--seed", "3", "--vocab", str(vocab_file)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    assert main(["make-checkpoint", str(out), "--preset", "phi3-mini-4k", "--vocab", str(vocab_file)]) == 1
    assert "not an empty directory" in capsys.readouterr().err
