#!/usr/bin/env bash
# The seed pipeline, end to end, on a small Phi-3.5-mini-shaped checkpoint it makes itself (real config fields,
# real tokenizer, real LongRoPE factors, seeded random weights).  quantize and run join as they land.
set -euo pipefail
work=${REFLLM_DEMO_DIR:-$(mktemp -d -t refllm-demo-XXXX)}
echo "== 1. make a small Phi-3.5-mini checkpoint in $work/phi-3.5-mini-small"
python -m refllm make-checkpoint "$work/phi-3.5-mini-small" --preset phi3.5-mini --layers 2 --hidden 384 \
    --heads 4 --kv-heads 4 --intermediate 1024 --seed 0
echo "== 2. convert it to GGUF (F16), as convert_hf_to_gguf.py would"
python -m refllm convert "$work/phi-3.5-mini-small" --outfile "$work/phi-3.5-mini-small-f16.gguf" --outtype f16
echo "== 3. inspect the result"
python -m refllm inspect "$work/phi-3.5-mini-small-f16.gguf" --no-tensors | head -n 40
python -m refllm inspect "$work/phi-3.5-mini-small-f16.gguf" | tail -n 6
