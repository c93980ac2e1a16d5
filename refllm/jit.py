"""The one module that configures Numba for refllm.

Every compiled function in refllm is declared with :func:`kernel` (serial) or :func:`parallel_kernel` (a loop over
rows with ``prange``).  The settings are the same everywhere and chosen for reproducibility:

* ``cache=True`` — compiled code is stored next to the source (``__pycache__``), so only the first run on a
  machine pays the compilation.
* **no** ``fastmath`` — LLVM may then neither reorder float additions nor fuse ``a*b+c`` into one FMA.  ggml's
  reference quantizers are compiled without FMA on x86-64 (gcc, no ``-march=native`` for ggml-base), so this is what
  makes refllm's bytes equal to ggml's.
* ``error_model="numpy"`` — a float division by zero gives ``inf``/``nan`` as in C instead of raising.
* Parallel loops write disjoint outputs (one row, or one block, per ``prange`` iteration) and never split a
  floating-point reduction across threads, so results are bitwise identical for any thread count.

With ``NUMBA_DISABLE_JIT=1`` the decorators return the plain Python functions and ``prange`` is ``range``: the
kernels then run (slowly) as ordinary Python, which is how the test suite checks that they are plain Python.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import prange
from numba.core import types
from numba.extending import intrinsic

__all__ = ["kernel", "parallel_kernel", "prange", "num_threads", "set_num_threads", "float32_bits",
           "float32_from_bits"]

_OPTIONS = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


def kernel(fn):
    """Compile ``fn`` as a serial Numba kernel with refllm's settings."""
    return numba.njit(**_OPTIONS)(fn)


def parallel_kernel(fn):
    """Compile ``fn`` as a Numba kernel whose ``prange`` loops run on all threads."""
    return numba.njit(parallel=True, **_OPTIONS)(fn)


def num_threads() -> int:
    """The number of threads ``prange`` loops use now."""
    return numba.get_num_threads()


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (1 … ``NUMBA_NUM_THREADS``) for the following ``prange`` loops."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


# -- reinterpreting float32 bits (C's ``memcpy(&i, &f, 4)``) ---------------------------------------------------------
# The bits travel as int64 (0 … 2**32-1): Numba types arithmetic on uint32 as 64-bit and mixing signed and unsigned
# 64-bit integers gives float64, so kernels do their bit arithmetic on non-negative int64 values.

if numba.config.DISABLE_JIT:

    def float32_bits(x) -> int:
        """The IEEE-754 bits of float32 ``x`` as a non-negative int64."""
        return np.int64(np.float32(x).view(np.uint32))

    def float32_from_bits(bits) -> np.float32:
        """The float32 whose IEEE-754 bits are the low 32 bits of ``bits``."""
        return np.uint32(int(bits) & 0xFFFFFFFF).view(np.float32)

else:

    @intrinsic
    def float32_bits(typingctx, x):
        """The IEEE-754 bits of float32 ``x`` as a non-negative int64."""
        if x != types.float32:
            return None

        def codegen(context, builder, signature, args):
            return builder.zext(builder.bitcast(args[0], ir.IntType(32)), ir.IntType(64))

        return types.int64(types.float32), codegen

    @intrinsic
    def float32_from_bits(typingctx, bits):
        """The float32 whose IEEE-754 bits are the low 32 bits of ``bits``."""
        if not isinstance(bits, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            value = context.cast(builder, args[0], signature.args[0], types.int64)
            return builder.bitcast(builder.trunc(value, ir.IntType(32)), ir.FloatType())

        return types.float32(bits), codegen
