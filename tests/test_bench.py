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


def test_bench_run_runs(reference, tmp_path, capsys):
    import subprocess

    from refllm.convert import convert, make_checkpoint

    checkpoint = make_checkpoint(tmp_path / "tiny", "phi3-mini-4k", layers=1, hidden=256, heads=2, intermediate=512,
                                 seed=1, vocab_path=reference.models_dir() / "ggml-vocab-phi-3.gguf")
    f32 = convert(checkpoint, tmp_path / "tiny-f32.gguf", "f32")
    model = tmp_path / "tiny-Q4_K_M.gguf"
    subprocess.run([str(reference.tool("llama-quantize")), str(f32), str(model), "Q4_K_M"], check=True,
                   capture_output=True)
    assert main(["bench", "run", "-m", str(model), "-p", "4", "-n", "2", "-t", "1"]) == 0
    out = capsys.readouterr().out
    for text in ("pp4 tok/s", "tg2 tok/s", "\nrefllm ", "\nllama.cpp ", "refllm / llama.cpp", "peak RSS"):
        assert text in out
