"""Run the reference converter, ``convert_hf_to_gguf.py`` of the vendored llama.cpp tree (tests and benchmarks only).

It runs in a subprocess with ``PYTHONPATH`` pointing at the vendored ``gguf-py`` (the script also puts it first on
``sys.path``), so it uses the gguf-py of the same commit and not the PyPI ``gguf`` package.  It needs ``torch``,
``transformers`` and ``sentencepiece``, which the ``test`` extra installs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ..errors import RefllmError
from .build import reference_source


def converter_command(model_dir: str | os.PathLike, outfile: str | os.PathLike, outtype: str) -> tuple[list[str], dict]:
    """The command line and environment that run the reference converter."""
    source = reference_source()
    env = {**os.environ, "PYTHONPATH": str(source / "gguf-py")}
    env.pop("NO_LOCAL_GGUF", None)
    cmd = [sys.executable, str(source / "convert_hf_to_gguf.py"), str(model_dir), "--outfile", str(outfile),
           "--outtype", outtype]
    return cmd, env


# Runs several conversions in one interpreter, so that torch and transformers are imported once: each job executes
# convert_hf_to_gguf.py as __main__ with its own sys.argv, exactly as the command line would.
_BATCH_DRIVER = """
import json, os, runpy, sys, traceback
script, jobs = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, os.path.dirname(script))  # as when the script is run directly
failed = 0
for args in jobs:
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            failed += 1
            print(f"refllm-batch: {args} exited with {e.code}", file=sys.stderr)
    except BaseException:
        failed += 1
        traceback.print_exc()
        print(f"refllm-batch: {args} failed", file=sys.stderr)
sys.exit(1 if failed else 0)
"""


def reference_convert_many(jobs: list[tuple[str | os.PathLike, str | os.PathLike, str]], processes: int = 2) -> None:
    """Run ``convert_hf_to_gguf.py MODEL --outfile OUT --outtype T`` for every ``(MODEL, OUT, T)`` in ``jobs``,
    spread over ``processes`` interpreters running side by side; raise with the log if any job fails."""
    source = reference_source()
    env = {**os.environ, "PYTHONPATH": str(source / "gguf-py")}
    env.pop("NO_LOCAL_GGUF", None)
    script = str(source / "convert_hf_to_gguf.py")
    groups = [jobs[i::processes] for i in range(processes) if jobs[i::processes]]
    procs = []
    for group in groups:
        args = json.dumps([[str(m), "--outfile", str(o), "--outtype", t] for m, o, t in group])
        procs.append(subprocess.Popen([sys.executable, "-c", _BATCH_DRIVER, script, args], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    errors = []
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            errors.append(err[-4000:])
    if errors:
        raise RefllmError("convert_hf_to_gguf.py failed:\n" + "\n".join(errors))


def reference_convert(model_dir: str | os.PathLike, outfile: str | os.PathLike, outtype: str) -> Path:
    """Convert with convert_hf_to_gguf.py; raise with its log if it fails."""
    cmd, env = converter_command(model_dir, outfile, outtype)
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RefllmError(f"convert_hf_to_gguf.py failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return Path(outfile)
