"""GGUF, the file format of llama.cpp: refllm's own reader and writer (see docs/gguf.md).

>>> from refllm import gguf
>>> f = gguf.read("model.gguf")                  # parses the header only; tensors are mmap views
>>> f.get("general.architecture"), f.tensor("token_embd.weight").data.shape
>>> gguf.write("copy.gguf", f.metadata, f.tensors, version=f.version)   # byte-identical copy
"""

from .constants import ValueType
from .reader import GGUFFile, TensorInfo, read
from .values import StringArray, Value
from .writer import TensorSpec, write

__all__ = ["GGUFFile", "TensorInfo", "TensorSpec", "StringArray", "Value", "ValueType", "read", "write"]
