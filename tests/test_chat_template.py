"""refllm.tokenizer.chat against llama.cpp's chat-template code and transformers' ``apply_chat_template``.

* :func:`render_chat` = transformers' ``render_jinja_template`` (what ``apply_chat_template(tokenize=False)``
  returns) for the Phi-3.5 and Phi-3-mini-4k templates, on fixed and generated conversations;
* :func:`llama_cpp_chat_prompt` / ``Tokenizer.chat_prompt`` = llama.cpp's ``common_chat_templates_apply``
  (through the small ``chat-render`` program built against the reference, :mod:`refllm.reference.chat_render`),
  including the system-message merge of templates without a system role and the BOS strip;
* ``Tokenizer.encode_chat`` = what ``llama-completion`` feeds the model (``--verbose-prompt``), end to end on a
  tiny converted Phi-3.5, with ``--jinja`` and with its default built-in Phi-3 format;
* the spec's expected strings (phi3-spec §5) and the sandbox.
"""

from __future__ import annotations

import re
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phi3_vocab_files import SEED_PROMPT, renamed_copy, texts, tiny_phi35

from refllm.reference.chat_render import render
from refllm.reference.llama_vocab import LlamaVocab
from refllm.tokenizer import (PHI3_CHAT_TEMPLATE, PHI3_MINI_4K_CHAT_TEMPLATE, ChatTemplateError, Tokenizer,
                              llama_cpp_chat_prompt, render_chat, supports_system_role)


CONVERSATIONS = [
    [{"role": "user", "content": "Can you introduce .NET"}],
    [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "What is 2+2?"},
     {"role": "assistant", "content": "Quatre."}, {"role": "user", "content": "And 3+3?"}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "empty system prompt"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
     {"role": "assistant", "content": "d"}],
    [{"role": "system", "content": "only a system prompt"}],
    [{"role": "developer", "content": "developer is mapped to system"}, {"role": "user", "content": "ok"}],
    [{"role": "user", "content": "  spaces \n\n and <|end|> inside 🦙 "}],
    [],
]


@pytest.fixture(scope="module")
def files(reference, tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "phi3-vocab"
    root.mkdir(parents=True, exist_ok=True)
    original = reference.models_dir() / "ggml-vocab-phi-3.gguf"
    return {
        "4k vocab": original,  # Phi-3-mini-4k template, add_bos_token true
        "converted 3.5": tiny_phi35(root),  # Phi-3.5 template, add_bos_token false
        "no template": renamed_copy(original, root / "vocab-no-template.gguf", "Phi3",
                                    drop=("tokenizer.chat_template",)),
    }


def test_default_template_is_llama_cpp_phi35(reference, files):
    """PHI3_CHAT_TEMPLATE is byte for byte the vendored Phi-3.5 template and what the converter writes; the 4k
    constant is the template of ggml-vocab-phi-3.gguf."""
    vendored = (reference.models_dir() / "templates" / "microsoft-Phi-3.5-mini-instruct.jinja").read_text()
    assert PHI3_CHAT_TEMPLATE == vendored.rstrip("\n")
    assert Tokenizer.from_gguf(files["converted 3.5"]).chat_template == PHI3_CHAT_TEMPLATE
    assert Tokenizer.from_gguf(files["4k vocab"]).chat_template == PHI3_MINI_4K_CHAT_TEMPLATE


def test_spec_strings():
    """phi3-spec §5: the seed prompt, 53 characters; without a generation prompt the EOS text ends it."""
    messages = [{"role": "user", "content": "Can you introduce .NET"}]
    prompt = render_chat(PHI3_CHAT_TEMPLATE, messages)
    assert prompt == SEED_PROMPT and len(prompt) == 53 and prompt.count("\n") == 3
    assert render_chat(PHI3_CHAT_TEMPLATE, messages, add_generation_prompt=False) == \
        "<|user|>\nCan you introduce .NET<|end|>\n<|endoftext|>"
    assert render_chat(PHI3_CHAT_TEMPLATE, CONVERSATIONS[2]) == (
        "<|system|>\nAnswer in French.<|end|>\n<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\nQuatre.<|end|>\n"
        "<|user|>\nAnd 3+3?<|end|>\n<|assistant|>\n")
    assert render_chat(PHI3_CHAT_TEMPLATE, CONVERSATIONS[3]) == "<|user|>\nempty system prompt<|end|>\n<|assistant|>\n"


def _transformers_render(template, messages, add_generation_prompt, bos, eos):
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(conversations=[messages], chat_template=template,
                                        add_generation_prompt=add_generation_prompt, bos_token=bos, eos_token=eos)
    return rendered[0]


def test_render_matches_transformers():
    for template in (PHI3_CHAT_TEMPLATE, PHI3_MINI_4K_CHAT_TEMPLATE):
        for messages in CONVERSATIONS:
            for gen in (True, False):
                ours = render_chat(template, messages, add_generation_prompt=gen, bos_token="<s>",
                                   eos_token="<|endoftext|>")
                assert ours == _transformers_render(template, messages, gen, "<s>", "<|endoftext|>")


roles = st.sampled_from(["user", "assistant"])
conversation = st.tuples(
    st.one_of(st.none(), texts),  # an optional system prompt
    st.lists(st.tuples(roles, texts), min_size=1, max_size=5),
).map(lambda c: ([{"role": "system", "content": c[0]}] if c[0] is not None else [])
      + [{"role": r, "content": t} for r, t in c[1]])


@settings(max_examples=40)
@given(messages=conversation, gen=st.booleans())
def test_render_matches_transformers_generated(messages, gen):
    for template in (PHI3_CHAT_TEMPLATE, PHI3_MINI_4K_CHAT_TEMPLATE):
        assert render_chat(template, messages, add_generation_prompt=gen) == \
            _transformers_render(template, messages, gen, "<s>", "<|endoftext|>")


# --- llama.cpp's own rendering ------------------------------------------------------------------------------------


def test_supports_system_role():
    """llama.cpp's capability probe: the 3.5 template reads system messages, the 4k template ignores them."""
    assert supports_system_role(PHI3_CHAT_TEMPLATE)
    assert not supports_system_role(PHI3_MINI_4K_CHAT_TEMPLATE)


@pytest.mark.parametrize("name", ["4k vocab", "converted 3.5"])
def test_chat_prompt_matches_llama_cpp(files, name):
    """Fixed conversations: the prompt llama.cpp renders from the file (its template, BOS/EOS and add_bos), and the
    ids it then feeds the model (``llama_tokenize(prompt, add_special=true, parse_special=true)``)."""
    tok = Tokenizer.from_gguf(files[name])
    ref = LlamaVocab(files[name])
    cases = [{"messages": m, "add_generation_prompt": g, "use_jinja": j} for m in CONVERSATIONS if m
             for g in (True, False) for j in (True, False)]
    results = render(cases, model=files[name])
    for case, result in zip(cases, results):
        options = dict(add_generation_prompt=case["add_generation_prompt"], jinja=case["use_jinja"])
        assert tok.chat_prompt(case["messages"], **options) == result["prompt"], case
        assert tok.encode_chat(case["messages"], **options) == \
            ref.tokenize(result["prompt"], add_special=True, parse_special=True)
    if name == "4k vocab":
        # Jinja: the system prompt is merged into the first user message, and BOS is not doubled
        assert results[4]["prompt"] == "<|user|>\nYou are a helpful assistant.\nHi<|end|>\n<|assistant|>\n"
        assert tok.encode_chat(CONVERSATIONS[0]) == [1, 32010, 1815, 366, 14944, 869, 6006, 32007, 32001]
        # built-in format: the system message is kept
        assert results[5]["prompt"] == \
            "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"


@settings(max_examples=4)
@given(conversations=st.lists(st.tuples(conversation, st.booleans()), min_size=15, max_size=15))
def test_chat_prompt_matches_llama_cpp_generated(files, conversations):
    """Generated conversations (multilingual, whitespace, special-token text in the contents), both templates, one
    chat-render call per batch."""
    cases = [{"messages": m, "add_generation_prompt": g} for m, g in conversations]
    for template, bos in ((PHI3_CHAT_TEMPLATE, False), (PHI3_MINI_4K_CHAT_TEMPLATE, True)):
        for case, result in zip(cases, render(cases, template=template, bos_token="<s>", eos_token="<|endoftext|>")):
            ours = llama_cpp_chat_prompt(template, case["messages"], add_generation_prompt=case[
                "add_generation_prompt"], bos_token="<s>", eos_token="<|endoftext|>", add_bos=False)
            assert ours == result["prompt"]


def test_file_without_template(files):
    """No tokenizer.chat_template: refllm uses the Phi-3.5 template; llama.cpp would fall back to ChatML."""
    tok = Tokenizer.from_gguf(files["no template"])
    assert tok.chat_template is None
    messages = CONVERSATIONS[1]
    assert tok.chat_prompt(messages) == render_chat(PHI3_CHAT_TEMPLATE, messages)
    assert "<|im_start|>system" in render([{"messages": messages}], model=files["no template"])[0]["prompt"]


def test_llama_completion_prompt_tokens(reference, files):
    """End to end: the prompt tokens llama-completion --jinja --verbose-prompt feeds a (tiny) converted Phi-3.5,
    with a system prompt and a user prompt, are Tokenizer.encode_chat's."""
    model = files["converted 3.5"]
    tok = Tokenizer.from_gguf(model)
    runs = [("You are terse.", "Can you introduce .NET", True), (None, "Grüß Gott 🦙\n  two lines", True),
            ("You are terse.", "Can you introduce .NET", False), ("", "empty system", False)]
    for system, user, jinja in runs:
        cmd = [str(reference.tool("llama-completion")), "-m", str(model), "-p", user, "-cnv", "-st", "-n", "1",
               "--verbose-prompt", "--jinja" if jinja else "--no-jinja", "-c", "256", "-t", "1", "--temp", "0",
               "--no-warmup"]
        if system is not None:
            cmd += ["-sys", system]
        result = subprocess.run(cmd, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL,
                                timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        log = result.stderr
        n = int(re.search(r"number of tokens in prompt = (\d+)", log).group(1))
        after = log[log.index("number of tokens in prompt"):]
        ids = [int(x) for x in re.findall(r"^\S* ?I? +(\d+) -> '", after, re.M)[:n]]
        assert len(ids) == n
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        assert tok.encode_chat(messages, jinja=jinja) == ids, (system, user, jinja)
        assert (32006 in ids) == bool(system)  # <|system|>


# --- the sandbox --------------------------------------------------------------------------------------------------

UNSAFE = [
    "{{ ''.__class__ }}",
    "{{ messages.__class__.__mro__[1].__subclasses__() }}",
    "{{ raise_exception.__globals__ }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{% for m in messages %}{{ m.__class__.__base__ }}{% endfor %}",
]


@pytest.mark.parametrize("template", UNSAFE)
def test_sandbox_blocks_internals(template):
    with pytest.raises(ChatTemplateError, match="unsafe|sandbox"):
        render_chat(template, [{"role": "user", "content": "hi"}])


def test_sandbox_blocks_mutation():
    with pytest.raises(ChatTemplateError, match="sandbox|unsafe"):
        render_chat("{% set x = messages.append({'role': 'user', 'content': 'injected'}) %}{{ messages }}",
                    [{"role": "user", "content": "hi"}])
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(ChatTemplateError):
        render_chat("{% set _ = messages[0].update({'content': 'x'}) %}", messages)
    assert messages == [{"role": "user", "content": "hi"}]


def test_template_errors():
    with pytest.raises(ChatTemplateError, match="Only user and assistant"):
        render_chat("{{ raise_exception('Only user and assistant roles are supported!') }}", [])
    with pytest.raises(ChatTemplateError, match="line 1"):
        render_chat("{% for m in messages %}", [])
    with pytest.raises(ChatTemplateError, match="role"):
        render_chat(PHI3_CHAT_TEMPLATE, [{"content": "no role"}])
