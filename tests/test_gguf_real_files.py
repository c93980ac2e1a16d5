"""refllm's GGUF reader and writer on real files: every vocabulary file of the reference sdist and the real
Gemma-3-270M Q4_K_M made by llama.cpp, compared with gguf-py's GGUFReader, and round-tripped byte for byte."""

from __future__ import annotations

import filecmp

import numpy as np
import pytest
from gguf import GGUFReader

from refllm import gguf
from refllm.ggml_types import GGMLType
from refllm.gguf import ValueType


def _real_files(request):
    return request.getfixturevalue("vocab_paths") + [request.getfixturevalue("gemma3_path")]


@pytest.fixture(scope="module")
def real_files(request):
    return _real_files(request)


def test_there_are_real_files(real_files):
    names = {p.name for p in real_files}
    assert "ggml-vocab-phi-3.gguf" in names and "gemma-3-270m-q4_k_m.gguf" in names
    assert len(names) >= 19


@pytest.mark.parametrize("index", range(20))
def test_reader_agrees_with_gguf_py(real_files, index):
    if index >= len(real_files):
        pytest.skip("fewer real files")
    path = real_files[index]
    theirs = GGUFReader(path)
    with gguf.read(path) as ours:
        fields = {k: f for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
        assert list(ours.metadata) == list(fields)
        for key, field in fields.items():
            value = ours.metadata[key]
            assert [int(t) for t in field.types] == [int(value.type)] + (
                [int(value.item_type)] if value.type == ValueType.ARRAY else []), key
            assert value.to_python() == field.contents(), key
            assert value.offset == field.offset, key
        assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
        for mine, t in zip(ours.tensors, theirs.tensors):
            assert mine.shape == tuple(int(n) for n in t.shape), mine.name
            assert int(mine.type) == int(t.tensor_type), mine.name
            assert mine.n_elements == t.n_elements and mine.n_bytes == t.n_bytes, mine.name
            assert mine.file_offset == t.data_offset, mine.name
            assert mine.raw.tobytes() == np.asarray(t.data).tobytes(), mine.name


@pytest.mark.parametrize("index", range(20))
def test_write_read_roundtrip_is_byte_identical(real_files, index, tmp_path):
    if index >= len(real_files):
        pytest.skip("fewer real files")
    path = real_files[index]
    with gguf.read(path) as f:
        out = gguf.write(tmp_path / path.name, f.metadata, f.tensors, version=f.version)
    assert filecmp.cmp(path, out, shallow=False)


def test_tensor_views_are_zero_copy_and_typed(gemma3_path):
    with gguf.read(gemma3_path) as f:
        norm = f.tensor("output_norm.weight").data
        assert norm.dtype == np.float32 and norm.shape == (640,) and not norm.flags.owndata
        assert not norm.flags.writeable
        emb = f.tensor("token_embd.weight")
        assert emb.type == GGMLType.Q8_0
        assert emb.data.shape == (262144, 640 // 32 * 34) and emb.data.dtype == np.uint8
        assert f.get("tokenizer.ggml.tokens")[2] == "<bos>"
        tokens = f.metadata["tokenizer.ggml.tokens"].data
        assert len(tokens) == 262144 and tokens[-1] == tokens.tolist()[-1]
