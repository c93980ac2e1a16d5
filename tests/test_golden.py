"""Golden outputs (refllm.golden, ``refllm golden`` / ``refllm compare``) and whether they are honest.

* A model golden does not depend on the thread count: made with 1 and 2 threads, both modes, the two compare clean
  at zero tolerance.  Capturing does not change the forward pass.
* The tensors are llama.cpp's: libllama's own graph, run with an eval callback (as llama.cpp's ``llama-eval-callback``
  tool does), gives a tensor of the same name and shape for every tensor of a ggml-mode golden, and the values agree
  to float rounding (Q8_0 weights); the golden's logits stay within tests/test_model_ggml.py's tolerances of
  ``llama_logits`` (Q8_0 1e-5, Q4_K_M 0.05).
* ``compare`` finds a single perturbed element and names its tensor, layer and position; reports missing tensors,
  shape and dtype mismatches and NaN; exits 0 / 1 / 2.
* ``golden quant`` files hold ggml's bytes (``ggml_quantize_chunk``) and ggml's decoded floats for every type.
* Reading arbitrary bytes as a dump is a clean error.
"""

from __future__ import annotations

import ctypes
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refllm.cli.main import main
from refllm.ggml_types import GGMLType
from refllm.golden import DumpError, compare, golden_model, golden_quant, read_dump
from refllm.golden.format import (
    MANIFEST,
    MODEL_TENSORS,
    TENSOR_FILE,
    parse_selection,
    split_name,
)
from refllm.golden.quant import encodable_types
from refllm.model import Phi3Model
from refllm.quants import FORMATS, Imatrix

PROMPT = "The capital of France is Paris, and"


@pytest.fixture(scope="module")
def files(small_models):
    """{name: GGUF path}: a small GQA model as F32 and quantized by llama-quantize to Q8_0 and Q4_K_M."""
    return small_models("phi3-medium", ("Q8_0", "Q4_K_M"), seed=7, layers=2, hidden=256, heads=4, kv_heads=2,
                        intermediate=512)


@pytest.fixture(scope="module")
def golden(files, tmp_path_factory):
    """A ggml-mode golden of the Q8_0 model with a 3-token continuation."""
    out = tmp_path_factory.mktemp("golden") / "q8_0"
    golden_model(files["Q8_0"], PROMPT, out, n_predict=3, mode="ggml", greedy_logits=True, log=lambda _: None)
    return out


def _npy_dump(directory, tensors: dict) -> None:
    """Write tensors as another engine might: one NAME.npy per tensor."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, a in tensors.items():
        np.save(directory / f"{name}.npy", a)


def _compare_cli(capsys, *args) -> tuple[int, dict | None]:
    capsys.readouterr()
    code = main(["compare", *map(str, args), "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


# -- the model golden ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["f32", "ggml"])
def test_golden_does_not_depend_on_threads(files, tmp_path, capsys, mode):
    for threads in (1, 2):
        assert main(["golden", "model", "-m", str(files["Q4_K_M"]), "-p", PROMPT, "-n", "2", "--mode", mode,
                     "-t", str(threads), "--out", str(tmp_path / f"t{threads}")]) == 0
    one, two = read_dump(tmp_path / "t1"), read_dump(tmp_path / "t2")
    assert one.manifest["settings"]["threads"] == 1 and two.manifest["settings"]["threads"] == 2
    assert one.manifest["continuation"] == two.manifest["continuation"]
    report = compare(one, two, atol=0.0, rtol=0.0)
    assert report.ok and len(report.results) == 2 + 2 * 8 + 1
    code, result = _compare_cli(capsys, tmp_path / "t1", tmp_path / "t2", "--atol", "0", "--rtol", "0")
    assert code == 0 and result["ok"]


def test_golden_contents(files, golden):
    dump = read_dump(golden)
    m = dump.manifest
    n = len(m["tokens"])
    p = Phi3Model.from_gguf(files["Q8_0"]).params
    assert m["format"] == "refllm-golden" and m["kind"] == "model" and m["settings"]["mode"] == "ggml"
    assert m["settings"]["rope_policy"] == "ctx" and m["settings"]["sliding_window"] is False
    assert len(m["model"]["sha256"]) == 64 and m["reference"]["llama_cpp_commit"].startswith("0c1e570")
    assert m["positions"] == list(range(n)) and m["layers"] == [0, 1]
    assert [t["name"] for t in m["tensors"]] == list(dict.fromkeys(t["name"] for t in m["tensors"]))
    assert {t["name"]: t["shape"] for t in m["tensors"]} == {k: list(v.shape) for k, v in dump.tensors.items()}
    shapes = {"embd": [n, p.n_embd], "Qcur-1": [n, p.n_head, p.head_dim], "Kcur-0": [n, p.n_head_kv, p.head_dim],
              "kqv_out-1": [n, p.n_head * p.head_dim], "result_output": [n, p.n_vocab],
              "greedy_logits": [3, p.n_vocab]}
    assert all(list(dump.tensors[k].shape) == v for k, v in shapes.items())
    # the capture does not change the pass: the logits are those of a plain run; the continuation is greedy
    model = Phi3Model.from_gguf(files["Q8_0"], mode="ggml", rope_policy="ctx", sliding_window=False)
    logits = model.prompt_logits(m["tokens"])
    assert logits.tobytes() == dump.tensors["result_output"].tobytes()
    steps = dump.tensors["greedy_logits"]
    assert steps[0].tobytes() == logits[-1].tobytes()
    assert m["continuation"]["tokens"] == [int(np.argmax(row)) for row in steps]


def test_golden_selects_layers_and_positions(files, tmp_path, golden):
    golden_model(files["Q8_0"], PROMPT, tmp_path / "part", mode="ggml", layers="1", positions="0,-1",
                 log=lambda _: None)
    part, full = read_dump(tmp_path / "part"), read_dump(golden)
    n = len(full.manifest["tokens"])
    assert part.manifest["positions"] == [0, n - 1] and part.manifest["layers"] == [1]
    assert not any(split_name(name)[1] == 0 for name in part.tensors)
    for name, a in part.tensors.items():
        assert a.tobytes() == full.tensors[name][[0, n - 1]].tobytes(), name


def test_parse_selection():
    assert parse_selection(None, 4, "layers") == [0, 1, 2, 3]
    assert parse_selection("0,-1", 4, "layers") == [0, 3]
    assert parse_selection("1:3, 0", 4, "layers") == [0, 1, 2]
    assert parse_selection(":2", 4, "layers") == [0, 1]
    for bad in ("4", "x", "3:1"):
        with pytest.raises(Exception, match="--layers"):
            parse_selection(bad, 4, "layers")


# -- against llama.cpp -----------------------------------------------------------------------------------------


class _TensorHead(ctypes.Structure):
    """The first fields of ``struct ggml_tensor`` (ggml/include/ggml.h)."""

    _fields_ = [("type", ctypes.c_int), ("buffer", ctypes.c_void_p), ("ne", ctypes.c_int64 * 4),
                ("nb", ctypes.c_size_t * 4)]


_EVAL_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_bool, ctypes.c_void_p)


def llama_cpp_dump(reference, model_path, tokens) -> dict[str, np.ndarray]:
    """llama.cpp's own intermediate tensors for ``tokens`` (one batch, every position's logits), taken as
    ``llama-eval-callback`` sees them: ``cb_eval`` is called for each graph node, by the name ``cb()`` gave it.

    A name can label several nodes: ``Qcur-<il>`` the view of wqkv before RoPE, the ROPE result and the 1/sqrt(D)
    scaling; ``Kcur-<il>`` the view and the ROPE result.  The golden holds the ROPE results; otherwise the first.
    """
    from refllm.reference.llama_logits import LlamaSession

    base = ctypes.CDLL(str(reference.bin_dir / "libggml-base.so"))
    for fn, restype in (("ggml_get_name", ctypes.c_char_p), ("ggml_get_data", ctypes.c_void_p),
                        ("ggml_op_desc", ctypes.c_char_p)):
        getattr(base, fn).restype, getattr(base, fn).argtypes = restype, [ctypes.c_void_p]
    dump: dict[str, np.ndarray] = {}

    def callback(t, ask, _):
        name = base.ggml_get_name(t).decode()
        kind = split_name(name)[0]
        if kind not in MODEL_TENSORS or name in dump or (kind in ("Qcur", "Kcur")
                                                         and base.ggml_op_desc(t) != b"ROPE"):
            return True
        if ask:
            return True
        head = _TensorHead.from_address(t)
        assert head.type == int(GGMLType.F32), name
        k = len(MODEL_TENSORS[kind][0])  # ggml's ne[k:] are 1
        ne, nb = list(head.ne)[:k][::-1], list(head.nb)[:k][::-1]
        extent = sum((n - 1) * s for n, s in zip(ne, nb)) + 4
        raw = np.ctypeslib.as_array(ctypes.cast(base.ggml_get_data(t), ctypes.POINTER(ctypes.c_uint8)), (extent,))
        view = np.lib.stride_tricks.as_strided(raw, shape=ne + [4], strides=nb + [1])  # strided, e.g. Vcur
        dump[name] = np.array(view).view(np.float32)[..., 0]
        return True

    with LlamaSession(model_path, n_batch=len(tokens), cb_eval=_EVAL_CALLBACK(callback)) as session:
        session.decode(tokens)
    return dump


def test_golden_tensors_are_llama_cpps(reference, ggml_exact, files, golden, tmp_path, capsys):
    """Every tensor of a ggml-mode golden is in llama.cpp's graph under the same name, with the same shape and —
    Q8_0 weights — the same values: bit for bit on the build the ggml mode reproduces.  On another build the float
    parts sum in other orders (<= 1e-6), and as the attention reads the values from an F16 cache, where such a
    last-bit difference can flip a rounding, kqv_out may then be off by a weight times one half-precision step of a
    value (atol 1e-4)."""
    ours = read_dump(golden)
    theirs = llama_cpp_dump(reference, files["Q8_0"], ours.manifest["tokens"])
    _npy_dump(tmp_path / "llama", theirs)
    atol = 0.0 if ggml_exact else 1e-4
    report = compare(ours, read_dump(tmp_path / "llama"), atol=atol, rtol=0.0, pattern="^(?!greedy_logits)")
    for r in report.results:
        print(f"{r.name:14s} max_abs {r.max_abs:.2g} nmse {r.nmse:.2g}")
    assert report.ok, [(r.name, r.status, r.max_abs) for r in report.results if not r.ok]
    assert {r.name for r in report.results} == set(ours.tensors) - {"greedy_logits"}
    assert all(r.nmse < 1e-10 for r in report.results)
    assert all(r.max_abs <= 1e-6 for r in report.results if not r.name.startswith("kqv_out"))
    code, _ = _compare_cli(capsys, golden, tmp_path / "llama", "--atol", str(atol), "--rtol", "0", "--tensors",
                           "^(?!greedy)")
    assert code == 0


@pytest.mark.parametrize("name, atol", [("Q8_0", 1e-5), ("Q4_K_M", 0.05)])
def test_golden_logits_match_llama_cpp(reference, ggml_exact, files, tmp_path, name, atol):
    """The golden's logits are llama.cpp's: bit for bit on the build the ggml mode reproduces, else within the
    agreement measured on other builds (tests/test_model_agreement.py)."""
    from refllm.reference.llama_logits import llama_logits

    golden_model(files[name], PROMPT, tmp_path / "g", mode="ggml", positions="all", layers="0",
                 log=lambda _: None)
    dump = read_dump(tmp_path / "g")
    theirs = llama_logits(files[name], dump.manifest["tokens"])
    _npy_dump(tmp_path / "llama", {"result_output": theirs})
    atol = 0.0 if ggml_exact else atol
    result = compare(dump, read_dump(tmp_path / "llama"), atol=atol, rtol=0.0, pattern="^result_output$").results[0]
    print(f"{name}: golden logits vs llama.cpp max_abs {result.max_abs:.2g} nmse {result.nmse:.2g}")
    assert result.ok


# -- compare -----------------------------------------------------------------------------------------------------


def test_compare_finds_one_perturbed_element(golden, tmp_path, capsys):
    dump = read_dump(golden)
    tensors = {k: v.copy() for k, v in dump.tensors.items()}
    position = 4
    target = tensors["kqv_out-1"]
    target[position, 17] = np.nextafter(target[position, 17], np.float32(np.inf))  # one ulp
    _npy_dump(tmp_path / "foreign", tensors)
    code, result = _compare_cli(capsys, golden, tmp_path / "foreign", "--atol", "0", "--rtol", "0")
    assert code == 1 and not result["ok"] and result["first_failure"] == "kqv_out-1"
    bad = [t for t in result["tensors"] if t["status"] != "ok"]
    assert len(bad) == 1
    assert bad[0]["layer"] == 1 and bad[0]["first_bad"] == [position, 17] and bad[0]["n_bad"] == 1
    assert bad[0]["where"] == f"position {dump.manifest['positions'][position]}"
    # within tolerance it passes; the table names the tensor and the position
    assert main(["compare", str(golden), str(tmp_path / "foreign"), "--atol", "1e-6"]) == 0
    capsys.readouterr()
    assert main(["compare", str(golden), str(tmp_path / "foreign"), "--atol", "0", "--rtol", "0"]) == 1
    table = capsys.readouterr().out
    assert "FAIL: 1 of" in table and "first: kqv_out-1 (layer 1, fail, position 4)" in table


def test_compare_missing_shape_dtype_nan(golden, tmp_path, capsys):
    tensors = {k: v.copy() for k, v in read_dump(golden).tensors.items()}
    del tensors["Vcur-0"]
    tensors["ffn_out-1"] = tensors["ffn_out-1"][:-1]
    tensors["embd"] = tensors["embd"].astype(np.int32)
    tensors["extra"] = np.zeros(3, np.float32)
    _npy_dump(tmp_path / "bad", tensors)
    code, result = _compare_cli(capsys, golden, tmp_path / "bad")
    status = {t["name"]: (t["status"], t["message"]) for t in result["tensors"] if t["status"] != "ok"}
    n = len(read_dump(golden).manifest["positions"])
    assert code == 1
    assert status == {"embd": ("dtype", "dtype float32 in A, int32 in B (float against integer)"),
                      "Vcur-0": ("missing", "not in B"),
                      "ffn_out-1": ("shape", f"shape [{n}, 256] in A, [{n - 1}, 256] in B"),
                      "extra": ("missing", "not in A")}
    # NaN: equal where both have it, a failure where one has it
    a = {"x": np.array([[1.0, np.nan], [np.inf, 2.0]], np.float32)}
    same = {"x": a["x"].copy()}
    other = {"x": np.array([[1.0, 3.0], [np.inf, 2.0]], np.float32)}
    _npy_dump(tmp_path / "a", a)
    _npy_dump(tmp_path / "same", same)
    _npy_dump(tmp_path / "other", other)
    assert _compare_cli(capsys, tmp_path / "a", tmp_path / "same")[0] == 0
    code, result = _compare_cli(capsys, tmp_path / "a", tmp_path / "other", "--atol", "1e9")
    assert code == 1 and result["tensors"][0]["first_bad"] == [0, 1] and result["tensors"][0]["max_abs"] == "inf"


def test_compare_exit_codes_for_unreadable_input(golden, tmp_path, capsys):
    assert main(["compare", str(golden), str(tmp_path / "nowhere")]) == 2
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    assert main(["compare", str(golden), str(tmp_path / "junk.safetensors")]) == 2
    assert main(["compare", str(golden), str(golden), "--tensors", "("]) == 2
    assert "error:" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compare", str(golden), str(empty)]) == 2
    # a golden whose tensor file does not match its manifest
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MANIFEST).write_text((golden / MANIFEST).read_text())
    (broken / TENSOR_FILE).write_bytes((golden / TENSOR_FILE).read_bytes()[:-1])
    with pytest.raises(DumpError, match="sha256"):
        read_dump(broken)


SAFETENSORS_START = b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":"  # a header length, then the JSON's start


@settings(max_examples=150)
@given(data=st.binary(max_size=300), prefix=st.sampled_from([b"", b"\x93NUMPY\x01\x00", SAFETENSORS_START]),
       kind=st.sampled_from(["safetensors", "npy", "manifest"]))
def test_reading_arbitrary_bytes_is_a_clean_error(tmp_path_factory, data, prefix, kind):
    root = tmp_path_factory.mktemp("junk")
    name = {"safetensors": "x.safetensors", "npy": "x.npy", "manifest": MANIFEST}[kind]
    (root / name).write_bytes(prefix + data)
    try:
        dump = read_dump(root / name if kind == "safetensors" else root)
    except DumpError:
        return
    for a in dump.tensors.values():  # whatever was read is a numeric array
        assert a.dtype.kind in "fiub"


# -- quant goldens ---------------------------------------------------------------------------------------------


def _ggml_encode(ggml, x, qtype, imatrix):
    if qtype in (GGMLType.Q8_1, GGMLType.Q8_K):  # not in ggml_quantize_chunk: the reference row quantizers
        return ggml.quantize_row_ref(x, qtype)
    return ggml.quantize_chunk(x, qtype, imatrix)


def _ggml_decode(ggml, q, qtype, n):
    if qtype == GGMLType.Q8_K:
        return ggml.dequantize_row(q, qtype, n)
    if qtype in (GGMLType.Q8_1, GGMLType.F32):  # ggml has no decoder: Q8_1 is d·q, F32 is itself
        return None
    return ggml.to_float(q, qtype, n)


@pytest.mark.parametrize("use_imatrix", [False, True], ids=["plain", "imatrix"])
def test_quant_golden_is_ggmls(ggml, tmp_path, capsys, use_imatrix):
    types = encodable_types()
    golden_quant(types, tmp_path / "q", n_rows=3, n_cols=512, seed=3, imatrix=use_imatrix, log=lambda _: None)
    dump = read_dump(tmp_path / "q")
    assert dump.kind == "quant" and dump.manifest["rows"][:5] == ["zeros", "constant", "outlier", "subnormal", "huge"]
    assert [t["type"] for t in dump.manifest["types"]] == [t.name for t in types]
    for qtype in types:
        x = dump.tensors[f"{qtype.name}.input"]
        imatrix = dump.tensors.get(f"{qtype.name}.imatrix")
        assert (imatrix is not None) == (use_imatrix and FORMATS[qtype].imatrix == Imatrix.OPTIONAL
                                         or FORMATS[qtype].imatrix == Imatrix.REQUIRED)
        encoded = dump.tensors[f"{qtype.name}.encoded"]
        assert encoded.dtype == np.uint8
        assert encoded.tobytes() == _ggml_encode(ggml, x, qtype, imatrix).tobytes(), qtype.name
        decoded = _ggml_decode(ggml, encoded, qtype, x.shape[1])
        if decoded is not None:
            assert dump.tensors[f"{qtype.name}.decoded"].tobytes() == decoded.tobytes(), qtype.name
    # compare: bit for bit by default; one flipped byte is found in its tensor and row
    assert main(["compare", str(tmp_path / "q"), str(tmp_path / "q")]) == 0
    tensors = dict(dump.tensors)
    tensors["Q4_K.encoded"] = tensors["Q4_K.encoded"].copy()
    tensors["Q4_K.encoded"][6, 40] ^= 1
    _npy_dump(tmp_path / "flipped", tensors)
    code, result = _compare_cli(capsys, tmp_path / "q", tmp_path / "flipped", "--atol", "1")
    bad = [t for t in result["tensors"] if t["status"] != "ok"]
    assert code == 1 and [t["name"] for t in bad] == ["Q4_K.encoded"]
    assert bad[0]["exact"] and bad[0]["first_bad"] == [6, 40] and bad[0]["where"] == "row 6 (gaussian-1)"


def test_quant_golden_cli(tmp_path, capsys):
    assert main(["golden", "quant", "--type", "Q4_K,q8_0", "--rows", "2", "--out", str(tmp_path / "q")]) == 0
    manifest = json.loads((tmp_path / "q" / MANIFEST).read_text())
    assert [t["type"] for t in manifest["types"]] == ["Q4_K", "Q8_0"]
    assert manifest["types"][0]["row_bytes"] == 144 and len(manifest["rows"]) == 5 + 2
    assert main(["golden", "quant", "--type", "Q4_K", "--cols", "96", "--out", str(tmp_path / "x")]) == 1
    assert main(["golden", "quant", "--type", "IQ2_XXS", "--out", str(tmp_path / "x")]) == 1
    assert "refllm does not encode it" in capsys.readouterr().err
