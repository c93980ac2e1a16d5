"""Check another engine's tensor dump against a refllm golden — the loop a Rust / Go / JS / CUDA port would run.

    python examples/check_foreign_dump.py [WORKDIR]

1. Make a tiny Phi-3 model (2 layers, seeded random weights) and convert it to GGUF.
2. ``refllm golden model``: the reference tensors (llama.cpp's graph names) for a prompt.
3. Play the other engine: write its tensors the simplest way there is — one ``NAME.npy`` per tensor, rows =
   positions — with a bug planted in layer 1's attention at one position.
4. ``refllm compare``: the table shows the first tensor, layer and position that leave the tolerance; the exit
   status (1) is what a CI job would check.  (The format: docs/golden-format.md.)
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

from refllm.cli.main import main
from refllm.convert import convert, make_checkpoint
from refllm.golden import read_dump

work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="refllm-golden-"))
model = work / "tiny-f32.gguf"
if not model.exists():
    checkpoint = make_checkpoint(work / "tiny", "phi3-medium", layers=2, hidden=256, heads=4, kv_heads=2,
                                 intermediate=512, seed=1)
    convert(checkpoint, model, "f32")

# 2. the golden
main(["golden", "model", "-m", str(model), "-p", "Once upon a time", "-n", "4", "--out", str(work / "golden")])

# 3. the "foreign" engine's dump: the golden's own numbers, except one value in layer 1's attention output
golden = read_dump(work / "golden")
foreign = work / "foreign"
foreign.mkdir(exist_ok=True)
for name, array in golden.tensors.items():
    array = array.copy()
    if name == "kqv_out-1":
        array[2, 5] += 1e-3  # position 2, element 5: a bug in layer 1's attention
    np.save(foreign / f"{name}.npy", array)

# 4. compare: the planted bug is the first failure.  (Here the later tensors are copies; in a real engine the error
#    would carry on into ffn_norm-1, l_out-1, ... — the first failing row of the table is where to look.)
status = main(["compare", str(work / "golden"), str(foreign), "--atol", "1e-5", "--rtol", "1e-5"])
print(f"\nrefllm compare exit status: {status} (0 = agree, 1 = a tensor differs, 2 = unreadable input)")
