"""``tokenizer.model``: a SentencePiece model, i.e. one serialized protobuf ``ModelProto``, read and written by hand.

Only the handful of protobuf rules the file uses are needed, so refllm does without the ``protobuf`` and
``sentencepiece`` packages.  A protobuf message is a sequence of fields; each field starts with a varint *key*
``field_number << 3 | wire_type`` and then holds:

==========  ===========================  ==========================================================
wire type   encoding                     used here for
==========  ===========================  ==========================================================
0 varint    7 bits per byte, low first,  int32 / uint64 / bool / enum (negative int32: 10 bytes,
            high bit = "more bytes"      two's complement of 64 bits)
1 64-bit    8 bytes little-endian        (double; not used by ModelProto, skipped when read)
2 length    varint length, then bytes    string, bytes, embedded message, packed repeated
5 32-bit    4 bytes little-endian        float
==========  ===========================  ==========================================================

The parts of ``sentencepiece_model.proto`` that matter for a LLaMA/Phi-3 tokenizer::

    message ModelProto {
      message SentencePiece {
        optional string piece = 1;
        optional float  score = 2;
        optional Type   type  = 3 [default = NORMAL];  // NORMAL=1 UNKNOWN=2 CONTROL=3 USER_DEFINED=4 UNUSED=5 BYTE=6
      }
      repeated SentencePiece pieces = 1;       // the vocabulary: piece i has token id i
      optional TrainerSpec trainer_spec = 2;   // model_type (1 UNIGRAM, 2 BPE), unk/bos/eos ids, ...
      optional NormalizerSpec normalizer_spec = 3;   // add_dummy_prefix, remove_extra_whitespaces, ...
    }

For a BPE model the *score* of a piece is its merge priority (higher merges first): in the LLaMA vocabulary that
Phi-3 reuses, piece 260 ``▁t`` has score -1, piece 261 ``er`` -2, ... and the odd piece 259 ``▁▁`` has -1e9.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

from ..errors import RefllmError


class PieceType(IntEnum):
    """``ModelProto.SentencePiece.Type`` — the same numbers as GGUF's ``tokenizer.ggml.token_type``."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


@dataclass
class Piece:
    piece: str
    score: float = 0.0
    type: PieceType = PieceType.NORMAL


@dataclass
class SentencePieceModel:
    """The decoded fields refllm uses.  ``trainer_spec`` / ``normalizer_spec`` map field names to values; a field
    that is absent from the file is absent from the dict (protobuf defaults apply)."""

    pieces: list[Piece]
    trainer_spec: dict = field(default_factory=dict)
    normalizer_spec: dict = field(default_factory=dict)


# (field number, name, kind) of the TrainerSpec / NormalizerSpec fields refllm writes or reads, in field-number
# order as protoc serializes them.  kind: "str", "bytes", "int" (varint), "float" (32-bit), "bool", "strs" (repeated).
TRAINER_SPEC_FIELDS = [
    (1, "input", "strs"), (2, "model_prefix", "str"), (3, "model_type", "int"), (4, "vocab_size", "int"),
    (6, "self_test_sample_size", "int"), (7, "input_format", "str"), (10, "character_coverage", "float"),
    (11, "input_sentence_size", "int"), (14, "seed_sentencepiece_size", "int"), (15, "shrinking_factor", "float"),
    (16, "num_threads", "int"), (17, "num_sub_iterations", "int"), (18, "max_sentence_length", "int"),
    (19, "shuffle_input_sentence", "bool"), (20, "max_sentencepiece_length", "int"),
    (21, "split_by_unicode_script", "bool"), (22, "split_by_whitespace", "bool"), (23, "split_by_number", "bool"),
    (24, "treat_whitespace_as_suffix", "bool"), (25, "split_digits", "bool"),
    (26, "allow_whitespace_only_pieces", "bool"), (30, "control_symbols", "strs"),
    (31, "user_defined_symbols", "strs"), (32, "vocabulary_output_piece_score", "bool"),
    (33, "hard_vocab_limit", "bool"), (34, "use_all_vocab", "bool"), (35, "byte_fallback", "bool"),
    (36, "required_chars", "str"), (40, "unk_id", "int"), (41, "bos_id", "int"), (42, "eos_id", "int"),
    (43, "pad_id", "int"), (44, "unk_surface", "str"), (45, "unk_piece", "str"), (46, "bos_piece", "str"),
    (47, "eos_piece", "str"), (48, "pad_piece", "str"), (49, "train_extremely_large_corpus", "bool"),
    (50, "enable_differential_privacy", "bool"), (51, "differential_privacy_noise_level", "float"),
    (52, "differential_privacy_clipping_threshold", "int"),
]
NORMALIZER_SPEC_FIELDS = [
    (1, "name", "str"), (2, "precompiled_charsmap", "bytes"), (3, "add_dummy_prefix", "bool"),
    (4, "remove_extra_whitespaces", "bool"), (5, "escape_whitespaces", "bool"), (6, "normalization_rule_tsv", "str"),
]

# ---------------------------------------------------------------------------------------------------------------------
# Encoding


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative numbers: 64-bit two's complement, 10 bytes
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


def _encode_fields(values: dict, fields: list[tuple[int, str, str]]) -> bytes:
    out = bytearray()
    for number, name, kind in fields:
        if name not in values:
            continue
        v = values[name]
        if kind == "str":
            out += _length_delimited(number, v.encode("utf-8"))
        elif kind == "bytes":
            out += _length_delimited(number, bytes(v))
        elif kind == "strs":
            for s in v:
                out += _length_delimited(number, s.encode("utf-8"))
        elif kind == "float":
            out += _key(number, 5) + struct.pack("<f", v)
        else:  # int, bool, enum
            out += _key(number, 0) + _varint(int(v))
    return bytes(out)


def encode(model: SentencePieceModel) -> bytes:
    """Serialize ``model`` as protoc does: pieces (field 1), then trainer_spec (2), then normalizer_spec (3).
    A piece's type is written only when it is not NORMAL (the default)."""
    out = bytearray()
    for p in model.pieces:
        body = _length_delimited(1, p.piece.encode("utf-8")) + _key(2, 5) + struct.pack("<f", p.score)
        if p.type != PieceType.NORMAL:
            body += _key(3, 0) + _varint(int(p.type))
        out += _length_delimited(1, body)
    out += _length_delimited(2, _encode_fields(model.trainer_spec, TRAINER_SPEC_FIELDS))
    out += _length_delimited(3, _encode_fields(model.normalizer_spec, NORMALIZER_SPEC_FIELDS))
    return bytes(out)


# ---------------------------------------------------------------------------------------------------------------------
# Decoding


class _Reader:
    def __init__(self, data: bytes, where: str):
        self.data, self.pos, self.where = data, 0, where

    def fail(self, message: str):
        raise RefllmError(f"{self.where}: byte {self.pos}: {message}")

    def varint(self) -> int:
        n = shift = 0
        while True:
            if self.pos >= len(self.data):
                self.fail("truncated varint")
            byte = self.data[self.pos]
            self.pos += 1
            n |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return n
            shift += 7
            if shift > 63:
                self.fail("varint longer than 10 bytes")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            self.fail(f"field of {n} bytes runs past the end")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def fields(self):
        """Yield ``(field_number, wire_type, value)``; value is an int (varint), bytes (length-delimited) or raw
        bytes of a fixed-size field."""
        while self.pos < len(self.data):
            key = self.varint()
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                yield number, wire_type, self.varint()
            elif wire_type == 1:
                yield number, wire_type, self.take(8)
            elif wire_type == 2:
                yield number, wire_type, self.take(self.varint())
            elif wire_type == 5:
                yield number, wire_type, self.take(4)
            else:
                self.fail(f"unsupported protobuf wire type {wire_type} (field {number})")


def _signed(n: int) -> int:
    """A varint read as int32/int64 (two's complement)."""
    return n - (1 << 64) if n >= 1 << 63 else n


def _decode_fields(data: bytes, fields: list[tuple[int, str, str]], where: str) -> dict:
    by_number = {number: (name, kind) for number, name, kind in fields}
    out: dict = {}
    for number, _, value in _Reader(data, where).fields():
        if number not in by_number:
            continue
        name, kind = by_number[number]
        if kind == "str":
            out[name] = value.decode("utf-8")
        elif kind == "bytes":
            out[name] = value
        elif kind == "strs":
            out.setdefault(name, []).append(value.decode("utf-8"))
        elif kind == "float":
            out[name] = struct.unpack("<f", value)[0]
        elif kind == "bool":
            out[name] = bool(value)
        else:
            out[name] = _signed(value)
    return out


def _decode_piece(body: bytes, index: int, where: str) -> Piece:
    """One ``SentencePiece`` message.  Its three fields have one-byte keys (0x0A piece, 0x15 score, 0x18 type);
    the loop is written out because a vocabulary has tens of thousands of pieces."""
    piece, score, ptype = b"", 0.0, 1
    i, n = 0, len(body)
    while i < n:
        key = body[i]
        i += 1
        if key == 0x0A or key & 7 == 2:  # a length-delimited field: piece (or an unknown one, skipped)
            length = shift = 0
            while True:
                byte = body[i]
                i += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    break
            if key == 0x0A:
                piece = body[i : i + length]
            i += length
        elif key == 0x15:
            (score,) = struct.unpack_from("<f", body, i)
            i += 4
        elif key & 7 == 0:  # a varint: type (0x18) or an unknown field
            value = shift = 0
            while True:
                byte = body[i]
                i += 1
                value |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    break
            if key == 0x18:
                ptype = value
        elif key & 7 == 5:
            i += 4
        elif key & 7 == 1:
            i += 8
        else:
            raise RefllmError(f"{where}: pieces[{index}]: unsupported protobuf key {key:#x}")
    if i != n:
        raise RefllmError(f"{where}: pieces[{index}]: truncated")
    try:
        return Piece(piece.decode("utf-8"), score, PieceType(ptype))
    except UnicodeDecodeError:
        raise RefllmError(f"{where}: pieces[{index}] is not UTF-8") from None
    except ValueError:
        raise RefllmError(f"{where}: pieces[{index}] has unknown type {ptype}") from None


def decode(data: bytes, where: str = "tokenizer.model") -> SentencePieceModel:
    """Parse a serialized ``ModelProto``; ``where`` names the file in error messages."""
    pieces: list[Piece] = []
    model = SentencePieceModel(pieces)
    try:
        for number, wire_type, value in _Reader(data, where).fields():
            if number == 1 and wire_type == 2:
                pieces.append(_decode_piece(value, len(pieces), where))
            elif number == 2 and wire_type == 2:
                model.trainer_spec = _decode_fields(value, TRAINER_SPEC_FIELDS, f"{where}: trainer_spec")
            elif number == 3 and wire_type == 2:
                model.normalizer_spec = _decode_fields(value, NORMALIZER_SPEC_FIELDS, f"{where}: normalizer_spec")
    except IndexError:
        raise RefllmError(f"{where}: truncated protobuf") from None
    if not pieces:
        raise RefllmError(f"{where}: not a SentencePiece model (no pieces)")
    return model


def load(path: str | Path) -> SentencePieceModel:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RefllmError(f"{path}: file not found") from None
    return decode(data, str(path))
