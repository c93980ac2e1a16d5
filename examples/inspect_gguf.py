"""Open a GGUF file with refllm's reader and print what a learner wants to see first.

    python examples/inspect_gguf.py path/to/model.gguf
"""

import sys

from refllm import gguf

with gguf.read(sys.argv[1]) as f:
    print(f"GGUF v{f.version}, {len(f.metadata)} keys, {len(f.tensors)} tensors, data at byte {f.data_offset}")
    print("architecture:", f.get("general.architecture"))
    for t in f.tensors[:5]:
        data = t.data
        print(f"{t.name:32} {t.type.name:6} ne={t.shape} -> numpy {data.dtype}{list(data.shape)} @ {t.file_offset}")
