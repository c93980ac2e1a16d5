"""The fast path: refllm against known answers produced by ggml and committed in tests/data/known_answers.npz
(regenerate with ``python tests/make_known_answers.py``).  Needs no reference build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from refllm import quants
from refllm.ggml_types import GGMLType

DATA = np.load(Path(__file__).parent / "data" / "known_answers.npz")
TYPES = sorted({key.split("/")[0] for key in DATA.files}, key=lambda n: GGMLType[n])


def test_every_format_has_known_answers():
    assert set(TYPES) == {t.name for t in quants.FORMATS}


@pytest.mark.parametrize("name", TYPES)
def test_known_answers(name):
    for suffix, imatrix in (("", None), ("_imatrix", DATA.get(f"{name}/imatrix"))):
        if f"{name}/x" in DATA and f"{name}/q{suffix}" in DATA:
            q = quants.quantize(DATA[f"{name}/x"], name, imatrix=imatrix)
            assert np.array_equal(q, DATA[f"{name}/q{suffix}"]), suffix
        if f"{name}/y{suffix}" in DATA:
            y = quants.dequantize(DATA[f"{name}/q{suffix}"], name)
            assert np.array_equal(y.view(np.uint32), DATA[f"{name}/y{suffix}"].view(np.uint32)), suffix
