"""The reference refllm is checked against: llama.cpp as vendored in the PyPI sdist of llama-cpp-python 0.3.36.

:mod:`refllm.reference.build` fetches and builds it once per machine; :mod:`refllm.reference.ggml` calls
``libggml-base.so`` through ctypes; :mod:`refllm.reference.data` assembles the real model files used in tests.
Nothing in refllm's own pipeline depends on this package — only tests and benchmarks do.
"""
