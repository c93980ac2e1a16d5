"""Phi-3's Hugging Face tokenizer files, rebuilt from the GGUF vocabulary ``models/ggml-vocab-phi-3.gguf``.

No hub is reachable, but the reference sdist ships the Phi-3 vocabulary as llama.cpp converted it (32064 tokens,
scores, token types, special ids, the chat template).  Converting that back gives the five files a Phi-3 checkpoint
carries:

====================  ==============================================================================================
file                  content
====================  ==============================================================================================
tokenizer.model       SentencePiece BPE model (protobuf): the 32000 LLaMA pieces with their scores and types
tokenizer.json        the ``tokenizers`` library's fast tokenizer: BPE with byte fallback, merges derived from the
                      scores, the added tokens 0-2 and 32000-32010, normalizer "prepend ▁, spaces → ▁"
tokenizer_config.json transformers' settings: ``added_tokens_decoder`` (flags of every added token), bos/eos/unk/pad,
                      ``add_bos_token``, the chat template, ``tokenizer_class: LlamaTokenizer``
added_tokens.json     the tokens beyond the SentencePiece vocabulary: ``{"<|endoftext|>": 32000, ...}``
special_tokens_map    bos / eos / unk / pad
====================  ==============================================================================================

What the GGUF does not keep is restored from what llama.cpp's converter did to the original files:

* the SentencePiece scores of ``<unk>``, ``<s>``, ``</s>`` (the converter overwrote them with -1000 because they are
  listed in ``added_tokens_decoder``; in the LLaMA model they are 0) and their SentencePiece types (UNKNOWN,
  CONTROL, CONTROL);
* the ``rstrip`` flags of the added tokens: Phi-3's files set ``rstrip`` on ``</s>`` and on 32001-32010 and not on
  ``<unk>``, ``<s>``, ``<|endoftext|>`` — the rule llama.cpp hard-codes for Phi-3 (``llama-vocab.cpp``, "phi-3");
* ids 32011-32063 are padding rows of the embedding, not tokens: they appear in no tokenizer file (the converter
  fills them with ``[PAD{id}]``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import gguf
from ..errors import RefllmError
from . import sentencepiece_model as spm
from .sentencepiece_model import PieceType

# The LLaMA tokenizer.model's TrainerSpec / NormalizerSpec (Phi-3 reuses the LLaMA-2 SentencePiece model unchanged).
LLAMA_TRAINER_SPEC = {
    "input": ["/large_experiments/theorem/datasets/MERGED/all.test1.merged"],
    "model_prefix": "spm_model_32k_200M_charcov099995_allowWSO__v2",
    "model_type": 2,  # BPE
    "vocab_size": 32000,
    "self_test_sample_size": 0,
    "input_format": "text",
    "character_coverage": 0.99995,
    "input_sentence_size": 200000000,
    "seed_sentencepiece_size": 1000000,
    "shrinking_factor": 0.75,
    "num_threads": 80,
    "num_sub_iterations": 2,
    "max_sentence_length": 4192,
    "shuffle_input_sentence": True,
    "max_sentencepiece_length": 16,
    "split_by_unicode_script": True,
    "split_by_whitespace": True,
    "split_by_number": True,
    "treat_whitespace_as_suffix": False,
    "split_digits": True,
    "allow_whitespace_only_pieces": True,
    "vocabulary_output_piece_score": True,
    "hard_vocab_limit": True,
    "use_all_vocab": False,
    "byte_fallback": True,
    "required_chars": "",
    "unk_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "pad_id": -1,
    "unk_surface": " \u2047 ",
    "unk_piece": "<unk>",
    "bos_piece": "<s>",
    "eos_piece": "</s>",
    "pad_piece": "<pad>",
    "train_extremely_large_corpus": False,
    "enable_differential_privacy": False,
    "differential_privacy_noise_level": 0.0,
    "differential_privacy_clipping_threshold": 0,
}
LLAMA_NORMALIZER_SPEC = {
    "name": "identity",
    "precompiled_charsmap": b"",
    "add_dummy_prefix": True,
    "remove_extra_whitespaces": False,
    "normalization_rule_tsv": "",
}
N_SENTENCEPIECE = 32000  # pieces in tokenizer.model; ids from here on are added tokens (or padding rows)
NO_RSTRIP = ("<unk>", "<s>", "<|endoftext|>")  # Phi-3's added tokens that do not eat the whitespace after them


class GGUFVocab:
    """The vocabulary of a GGUF file: tokens, scores, token types, special ids, flags and chat template."""

    def __init__(self, path: str | Path):
        with gguf.read(path) as f:
            if f.get("tokenizer.ggml.model") != "llama":
                raise RefllmError(f"{path}: tokenizer.ggml.model is {f.get('tokenizer.ggml.model')!r}, "
                                  f"expected 'llama' (SentencePiece)")
            self.tokens: list[str] = list(f.get("tokenizer.ggml.tokens"))
            self.scores = np.array(f.metadata["tokenizer.ggml.scores"].data, dtype=np.float32)
            self.types = np.array(f.metadata["tokenizer.ggml.token_type"].data, dtype=np.int32)
            self.bos_id = f.get("tokenizer.ggml.bos_token_id")
            self.eos_id = f.get("tokenizer.ggml.eos_token_id")
            self.unk_id = f.get("tokenizer.ggml.unknown_token_id")
            self.pad_id = f.get("tokenizer.ggml.padding_token_id")
            self.add_bos = bool(f.get("tokenizer.ggml.add_bos_token", True))
            self.add_eos = bool(f.get("tokenizer.ggml.add_eos_token", False))
            self.chat_template = f.get("tokenizer.chat_template")

    def added_ids(self) -> list[int]:
        """Ids of the tokens that transformers keeps in ``added_tokens_decoder``: every CONTROL / USER_DEFINED token."""
        return [i for i, t in enumerate(self.types) if t in (PieceType.CONTROL, PieceType.USER_DEFINED)]


def sentencepiece_model(vocab: GGUFVocab) -> spm.SentencePieceModel:
    """The SentencePiece model behind ``vocab``: pieces 0..31999 with their original scores and types."""
    pieces = []
    for i in range(N_SENTENCEPIECE):
        text, score, gtype = vocab.tokens[i], float(vocab.scores[i]), int(vocab.types[i])
        if i == 0:
            pieces.append(spm.Piece(text, 0.0, PieceType.UNKNOWN))
        elif i in (1, 2):
            pieces.append(spm.Piece(text, 0.0, PieceType.CONTROL))
        elif gtype == PieceType.BYTE:
            pieces.append(spm.Piece(text, score, PieceType.BYTE))
        elif gtype == PieceType.NORMAL:
            pieces.append(spm.Piece(text, score, PieceType.NORMAL))
        else:
            raise RefllmError(f"vocabulary: token {i} {text!r} has type {gtype}, not NORMAL/BYTE as in a "
                              f"SentencePiece BPE model")
    return spm.SentencePieceModel(pieces, dict(LLAMA_TRAINER_SPEC), dict(LLAMA_NORMALIZER_SPEC))


def bpe_merges(pieces: list[spm.Piece]) -> list[tuple[str, str]]:
    """The BPE merges that reproduce SentencePiece's merge order, as transformers' ``LlamaConverter`` derives them.

    Every piece that splits into two pieces of the vocabulary gives a merge ``(left, right)``; merges are ordered by
    the score of the piece they make, highest first (ties keep vocabulary order, then the ids of left and right).
    The score used for ``<unk>``, ``<s>``, ``</s>`` is 0, as in ``LlamaConverter.vocab``.
    """
    ids = {p.piece: i for i, p in enumerate(pieces)}
    merges = []
    for i, p in enumerate(pieces):
        text = p.piece
        score = 0.0 if i < 3 else p.score
        local = [(text[:k], text[k:]) for k in range(1, len(text)) if text[:k] in ids and text[k:] in ids]
        local.sort(key=lambda lr: (ids[lr[0]], ids[lr[1]]))
        merges.extend((score, left, right) for left, right in local)
    merges.sort(key=lambda m: m[0], reverse=True)  # stable: equal scores keep their order
    return [(left, right) for _, left, right in merges]


def _added_token(vocab: GGUFVocab, i: int) -> dict:
    text = vocab.tokens[i]
    return {
        "content": text,
        "lstrip": False,
        "normalized": False,
        "rstrip": text not in NO_RSTRIP,
        "single_word": False,
        "special": int(vocab.types[i]) == PieceType.CONTROL,
    }


def tokenizer_json(vocab: GGUFVocab, model: spm.SentencePieceModel):
    """The fast tokenizer (a ``tokenizers.Tokenizer``) of ``tokenizer.json``."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

    bpe_vocab = {p.piece: i for i, p in enumerate(model.pieces)}
    tok = Tokenizer(models.BPE(vocab=bpe_vocab, merges=bpe_merges(model.pieces), unk_token="<unk>", fuse_unk=True,
                               byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    for i in vocab.added_ids():  # in id order, so that 32000, 32001, ... get their ids
        flags = _added_token(vocab, i)
        added = AddedToken(flags["content"], single_word=False, lstrip=False, rstrip=flags["rstrip"],
                           normalized=False, special=flags["special"])
        if tok.add_tokens([added]) and tok.token_to_id(flags["content"]) != i:
            raise RefllmError(f"tokenizer.json: added token {flags['content']!r} got id "
                              f"{tok.token_to_id(flags['content'])}, expected {i}")
    bos = vocab.tokens[vocab.bos_id]
    if vocab.add_bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                                                           special_tokens=[(bos, vocab.bos_id)])
    else:
        tok.post_processor = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1", special_tokens=[])
    return tok


def tokenizer_config(vocab: GGUFVocab, model_max_length: int, chat_template: str | None) -> dict:
    """``tokenizer_config.json`` as transformers saves a Phi-3 ``LlamaTokenizer`` (keys sorted)."""
    config = {
        "add_bos_token": vocab.add_bos,
        "add_eos_token": vocab.add_eos,
        "added_tokens_decoder": {str(i): _added_token(vocab, i) for i in vocab.added_ids()},
        "bos_token": vocab.tokens[vocab.bos_id],
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": vocab.tokens[vocab.eos_id],
        "legacy": False,
        "model_max_length": model_max_length,
        "pad_token": vocab.tokens[vocab.pad_id],
        "padding_side": "left",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": vocab.tokens[vocab.unk_id],
        "use_default_system_prompt": False,
    }
    if chat_template is None:
        del config["chat_template"]
    return config


def _json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_tokenizer_files(directory: str | Path, vocab: GGUFVocab, model_max_length: int,
                          chat_template: str | None) -> list[Path]:
    """Write the five tokenizer files into ``directory``; return their paths."""
    directory = Path(directory)
    model = sentencepiece_model(vocab)
    paths = []
    p = directory / "tokenizer.model"
    p.write_bytes(spm.encode(model))
    paths.append(p)
    p = directory / "tokenizer.json"
    tokenizer_json(vocab, model).save(str(p))
    paths.append(p)
    p = directory / "tokenizer_config.json"
    _json(p, tokenizer_config(vocab, model_max_length, chat_template))
    paths.append(p)
    p = directory / "added_tokens.json"
    _json(p, {vocab.tokens[i]: i for i in sorted(vocab.added_ids(), key=lambda i: vocab.tokens[i])
              if i >= N_SENTENCEPIECE})
    paths.append(p)
    p = directory / "special_tokens_map.json"
    special = {}
    for key, tid in (("bos_token", vocab.bos_id), ("eos_token", vocab.eos_id), ("pad_token", vocab.pad_id),
                     ("unk_token", vocab.unk_id)):
        flags = _added_token(vocab, tid)
        special[key] = {k: flags[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word")}
    _json(p, special)
    paths.append(p)
    return paths
