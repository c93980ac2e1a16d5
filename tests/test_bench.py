"""The benchmark commands run (tiny sizes; the numbers themselves are not tested)."""

from __future__ import annotations

from refllm.cli.main import main


def test_bench_quants_runs(ggml, capsys):
    assert main(["bench", "quants", "--types", "F32", "Q8_0", "Q4_K", "IQ4_NL", "Q8_K", "--rows", "4", "--cols",
                 "256", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("F32", "Q8_0", "Q4_K", "IQ4_NL", "Q8_K"):
        assert f"\n{name} " in out


def test_bench_gguf_runs(vocab_paths, capsys):
    path = next(p for p in vocab_paths if p.name == "ggml-vocab-phi-3.gguf")
    assert main(["bench", "gguf", str(path), "--repeat", "1"]) == 0
    assert "ggml-vocab-phi-3.gguf" in capsys.readouterr().out
