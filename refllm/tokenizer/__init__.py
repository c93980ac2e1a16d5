"""Phi-3's tokenizer and chat template, as llama.cpp runs them (see docs/tokenizer.md).

>>> from refllm.tokenizer import Tokenizer
>>> tok = Tokenizer.from_gguf("model.gguf")              # or whitespace="hf" for the Hugging Face behaviour
>>> ids = tok.encode_chat([{"role": "user", "content": "Can you introduce .NET"}])
>>> tok.decode(ids, special=True)
"""

from .chat import (PHI3_CHAT_TEMPLATE, PHI3_MINI_4K_CHAT_TEMPLATE, ChatTemplateError, builtin_phi3_chat_prompt,
                   is_phi3_template, llama_cpp_chat_prompt, render_chat, supports_system_role)
from .spm import BPEEngine, spm_tokenize
from .tokenizer import ENGINES, StreamDecoder, Tokenizer
from .vocab import WHITESPACE_MODES, Attr, TokenType, Vocab, phi3_name_rule_applies

__all__ = ["ENGINES", "PHI3_CHAT_TEMPLATE", "PHI3_MINI_4K_CHAT_TEMPLATE", "WHITESPACE_MODES", "Attr", "BPEEngine",
           "ChatTemplateError", "StreamDecoder", "TokenType", "Tokenizer", "Vocab", "builtin_phi3_chat_prompt",
           "is_phi3_template", "llama_cpp_chat_prompt", "phi3_name_rule_applies", "render_chat", "spm_tokenize",
           "supports_system_role"]
