"""llama.cpp's own chat-template rendering, for the tests.

No tool of the reference build prints a rendered chat prompt for an arbitrary conversation, so this module compiles
a small C++ program (``chat-render``, source below) against the reference build's ``libllama-common.so``.  It reads
a JSON request on stdin and prints, for each conversation, the prompt ``common_chat_templates_apply`` returns (the
code path of ``llama-completion``/``llama-server`` with ``--jinja``: llama.cpp's Jinja engine plus its workarounds —
system message merged when the template has no system role, BOS/EOS stripped, …)::

    {"model": "vocab-or-model.gguf",          # optional: template, BOS/EOS and add_bos/add_eos from this file
     "template": "...",                        # optional: override the file's template
     "bos_token": "<s>", "eos_token": "...",   # optional, used when no model is given
     "cases": [{"messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": true,
                "use_jinja": true}]}

    → [{"prompt": "..."} or {"error": "..."}, ...]

The program is built once per machine next to the reference build (a few seconds with the system's C++ compiler).
"""

from __future__ import annotations

import fcntl
import functools
import json
import shutil
import subprocess
from pathlib import Path

from ..errors import RefllmError
from .build import ensure_reference

SOURCE = r"""
// chat-render: print the prompts llama.cpp's common_chat_templates_apply() renders (see refllm/reference/chat_render.py)
#include "chat.h"
#include "llama.h"
#include <nlohmann/json.hpp>
#include <iostream>
#include <sstream>

using json = nlohmann::ordered_json;

static void quiet(enum ggml_log_level, const char *, void *) {}

int main() {
    llama_log_set(quiet, nullptr);
    std::stringstream input;
    input << std::cin.rdbuf();
    json request = json::parse(input.str());
    llama_model * model = nullptr;
    if (request.contains("model")) {
        llama_backend_init();
        llama_model_params params = llama_model_default_params();
        params.vocab_only = true;
        model = llama_model_load_from_file(request["model"].get<std::string>().c_str(), params);
        if (!model) {
            std::cerr << "chat-render: cannot load " << request["model"] << "\n";
            return 1;
        }
    }
    json out = json::array();
    try {
        auto templates = common_chat_templates_init(model, request.value("template", std::string()),
                                                    request.value("bos_token", std::string()),
                                                    request.value("eos_token", std::string()));
        for (auto & c : request["cases"]) {
            common_chat_templates_inputs inputs;
            for (auto & m : c["messages"]) {
                common_chat_msg msg;
                msg.role = m["role"].get<std::string>();
                msg.content = m["content"].get<std::string>();
                inputs.messages.push_back(msg);
            }
            inputs.add_generation_prompt = c.value("add_generation_prompt", true);
            inputs.use_jinja = c.value("use_jinja", true);
            try {
                out.push_back({{"prompt", common_chat_templates_apply(templates.get(), inputs).prompt}});
            } catch (const std::exception & e) {
                out.push_back({{"error", e.what()}});
            }
        }
    } catch (const std::exception & e) {
        std::cerr << "chat-render: " << e.what() << "\n";
        return 2;
    }
    std::cout << out.dump() << std::endl;
    if (model) {
        llama_model_free(model);
    }
    return 0;
}
"""


@functools.cache
def chat_render_tool() -> Path:
    """Path of the ``chat-render`` program, compiled on first use."""
    ref = ensure_reference()
    tools = ref.build_dir.parent / "refllm-tools"
    tools.mkdir(exist_ok=True)
    exe = tools / "chat-render"
    source = tools / "chat-render.cpp"
    if exe.exists() and source.exists() and source.read_text() == SOURCE:
        return exe
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        raise RefllmError("chat-render needs a C++ compiler (c++ or g++)")
    with open(tools / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if exe.exists() and source.exists() and source.read_text() == SOURCE:
            return exe
        src = ref.source_dir
        partial_source = tools / "chat-render.cpp.partial"
        partial_source.write_text(SOURCE)
        cmd = [compiler, "-std=c++17", "-O1", "-x", "c++", str(partial_source), "-o", str(tools / "chat-render.partial"),
               f"-I{src / 'common'}", f"-I{src / 'include'}", f"-I{src / 'ggml' / 'include'}", f"-I{src / 'vendor'}",
               f"-L{ref.bin_dir}", "-lllama-common", "-lllama", "-lggml", "-lggml-base",
               f"-Wl,-rpath,{ref.bin_dir}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode:
            raise RefllmError(f"building chat-render failed:\n{result.stderr[-3000:]}")
        (tools / "chat-render.partial").rename(exe)
        partial_source.rename(source)
    return exe


def render(cases: list[dict], *, model=None, template: str | None = None, bos_token: str | None = None,
           eos_token: str | None = None) -> list[dict]:
    """Run ``chat-render`` on ``cases`` (see the module docstring); one ``{"prompt"|"error": ...}`` per case."""
    request: dict = {"cases": cases}
    if model is not None:
        request["model"] = str(model)
    for key, value in (("template", template), ("bos_token", bos_token), ("eos_token", eos_token)):
        if value is not None:
            request[key] = value
    result = subprocess.run([str(chat_render_tool())], input=json.dumps(request), capture_output=True, text=True)
    if result.returncode:
        raise RefllmError(f"chat-render failed (exit {result.returncode}): {result.stderr[-2000:]}")
    return json.loads(result.stdout)
