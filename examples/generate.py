"""Chat with a Phi-3 GGUF model through refllm's Python API, printing the reply as it is generated.

    python examples/generate.py phi3.gguf "Why is the sky blue?"

llama.cpp's defaults throughout (numerics, context, sampling); see docs/run.md.
"""

import sys

from refllm import Model

path, question = sys.argv[1], " ".join(sys.argv[2:]) or "Hello! Who are you?"
model = Model(path)
messages = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": question}]
for piece in model.chat(messages, n_predict=256, seed=42):
    print(piece, end="", flush=True)
print()
print("\n".join(model.timings.report()), file=sys.stderr)
