"""The vocabulary, as llama.cpp loads it from a GGUF file's ``tokenizer.ggml.*`` metadata.

A GGUF vocabulary is three parallel arrays and a few scalars:

* ``tokenizer.ggml.tokens``: the token texts (SentencePiece pieces: ``▁`` stands for a space);
* ``tokenizer.ggml.scores``: one float per token; for Phi-3 (a SentencePiece **BPE** model) the score of a
  normal token is minus its merge rank (``▁t`` = -1, ``er`` = -2, ...), so a higher score merges earlier;
* ``tokenizer.ggml.token_type``: NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED or BYTE (``<0x00>`` … ``<0xFF>``);
* ``bos_token_id`` / ``eos_token_id`` / ``unknown_token_id`` / ``padding_token_id``, ``add_bos_token``,
  ``add_eos_token`` and (optionally) ``add_space_prefix``.

llama.cpp does not use the types directly.  At load time (``llama_vocab::impl::load``, ``src/llama-vocab.cpp``) it
turns each type into a set of *attributes* and then edits them by rules keyed on the token **texts** and on the
model **name**.  Those edits change how text is split around special tokens and what detokenization prints, so
:class:`Vocab` replays them in llama.cpp's order:

1. type → attribute (``:2532-2542``);
2. special ids: defaults bos 1, eos 2, unk 0 for the ``llama`` (SPM) model, overridden by the metadata when in
   range (``:1971-1980``, ``:2593-2630``); ``add_space_prefix`` true, ``add_bos`` true, ``add_eos`` false unless the
   metadata says otherwise (``:2430-2436``, ``:2636-2650``);
3. end-of-turn auto-detection by text (``<|end|>`` for Phi-3, ``:2689-2711``); control tokens whose text contains
   ``unused`` become UNUSED (``:2846-2866``);
4. **end-of-generation (EOG) set** by text: ``<|end|>``, ``<|endoftext|>``, ``</s>``, … plus eos and eot
   (``:2868-2927``).  A token put in the EOG set that is not CONTROL is **made CONTROL**: Phi-3's ``</s>`` is
   USER_DEFINED in the file and becomes USER_DEFINED|CONTROL, so it is hidden when detokenizing without
   ``special`` and is *not* matched in text when ``parse_special`` is false;
5. the special-token cache: every CONTROL, USER_DEFINED or UNKNOWN token, longest text first (``:3034-3049``);
6. **the Phi-3 rule** (``:3068-3127``): if the lower-cased ``general.name`` contains ``phi-3`` or ``phi3``, every
   token of the cache and ``</s>`` gets RSTRIP (whitespace after it is dropped), then ``<unk>``, ``<s>`` and
   ``<|endoftext|>`` lose it again.  The current converter names files ``Phi 3.5 Mini Instruct``, which does not
   match, so for those files llama.cpp keeps the ``\\n`` after ``<|user|>`` — unlike the Hugging Face tokenizer.

``whitespace="hf"`` applies the rule of step 6 whatever the name, and strips Unicode whitespace (Rust's
``char::is_whitespace``, what the ``tokenizers`` library's ``rstrip`` uses) instead of C's ASCII ``isspace``: the
behaviour of the Hugging Face hub tokenizer, whose ``tokenizer_config.json`` sets ``rstrip`` on ``</s>`` and
``<|assistant|>`` … ``<|user|>``.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

from ..errors import RefllmError

SPACE = "\u2581"  # "▁", SentencePiece's visible space


class TokenType(enum.IntEnum):
    """``tokenizer.ggml.token_type`` values (``llama_token_type``)."""

    UNDEFINED = 0
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


class Attr:
    """llama.cpp's per-token attributes (``llama_token_attr``): bit flags, the same values (plain ints)."""

    UNDEFINED = 0
    UNKNOWN = 1 << 0
    UNUSED = 1 << 1
    NORMAL = 1 << 2
    CONTROL = 1 << 3
    USER_DEFINED = 1 << 4
    BYTE = 1 << 5
    NORMALIZED = 1 << 6
    LSTRIP = 1 << 7
    RSTRIP = 1 << 8
    SINGLE_WORD = 1 << 9


_TYPE_TO_ATTR = {
    TokenType.UNKNOWN: Attr.UNKNOWN,
    TokenType.UNUSED: Attr.UNUSED,
    TokenType.NORMAL: Attr.NORMAL,
    TokenType.CONTROL: Attr.CONTROL,
    TokenType.USER_DEFINED: Attr.USER_DEFINED,
    TokenType.BYTE: Attr.BYTE,
}

#: Texts llama.cpp recognizes as end-of-turn, in the order of its list (the first present one becomes ``eot``).
EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>",
             "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>")
#: Texts llama.cpp puts in the end-of-generation set.
EOG_TEXTS = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~[",
})

#: C's ``isspace`` in the "C" locale: what llama.cpp strips next to an LSTRIP/RSTRIP token.
ASCII_WHITESPACE = frozenset(" \t\n\v\f\r")
#: Unicode White_Space (Rust ``char::is_whitespace``): what the ``tokenizers`` library strips for ``rstrip``.
UNICODE_WHITESPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000")

WHITESPACE_MODES = ("llama.cpp", "hf")


def phi3_name_rule_applies(name: str) -> bool:
    """llama.cpp's test: the ASCII-lower-cased ``general.name`` contains ``phi-3`` or ``phi3``."""
    lowered = name.encode("utf-8", "surrogateescape").lower()  # std::tolower on each byte: ASCII only
    return b"phi-3" in lowered or b"phi3" in lowered


def _meta(f, key, default=None):
    return f.get(key, default)


@dataclass
class Vocab:
    """A GGUF vocabulary with llama.cpp's load-time rules applied (see the module docstring).

    ``attrs[i]`` are token ``i``'s attributes *after* the rules; ``special_tokens`` are the ids the partitioner
    searches for, in llama.cpp's order; ``strip_whitespace`` is the set of characters RSTRIP/LSTRIP remove.
    """

    tokens: list[str]
    scores: list[float]
    types: list[int]
    attrs: list[int]  # Attr bits
    token_to_id: dict[str, int]
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    eot_id: int | None
    eom_id: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    eog_ids: frozenset[int]
    special_tokens: tuple[int, ...]
    name: str
    whitespace: str
    phi3_rstrip: bool
    strip_whitespace: frozenset[str]
    chat_template: str | None

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def from_gguf(cls, f, whitespace: str = "llama.cpp") -> "Vocab":
        """Read the vocabulary of ``f`` (a :class:`refllm.gguf.GGUFFile` or a path) and apply llama.cpp's rules."""
        if whitespace not in WHITESPACE_MODES:
            raise RefllmError(f"whitespace={whitespace!r}: choose one of {', '.join(WHITESPACE_MODES)}")
        if isinstance(f, (str, os.PathLike)):
            from .. import gguf

            with gguf.read(f) as opened:
                return cls.from_gguf(opened, whitespace)

        model = _meta(f, "tokenizer.ggml.model")
        if model != "llama":
            raise RefllmError(f"tokenizer.ggml.model = {model!r}: refllm implements the SentencePiece ('llama') "
                              "tokenizer of Phi-3 only")
        tokens = _meta(f, "tokenizer.ggml.tokens")
        if tokens is None:
            raise RefllmError("cannot find tokenizer vocab in model file (tokenizer.ggml.tokens)")
        tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]  # llama.cpp renames empty tokens
        n = len(tokens)
        scores = _meta(f, "tokenizer.ggml.scores")
        scores = [0.0] * n if scores is None else [float(s) for s in scores[:n]]
        types = _meta(f, "tokenizer.ggml.token_type")
        types = [int(TokenType.NORMAL)] * n if types is None else [int(t) for t in types[:n]]
        if len(scores) < n or len(types) < n:
            raise RefllmError("tokenizer.ggml.scores / token_type are shorter than tokenizer.ggml.tokens")
        token_to_id = {text: i for i, text in enumerate(tokens)}  # a repeated text maps to its last id, as in C++
        attrs = [_TYPE_TO_ATTR.get(t, Attr.UNDEFINED) for t in types]

        def special_id(key: str, default: int | None) -> int | None:
            if default is not None and default >= n:
                default = None
            value = _meta(f, f"tokenizer.ggml.{key}")
            if value is None or not 0 <= int(value) < n:
                return default
            return int(value)

        bos_id = special_id("bos_token_id", 1)
        eos_id = special_id("eos_token_id", 2)
        unk_id = special_id("unknown_token_id", 0)
        pad_id = special_id("padding_token_id", None)
        eot_id = special_id("eot_token_id", None)
        eom_id = special_id("eom_token_id", None)
        add_space_prefix = bool(_meta(f, "tokenizer.ggml.add_space_prefix", True))
        add_bos = bool(_meta(f, "tokenizer.ggml.add_bos_token", True))
        add_eos = bool(_meta(f, "tokenizer.ggml.add_eos_token", False))

        # End of turn / end of message, detected by text when the metadata has no id.  llama.cpp walks a hash map,
        # so with several candidates the winner is hash-order dependent; we take the first of its list, which is
        # what the reference build picks for Phi-3 (<|end|>, not <|endoftext|>).
        if eot_id is None:
            eot_id = next((token_to_id[t] for t in EOT_TEXTS if t in token_to_id), None)
        if eom_id is None:
            eom_id = token_to_id.get("<|eom_id|>")
        for tid in (eot_id, eom_id):
            if tid is not None:
                attrs[tid] |= Attr.CONTROL
        for i, text in enumerate(tokens):  # control tokens named "unused…" are unused
            if attrs[i] & Attr.CONTROL and "unused" in text:
                attrs[i] |= Attr.UNUSED

        # End-of-generation set; a member that is not CONTROL is made CONTROL (Phi-3's "</s>").
        eog = {token_to_id[t] for t in EOG_TEXTS if t in token_to_id}
        eog |= {tid for tid in (eos_id, eot_id, eom_id) if tid is not None}
        for tid in eog:
            attrs[tid] |= Attr.CONTROL

        # The tokens the partitioner looks for: longest text (in bytes) first.  llama.cpp uses std::sort, which
        # leaves equal lengths in an unspecified order; we break ties by id.  (Only overlapping tokens of equal
        # length could tell the difference; Phi-3 has none.)
        special = [i for i in range(n) if attrs[i] & (Attr.CONTROL | Attr.USER_DEFINED | Attr.UNKNOWN)]
        special.sort(key=lambda i: (-len(tokens[i].encode("utf-8", "surrogateescape")), i))

        # The Phi-3 rule: RSTRIP on the special tokens and </s>, except <unk>, <s> and <|endoftext|>.
        name = _meta(f, "general.name", "") or ""
        phi3_rstrip = whitespace == "hf" or phi3_name_rule_applies(name)
        if phi3_rstrip:
            for tid in special:
                attrs[tid] |= Attr.RSTRIP
            for text, value in (("</s>", True), ("<unk>", False), ("<s>", False), ("<|endoftext|>", False)):
                if text not in token_to_id:
                    raise RefllmError(f"the Phi-3 rule needs the token {text!r}, which the vocabulary lacks")
                if value:
                    attrs[token_to_id[text]] |= Attr.RSTRIP
                else:
                    attrs[token_to_id[text]] &= ~Attr.RSTRIP

        return cls(tokens=tokens, scores=scores, types=types, attrs=attrs, token_to_id=token_to_id, bos_id=bos_id,
                   eos_id=eos_id, unk_id=unk_id, pad_id=pad_id, eot_id=eot_id, eom_id=eom_id, add_bos=add_bos,
                   add_eos=add_eos, add_space_prefix=add_space_prefix, eog_ids=frozenset(eog),
                   special_tokens=tuple(special), name=name, whitespace=whitespace, phi3_rstrip=phi3_rstrip,
                   strip_whitespace=UNICODE_WHITESPACE if whitespace == "hf" else ASCII_WHITESPACE,
                   chat_template=_meta(f, "tokenizer.chat_template"))

    # --- lookups used by the tokenizer --------------------------------------------------------------------------

    def byte_to_token(self, byte: int) -> int:
        """The id of ``<0xXX>`` for one byte (the SPM byte fallback), else of the one-byte text, as llama.cpp does."""
        tid = self.token_to_id.get(f"<0x{byte:02X}>")
        if tid is None:
            tid = self.token_to_id.get(bytes([byte]).decode("utf-8", "surrogateescape"))
        if tid is None:
            raise RefllmError(f"the vocabulary has no byte token for 0x{byte:02X}")
        return tid

    def token_to_byte(self, tid: int) -> int:
        """The byte of a BYTE token (``<0xXX>``)."""
        return int(self.tokens[tid][3:5], 16)
