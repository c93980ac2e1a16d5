"""Tokenizer files -> GGUF vocabulary (``tokenizer.*`` keys), as convert_hf_to_gguf.py does it for Phi-3.

**Tokens, scores, types** (``Phi3MiniModel.set_vocab``).  The vocabulary has ``config.json``'s ``vocab_size``
entries (32064 for Phi-3: the embedding has more rows than the tokenizer has tokens).  It is built in four passes,
each overwriting the previous one:

1. every id starts as ``[PAD{id}]``, score -10000, type UNUSED (5);
2. ``tokenizer.model``: piece text, score and type of ids 0..31999 — UNKNOWN (2) for ``<unk>``, CONTROL (3) for
   ``<s>``/``</s>``, BYTE (6) for ``<0x00>``..``<0xFF>``, UNUSED for unused pieces, NORMAL (1) for the rest
   (user-defined pieces too);
3. ``added_tokens.json`` (``{"<|endoftext|>": 32000, ...}``): score -1000, type USER_DEFINED (4);
4. ``tokenizer_config.json`` ``added_tokens_decoder`` and then ``tokenizer.json`` ``added_tokens``: score -1000,
   type CONTROL if the token is ``"special": true``, else USER_DEFINED.

So for Phi-3: ``<unk>`` and ``<s>`` end up CONTROL with score -1000, ``</s>`` USER_DEFINED (it is not "special" in
Phi-3's files), 32000..32010 CONTROL, 32011..32063 stay ``[PAD…]`` UNUSED.

**Special ids and flags** (gguf-py ``SpecialVocab``): for each of bos, eos, unk, sep, pad, cls, mask the token
*text* named in ``tokenizer_config.json`` (``"eos_token": "<|endoftext|>"``) is looked up in ``tokenizer.json``'s
``added_tokens``; ids still missing come from ``config.json`` (``"bos_token_id": 1``).  ``add_bos_token`` /
``add_eos_token`` come from ``tokenizer.json``'s ``post_processor`` (a ``TemplateProcessing`` that starts with a
special token means "add BOS") and, when it says nothing, from ``tokenizer_config.json``.  The chat template comes
from ``tokenizer_config.json`` (or ``chat_template.jinja`` / ``chat_template.json``).

Written keys, in order: ``tokenizer.ggml.model = "llama"``, ``tokenizer.ggml.pre = "default"``, ``tokens``,
``scores``, ``token_type``, the special ids (``bos_token_id``, ``eos_token_id``, ``unknown_token_id``,
``padding_token_id``, ...), ``add_bos_token``, ``add_eos_token``, ``tokenizer.chat_template``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..errors import RefllmError
from ..gguf import Value, ValueType
from . import sentencepiece_model as spm
from .sentencepiece_model import PieceType

log = logging.getLogger("hf-to-gguf")

SPECIAL_TYPES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
# SpecialVocab type -> GGUF key of its id (types without a key, like cls, are skipped by gguf-py with a warning)
ID_KEYS = {
    "bos": "tokenizer.ggml.bos_token_id",
    "eos": "tokenizer.ggml.eos_token_id",
    "unk": "tokenizer.ggml.unknown_token_id",
    "sep": "tokenizer.ggml.seperator_token_id",  # sic: that is the key's spelling
    "pad": "tokenizer.ggml.padding_token_id",
    "mask": "tokenizer.ggml.mask_token_id",
    "eot": "tokenizer.ggml.eot_token_id",
    "eom": "tokenizer.ggml.eom_token_id",
}
ADD_KEYS = {"bos": "tokenizer.ggml.add_bos_token", "eos": "tokenizer.ggml.add_eos_token",
            "sep": "tokenizer.ggml.add_sep_token"}


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RefllmError(f"{path}: cannot read JSON: {e}") from None


def _set(tokens, scores, types, path: Path, token_id, text: str, kind: int, check_range: bool) -> None:
    try:
        token_id = int(token_id)
    except (TypeError, ValueError):
        raise RefllmError(f"{path}: token id {token_id!r} of {text!r} is not an integer") from None
    if not 0 <= token_id < len(tokens):
        if check_range:
            log.debug(f"ignore token {token_id}: id is out of range, max={len(tokens) - 1}")
            return
        raise RefllmError(f"{path}: token {text!r} has id {token_id}, outside the vocabulary of {len(tokens)} "
                          f"(config.json vocab_size)")
    if types[token_id] != PieceType.UNUSED and tokens[token_id] != text:
        log.warning(f"replacing token {token_id}: {tokens[token_id]!r} -> {text!r}")
    tokens[token_id], scores[token_id], types[token_id] = text, -1000.0, kind


def phi3_tokens(model_dir: Path, vocab_size: int | None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Tokens, scores (float32) and token types (int32) of the GGUF vocabulary (see the module docstring)."""
    sp_path = model_dir / "tokenizer.model"
    if not sp_path.is_file():
        raise RefllmError(f"{sp_path}: missing (Phi-3 needs its SentencePiece tokenizer.model)")
    sp = spm.load(sp_path)
    n = vocab_size if vocab_size is not None else len(sp.pieces)
    if len(sp.pieces) > n:
        raise RefllmError(f"{sp_path}: {len(sp.pieces)} pieces do not fit config.json vocab_size {n}")
    tokens = [f"[PAD{i}]" for i in range(n)]
    scores = np.full(n, -10000.0, dtype=np.float32)
    types = np.full(n, int(PieceType.UNUSED), dtype=np.int32)
    for i, piece in enumerate(sp.pieces):
        kind = piece.type if piece.type in (PieceType.UNKNOWN, PieceType.CONTROL, PieceType.UNUSED,
                                            PieceType.BYTE) else PieceType.NORMAL
        tokens[i], scores[i], types[i] = piece.piece, piece.score, int(kind)

    path = model_dir / "added_tokens.json"
    if path.is_file():
        added = _load_json(path)
        if not isinstance(added, dict):
            raise RefllmError(f"{path}: expected an object {{token: id}}")
        for text, token_id in added.items():
            _set(tokens, scores, types, path, token_id, text, PieceType.USER_DEFINED, check_range=True)

    path = model_dir / "tokenizer_config.json"
    if path.is_file():
        decoder = _load_json(path).get("added_tokens_decoder", {})
        for token_id, data in decoder.items():
            kind = PieceType.CONTROL if data.get("special") else PieceType.USER_DEFINED
            _set(tokens, scores, types, path, token_id, data["content"], kind, check_range=False)

    path = model_dir / "tokenizer.json"
    if path.is_file():
        for data in _load_json(path).get("added_tokens", []):
            kind = PieceType.CONTROL if data.get("special") else PieceType.USER_DEFINED
            _set(tokens, scores, types, path, data["id"], data["content"], kind, check_range=False)
    return tokens, scores, types


class SpecialVocab:
    """Special token ids, add-BOS/EOS flags, chat template and normalizer flags (gguf-py ``SpecialVocab``)."""

    def __init__(self, model_dir: Path, n_vocab: int):
        self.n_vocab = n_vocab
        self.types = list(SPECIAL_TYPES)
        self.ids: dict[str, int] = {}
        self.add: dict[str, bool] = {}
        self.chat_template = None
        self.lowercase: bool | None = None
        self.strip_accents: bool | None = None
        self._from_tokenizer_files(model_dir)
        self._from_config(model_dir)

    def _set_id(self, typ: str, tid) -> None:
        if not isinstance(tid, int):
            return
        if tid < 0:
            raise RefllmError(f"invalid value for special token type {typ}: {tid}")
        if tid < self.n_vocab:
            self.ids.setdefault(typ, tid)
        else:
            log.warning(f"Special token type {typ}, id {tid} out of range, must be under {self.n_vocab} - skipping")

    def _parse_normalizer(self, normalizer: dict) -> None:
        kind = normalizer.get("type")
        if kind == "Lowercase":
            self.lowercase = True
        elif kind == "StripAccents":
            self.strip_accents = True
        elif kind == "BertNormalizer":
            if "lowercase" in normalizer:
                self.lowercase = normalizer["lowercase"]
            if "strip_accents" in normalizer:
                self.strip_accents = normalizer["strip_accents"]
        elif kind == "Sequence":
            for sub in normalizer.get("normalizers", []):
                self._parse_normalizer(sub)

    def _from_tokenizer_files(self, model_dir: Path) -> None:
        tokenizer = _load_json(model_dir / "tokenizer.json") if (model_dir / "tokenizer.json").is_file() else None
        added_tokens = []
        if tokenizer:
            if normalizer := tokenizer.get("normalizer"):
                self._parse_normalizer(normalizer)
            added_tokens = tokenizer.get("added_tokens", {})
        cfg_path = model_dir / "tokenizer_config.json"
        config = _load_json(cfg_path) if cfg_path.is_file() else None
        if tokenizer:
            self._post_processor(tokenizer, config)
        if not config:
            return
        template = config.get("chat_template", self._alternative_template(model_dir))
        if template is None or isinstance(template, (str, list)):
            self.chat_template = template
        else:
            log.warning(f"Bad type for chat_template field in {cfg_path} - ignoring")
        for typ in self.types:
            add = config.get(f"add_{typ}_token")
            if isinstance(add, bool):
                if typ not in self.add:
                    self.add[typ] = add
                elif self.add[typ] != add:
                    log.warning(f"Mismatch between tokenizer_config add_{typ}_token({add}) and tokenizer "
                                f"post_processor<{typ}>({self.add[typ]}) - opting for the latter")
            entry = config.get(f"{typ}_token")
            if isinstance(entry, dict):
                entry = entry.get("content")
            if not isinstance(entry, str):
                continue
            self._set_id(typ, next((t.get("id") for t in added_tokens if t.get("content") == entry), None))

    @staticmethod
    def _alternative_template(model_dir: Path):
        jinja, js = model_dir / "chat_template.jinja", model_dir / "chat_template.json"
        if jinja.is_file():
            template = jinja.read_text(encoding="utf-8")
            extra = sorted((model_dir / "additional_chat_templates").glob("*.jinja"))
            if extra:
                template = [{"name": "default", "template": template}]
                template += [{"name": p.stem, "template": p.read_text(encoding="utf-8")} for p in extra]
            return template
        if js.is_file():
            return _load_json(js).get("chat_template")
        return None

    def _post_processor(self, tokenizer: dict, config: dict | None) -> None:
        """What ``post_processor`` says about adding BOS/EOS/SEP (a crude reading of simple templates, as gguf-py)."""
        cfg = config or {}
        bos, cls, eos, sep = (cfg.get(k) for k in ("bos_token", "cls_token", "eos_token", "sep_token"))
        if not bos and cls and config:
            config["bos_token"] = bos = cls
        if not eos and sep and config:
            config["eos_token"] = eos = sep
        processor = tokenizer.get("post_processor")
        if not processor:
            return
        for proc in processor.get("processors", [processor]):
            kind = proc.get("type")
            if kind == "ByteLevel":
                self.add.setdefault("bos", False)
                self.add.setdefault("eos", False)
            elif kind == "RobertaProcessing":
                self.add.update(bos=True, eos=True, sep=True)
                if not cls and config:
                    config["cls_token"] = cls = proc.get("cls", [bos])[0]
                if not sep and config:
                    config["sep_token"] = sep = proc.get("sep", [eos])[0]
            elif kind == "TemplateProcessing":
                single, pair = proc.get("single", []), proc.get("pair", [])
                first = last = None
                if len(single) > 1:
                    if first := single[0].get("SpecialToken", {}).get("id"):
                        if not config:
                            bos = first
                        elif first not in (bos, cls):
                            if not bos:
                                config["bos_token"] = bos = first
                            if not cls:
                                config["cls_token"] = cls = first
                        self.add["bos"] = first in (bos, cls)
                        if first not in (bos, cls):
                            log.warning(f"Unknown leading special token {first!r} in TemplateProcessing<single>")
                    if last := single[-1].get("SpecialToken", {}).get("id"):
                        if not config:
                            eos = last
                        elif last != eos:
                            if "eot" not in self.types:
                                self.types.append("eot")
                                config["eot_token"] = eos
                            elif "eom" not in self.types:
                                self.types.append("eom")
                                config["eom_token"] = eos
                            else:
                                log.warning(f"Overriding EOS token {eos!r} with {last!r} without EOT/EOM fallback!")
                            config["eos_token"] = eos = last
                        self.add["eos"] = last == eos
                if pair:
                    start = 1 if first and pair[0].get("SpecialToken", {}).get("id") == first else 0
                    stop = -1 if last and pair[-1].get("SpecialToken", {}).get("id") == last else None
                    middle = pair[slice(start, stop)]
                    if middle and middle[0].get("Sequence", {}).get("id") == "A" \
                            and middle[-1].get("Sequence", {}).get("id") == "B" and (middle := middle[1:-1]):
                        add_sep = False
                        entry = middle[0].get("SpecialToken", {}).get("id")
                        if entry and entry in (sep, eos) and not last:
                            add_sep = True
                        if len(middle) == 2:
                            entry = middle[1].get("SpecialToken", {}).get("id")
                            if entry and entry in (sep, eos):
                                add_sep = True
                        self.add["sep"] = add_sep
                        if add_sep and not sep and config:
                            config["sep_token"] = eos

    def _from_config(self, model_dir: Path) -> None:
        path = model_dir / "config.json"
        if not path.is_file():
            return
        config = _load_json(path)
        for typ in self.types:
            tid = config.get(f"{typ}_token_id")
            if tid is None and "text_config" in config:
                tid = config["text_config"].get(f"{typ}_token_id")
            self._set_id(typ, tid)

    def metadata(self) -> dict[str, Value]:
        out: dict[str, Value] = {}
        for typ, tid in self.ids.items():
            if typ in ID_KEYS:
                out[ID_KEYS[typ]] = Value.uint32(tid)
            else:
                log.warning(f"No handler for special token type {typ} with id {tid} - skipping")
        for typ, flag in self.add.items():
            if typ in ADD_KEYS:
                out[ADD_KEYS[typ]] = Value.bool(flag)
        template = self.chat_template
        if isinstance(template, list):
            default, names = None, []
            for choice in template:
                name = "".join(c if c.isascii() and c.isalnum() else "_" for c in choice.get("name", ""))
                text = choice.get("template")
                if name and text is not None:
                    if name == "default":
                        default = text
                    else:
                        names.append(name)
                        if text:
                            out[f"tokenizer.chat_template.{name}"] = Value.string(text)
            if names:
                out["tokenizer.chat_templates"] = Value.array(ValueType.STRING, list(dict.fromkeys(names)))
            template = default
        if template:
            out["tokenizer.chat_template"] = Value.string(template)
        if self.lowercase is not None:
            out["tokenizer.ggml.normalizer.lowercase"] = Value.bool(self.lowercase)
        if self.strip_accents is not None:
            out["tokenizer.ggml.normalizer.strip_accents"] = Value.bool(self.strip_accents)
        return out


def phi3_vocab_metadata(model_dir: Path, vocab_size: int | None) -> dict[str, Value]:
    """Every ``tokenizer.*`` key of a converted Phi-3, in the reference's order."""
    cfg_path = model_dir / "tokenizer_config.json"
    if cfg_path.is_file() and _load_json(cfg_path).get("tokenizer_class") == "GPT2Tokenizer":
        raise RefllmError(f"{cfg_path}: tokenizer_class GPT2Tokenizer (a Phi-4-style BPE vocabulary) is not "
                          f"supported; refllm converts Phi-3's SentencePiece vocabulary")
    tokens, scores, types = phi3_tokens(model_dir, vocab_size)
    out = {
        "tokenizer.ggml.model": Value.string("llama"),
        "tokenizer.ggml.pre": Value.string("default"),
        "tokenizer.ggml.tokens": Value.array(ValueType.STRING, tokens),
        "tokenizer.ggml.scores": Value.array(ValueType.FLOAT32, scores),
        "tokenizer.ggml.token_type": Value.array(ValueType.INT32, types),
    }
    special = SpecialVocab(model_dir, len(tokens))
    for typ, tid in special.ids.items():
        log.info(f"Setting special token type {typ} to {tid}")
    for typ, flag in special.add.items():
        log.info(f"Setting add_{typ}_token to {flag}")
    out.update(special.metadata())
    return out
