#!/usr/bin/env bash
# The seed recipe, end to end: Hugging Face checkpoint -> GGUF (F16) -> Q4_K_M -> run the seed prompt.
#
#   bash examples/seed_pipeline.sh              # on a small Phi-3.5-mini-shaped checkpoint it makes itself
#   bash examples/seed_pipeline.sh HF_DIR       # on a real checkpoint directory, e.g. Phi-3.5-mini-instruct
#
# The small checkpoint has the real config fields, the real tokenizer and the real LongRoPE factors, with seeded
# random weights: the pipeline is the real one, the generated text is noise.  Set REFLLM_DEMO_DIR to keep the files.
set -euo pipefail
work=${REFLLM_DEMO_DIR:-$(mktemp -d -t refllm-demo-XXXX)}
mkdir -p "$work"
if [ $# -ge 1 ]; then
    model_dir=$1
    name=$(basename "$model_dir")
    echo "== 1. using the checkpoint in $model_dir"
else
    model_dir=$work/phi-3.5-mini-small
    name=phi-3.5-mini-small
    echo "== 1. make a small Phi-3.5-mini checkpoint in $model_dir"
    python -m refllm make-checkpoint "$model_dir" --preset phi3.5-mini --layers 2 --hidden 512 \
        --heads 4 --kv-heads 4 --intermediate 1024 --seed 0
fi

echo "== 2. convert it to GGUF (F16), as convert_hf_to_gguf.py would"
python -m refllm convert "$model_dir" --outfile "$work/$name-F16.gguf" --outtype f16
python -m refllm inspect "$work/$name-F16.gguf" --no-tensors | head -n 24

echo "== 3. quantize it to Q4_K_M, as llama-quantize would"
python -m refllm quantize "$work/$name-F16.gguf" "$work/$name-Q4_K_M.gguf" Q4_K_M

echo "== 4. run the seed prompt, as llama-cli would"
python -m refllm run -m "$work/$name-Q4_K_M.gguf" -c 4096 -n 64 -s 42 \
    -p $'<|user|>\nCan you introduce .NET<|end|>\n<|assistant|>\n'
echo
echo "== done: the files are in $work"
