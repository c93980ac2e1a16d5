"""Bits per weight against round-trip error for every block format refllm encodes, on Gaussian data and on the
real weights of Gemma-3-270M; writes docs/bpw-rmse.png.

    python -m pip install -e '.[examples]' && python examples/plot_bpw_rmse.py

RMSE is relative: sqrt(mean((dequantize(quantize(x)) - x)²)) / sqrt(mean(x²)).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from refllm import gguf, quants  # noqa: E402
from refllm.ggml_types import TYPE_SIZES, GGMLType, bits_per_weight  # noqa: E402
from refllm.quants import FORMATS, Imatrix  # noqa: E402
from refllm.reference.data import gemma3_gguf  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "bpw-rmse.png"
SKIP = {GGMLType.F32, GGMLType.Q8_K, GGMLType.Q8_1}  # F32 is exact; Q8_K / Q8_1 are activation formats


def gemma_sample(rows_per_tensor: int = 64) -> np.ndarray:
    """Rows of 2048 values from every 2-D weight of Gemma-3-270M, decoded to float32."""
    chunks = []
    with gguf.read(gemma3_gguf()) as f:
        for t in f.tensors:
            if len(t.shape) != 2:
                continue
            raw = t.raw.reshape(t.n_elements // t.shape[0], -1)[:rows_per_tensor]
            chunks.append(quants.dequantize(raw, t.type).reshape(-1))
    flat = np.concatenate(chunks)
    return flat[: flat.size // 2048 * 2048].reshape(-1, 2048)


def relative_rmse(x: np.ndarray, qtype: GGMLType) -> float:
    imatrix = np.ones(x.shape[1], np.float32) if FORMATS[qtype].imatrix == Imatrix.REQUIRED else None
    y = quants.dequantize(quants.quantize(x, qtype, imatrix=imatrix), qtype)
    return math.sqrt(float(np.mean((y.astype(np.float64) - x) ** 2)) / float(np.mean(x.astype(np.float64) ** 2)))


def main() -> None:
    data = {
        "Gaussian (512 × 2048)": np.random.default_rng(0).standard_normal((512, 2048)).astype(np.float32),
        "Gemma-3-270M weights": gemma_sample(),
    }
    types = [t for t, f in FORMATS.items() if f.quantize is not None and t not in SKIP]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), sharey=True)
    for ax, (title, x) in zip(axes, data.items()):
        for t in types:
            if x.shape[1] % TYPE_SIZES[t].block_size:
                continue
            bpw, err = bits_per_weight(t), relative_rmse(x, t)
            ax.scatter(bpw, err, s=18, color="C3" if t.name.endswith("_K") else "C0")
            ax.annotate(t.name, (bpw, err), textcoords="offset points", xytext=(4, 3), fontsize=7)
            print(f"{title:24} {t.name:6} {bpw:7.4f} bpw  relative RMSE {err:.5f}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("bits per weight")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("relative RMSE of quantize → dequantize")
    fig.suptitle("ggml block formats as encoded by refllm (red: K-quants), no importance matrix")
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
