"""Chat templates: a GGUF's ``tokenizer.chat_template`` (Jinja) rendered in a sandbox.

The functions:

* :func:`render_chat` — the template rendered as it is, with ``messages``, ``add_generation_prompt``,
  ``bos_token`` and ``eos_token``.  This is what transformers' ``apply_chat_template(..., tokenize=False)`` returns,
  and it uses the same Jinja settings (``trim_blocks``, ``lstrip_blocks``, the ``loopcontrols`` extension,
  ``raise_exception``, ``strftime_now``, ``tojson``), which are also the defaults of llama.cpp's own Jinja engine.
* :func:`llama_cpp_chat_prompt` — what llama.cpp makes of it (``common_chat_templates_apply``,
  ``common/chat.cpp``) before tokenizing.  With Jinja (``--jinja``; the default of llama-server and llama-cli):
  role ``developer`` becomes ``system``; if the template ignores a system message (the Phi-3-mini-4k template
  does), the system text is **merged into the next message** as ``system + "\\n" + content`` (or dropped when it
  is alone); and a leading ``bos_token`` / trailing ``eos_token`` is cut off when the tokenizer adds BOS / EOS
  itself, so that BOS is not doubled.  Without Jinja (the default of llama-completion) llama.cpp only recognizes
  the template as Phi-3's and uses its built-in format (:func:`builtin_phi3_chat_prompt`).

The templates run in Jinja's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment`: a template can read the
messages but not reach Python internals (``''.__class__``, ``obj.__globals__``, …) nor mutate lists and dicts.
Such an attempt raises :class:`ChatTemplateError` naming the forbidden attribute.

When a file has no template, refllm uses :data:`PHI3_CHAT_TEMPLATE` (Phi-3.5-mini-instruct's).  llama.cpp itself
would fall back to ChatML there.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime

from ..errors import RefllmError

#: Phi-3.5-mini-instruct's chat template, byte for byte as in llama.cpp's
#: ``models/templates/microsoft-Phi-3.5-mini-instruct.jinja`` and in converted Phi-3.5 files.
PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and message['content'] %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

#: Phi-3-mini-4k-instruct's (first release) template, as in ``ggml-vocab-phi-3.gguf``: no system role, and it
#: starts with ``bos_token``.
PHI3_MINI_4K_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}"
    "{{'<|user|>' + '\n' + message['content'] + '<|end|>' + '\n' + '<|assistant|>' + '\n'}}"
    "{% elif (message['role'] == 'assistant') %}{{message['content'] + '<|end|>' + '\n'}}{% endif %}{% endfor %}"
)


class ChatTemplateError(RefllmError):
    """A chat template failed to compile or render, or tried something the sandbox forbids."""


def _raise_exception(message):
    raise ChatTemplateError(f"chat template: {message}")


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers' tojson: no HTML escaping, unicode kept (Jinja's built-in escapes '<' for HTML)
    from markupsafe import Markup

    return Markup(json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                             sort_keys=sort_keys))


@functools.cache
def _environment():
    import jinja2
    import jinja2.ext
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Sandbox(ImmutableSandboxedEnvironment):
        """Jinja's immutable sandbox, made to *raise* on a forbidden attribute instead of returning an undefined
        value that would render as an empty string."""

        def unsafe_undefined(self, obj, attribute):
            raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")

    env = Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@functools.lru_cache(maxsize=32)
def compile_template(template: str):
    """Compile a chat template in the sandbox (cached)."""
    import jinja2

    try:
        return _environment().from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(f"chat template, line {e.lineno}: {e.message}") from None


def _render(template: str, context: dict) -> str:
    import jinja2

    compiled = compile_template(template)
    try:
        return compiled.render(**context)
    except ChatTemplateError:
        raise
    except jinja2.exceptions.SecurityError as e:
        raise ChatTemplateError(f"chat template blocked by the sandbox: {e}") from None
    except jinja2.TemplateError as e:
        raise ChatTemplateError(f"chat template: {type(e).__name__}: {e}") from None


def _plain_messages(messages: Sequence[Mapping]) -> list[dict]:
    out = []
    for m in messages:
        if not isinstance(m, Mapping) or "role" not in m:
            raise ChatTemplateError(f"a chat message must be a mapping with a 'role', got {m!r}")
        out.append(dict(m))
    return out


def render_chat(template: str, messages: Sequence[Mapping], *, add_generation_prompt: bool = True,
                bos_token: str = "<s>", eos_token: str = "<|endoftext|>", **context) -> str:
    """Render a chat template in the sandbox (= transformers' ``apply_chat_template(tokenize=False)``).

    ``messages``: ``[{"role": "system" | "user" | "assistant", "content": str}, ...]``.  ``context``: any other
    variable the template reads (``tools``, ``date_string``, ...).  The defaults of ``bos_token``/``eos_token`` are
    Phi-3's.
    """
    return _render(template, dict(context, messages=_plain_messages(messages),
                                  add_generation_prompt=add_generation_prompt, bos_token=bos_token,
                                  eos_token=eos_token))


class _ContentProbe(dict):
    """A message that records whether the template read its ``content``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.content_read = False

    def __getitem__(self, key):
        if key == "content":
            self.content_read = True
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key == "content":
            self.content_read = True
        return super().get(key, default)


def supports_system_role(template: str) -> bool:
    """llama.cpp's capability probe (``common/jinja/caps.cpp``): render ``[system, user]`` and see whether the
    template read the system message's content."""
    probe = _ContentProbe(role="system", content="System message")
    messages = [probe, dict(role="user", content="User message")]
    try:
        _render(template, dict(messages=messages, tools=[], add_generation_prompt=True, bos_token="", eos_token=""))
    except ChatTemplateError:
        pass  # as in llama.cpp, what was read before the error still counts
    return probe.content_read


def is_phi3_template(template: str) -> bool:
    """Whether llama.cpp's built-in template detection (``llm_chat_detect_template``, ``src/llama-chat.cpp``) takes
    ``template`` for Phi-3: the name ``phi3``, or a template containing ``<|assistant|>`` and ``<|end|>`` that an
    earlier rule does not claim (ChatML's ``<|im_start|>``, Mistral/LLaMA-2's ``[INST]``)."""
    if template == "phi3":
        return True
    if "<|im_start|>" in template or template.startswith("mistral") or "[INST]" in template:
        return False
    return "<|assistant|>" in template and "<|end|>" in template


def builtin_phi3_chat_prompt(messages: Sequence[Mapping], *, add_generation_prompt: bool = True) -> str:
    """llama.cpp's built-in (non-Jinja) Phi-3 format, ``LLM_CHAT_TEMPLATE_PHI_3``: ``<|role|>\\n`` content
    ``<|end|>\\n`` for every message — any role, empty system messages included — then ``<|assistant|>\\n``.
    No BOS, no EOS."""
    out = [f"<|{m['role']}|>\n{m.get('content', '')}<|end|>\n" for m in _plain_messages(messages)]
    if add_generation_prompt:
        out.append("<|assistant|>\n")
    return "".join(out)


def llama_cpp_chat_prompt(template: str, messages: Sequence[Mapping], *, add_generation_prompt: bool = True,
                          bos_token: str = "<s>", eos_token: str = "<|endoftext|>", add_bos: bool = False,
                          add_eos: bool = False, jinja: bool = True, **context) -> str:
    """The prompt string llama.cpp renders for a chat (``common_chat_templates_apply``).

    ``jinja=True`` (``--jinja``; the default of llama-server and llama-cli): the template is rendered, with these
    differences from :func:`render_chat`: ``developer`` → ``system``; a leading system message is merged into the
    next message when the template does not read system messages; a leading ``bos_token`` is removed when
    ``add_bos`` (the tokenizer will add BOS), a trailing ``eos_token`` when ``add_eos``.

    ``jinja=False`` (the default of llama-completion): the template is only *recognized*, and llama.cpp's built-in
    format is used (:func:`builtin_phi3_chat_prompt`); refllm supports Phi-3 templates only there.
    """
    if not jinja:
        if not is_phi3_template(template):
            raise ChatTemplateError("jinja=False: refllm implements llama.cpp's built-in Phi-3 format only, and "
                                    "llama.cpp does not detect this template as Phi-3")
        return builtin_phi3_chat_prompt(messages, add_generation_prompt=add_generation_prompt)
    msgs = _plain_messages(messages)
    for m in msgs:
        if m.get("role") == "developer":
            m["role"] = "system"
    if msgs and msgs[0].get("role") == "system" and not supports_system_role(template):
        system = msgs.pop(0)
        if msgs:
            msgs[0]["content"] = f"{system.get('content', '')}\n{msgs[0].get('content', '')}"
    prompt = render_chat(template, msgs, add_generation_prompt=add_generation_prompt, bos_token=bos_token,
                         eos_token=eos_token, **context)
    if add_bos and bos_token and prompt.startswith(bos_token):
        prompt = prompt[len(bos_token):]
    if add_eos and eos_token and prompt.endswith(eos_token):
        prompt = prompt[: -len(eos_token)]
    return prompt
