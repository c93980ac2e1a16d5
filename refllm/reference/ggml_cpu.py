"""ggml's CPU dot products and activation converters, called through ctypes on the reference build's
``libggml-cpu.so``: what :mod:`refllm.model.ggml_kernels` is compared with.

* :func:`from_float` — ``type_traits_cpu[type].from_float`` (the x86 build's activation quantizers);
* :func:`vec_dot` — ``type_traits_cpu[type].vec_dot`` (the SIMD dot product the build runs), or with
  ``generic=True`` the portable ``ggml_vec_dot_<w>_<a>_generic`` of ggml-cpu/quants.c (exported by the library);
* :func:`swiglu`, :func:`soft_max` — ``ggml_vec_swiglu_f32``, ``ggml_vec_soft_max_f32`` (the SIMD exponential);
* :func:`features` — the SIMD extensions the build was compiled with.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from ..ggml_types import GGMLType, ggml_type, row_bytes
from .build import ensure_reference

_from_float_t = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
_vec_dot_t = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                              ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


class _TypeTraitsCpu(ctypes.Structure):
    """``struct ggml_type_traits_cpu`` (ggml-cpu.h)."""

    _fields_ = [
        ("from_float", ctypes.c_void_p),
        ("vec_dot", ctypes.c_void_p),
        ("vec_dot_type", ctypes.c_int),
        ("nrows", ctypes.c_int64),
    ]


@functools.cache
def library() -> ctypes.CDLL:
    """``libggml-cpu.so`` of the reference build (built on first use)."""
    lib = ctypes.CDLL(str(ensure_reference().bin_dir / "libggml-cpu.so"))
    lib.ggml_get_type_traits_cpu.restype = ctypes.POINTER(_TypeTraitsCpu)
    lib.ggml_get_type_traits_cpu.argtypes = [ctypes.c_int]
    lib.ggml_cpu_init.restype = None
    lib.ggml_cpu_init()
    return lib


def vec_dot_type(qtype) -> GGMLType:
    return GGMLType(library().ggml_get_type_traits_cpu(int(ggml_type(qtype))).contents.vec_dot_type)


def from_float(x: np.ndarray, vtype) -> np.ndarray:
    """The bytes ``from_float`` of ``vtype`` makes of the float32 row ``x``."""
    vtype = ggml_type(vtype)
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    out = np.zeros(row_bytes(vtype, x.size), np.uint8)
    fn = _from_float_t(library().ggml_get_type_traits_cpu(int(vtype)).contents.from_float)
    fn(x.ctypes.data, out.ctypes.data, x.size)
    return out


def vec_dot(qtype, w: np.ndarray, a: np.ndarray, n: int, *, generic: bool = False) -> np.float32:
    """``ggml_vec_dot`` of weight-row bytes ``w`` (type ``qtype``, ``n`` elements) and activation-row bytes ``a``."""
    qtype = ggml_type(qtype)
    lib = library()
    if generic:
        names = {GGMLType.Q8_0: "q8_0_q8_0", GGMLType.Q4_0: "q4_0_q8_0", GGMLType.Q4_1: "q4_1_q8_1",
                 GGMLType.Q5_0: "q5_0_q8_0", GGMLType.Q5_1: "q5_1_q8_1", GGMLType.Q2_K: "q2_K_q8_K",
                 GGMLType.Q3_K: "q3_K_q8_K", GGMLType.Q4_K: "q4_K_q8_K", GGMLType.Q5_K: "q5_K_q8_K",
                 GGMLType.Q6_K: "q6_K_q8_K"}
        fn = _vec_dot_t(ctypes.cast(getattr(lib, f"ggml_vec_dot_{names[qtype]}_generic"), ctypes.c_void_p).value)
    else:
        fn = _vec_dot_t(lib.ggml_get_type_traits_cpu(int(qtype)).contents.vec_dot)
    w = np.ascontiguousarray(w, dtype=np.uint8)
    a = np.ascontiguousarray(a, dtype=np.uint8)
    s = np.zeros(1, np.float32)
    fn(n, s.ctypes.data, 0, w.ctypes.data, 0, a.ctypes.data, 0, 1)
    return s[0]


def swiglu(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``ggml_vec_swiglu_f32``: ``silu(x) · g`` as the build computes it (its SIMD ``ggml_v_silu``)."""
    fn = library().ggml_vec_swiglu_f32
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    fn.restype = None
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    g = np.ascontiguousarray(g, dtype=np.float32).reshape(-1)
    y = np.empty_like(x)
    fn(x.size, y.ctypes.data, x.ctypes.data, g.ctypes.data)
    return y


def soft_max(x: np.ndarray, max_value: float) -> tuple[np.ndarray, float]:
    """``ggml_vec_soft_max_f32``: ``y = exp(x − max)`` (the build's SIMD ``ggml_v_expf``) and their float64 sum."""
    fn = library().ggml_vec_soft_max_f32
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float]
    fn.restype = ctypes.c_double
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    y = np.empty_like(x)
    total = fn(x.size, y.ctypes.data, x.ctypes.data, max_value)
    return y, total


# the extensions of the build whose arithmetic refllm's ``ggml`` mode reproduces bit for bit (docs/phi3.md)
GGML_MODE_FEATURES = frozenset({"avx512", "avx512_vnni", "avx512_bf16"})


def is_ggml_mode_build() -> bool:
    """Whether this reference build takes the AVX512 code paths the ``ggml`` mode follows (then its logits are
    llama.cpp's bit for bit; on other builds they agree to float rounding)."""
    return GGML_MODE_FEATURES <= features()


def features() -> set[str]:
    """The x86 SIMD extensions the build was compiled with (``ggml_cpu_has_<name>``): refllm's ``ggml`` mode follows
    an AVX512 build (``avx512``, ``avx512_vnni``, ``avx512_bf16``; with ``-march=native`` on a CPU that has them)."""
    lib = library()
    names = ("avx", "avx2", "fma", "f16c", "avx512", "avx512_vnni", "avx512_bf16", "avx512_vbmi", "avx_vnni")
    found = set()
    for name in names:
        fn = getattr(lib, f"ggml_cpu_has_{name}")
        fn.restype = ctypes.c_int
        if fn():
            found.add(name)
    return found
