"""The GGUF writer: every value type, streamed tensors, alignment, atomic writes, and agreement with gguf-py."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gguf as gguf_py
from refllm.errors import RefllmError
from refllm.ggml_types import GGMLType
from refllm.gguf import TensorSpec, Value, ValueType, read, write


def _metadata():
    return {
        "general.architecture": Value.string("test"),
        "u8": Value(ValueType.UINT8, 7), "i8": Value(ValueType.INT8, -7),
        "u16": Value(ValueType.UINT16, 700), "i16": Value(ValueType.INT16, -700),
        "u32": Value(ValueType.UINT32, 70000), "i32": Value(ValueType.INT32, -70000),
        "f32": Value.float32(0.1), "bool": Value.bool(False),
        "u64": Value(ValueType.UINT64, 2**40), "i64": Value(ValueType.INT64, -(2**40)),
        "f64": Value(ValueType.FLOAT64, 0.1),
        "str": Value.string("héllo\nworld"),
        "floats": Value.array(ValueType.FLOAT32, [1.0, -0.5, np.inf]),
        "strs": Value.array(ValueType.STRING, ["a", "bc", ""]),
        "bools": Value.array(ValueType.BOOL, [True, False]),
        "nested": Value.array(ValueType.ARRAY, [Value.array(ValueType.INT16, [1, 2]),
                                                Value.array(ValueType.ARRAY, [Value.array(ValueType.STRING, ["z"])])]),
    }


def _tensors():
    rng = np.random.default_rng(1)
    return [
        TensorSpec("w", GGMLType.F32, (4, 3), rng.standard_normal((3, 4)).astype(np.float32)),
        TensorSpec("q", GGMLType.Q4_K, (256, 2), rng.integers(0, 256, (2, 144), dtype=np.uint8)),
        TensorSpec("h", GGMLType.F16, (3,), np.ones(3, np.float16)),
    ]


def test_roundtrip_every_value_type(tmp_path):
    path = write(tmp_path / "t.gguf", _metadata(), _tensors())
    with read(path) as f:
        assert f.metadata == _metadata()
        assert f.get("nested") == [[1, 2], [["z"]]]
        for spec, t in zip(_tensors(), f.tensors):
            assert (t.name, t.type, t.shape) == (spec.name, spec.type, spec.shape)
            assert t.raw.tobytes() == np.ascontiguousarray(spec.data).tobytes()
            assert t.offset % 32 == 0


def test_matches_gguf_py_writer_byte_for_byte(tmp_path):
    theirs = tmp_path / "gguf_py.gguf"
    w = gguf_py.GGUFWriter(theirs, arch="test")
    w.add_uint32("u32", 70000)
    w.add_int32("i32", -70000)
    w.add_float32("f32", 0.1)
    w.add_bool("bool", True)
    w.add_string("str", "héllo")
    w.add_array("strs", ["a", "bc", ""])
    w.add_array("ints", [1, 2, 3])
    w.add_array("nested", [[1, 2], [3]])
    tensors = _tensors()
    for t in tensors:
        raw_dtype = None if t.type in (GGMLType.F32, GGMLType.F16) else gguf_py.GGMLQuantizationType(int(t.type))
        w.add_tensor(t.name, t.data, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    metadata = {
        "general.architecture": Value.string("test"),
        "u32": Value.uint32(70000), "i32": Value.int32(-70000), "f32": Value.float32(0.1), "bool": Value.bool(True),
        "str": Value.string("héllo"), "strs": Value.array(ValueType.STRING, ["a", "bc", ""]),
        "ints": Value.array(ValueType.INT32, [1, 2, 3]),
        "nested": Value.array(ValueType.ARRAY, [Value.array(ValueType.INT32, [1, 2]),
                                                Value.array(ValueType.INT32, [3])]),
    }
    ours = write(tmp_path / "refllm.gguf", metadata, tensors)
    assert ours.read_bytes() == theirs.read_bytes()


def test_alignment_from_metadata(tmp_path):
    meta = {"general.alignment": Value.uint32(64)}
    path = write(tmp_path / "a.gguf", meta, _tensors())
    with read(path) as f:
        assert f.alignment == 64 and f.data_offset % 64 == 0
        assert all(t.offset % 64 == 0 for t in f.tensors)
    with pytest.raises(RefllmError, match="power of 2"):
        write(tmp_path / "b.gguf", {"general.alignment": Value.uint32(48)}, [])


def test_tensors_are_streamed_one_at_a_time(tmp_path):
    calls = []

    def make(i):
        def produce():
            calls.append(i)
            return np.full((2, 8), i, np.float32)
        return produce

    specs = [TensorSpec(f"t{i}", GGMLType.F32, (8, 2), make(i)) for i in range(4)]
    done = []
    write(tmp_path / "s.gguf", {}, specs, on_tensor=lambda i, t: done.append((i, list(calls))))
    assert done == [(0, [0]), (1, [0, 1]), (2, [0, 1, 2]), (3, [0, 1, 2, 3])]
    with read(tmp_path / "s.gguf") as f:
        assert [float(t.data[0, 0]) for t in f.tensors] == [0, 1, 2, 3]


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_interrupted_write_leaves_no_partial_file(tmp_path, exc):
    target = tmp_path / "model.gguf"

    def boom():
        raise exc

    specs = [TensorSpec("a", GGMLType.F32, (4,), np.zeros(4, np.float32)), TensorSpec("b", GGMLType.F32, (4,), boom)]
    with pytest.raises(type(exc)):
        write(target, {}, specs)
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"previous contents")
    with pytest.raises(type(exc)):
        write(target, {}, specs)
    assert list(tmp_path.iterdir()) == [target] and target.read_bytes() == b"previous contents"


def test_written_file_has_the_umasks_permissions(tmp_path):
    """The temporary file is private while it is written; the result is readable as open() would make it."""
    old = os.umask(0o022)
    try:
        write(tmp_path / "m.gguf", {})
    finally:
        os.umask(old)
    assert (tmp_path / "m.gguf").stat().st_mode & 0o777 == 0o644


def test_wrong_data_size_is_a_clear_error(tmp_path):
    with pytest.raises(RefllmError, match="'a': data has 12 bytes, but F32 \\[4\\] needs 16"):
        write(tmp_path / "x.gguf", {}, [TensorSpec("a", GGMLType.F32, (4,), np.zeros(3, np.float32))])
    with pytest.raises(RefllmError, match="not a multiple|does not fit"):
        write(tmp_path / "x.gguf", {}, [TensorSpec("a", GGMLType.Q4_0, (16,), np.zeros(9, np.uint8))])
    with pytest.raises(RefllmError, match="duplicate tensor name"):
        write(tmp_path / "x.gguf", {}, [TensorSpec("a", GGMLType.F32, (1,), np.zeros(1, np.float32))] * 2)
    assert list(tmp_path.iterdir()) == []


_scalars = {
    ValueType.UINT8: st.integers(0, 2**8 - 1), ValueType.INT8: st.integers(-(2**7), 2**7 - 1),
    ValueType.UINT16: st.integers(0, 2**16 - 1), ValueType.INT16: st.integers(-(2**15), 2**15 - 1),
    ValueType.UINT32: st.integers(0, 2**32 - 1), ValueType.INT32: st.integers(-(2**31), 2**31 - 1),
    ValueType.UINT64: st.integers(0, 2**64 - 1), ValueType.INT64: st.integers(-(2**63), 2**63 - 1),
    ValueType.FLOAT32: st.floats(width=32, allow_nan=False), ValueType.FLOAT64: st.floats(allow_nan=False),
    ValueType.BOOL: st.booleans(), ValueType.STRING: st.text(max_size=20),
}
_values = st.sampled_from(list(_scalars)).flatmap(lambda t: _scalars[t].map(lambda v: Value(t, v)))
_arrays = st.sampled_from(list(_scalars)).flatmap(
    lambda t: st.lists(_scalars[t], max_size=8).map(lambda vs: Value.array(t, vs)))


@settings(max_examples=200)
@given(meta=st.dictionaries(st.text(min_size=1, max_size=12), st.one_of(_values, _arrays), max_size=8))
def test_any_metadata_roundtrips(tmp_path_factory, meta):
    path = write(tmp_path_factory.mktemp("m") / "m.gguf", meta)
    with read(path) as f:
        assert f.metadata == meta
        again = write(path.with_name("n.gguf"), f.metadata, version=f.version)
    assert again.read_bytes() == path.read_bytes()
