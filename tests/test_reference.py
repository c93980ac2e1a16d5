"""The reference build itself, and refllm's type table against ggml's own type traits."""

from __future__ import annotations

import subprocess

from refllm.ggml_types import TYPE_SIZES, GGMLType


def test_tools_are_built(reference):
    for tool in ("llama-quantize", "llama-completion", "llama-tokenize", "llama-perplexity", "llama-bench"):
        assert reference.tool(tool).exists(), tool
    assert reference.libggml_base.exists()
    out = subprocess.run([reference.tool("llama-quantize"), "--help"], capture_output=True, text=True)
    assert "Q4_K_M" in out.stdout + out.stderr


def test_type_table_matches_ggml(ggml):
    for t in GGMLType:
        traits = ggml.type_traits(t)
        assert traits["name"].upper() == t.name, t
        assert (traits["block_size"], traits["type_size"]) == TYPE_SIZES[t], t
    assert len(GGMLType) == 35
