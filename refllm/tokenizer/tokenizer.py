"""Text ↔ token ids for Phi-3, identical to llama.cpp (``llama_tokenize`` / ``llama_detokenize``).

Encoding (``llama_vocab::impl::tokenize``, ``src/llama-vocab.cpp:3418-3490``) has three stages:

1. **Special-token partition** (``tokenizer_st_partition``, ``:3255-3370``).  The text is cut around every
   occurrence of a special token (CONTROL, USER_DEFINED or UNKNOWN), trying the tokens longest first.  With
   ``parse_special=False`` CONTROL and UNKNOWN tokens are not looked for (USER_DEFINED ones still are; for Phi-3
   there is none left, because llama.cpp makes ``</s>`` CONTROL).  A token with RSTRIP swallows the whitespace that
   follows it (LSTRIP: precedes it) — for Phi-3 this depends on the file's ``general.name``, see
   :mod:`refllm.tokenizer.vocab`.
2. **Space prefix.**  Each text fragment that starts the input or follows a special token gets one leading space
   (``add_space_prefix``, true for SentencePiece), then every space becomes ``▁``.  So ``"<|user|>\\nHi"`` becomes
   ``<|user|>`` + ``"▁\\nHi"`` when ``\\n`` is not stripped: the extra ``▁`` (29871) and ``<0x0A>`` (13) are what
   Phi-3 GGUF files from the current converter produce in llama.cpp.
3. **SPM-BPE** on each fragment (:mod:`refllm.tokenizer.spm`).  BOS goes first if asked for (``add_bos_token``),
   EOS last (``add_eos_token``).

Decoding (``token_to_piece``, ``detokenize``, ``:3660-3860``): a NORMAL token is its text with ``▁`` → space, a BYTE
token its one byte, a CONTROL/UNKNOWN token its text only when ``special`` is asked for (otherwise nothing), a
USER_DEFINED token its text, an UNUSED token nothing.  ``detokenize`` removes one leading space from the first
piece (the space the encoder added).  Pieces are bytes: a character split over byte tokens is only complete once
all of them are there, which is what :class:`StreamDecoder` handles.
"""

from __future__ import annotations

import codecs
import warnings
from collections.abc import Iterable, Sequence

from ..errors import RefllmError
from .spm import BPEEngine, spm_tokenize
from .vocab import SPACE, Attr, Vocab

ENGINES = ("tokenizers", "python")


class Tokenizer:
    """The tokenizer of a Phi-3 GGUF file.

    >>> tok = Tokenizer.from_gguf("model.gguf")                 # whitespace="llama.cpp" (default) or "hf"
    >>> ids = tok.encode("<|user|>\\nHello<|end|>\\n<|assistant|>\\n")   # BOS as the file says
    >>> tok.decode(ids, special=True)
    >>> stream = tok.stream(); "".join(stream.push(i) for i in ids) + stream.flush()

    ``engine="tokenizers"`` runs the BPE merges in the Rust ``tokenizers`` library, ``engine="python"`` in the
    Python port of llama.cpp's loop; both give the same ids.
    """

    def __init__(self, vocab: Vocab, engine: str = "tokenizers"):
        if engine not in ENGINES:
            raise RefllmError(f"engine={engine!r}: choose one of {', '.join(ENGINES)}")
        self.vocab = vocab
        self.engine = engine
        self._bpe = lambda text: spm_tokenize(text, vocab)
        if engine == "tokenizers":
            bpe = BPEEngine(vocab)
            if bpe.exact:
                self._bpe = bpe
            else:  # a tie the merge ranks cannot express (never for Phi-3): use the exact Python loop
                warnings.warn("this vocabulary has tied merge scores that tokenizers' BPE cannot reproduce; "
                              "using the Python SPM engine", stacklevel=2)
                self.engine = "python"
        self._pieces = [self._piece(i) for i in range(len(vocab))]

    @classmethod
    def from_gguf(cls, f, whitespace: str = "llama.cpp", engine: str = "tokenizers") -> "Tokenizer":
        """Build the tokenizer of ``f`` (a :class:`refllm.gguf.GGUFFile` or a path) from its ``tokenizer.*``
        metadata.

        ``whitespace="llama.cpp"``: whitespace after Phi-3's special tokens is stripped only if ``general.name``
        contains ``phi3``/``phi-3`` (llama.cpp's rule; files from the current converter are named
        ``Phi 3.5 Mini Instruct`` and keep it).  ``whitespace="hf"``: always stripped, Unicode whitespace included
        (the Hugging Face hub tokenizer).
        """
        return cls(Vocab.from_gguf(f, whitespace), engine)

    # --- what the model runner needs --------------------------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        return len(self.vocab)

    @property
    def bos_id(self) -> int | None:
        return self.vocab.bos_id

    @property
    def eos_id(self) -> int | None:
        return self.vocab.eos_id

    @property
    def eot_id(self) -> int | None:
        return self.vocab.eot_id

    @property
    def eog_ids(self) -> frozenset[int]:
        """End-of-generation tokens (llama.cpp's EOG set; Phi-3: ``</s>``, ``<|endoftext|>``, ``<|end|>``)."""
        return self.vocab.eog_ids

    def is_eog(self, token: int) -> bool:
        return token in self.vocab.eog_ids

    @property
    def add_bos(self) -> bool:
        """Whether ``encode`` adds BOS by default (``tokenizer.ggml.add_bos_token``, true when absent)."""
        return self.vocab.add_bos

    @property
    def chat_template(self) -> str | None:
        """``tokenizer.chat_template`` of the file, or None."""
        return self.vocab.chat_template

    def token_text(self, token: int) -> str:
        """The token's text as stored in the vocabulary (``▁`` for spaces, ``<0x0A>`` for byte tokens)."""
        return self.vocab.tokens[token]

    # --- encoding ---------------------------------------------------------------------------------------------

    def partition(self, text: str, parse_special: bool = True) -> list[str | int]:
        """Cut ``text`` around special tokens: a list of text fragments (str) and special-token ids (int).

        The port of ``tokenizer_st_partition``: for each special token, longest first, split every remaining text
        fragment at each occurrence, left to right, dropping the whitespace an RSTRIP (LSTRIP) token swallows.
        """
        vocab = self.vocab
        fragments: list[str | int] = [text] if text else []
        for tid in vocab.special_tokens:
            attr = vocab.attrs[tid]
            if not parse_special and attr & (Attr.CONTROL | Attr.UNKNOWN):
                continue
            needle = vocab.tokens[tid]
            split: list[str | int] = []
            for fragment in fragments:
                if isinstance(fragment, int) or needle not in fragment:
                    split.append(fragment)
                    continue
                split.extend(self._split(fragment, needle, tid, attr))
            fragments = split
        return fragments

    def _split(self, fragment: str, needle: str, tid: int, attr: int) -> list[str | int]:
        strip = self.vocab.strip_whitespace
        out: list[str | int] = []
        base = 0
        while True:
            match = fragment.find(needle, base)
            if match < 0:
                if base < len(fragment):
                    out.append(fragment[base:])
                return out
            left_end = match
            if attr & Attr.LSTRIP:
                while left_end > base and fragment[left_end - 1] in strip:
                    left_end -= 1
            if left_end > base:
                out.append(fragment[base:left_end])
            out.append(tid)
            base = match + len(needle)
            if attr & Attr.RSTRIP:
                while base < len(fragment) and fragment[base] in strip:
                    base += 1

    def encode(self, text: str, *, add_bos: bool | None = None, add_eos: bool | None = None,
               parse_special: bool = True) -> list[int]:
        """Token ids of ``text``, as ``llama_tokenize`` gives them.

        ``add_bos`` / ``add_eos``: None follows the file (``add_bos_token`` / ``add_eos_token``) — llama.cpp's
        ``add_special=True``; pass False for ``add_special=False``.  ``parse_special``: recognize CONTROL tokens
        written in the text (``<|user|>``); llama.cpp's chat path uses True, its tokenizer test vectors False.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, not {type(text).__name__}")
        text.encode("utf-8")  # refuse lone surrogates up front, with Python's own error message
        vocab = self.vocab
        add_bos = vocab.add_bos if add_bos is None else add_bos
        add_eos = vocab.add_eos if add_eos is None else add_eos
        ids: list[int] = []
        if add_bos:
            if vocab.bos_id is None:
                raise RefllmError("add_bos: the vocabulary has no BOS token")
            ids.append(vocab.bos_id)
        prev_special = True  # the start of the input counts as "after a special token"
        for fragment in self.partition(text, parse_special):
            if isinstance(fragment, int):
                ids.append(fragment)
                prev_special = True
                continue
            if vocab.add_space_prefix and prev_special:
                fragment = " " + fragment
            ids.extend(self._bpe(fragment.replace(" ", SPACE)))
            prev_special = False
        if add_eos:
            if vocab.eos_id is None:
                raise RefllmError("add_eos: the vocabulary has no EOS token")
            ids.append(vocab.eos_id)
        return ids

    # --- decoding ---------------------------------------------------------------------------------------------

    def _piece(self, token: int) -> bytes:
        """The bytes of a token with ``special=True`` (llama.cpp's piece cache)."""
        vocab = self.vocab
        attr = vocab.attrs[token]
        if attr & (Attr.UNKNOWN | Attr.CONTROL | Attr.USER_DEFINED):
            return vocab.tokens[token].encode("utf-8", "surrogateescape")
        if attr & Attr.NORMAL:
            return vocab.tokens[token].replace(SPACE, " ").encode("utf-8", "surrogateescape")
        if attr & Attr.BYTE:
            return bytes([vocab.token_to_byte(token)])
        return b""  # UNUSED, UNDEFINED

    def token_to_piece(self, token: int, special: bool = False, lstrip: int = 0) -> bytes:
        """``llama_token_to_piece``: the bytes of one token.

        ``special``: render CONTROL and UNKNOWN tokens (``<|end|>``); without it they give ``b""``.
        ``lstrip``: remove up to that many leading spaces.
        """
        if not 0 <= token < len(self.vocab):
            raise RefllmError(f"token id {token} is out of range (vocabulary of {len(self.vocab)})")
        if not special and self.vocab.attrs[token] & (Attr.UNKNOWN | Attr.CONTROL):
            return b""
        piece = self._pieces[token]
        for _ in range(lstrip):
            if not piece.startswith(b" "):
                break
            piece = piece[1:]
        return piece

    def decode_bytes(self, ids: Iterable[int], *, special: bool = False, remove_special: bool = False) -> bytes:
        """``llama_detokenize(ids, remove_special, unparse_special=special)``: the raw bytes.

        One leading space is removed from the first token (the space the encoder prefixed).  ``remove_special``
        drops a leading BOS (and then keeps that space) if the file adds BOS, and a trailing EOS if it adds EOS.
        """
        ids = list(ids)
        vocab = self.vocab
        remove_space = vocab.add_space_prefix
        if remove_special and vocab.add_bos and ids and ids[0] == vocab.bos_id:
            remove_space = False
            ids = ids[1:]
        if remove_special and vocab.add_eos and ids and ids[-1] == vocab.eos_id:
            ids = ids[:-1]
        out = bytearray()
        for token in ids:
            out += self.token_to_piece(token, special, lstrip=1 if remove_space else 0)
            remove_space = False
        return bytes(out)

    def decode(self, ids: Iterable[int], *, special: bool = False, remove_special: bool = False) -> str:
        """:meth:`decode_bytes` as text; bytes that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids, special=special, remove_special=remove_special).decode("utf-8", "replace")

    def stream(self, *, special: bool = False, strip_leading_space: bool = True) -> "StreamDecoder":
        """A :class:`StreamDecoder` for tokens that arrive one at a time."""
        return StreamDecoder(self, special=special, strip_leading_space=strip_leading_space)

    # --- chat -------------------------------------------------------------------------------------------------

    def chat_prompt(self, messages: Sequence[dict], *, add_generation_prompt: bool = True,
                    template: str | None = None, jinja: bool = True) -> str:
        """The prompt text llama.cpp builds for ``messages`` (``common_chat_templates_apply``).

        The template is ``template``, else the file's ``tokenizer.chat_template``, else the Phi-3.5 template
        (:data:`refllm.tokenizer.chat.PHI3_CHAT_TEMPLATE`).  ``jinja``: render it (llama-server, llama-cli,
        ``--jinja``) or use llama.cpp's built-in Phi-3 format (llama-completion's default); see
        :func:`refllm.tokenizer.chat.llama_cpp_chat_prompt`.  Tokenize the result with :meth:`encode` (BOS as the
        file says, ``parse_special=True``), as llama.cpp does.
        """
        from .chat import PHI3_CHAT_TEMPLATE, llama_cpp_chat_prompt

        template = template or self.chat_template or PHI3_CHAT_TEMPLATE
        vocab = self.vocab
        bos = "" if vocab.bos_id is None else self._piece(vocab.bos_id).decode("utf-8", "replace")
        eos = "" if vocab.eos_id is None else self._piece(vocab.eos_id).decode("utf-8", "replace")
        return llama_cpp_chat_prompt(template, messages, add_generation_prompt=add_generation_prompt,
                                     bos_token=bos, eos_token=eos, add_bos=vocab.add_bos, add_eos=vocab.add_eos,
                                     jinja=jinja)

    def encode_chat(self, messages: Sequence[dict], *, add_generation_prompt: bool = True,
                    template: str | None = None, jinja: bool = True) -> list[int]:
        """Token ids of :meth:`chat_prompt`, tokenized as llama.cpp does (file's BOS flag, special tokens parsed)."""
        return self.encode(self.chat_prompt(messages, add_generation_prompt=add_generation_prompt,
                                             template=template, jinja=jinja))


class StreamDecoder:
    """Detokenize a stream of tokens: :meth:`push` returns the text that is complete so far.

    A character outside ASCII may arrive split over several byte tokens (``🦙`` = ``<0xF0> <0x9F> <0xA6>
    <0x99>``); :meth:`push` holds the bytes of an unfinished character back and returns them with the token
    that completes it.  Bytes that can never become valid UTF-8 come out as U+FFFD, exactly as in
    :meth:`Tokenizer.decode`: the concatenation of every :meth:`push` and the final :meth:`flush` equals
    ``tokenizer.decode(all_ids, special=special)`` (with ``strip_leading_space=True``, the default, which removes the
    encoder's leading space from the first token as ``llama_detokenize`` does).

    For the reply of a model, which follows a prompt, pass ``strip_leading_space=False``: llama.cpp prints generated
    tokens with ``llama_token_to_piece(..., lstrip=0, special)`` one by one.
    """

    def __init__(self, tokenizer: Tokenizer, *, special: bool = False, strip_leading_space: bool = True):
        self.tokenizer = tokenizer
        self.special = special
        self._lstrip = 1 if strip_leading_space and tokenizer.vocab.add_space_prefix else 0
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def push(self, token: int) -> str:
        """Add one token; return the newly completed text (possibly empty)."""
        piece = self.tokenizer.token_to_piece(token, self.special, lstrip=self._lstrip)
        self._lstrip = 0
        return self._utf8.decode(piece)

    def flush(self) -> str:
        """End of stream: return what is left (an unfinished character becomes U+FFFD)."""
        return self._utf8.decode(b"", final=True)

    @property
    def pending(self) -> bytes:
        """The bytes of an unfinished character held back."""
        return self._utf8.getstate()[0]
