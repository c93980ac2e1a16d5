"""The one module that configures Numba for refllm.

Every compiled function in refllm is declared with :func:`kernel` (serial) or :func:`parallel_kernel` (a loop over
rows with ``prange``).  The settings are the same everywhere and chosen for reproducibility:

* ``cache=True`` — compiled code is stored next to the source (``__pycache__``), so only the first run on a
  machine pays the compilation.
* **no** ``fastmath`` — LLVM may then neither reorder float additions nor fuse ``a*b+c`` into one FMA.  ggml's
  reference quantizers are compiled without FMA on x86-64 (gcc, no ``-march=native`` for ggml-base), so this is what
  makes refllm's bytes equal to ggml's.  Where ggml's CPU kernels (built with ``-march=native``) do fuse, a kernel
  says so explicitly with :func:`fma32`.
* ``error_model="numpy"`` — a float division by zero gives ``inf``/``nan`` as in C instead of raising.
* Parallel loops write disjoint outputs (one row, or one block, per ``prange`` iteration) and never split a
  floating-point reduction across threads, so results are bitwise identical for any thread count.

With ``NUMBA_DISABLE_JIT=1`` the decorators return the plain Python functions and ``prange`` is ``range``: the
kernels then run (slowly) as ordinary Python, which is how the test suite checks that they are plain Python.

Besides the decorators this module holds the few operations Numba has no spelling for (bit casts of float32,
:func:`fma32`, C's ``expf``); the SIMD building blocks of the K-quant dot products (``maddubs``, ``madd``,
``fmadd_ps`` … as LLVM vector IR, each with its Python definition) are in :mod:`refllm.simd`.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import numba
import numpy as np
from llvmlite import ir
from numba import prange
from numba.core import types
from numba.extending import intrinsic, overload

__all__ = ["kernel", "parallel_kernel", "prange", "num_threads", "set_num_threads", "float32_bits",
           "float32_from_bits", "fma32", "expf"]

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


# -- fused multiply-add (C's ``fmaf``, the ``_mm256_fmadd_ps`` of ggml's x86 SIMD code) -----------------------------
# ``a·b + c`` rounded once to float32.  In Python: the product of two float32 is exact in float64, and the float64
# sum is rounded to odd (the exact error of the sum decides the last bit), so the rounding to float32 is correct.
# Compiled (an overload of the same function, so that Python code can call it too): ``llvm.fma.f32``.


def fma32(a, b, c) -> np.float32:
    """``a·b + c`` of float32 values with a single rounding to float32."""
    p = float(np.float32(a)) * float(np.float32(b))  # exact
    c = float(np.float32(c))
    s = p + c
    bp = s - c
    err = (p - bp) + (c - (s - bp))  # TwoSum: s + err == p + c exactly
    if err != 0.0:
        bits = np.float64(s).view(np.int64)
        if bits & 1 == 0:  # round to odd: step one ulp towards the exact value
            s = float(np.nextafter(s, np.inf if err > 0 else -np.inf))
    return np.float32(s)


@intrinsic
def _fma32(typingctx, a, b, c):
    if not (a == b == c == types.float32):
        return None

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32, f32, f32]))
        return builder.call(fn, args)

    return types.float32(types.float32, types.float32, types.float32), codegen


overload(fma32)(lambda a, b, c: lambda a, b, c: _fma32(a, b, c))


# -- C's expf -------------------------------------------------------------------------------------------------------
# ggml calls the C library's ``expf`` (softmax, flash attention, SiLU leftovers).  Compiled, ``np.exp`` of a float32
# is that call (LLVM's ``llvm.exp.f32``); NumPy's own float32 ``exp`` rounds differently, so without JIT the C
# function is called through ctypes.

if numba.config.DISABLE_JIT:
    _libm = ctypes.CDLL(ctypes.util.find_library("m"))
    _libm.expf.restype = ctypes.c_float
    _libm.expf.argtypes = [ctypes.c_float]

    def expf(x) -> np.float32:
        """``expf(x)`` of the C library, float32."""
        return np.float32(_libm.expf(float(x)))

else:

    def _expf(x):
        """``expf(x)`` of the C library, float32."""
        return np.exp(x)

    expf = kernel(_expf)
