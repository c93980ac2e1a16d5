"""``refllm convert`` against the reference ``convert_hf_to_gguf.py`` (llama-cpp-python 0.3.36's llama.cpp).

Small seeded checkpoints of every preset (2 layers, the real 32064-token vocabulary) and of both config schemas, a
sharded one and one with a richer model card are converted by both, to every output type; the files must be
identical: the same metadata keys in the same order with the same types and values, the same tensors in the same
order with the same types, shapes and bytes — and so the same bytes.

``NOT_IDENTICAL_KEYS`` lists the keys that cannot be identical by nature.  For this reference version it is
empty: convert_hf_to_gguf.py at llama.cpp 0c1e570 writes no tool-version or date key.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from refllm import gguf
from refllm.cli.main import main
from refllm.convert import convert, make_checkpoint
from refllm.convert import safetensors as st
from refllm.errors import RefllmError

pytestmark = [pytest.mark.reference, pytest.mark.slow]

NOT_IDENTICAL_KEYS: tuple[str, ...] = ()
OUTTYPES = ("f32", "f16", "bf16", "q8_0")
SMALL = dict(layers=2, hidden=192, heads=2, intermediate=384)  # head size 96: the real LongRoPE factors

CASES = {  # name: (preset, make_checkpoint arguments, output types)
    "phi3-mini-4k": ("phi3-mini-4k", SMALL, OUTTYPES),  # plain RoPE, sliding window 2047, add_bos_token true
    "phi3-mini-128k": ("phi3-mini-128k", SMALL, OUTTYPES),  # LongRoPE, legacy rope_scaling type "su"
    "phi3.5-mini": ("phi3.5-mini", SMALL, OUTTYPES),  # LongRoPE, rope_scaling type "longrope"
    "phi3-medium": ("phi3-medium", dict(layers=2, hidden=256, heads=4, kv_heads=1, intermediate=320), OUTTYPES),
    "phi3.5-mini-v5": ("phi3.5-mini", dict(SMALL, config_schema="transformers5"), ("f16", "q8_0")),
    "phi3-mini-4k-v5": ("phi3-mini-4k", dict(SMALL, config_schema="transformers5"), ("f16", "q8_0", "auto")),
    "f16-weights": ("phi3-mini-4k", dict(SMALL, dtype="f16"), ("auto", "bf16", "q8_0")),  # auto -> f16
    "sharded": ("phi3-mini-128k", dict(layers=3, hidden=192, heads=2, intermediate=384, rope_type="longrope",
                                       shard_size=5_000_000), ("f16", "q8_0")),
    "my-phi-3-7b-chat-v1.2": ("phi3-mini-4k", dict(layers=1, hidden=64, heads=1, intermediate=64), ("bf16",)),
}


def _enrich_model_card(path: Path) -> None:
    """No ``_name_or_path``: the directory name drives the name heuristics; a model card with base models and
    datasets; sampling settings in generation_config.json."""
    config = json.loads((path / "config.json").read_text())
    del config["_name_or_path"]
    (path / "config.json").write_text(json.dumps(config, indent=2))
    (path / "README.md").write_text(
        "---\nlicense: [mit, apache-2.0]\nbase_model:\n- microsoft/Phi-3-mini-4k-instruct\n"
        "- https://huggingface.co/microsoft/Phi-3.5-mini-instruct\ndatasets: someone/some-data-v2\n"
        "language:\n- en\n- no\nauthor: Nobody\ntags: test\n---\n# card\n")
    (path / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": [32000, 32007], "temperature": 0.7, "top_k": 40, "top_p": 0.9,
         "repetition_penalty": 1.1}))


@pytest.fixture(scope="module")
def vocab_file():
    from refllm.reference.build import reference_source

    return reference_source() / "models" / "ggml-vocab-phi-3.gguf"


@pytest.fixture(scope="module")
def converted(tmp_path_factory, vocab_file):
    """{(case, outtype): (refllm's file, the reference's file)}; the reference runs in two interpreters."""
    from refllm.reference.convert import reference_convert_many

    root = tmp_path_factory.mktemp("convert")
    jobs = []
    for case, (preset, kwargs, outtypes) in CASES.items():
        path = make_checkpoint(root / case, preset, seed=11, vocab_path=vocab_file, **kwargs)
        if case.startswith("my-"):
            _enrich_model_card(path)
        jobs += [(case, path, outtype) for outtype in outtypes]
    for name in ("named-ref", "named-refllm"):
        (root / name).mkdir()
    reference_convert_many([(path, root / f"{case}-{outtype}-ref.gguf", outtype) for case, path, outtype in jobs]
                           + [(root / "phi3-mini-4k", root / "named-ref", "f16")])
    refs = {(case, outtype): root / f"{case}-{outtype}-ref.gguf" for case, _, outtype in jobs}
    refs["named", "f16"] = next((root / "named-ref").iterdir())
    ours = {(case, outtype): convert(path, root / f"{case}-{outtype}-refllm.gguf", outtype)
            for case, path, outtype in jobs}
    ours["named", "f16"] = convert(root / "phi3-mini-4k", root / "named-refllm", "f16")
    return {key: (ours[key], refs[key]) for key in ours}


def assert_same_gguf(ours: Path, ref: Path) -> None:
    with gguf.read(ours) as a, gguf.read(ref) as b:
        keys_a = [k for k in a.metadata if k not in NOT_IDENTICAL_KEYS]
        keys_b = [k for k in b.metadata if k not in NOT_IDENTICAL_KEYS]
        assert keys_a == keys_b
        for key in keys_a:
            va, vb = a.metadata[key], b.metadata[key]
            assert (va.type, va.item_type) == (vb.type, vb.item_type), key
            assert va == vb, key
        assert [(t.name, t.type, t.shape) for t in a.tensors] == [(t.name, t.type, t.shape) for t in b.tensors]
        for ta, tb in zip(a.tensors, b.tensors):
            assert np.array_equal(ta.raw, tb.raw), ta.name
    if not NOT_IDENTICAL_KEYS:
        assert ours.read_bytes() == ref.read_bytes()


@pytest.mark.parametrize("case,outtype", [(c, o) for c, (_, _, outtypes) in CASES.items() for o in outtypes]
                         + [("named", "f16")])
def test_identical_to_convert_hf_to_gguf(converted, case, outtype):
    ours, ref = converted[case, outtype]
    assert ours.name == ref.name if case == "named" else True
    assert_same_gguf(ours, ref)


def test_what_the_files_hold(converted):
    """Spot checks of the content, so that "identical" cannot mean "identically empty"."""
    with gguf.read(converted["phi3.5-mini", "q8_0"][0]) as f:
        assert f.get("general.architecture") == "phi3" and f.get("general.name") == "Phi 3.5 Mini Instruct"
        assert f.get("phi3.rope.scaling.attn_factor") == pytest.approx(1.1902381181716919)
        assert [t.name for t in f.tensors[:4]] == ["rope_factors_long.weight", "rope_factors_short.weight",
                                                   "output.weight", "token_embd.weight"]
        assert f.tensor("blk.0.attn_qkv.weight").type.name == "Q8_0"
        assert f.tensor("blk.0.attn_qkv.weight").shape == (192, 576)
        assert f.tensor("blk.0.attn_norm.weight").type.name == "F32" and len(f.tensors) == 2 + 3 + 2 * 6
    with gguf.read(converted["phi3-medium", "f16"][0]) as f:
        assert f.get("phi3.attention.head_count_kv") == 1 and f.tensor("blk.1.attn_qkv.weight").shape == (256, 384)
        assert "phi3.rope.scaling.attn_factor" not in f.metadata and f.get("phi3.attention.sliding_window") == 2047
    with gguf.read(converted["my-phi-3-7b-chat-v1.2", "bf16"][0]) as f:
        assert f.get("general.sampling.temp") == pytest.approx(0.7) and f.get("general.base_model.count") == 2
        assert f.get("general.license") == "mit,apache-2.0" and f.get("general.languages") == ["en", "no"]


def test_vocabulary_is_phi3s(converted, vocab_file):
    """The converted vocabulary equals the Phi-3 vocabulary llama.cpp ships (ids 32011.. are padding rows: UNUSED
    in the current converter, UNKNOWN in the older one that made the shipped file)."""
    with gguf.read(converted["phi3-mini-4k", "f16"][0]) as ours, gguf.read(vocab_file) as ref:
        for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.bos_token_id",
                    "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
                    "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token", "tokenizer.chat_template"):
            assert ours.metadata[key] == ref.metadata[key], key
        types_ours = ours.metadata["tokenizer.ggml.token_type"].data
        types_ref = ref.metadata["tokenizer.ggml.token_type"].data
        assert np.array_equal(types_ours[:32011], types_ref[:32011])
        assert set(types_ours[32011:]) == {5} and set(types_ref[32011:]) == {2}


# ---------------------------------------------------------------------------------------------------------------------
# Bad input: a RefllmError that names the file (and the tensor), and no output file.


@pytest.fixture(scope="module")
def base(tmp_path_factory, vocab_file):
    root = tmp_path_factory.mktemp("bad")
    tiny = dict(layers=2, hidden=64, heads=1, intermediate=64)
    return {"single": make_checkpoint(root / "single", "phi3.5-mini", seed=1, vocab_path=vocab_file, **tiny),
            "sharded": make_checkpoint(root / "sharded", "phi3.5-mini", seed=1, vocab_path=vocab_file,
                                       shard_size=1_000_000, **tiny)}


def _rewrite(path: Path, change) -> None:
    """Rewrite a safetensors file; ``change(tensors)`` edits ``{name: (dtype, array)}`` in place."""
    tensors = {name: (e.dtype, e.read_raw()) for name, e in st.read_header(path).items()}
    change(tensors)
    st.write_file(path, [st.TensorToWrite(name, dtype, a.shape, lambda a=a: iter([a]))
                         for name, (dtype, a) in tensors.items()])


def _expect_error(model: Path, tmp_path: Path, outtype: str, *fragments: str) -> None:
    out = tmp_path / "out" / "x.gguf"
    out.parent.mkdir(exist_ok=True)
    with pytest.raises(RefllmError) as info:
        convert(model, out, outtype)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert list(out.parent.iterdir()) == []  # neither the file nor a partial one


@pytest.fixture
def model(base, tmp_path):
    path = tmp_path / "model"
    shutil.copytree(base["single"], path)
    return path


def test_unsupported_architecture(model, tmp_path):
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = ["Phi3SmallForCausalLM"]
    (model / "config.json").write_text(json.dumps(config))
    _expect_error(model, tmp_path, "f16", "config.json", "Phi3SmallForCausalLM", "not supported")


@pytest.mark.parametrize("missing", ["config.json", "tokenizer.model", "model.safetensors"])
def test_missing_file(model, tmp_path, missing):
    (model / missing).unlink()
    _expect_error(model, tmp_path, "f16", missing if missing != "model.safetensors" else "model*.safetensors")


def test_missing_shard(base, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(base["sharded"], model)
    (model / "model-00002-of-00003.safetensors").unlink()
    _expect_error(model, tmp_path, "f16", "model.safetensors.index.json", "model-00002-of-00003.safetensors")


def test_missing_tensor(model, tmp_path):
    _rewrite(model / "model.safetensors", lambda t: t.pop("model.layers.1.self_attn.o_proj.weight"))
    _expect_error(model, tmp_path, "f16", "missing tensors", "blk.1.attn_output.weight")


def test_wrong_shape(model, tmp_path):
    def change(t):
        dtype, a = t["model.layers.1.mlp.down_proj.weight"]
        t["model.layers.1.mlp.down_proj.weight"] = (dtype, a[:, :32].copy())
    _rewrite(model / "model.safetensors", change)
    _expect_error(model, tmp_path, "f16", "model.safetensors", "model.layers.1.mlp.down_proj.weight", "[64, 32]",
                  "[64, 64]")


def test_unexpected_dtype(model, tmp_path):
    def change(t):
        t["model.layers.0.input_layernorm.weight"] = ("I32", np.ones(64, dtype=np.int32))
    _rewrite(model / "model.safetensors", change)
    _expect_error(model, tmp_path, "f16", "model.safetensors", "model.layers.0.input_layernorm.weight", "I32")


def test_unknown_tensor(model, tmp_path):
    def change(t):
        t["model.layers.0.mlp.gate_proj.weight"] = ("BF16", np.zeros((64, 64), dtype=np.uint16))
    _rewrite(model / "model.safetensors", change)
    _expect_error(model, tmp_path, "f16", "model.safetensors", "model.layers.0.mlp.gate_proj.weight")


def test_truncated_safetensors(model, tmp_path):
    path = model / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    _expect_error(model, tmp_path, "f16", "model.safetensors", "data_offsets")


def test_error_while_writing_leaves_nothing(model, tmp_path, monkeypatch):
    """An error in the middle of streaming the tensors (here: a read failure on the 6th tensor) leaves no file."""
    from refllm.convert import hf_to_gguf

    real, calls = hf_to_gguf.tensor_data, []

    def failing(t):
        calls.append(t.gguf_name)
        if len(calls) == 6:
            raise RefllmError(f"{t.source.path}: tensor {t.source.name!r}: read error (simulated)")
        return real(t)

    monkeypatch.setattr(hf_to_gguf, "tensor_data", failing)
    _expect_error(model, tmp_path, "q8_0", "model.safetensors", "simulated")
    assert 6 <= len(calls) <= 7  # the next tensor may have been started ahead


def test_bad_rope_factors(model, tmp_path):
    config = json.loads((model / "config.json").read_text())
    config["rope_scaling"]["long_factor"] = config["rope_scaling"]["long_factor"][:-1]
    (model / "config.json").write_text(json.dumps(config))
    _expect_error(model, tmp_path, "f16", "config.json", "LongRoPE")


def test_cli(model, tmp_path, capsys):
    out = tmp_path / "cli.gguf"
    assert main(["convert", str(model), "--outfile", str(out), "--outtype", "q8_0"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"INFO:hf-to-gguf:blk\.0\.attn_qkv\.weight, +torch\.bfloat16 --> Q8_0, shape = \{64, 192\}", err)
    with gguf.read(out) as f:
        assert f.get("general.file_type") == 7
    (model / "tokenizer.model").unlink()
    assert main(["convert", str(model), "--outfile", str(tmp_path / "no.gguf")]) == 1
    assert "error:" in capsys.readouterr().err and not (tmp_path / "no.gguf").exists()


MODEL_IDS = ["microsoft/Phi-3.5-mini-instruct", "Phi-3-mini-4k-instruct", "Phi-3-medium-128k-instruct",
             "meta-llama/Llama-2-7b-hf", "mistralai/Mixtral-8x7B-Instruct-v0.1", "bigscience/bloom-7b1",
             "TheBloke/Mistral-7B-Instruct-v0.2-GGUF", "my-phi-3-7b-chat-v1.2", "./local-model", "Some Model Name",
             "Qwen2.5-0.5B-Instruct-Q4_K_M", "model-v2-iter3-lora", "", "x", "gpt-oss-20b-large-xl", "phi3"]


@pytest.mark.parametrize("total_params", [0, 3_821_079_552, 5_000_000, -1_000_000])
def test_name_heuristics_match_gguf_py(total_params):
    """refllm's hub-id parsing against gguf-py's Metadata.get_model_id_components and id_to_title, run in the
    vendored gguf-py."""
    import subprocess
    import sys

    from refllm.convert.model_card import id_to_title, model_id_components
    from refllm.reference.build import reference_source

    script = ("import json, sys\nfrom gguf.metadata import Metadata\n"
              "ids, n = json.loads(sys.argv[1]), int(sys.argv[2])\n"
              "print(json.dumps([[list(Metadata.get_model_id_components(i, n)), Metadata.id_to_title(i)] "
              "for i in ids]))")
    result = subprocess.run([sys.executable, "-c", script, json.dumps(MODEL_IDS), str(total_params)],
                            env={"PYTHONPATH": str(reference_source() / "gguf-py")}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    expected = json.loads(result.stdout)
    assert [[list(model_id_components(i, total_params)), id_to_title(i)] for i in MODEL_IDS] == expected
