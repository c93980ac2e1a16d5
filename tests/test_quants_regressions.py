"""Cases that once differed from ggml, kept as explicit examples (found by hypothesis in CI)."""

from __future__ import annotations

import numpy as np
import pytest

from refllm import quants


@pytest.mark.parametrize("qtype", ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"])
def test_ramp_with_one_hot_imatrix(ggml, qtype):
    """A one-hot importance matrix gives one sub-block a negative scale; make_qp_quants then returns a level that
    wraps in ggml's uint8 ``Ls`` (252).  Q4_K stores that byte as it is, Q5_K clamps it with MIN(63, ls)."""
    x = np.linspace(-1, 1, 256).astype(np.float32)[None, :]
    imatrix = np.zeros(256, np.float32)
    imatrix[121] = 1.0
    assert np.array_equal(quants.quantize(x, qtype, imatrix=imatrix), ggml.quantize_chunk(x, qtype, imatrix=imatrix))
