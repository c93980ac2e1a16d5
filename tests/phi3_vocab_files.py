"""Shared by the tokenizer and chat-template tests: the Phi-3 vocabulary files they run on, and text strategies.

* ``ggml-vocab-phi-3.gguf`` of the reference sdist, named ``Phi3`` (llama.cpp's Phi-3 rule applies), with the
  Phi-3-mini-4k template and ``add_bos_token = true``;
* copies of it with another ``general.name`` (made with :func:`refllm.gguf.write`);
* a tiny Phi-3.5-mini converted by refllm (what the current converter writes: ``Phi 3.5 Mini Instruct``, UNUSED
  ``[PAD…]`` tokens, ``add_bos_token = false``, the Phi-3.5 template), with weights, so llama-completion can run it.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import strategies as st

from refllm import gguf
from refllm.gguf import Value

SEED_PROMPT = "<|user|>\nCan you introduce .NET<|end|>\n<|assistant|>\n"


def renamed_copy(src: Path, dst: Path, name: str | None, drop: tuple[str, ...] = ()) -> Path:
    """A copy of ``src`` with ``general.name`` set to ``name`` (None: removed) and the keys in ``drop`` removed."""
    if dst.exists():
        return dst
    f = gguf.read(src)
    metadata = {k: v for k, v in f.metadata.items() if k not in drop and k != "general.name"}
    if name is not None:
        metadata = {"general.architecture": metadata.pop("general.architecture"), "general.name": Value.string(name),
                    **metadata}
    gguf.write(dst, metadata, f.tensors, version=f.version)
    f.close()
    return dst


def tiny_phi35(root: Path) -> Path:
    """A tiny Phi-3.5-mini checkpoint converted to F32 GGUF by refllm (made once per test session)."""
    from refllm.convert import convert, make_checkpoint

    out = root / "phi-3.5-mini-tiny-f32.gguf"
    if not out.exists():
        ckpt = make_checkpoint(root / "phi-3.5-mini-tiny", "phi3.5-mini", layers=1, hidden=64, heads=2,
                               intermediate=64, seed=0)
        convert(ckpt, out, "f32")
    return out


def vocab_files(reference, root: Path) -> dict[str, Path]:
    """name → path of every vocabulary file the tokenizer tests compare on."""
    original = reference.models_dir() / "ggml-vocab-phi-3.gguf"
    root.mkdir(parents=True, exist_ok=True)
    return {
        "Phi3": original,  # the Phi-3 rule applies
        "Phi 3.5 Mini Instruct": renamed_copy(original, root / "vocab-phi35-name.gguf", "Phi 3.5 Mini Instruct"),
        "microsoft/PHI-3-medium": renamed_copy(original, root / "vocab-phi-3-caps.gguf", "microsoft/PHI-3-medium"),
        "no name": renamed_copy(original, root / "vocab-no-name.gguf", None),
        "converted 3.5": tiny_phi35(root),
    }


# --- text strategies ----------------------------------------------------------------------------------------------

SPECIAL_TEXTS = ["<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<|endoftext|>", "<|placeholder1|>",
                 "<s>", "</s>", "<unk>", "[PAD32011]", "[PAD32063]", "<|user", "|>", "<0x0A>"]
MULTILINGUAL = ["Hello world", " Hello World!", "Grüß Gott, straße", "élève où ça", "Привет, мир", "Γειά σου",
                "你好，世界", "日本語のテキスト", "한국어 문장", "مرحبا بالعالم", "שלום", "नमस्ते", "ខ្មែរ", "ไทย",
                "Ærøskøbing", "İstanbul", "3333 1.5e-3 0x1F", "def f(x):\n\treturn x**2", "🦙.cpp", "😀😃🤖👍🏽",
                "🇫🇷", "\u200b\u200d", "ℌ𝔢𝔩𝔩𝔬", "ﬁ ﬂ", "a\u0301", "▁▁ visible ▁", "\x00\x01\x7f"]
WHITESPACE = [" ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", " \n ", "\v", "\f", "\u3000", "\u00a0", "\u2003",
              "\x85", "\u2028", "\x1c"]

_piece = st.one_of(
    st.sampled_from(SPECIAL_TEXTS),
    st.sampled_from(MULTILINGUAL),
    st.builds(lambda w, n: w * n, st.sampled_from(WHITESPACE), st.integers(1, 40)),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.text(st.sampled_from("abcxyz ABC.,-=!?'\"0123456789_\n"), max_size=20),
)

#: Text mixing multilingual snippets, whitespace runs, emoji, byte-fallback characters and special-token texts.
texts = st.lists(_piece, max_size=12).map("".join)
