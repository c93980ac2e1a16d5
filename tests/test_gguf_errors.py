"""Malformed GGUF files: every defect ends in refllm's GGUFError naming the file, the byte offset and the field.

Targeted cases build a small valid file with every value type and a few tensors, then break one field at its real
offset.  Property tests mutate and truncate real headers at random and assert that nothing but GGUFError escapes.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refllm.errors import GGUFError
from refllm.ggml_types import GGMLType
from refllm.gguf import GGUFFile, TensorSpec, Value, ValueType, write

NAME = "sample.gguf"


def _sample_metadata() -> dict[str, Value]:
    return {
        "general.architecture": Value.string("test"),
        "t.u8": Value(ValueType.UINT8, 200),
        "t.i8": Value(ValueType.INT8, -100),
        "t.u16": Value(ValueType.UINT16, 60000),
        "t.i16": Value(ValueType.INT16, -30000),
        "t.u32": Value(ValueType.UINT32, 4_000_000_000),
        "t.i32": Value(ValueType.INT32, -2_000_000_000),
        "t.f32": Value(ValueType.FLOAT32, 1.5),
        "t.bool": Value(ValueType.BOOL, True),
        "t.u64": Value(ValueType.UINT64, 2**64 - 1),
        "t.i64": Value(ValueType.INT64, -(2**63)),
        "t.f64": Value(ValueType.FLOAT64, -2.25),
        "t.strs": Value.array(ValueType.STRING, ["a", "", "ü€", "last"]),
        "t.ints": Value.array(ValueType.INT32, [1, -2, 3]),
        "t.nested": Value.array(ValueType.ARRAY, [Value.array(ValueType.UINT8, [1, 2]),
                                                  Value.array(ValueType.STRING, ["x"])]),
    }


def _sample_tensors():
    rng = np.random.default_rng(0)
    return [
        TensorSpec("a.weight", GGMLType.F32, (8, 3), rng.standard_normal((3, 8)).astype(np.float32)),
        TensorSpec("b.weight", GGMLType.Q8_0, (64, 2), rng.integers(0, 256, (2, 68), dtype=np.uint8)),
        TensorSpec("c.bias", GGMLType.F16, (5,), rng.standard_normal(5).astype(np.float16)),
    ]


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> bytes:
    path = write(tmp_path_factory.mktemp("gguf") / NAME, _sample_metadata(), _sample_tensors())
    return path.read_bytes()


def _open(buf) -> GGUFFile:
    return GGUFFile(NAME, buffer=buf)


def _patch(buf: bytes, offset: int, fmt: str, value) -> bytes:
    b = bytearray(buf)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def _expect(buf, field_part: str, message_part: str, offset: int | None = None) -> GGUFError:
    with pytest.raises(GGUFError) as info:
        _open(buf)
    e = info.value
    assert field_part in e.field, str(e)
    assert message_part in e.reason, str(e)
    assert str(e).startswith(f"{NAME}: byte "), str(e)
    if offset is not None:
        assert e.offset == offset, str(e)
    return e


def test_sample_is_valid(sample):
    f = _open(sample)
    assert f.get("t.nested") == [[1, 2], ["x"]]
    assert f.metadata["t.u64"].data == 2**64 - 1 and f.metadata["t.i64"].data == -(2**63)
    assert [t.name for t in f.tensors] == ["a.weight", "b.weight", "c.bias"]


def test_empty_and_missing_file(tmp_path):
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(GGUFError, match="empty"):
        GGUFFile(tmp_path / "empty.gguf")
    with pytest.raises(GGUFError, match="No such file"):
        GGUFFile(tmp_path / "missing.gguf")


def test_bad_magic(sample):
    _expect(b"GGML" + sample[4:], "header.magic", "not a GGUF file", 0)


def test_version_1_and_future_versions(sample):
    _expect(_patch(sample, 4, "<I", 1), "header.version", "version 1 is not supported", 4)
    _expect(_patch(sample, 4, "<I", 4), "header.version", "unsupported GGUF version 4", 4)


def test_big_endian(sample):
    _expect(_patch(sample, 4, ">I", 3), "header.version", "big-endian", 4)


def test_every_truncation(sample):
    f = _open(sample)
    end_of_data = f.data_offset + max(t.offset + t.n_bytes for t in f.tensors)
    for n in range(end_of_data):  # only the zero padding after the last tensor may go
        with pytest.raises(GGUFError):
            _open(sample[:n])
    _open(sample[:end_of_data])


def test_absurd_counts(sample):
    _expect(_patch(sample, 16, "<Q", 2**62), "header.n_kv", "cannot fit", 16)
    _expect(_patch(sample, 8, "<Q", 2**62), "header.n_tensors", "cannot fit", 8)


def test_absurd_string_length(sample):
    first_key = 24
    _expect(_patch(sample, first_key, "<Q", 2**64 - 1), "kv[0].key length", "longer than the rest of the file",
            first_key)


def _kv(sample, key):
    return _open(sample).metadata[key].offset


def test_absurd_array_count(sample):
    at = _kv(sample, "t.ints") + 8 + len("t.ints") + 4 + 4
    _expect(_patch(sample, at, "<Q", 2**61), "array count", "remain", at)
    at = _kv(sample, "t.strs") + 8 + len("t.strs") + 4 + 4
    _expect(_patch(sample, at, "<Q", 2**61), "array count", "remain", at)


def test_string_in_array_runs_past_end(sample):
    at = _kv(sample, "t.strs") + 8 + len("t.strs") + 4 + 4 + 8  # length of the first string
    _expect(_patch(sample, at, "<Q", 2**40), "[0] length", "past the end", at)


def test_unknown_value_type(sample):
    at = _kv(sample, "t.u8") + 8 + len("t.u8")
    _expect(_patch(sample, at, "<I", 13), "type", "unknown GGUF value type 13", at)


def test_duplicate_key(sample):
    at = _kv(sample, "t.i8") + 8
    b = bytearray(sample)
    b[at:at + 4] = b"t.u8"
    _expect(bytes(b), "key", "duplicate key 't.u8'", at - 8)


def test_nesting_too_deep():
    value = Value.array(ValueType.UINT8, [1])
    for _ in range(20):
        value = Value.array(ValueType.ARRAY, [value])
    from refllm.gguf.writer import header_bytes

    header, _ = header_bytes({"deep": value}, [], 32)
    _expect(header, "array type", "nested deeper")


def _info(sample, name):
    return _open(sample).tensor(name).info_offset


def _tensor_fields(sample, name):
    """Offsets of n_dims, ne[0], type and offset of a tensor's info record."""
    f = _open(sample)
    t = f.tensor(name)
    n_dims_at = t.info_offset + 8 + len(name)
    ne_at = n_dims_at + 4
    type_at = ne_at + 8 * len(t.shape)
    return n_dims_at, ne_at, type_at, type_at + 4


def test_unknown_tensor_type(sample):
    _, _, type_at, _ = _tensor_fields(sample, "b.weight")
    _expect(_patch(sample, type_at, "<I", 4), "type", "unknown ggml type 4", type_at)
    _expect(_patch(sample, type_at, "<I", 99), "type", "unknown ggml type 99", type_at)


def test_too_many_dims(sample):
    n_dims_at, _, _, _ = _tensor_fields(sample, "a.weight")
    _expect(_patch(sample, n_dims_at, "<I", 5), "n_dims", "at most 4", n_dims_at)


def test_dimension_overflow(sample):
    _, ne_at, _, _ = _tensor_fields(sample, "a.weight")
    b = _patch(_patch(sample, ne_at, "<Q", 2**32), ne_at + 8, "<Q", 2**32)
    _expect(b, "ne[1]", "overflows int64", ne_at + 8)
    _expect(_patch(sample, ne_at, "<Q", 2**63), "ne[0]", "negative", ne_at)


def test_row_not_a_multiple_of_the_block(sample):
    _, ne_at, _, _ = _tensor_fields(sample, "b.weight")
    _expect(_patch(sample, ne_at, "<Q", 48), "ne[0]", "not a multiple of the Q8_0 block size 32")


def test_offset_out_of_range_misaligned_and_overlapping(sample):
    _, _, _, off_at = _tensor_fields(sample, "c.bias")
    info = _info(sample, "c.bias")
    _expect(_patch(sample, off_at, "<Q", 2**40), "offset", "outside the data section", info)
    _expect(_patch(sample, off_at, "<Q", 33), "offset", "not a multiple of the alignment 32", info)
    _expect(_patch(sample, off_at, "<Q", 0), "offset", "overlaps", info)


def test_duplicate_tensor_name(sample):
    info = _info(sample, "b.weight")
    b = bytearray(sample)
    b[info + 8:info + 16] = b"a.weight"
    _expect(bytes(b), "name", "duplicate tensor name 'a.weight'", info)


def test_tensor_name_too_long():
    from refllm.gguf.writer import header_bytes

    header, _ = header_bytes({}, [TensorSpec("x" * 64, GGMLType.F32, (1,), None)], 32)
    _expect(header + bytes(64), "name", "longer than 63 bytes")


def test_alignment_must_be_a_uint32_power_of_two():
    from refllm.gguf.writer import header_bytes

    for value, message in ((Value.uint32(24), "not a power of 2"), (Value.uint32(0), "not a power of 2"),
                           (Value(ValueType.UINT64, 32), "must be UINT32")):
        header, _ = header_bytes({"general.alignment": value}, [], 32)
        _expect(header, "general.alignment", message)


def test_cli_prints_one_line_and_exits_1(tmp_path, capsys):
    from refllm.cli.main import main

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 2**60))
    assert main(["inspect", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.gguf: byte 16: header.n_kv" in err


# -- property tests: random damage to real headers ------------------------------------------------------------------

INTERESTING = [0, 1, 2, 3, 4, 5, 8, 9, 12, 13, 31, 32, 33, 63, 64, 255, 256, 2**16, 2**31 - 1, 2**31, 2**32 - 1,
               2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1]


def _structural_offsets(f: GGUFFile) -> list[int]:
    """Byte offsets where the header's structure lives: counts, lengths, type tags, tensor info fields."""
    offsets = [4, 8, 16]
    for key, v in f.metadata.items():
        offsets += [v.offset, v.offset + 8 + len(key.encode())]
        if v.type == ValueType.ARRAY:
            offsets += [v.offset + 8 + len(key.encode()) + 4, v.offset + 8 + len(key.encode()) + 8]
    for t in f.tensors:
        at = t.info_offset + 8 + len(t.name.encode())
        offsets += [t.info_offset, at, at + 4, at + 4 + 8 * len(t.shape), at + 8 + 8 * len(t.shape)]
    return offsets


class Damage:
    """A buffer that is damaged in place and repaired after each example (the real files are large)."""

    def __init__(self, data: bytes):
        self.buf = bytearray(data)
        self.f = GGUFFile(NAME, buffer=bytes(self.buf))
        self.targets = _structural_offsets(self.f)

    def check(self, patches, truncate):
        saved = [(at, bytes(self.buf[at:at + len(raw)])) for at, raw in patches]
        try:
            for at, raw in patches:
                self.buf[at:at + len(raw)] = raw[: len(self.buf) - at]
            view = memoryview(self.buf)[: truncate if truncate is not None else len(self.buf)]
            try:
                GGUFFile(NAME, buffer=view).close()
            except GGUFError as e:
                assert str(e).startswith(f"{NAME}: ")
            view.release()
        finally:
            for at, raw in saved:
                self.buf[at:at + len(raw)] = raw


@st.composite
def damage(draw, target: Damage):
    patches = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            at = draw(st.sampled_from(target.targets)) + draw(st.integers(0, 8))
        else:
            at = draw(st.integers(0, min(len(target.buf), target.f.data_offset + 64) - 1))
        at = min(at, len(target.buf) - 1)
        kind = draw(st.sampled_from(["int", "byte", "bytes"]))
        if kind == "int":
            size = draw(st.sampled_from([1, 2, 4, 8]))
            raw = (draw(st.sampled_from(INTERESTING)) % 2 ** (8 * size)).to_bytes(size, "little")
        elif kind == "byte":
            raw = bytes([target.buf[at] ^ (1 << draw(st.integers(0, 7)))])
        else:
            raw = draw(st.binary(min_size=1, max_size=16))
        patches.append((at, raw))
    truncate = draw(st.one_of(st.none(), st.integers(0, len(target.buf))))
    return patches, truncate


@pytest.fixture(scope="module")
def damaged_phi3(vocab_paths):
    return Damage(next(p for p in vocab_paths if p.name == "ggml-vocab-phi-3.gguf").read_bytes())


@pytest.fixture(scope="module")
def damaged_gemma3(gemma3_path):
    return Damage(gemma3_path.read_bytes())


@pytest.fixture(scope="module")
def damaged_sample(sample):
    return Damage(sample)


@settings(max_examples=3000)
@given(data=st.data())
def test_random_damage_to_a_small_file(damaged_sample, data):
    damaged_sample.check(*data.draw(damage(damaged_sample)))


@settings(max_examples=1500)
@given(data=st.data())
def test_random_damage_to_the_phi3_vocab(damaged_phi3, data):
    damaged_phi3.check(*data.draw(damage(damaged_phi3)))


@settings(max_examples=1500)
@given(data=st.data())
def test_random_damage_to_the_gemma3_model(damaged_gemma3, data):
    damaged_gemma3.check(*data.draw(damage(damaged_gemma3)))
