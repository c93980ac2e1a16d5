"""Hugging Face Phi-3 checkpoints: make them (seeded random weights, real files) and convert them to GGUF exactly as
llama.cpp's ``convert_hf_to_gguf.py`` does (see docs/convert.md).

>>> from refllm.convert import make_checkpoint, convert
>>> make_checkpoint("tiny-phi35", "phi3.5-mini", layers=2, hidden=256, heads=4, intermediate=512, seed=0)
>>> convert("tiny-phi35", "tiny-phi35-f16.gguf", "f16")
"""

from .checkpoint import PRESETS, make_checkpoint
from .hf_to_gguf import OUTTYPES, convert

__all__ = ["PRESETS", "OUTTYPES", "convert", "make_checkpoint"]
