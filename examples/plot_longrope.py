"""The real Phi-3.5-mini LongRoPE factors and what they do to RoPE's wavelengths; writes docs/longrope.png.

    python -m pip install -e '.[examples]' && python examples/plot_longrope.py

Pair i of a head rotates by the angle p · inv_freq_i at position p, with inv_freq_i = base^(−2i/d) / factor_i.
Its wavelength, 2π / inv_freq_i, is the number of positions after which the pair has turned once.  The short
factors keep every wavelength close to plain RoPE's; the long factors stretch the slow pairs by up to 65× so that
131072 positions stay distinguishable.  The dashed lines are the original context (4096) and the long one (131072).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from refllm.convert.checkpoint import PHI35_LONG_FACTOR, PHI35_SHORT_FACTOR  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "longrope.png"
HEAD_DIM, BASE = 96, 10000.0


def main() -> None:
    i = np.arange(HEAD_DIM // 2)
    plain = BASE ** (-2.0 * i / HEAD_DIM)  # inv_freq of plain RoPE
    short, long = np.array(PHI35_SHORT_FACTOR), np.array(PHI35_LONG_FACTOR)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(i, short, "o-", ms=3, label="short factors (sequence ≤ 4096)")
    left.plot(i, long, "o-", ms=3, label="long factors")
    left.set(yscale="log", xlabel="pair i (of 48)", ylabel="factor (divides inv_freq)",
             title="Phi-3.5-mini rope_factors_short / _long")
    left.legend()
    for name, freq in (("plain RoPE", plain), ("short", plain / short), ("long", plain / long)):
        right.plot(i, 2 * np.pi / freq, label=name)
    for n in (4096, 131072):
        right.axhline(n, color="grey", ls="--", lw=0.8)
        right.text(0, n * 1.15, f"{n} positions", color="grey", fontsize=8)
    right.set(yscale="log", xlabel="pair i", ylabel="wavelength 2π / inv_freq (positions)",
              title="wavelength of each rotating pair")
    right.legend()
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
