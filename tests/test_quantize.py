"""``refllm quantize`` against the reference ``llama-quantize`` (llama-cpp-python 0.3.36's llama.cpp).

Small seeded checkpoints from the checkpoint maker (the real 32064-token vocabulary) are converted to F32, F16 and
BF16 GGUF files by ``refllm convert`` (itself byte-identical to convert_hf_to_gguf.py, see test_convert.py), then
quantized by both tools; the output files must be byte-identical.  The shapes:

* ``mini-4k``: Phi-3-mini-4k (plain RoPE, sliding window), 8 layers, hidden 256 — every file type on every input type;
* ``longrope``: Phi-3.5-mini (LongRoPE factors), ``gqa``: Phi-3-medium-like with 4 query heads per KV head;
* ``h320`` and ``h144``: hidden sizes that are not multiples of 256 (K-quants fall back to Q5_0/Q5_1/Q8_0/Q4_0)
  and not even of 32 (everything falls back to F16).

Options (``--pure``, ``--output-tensor-type``, ``--token-embedding-type``, ``--leave-output-tensor``,
``--tensor-type``, ``--imatrix`` in both file formats with ``--include/--exclude-weights``, requantizing with
``--allow-requantize``) run on ``mini-4k``.  The mixture rules of every file type — the IQ ones too, which refllm
cannot encode yet — are compared on full-size Phi-3 headers with ``--dry-run`` (sparse files: no data is read).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from refllm import gguf
from refllm.cli.main import main
from refllm.convert import PRESETS, convert, make_checkpoint
from refllm.errors import RefllmError
from refllm.gguf.writer import header_bytes, tensor_nbytes
from refllm.quantize import imatrix as imatrix_io
from refllm.quantize import quantize_file
from refllm.quantize.ftypes import QUANT_OPTIONS
from refllm.quantize.mixtures import use_more_bits, weights_order

pytestmark = [pytest.mark.reference, pytest.mark.slow]

SHAPES = {  # name: (preset, make_checkpoint arguments)
    "mini-4k": ("phi3-mini-4k", dict(layers=8, hidden=256, heads=2, intermediate=512)),
    "longrope": ("phi3.5-mini", dict(layers=4, hidden=256, heads=2, intermediate=512)),
    "gqa": ("phi3-medium", dict(layers=4, hidden=256, heads=8, kv_heads=2, intermediate=512)),
    "h320": ("phi3-mini-4k", dict(layers=3, hidden=320, heads=4, intermediate=640)),
    "h144": ("phi3-mini-4k", dict(layers=2, hidden=144, heads=2, intermediate=160)),
}
# every llama-quantize file type whose formats refllm encodes (COPY copies, Q2_K_S needs an imatrix)
FTYPES = ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "Q4_0",
          "Q4_1", "Q5_0", "Q5_1", "F16", "BF16", "F32", "TQ1_0", "TQ2_0", "MXFP4_MOE", "Q1_0", "Q2_0", "COPY")
SOME_FTYPES = ("Q2_K", "Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "Q4_0", "Q5_1", "TQ1_0", "Q2_0",
               "MXFP4_MOE")
INPUTS = ("f32", "f16", "bf16")


@pytest.fixture(scope="module")
def vocab_file():
    from refllm.reference.build import reference_source

    return reference_source() / "models" / "ggml-vocab-phi-3.gguf"


@pytest.fixture(scope="module")
def models(tmp_path_factory, vocab_file):
    """{(shape, input type): GGUF path}."""
    root = tmp_path_factory.mktemp("quantize-models")
    out = {}
    for name, (preset, kwargs) in SHAPES.items():
        path = make_checkpoint(root / name, preset, seed=5, vocab_path=vocab_file, **kwargs)
        for outtype in INPUTS:
            out[name, outtype] = convert(path, root / f"{name}-{outtype}.gguf", outtype)
    return out


def _imatrix_data(path: Path, seed: int = 0):
    """Random sums and counts for every 2-D weight of a model, as llama-imatrix would collect them."""
    rng = np.random.default_rng(seed)
    sums, counts = {}, {}
    with gguf.read(path) as f:
        for t in f.tensors:
            if len(t.shape) == 2 and t.name != "token_embd.weight":
                sums[t.name] = (rng.random(t.shape[0], dtype=np.float32) * 40).astype(np.float32)
                counts[t.name] = [float(rng.integers(1, 5000))]
    return sums, counts


@pytest.fixture(scope="module")
def imatrices(models, tmp_path_factory):
    """Importance matrices for ``mini-4k`` in both formats, plus one for another model (it must not fit)."""
    root = tmp_path_factory.mktemp("imatrix")
    sums, counts = _imatrix_data(models["mini-4k", "f16"])
    sums["blk.99.ffn_up.weight"], counts["blk.99.ffn_up.weight"] = np.ones(7, np.float32), [3.0]  # no such tensor
    gguf_path = imatrix_io.write_gguf(root / "imatrix.gguf", sums, counts, datasets=["calibration.txt", "more.txt"],
                                      chunk_count=10, chunk_size=512)
    ncall = 9
    legacy = {name: s / np.float32(counts[name][0]) * np.float32(ncall) for name, s in sums.items()}
    legacy["blk.5.ffn_up.weight"][:3] = 0.0
    dat_path = imatrix_io.write_legacy(root / "imatrix.dat", legacy, ncall, chunk_count=12, dataset="wiki.train.raw")
    bare_dat = imatrix_io.write_legacy(root / "bare.dat", {k: v for k, v in legacy.items() if "blk.3." not in k}, 0)
    other_sums, other_counts = _imatrix_data(models["h320", "f16"], seed=1)
    other = imatrix_io.write_gguf(root / "other.gguf", other_sums, other_counts, datasets=["x"], chunk_count=1)
    return {"gguf": gguf_path, "dat": dat_path, "bare-dat": bare_dat, "other": other}


def run_reference(reference, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(reference.tool("llama-quantize")), *args], capture_output=True, text=True)


def _options_as_args(options: dict) -> list[str]:
    args = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if key == "tensor_types":
            for pattern, qtype in value:
                args += ["--tensor-type", f"{pattern}={qtype}"]
        elif key in ("include_weights", "exclude_weights"):
            for v in value:
                args += [flag, v]
        elif value is True:
            args.append(flag)
        else:
            args += [flag, str(value)]
    return args


def assert_same_file(ours: Path, ref: Path) -> None:
    """Byte-identical; on a difference, say where (metadata, tensor list, or which tensor's bytes)."""
    a, b = ours.read_bytes(), ref.read_bytes()
    if a == b:
        return
    with gguf.read(ours) as fa, gguf.read(ref) as fb:
        assert list(fa.metadata) == list(fb.metadata)
        for key in fa.metadata:
            assert fa.metadata[key] == fb.metadata[key], key
        assert [(t.name, t.type.name, t.shape) for t in fa.tensors] == [(t.name, t.type.name, t.shape)
                                                                       for t in fb.tensors]
        for ta, tb in zip(fa.tensors, fb.tensors):
            assert np.array_equal(ta.raw, tb.raw), f"tensor {ta.name} ({ta.type.name}) differs"
    assert len(a) == len(b) and a == b


def compare(reference, tmp_path, inp: Path, ftype: str, **options) -> Path:
    ref_out, ours_out = tmp_path / "reference.gguf", tmp_path / "refllm.gguf"
    r = run_reference(reference, [*_options_as_args(options), str(inp), str(ref_out), ftype, "2"])
    assert r.returncode == 0, r.stderr[-2000:]
    quantize_file(inp, ours_out, ftype, nthreads=2, **options)
    assert_same_file(ours_out, ref_out)
    return ours_out


@pytest.mark.parametrize("outtype", INPUTS)
@pytest.mark.parametrize("ftype", FTYPES)
def test_every_file_type(reference, models, tmp_path, ftype, outtype):
    compare(reference, tmp_path, models["mini-4k", outtype], ftype)


@pytest.mark.parametrize("ftype", SOME_FTYPES + ("Q1_0", "BF16"))
@pytest.mark.parametrize("shape,outtype", [("longrope", "bf16"), ("gqa", "f16"), ("h320", "f16"),
                                           ("h144", "bf16")])
def test_other_shapes(reference, models, tmp_path, shape, outtype, ftype):
    inp = models[shape, outtype]
    if ftype == "Q1_0" and shape in ("h320", "h144"):
        # Q1_0 has 128-element blocks and no fallback: both tools refuse
        r = run_reference(reference, [str(inp), str(tmp_path / "ref.gguf"), ftype, "2"])
        assert r.returncode == 1 and "no tensor type fallback is defined for type q1_0" in r.stderr
        with pytest.raises(RefllmError, match="no tensor type fallback for type q1_0"):
            quantize_file(inp, tmp_path / "ours.gguf", ftype)
        assert not (tmp_path / "ours.gguf").exists()
        return
    compare(reference, tmp_path, inp, ftype)


OPTION_CASES = {  # name: (input type, file type, options)
    "pure": ("f16", "Q4_K_M", dict(pure=True)),
    "pure-h": ("bf16", "Q3_K_S", dict(pure=True)),
    "output-q8_0": ("f16", "Q4_K_M", dict(output_tensor_type="q8_0")),
    "output-f16": ("bf16", "Q5_K_S", dict(output_tensor_type="f16")),
    "embd-q6_K": ("f16", "Q3_K_M", dict(token_embedding_type="Q6_K")),
    "embd-bf16-f16": ("f16", "F16", dict(token_embedding_type="bf16", output_tensor_type="q8_0")),
    "leave-output": ("f16", "Q5_K_M", dict(leave_output_tensor=True)),
    "leave-output-pure": ("f32", "Q4_0", dict(leave_output_tensor=True, pure=True)),
    "tensor-type": ("f16", "Q4_K_S", dict(tensor_types=[("attn_qkv", "q8_0"), ("blk\\.[12]\\.ffn", "q5_k")])),
}


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_options(reference, models, tmp_path, case):
    outtype, ftype, options = OPTION_CASES[case]
    compare(reference, tmp_path, models["mini-4k", outtype], ftype, **options)


IMATRIX_CASES = [  # (imatrix, input type, file type, more options)
    ("gguf", "f16", "Q4_K_M", {}), ("gguf", "f16", "Q2_K_S", {}), ("gguf", "f16", "Q2_K", {}),
    ("gguf", "bf16", "Q3_K_L", {}), ("gguf", "f16", "Q4_0", {}), ("gguf", "f32", "Q5_0", {}),
    ("gguf", "f16", "Q6_K", {}), ("gguf", "f16", "Q8_0", {}), ("gguf", "f16", "Q4_K_M", dict(pure=True)),
    ("gguf", "f16", "Q5_K_M", dict(include_weights=["ffn_", "attn_output"])),
    ("dat", "f16", "Q4_K_M", {}), ("dat", "bf16", "Q4_1", {}), ("dat", "f16", "Q5_1", {}),
    ("dat", "f16", "Q2_K_S", {}), ("dat", "f16", "Q4_K_M", dict(exclude_weights=["blk.7."])),
    ("bare-dat", "f16", "Q3_K_S", {}),
]


@pytest.mark.parametrize("which,outtype,ftype,options", IMATRIX_CASES)
def test_imatrix(reference, models, imatrices, tmp_path, which, outtype, ftype, options):
    out = compare(reference, tmp_path, models["mini-4k", outtype], ftype, imatrix=str(imatrices[which]), **options)
    with gguf.read(out) as f:
        assert f.get("quantize.imatrix.file") == str(imatrices[which])
        assert f.get("quantize.imatrix.entries_count") > 0


def test_imatrix_values(imatrices):
    """What the two formats hold after loading: sums / counts (GGUF), values / ncall (legacy)."""
    g = imatrix_io.load(imatrices["gguf"])
    d = imatrix_io.load(imatrices["dat"])
    assert not g.is_legacy and d.is_legacy
    assert g.datasets == ["calibration.txt", "more.txt"] and g.chunk_count == 10
    assert d.datasets == ["wiki.train.raw"] and d.chunk_count == 12
    assert set(g.entries) == set(d.entries)
    name = "blk.2.attn_qkv.weight"
    np.testing.assert_allclose(g.entries[name], d.entries[name], rtol=1e-6)
    assert imatrix_io.load(imatrices["bare-dat"]).datasets == []


REQUANTIZE_CASES = [("Q8_0", "Q4_K_M"), ("Q8_0", "COPY"), ("Q4_K_M", "Q5_0"), ("Q4_K_M", "Q8_0"),
                    ("Q4_K_M", "F16"), ("Q6_K", "Q3_K_M"), ("Q4_0", "BF16")]


@pytest.mark.parametrize("first,second", REQUANTIZE_CASES)
def test_requantize(reference, models, tmp_path, first, second):
    inp = tmp_path / "first.gguf"
    r = run_reference(reference, [str(models["h320", "f16"]), str(inp), first, "2"])
    assert r.returncode == 0, r.stderr[-2000:]
    (tmp_path / "second").mkdir()
    compare(reference, tmp_path / "second", inp, second, allow_requantize=True)


def test_metadata_copy(reference, models, tmp_path):
    """llama.cpp copies strings through c_str() (a string ends at its first NUL) and moves general.file_type and
    general.quantization_version to the end; an explicit general.alignment of 32 is kept."""
    inp = tmp_path / "nul.gguf"
    with gguf.read(models["mini-4k", "f16"]) as f:
        metadata = dict(f.metadata)
        metadata["general.name"] = gguf.Value.string("Phi\0hidden")
        metadata["test.strings"] = gguf.Value.array(gguf.ValueType.STRING, ["a", "b\0c", ""])
        metadata["general.alignment"] = gguf.Value.uint32(32)
        gguf.write(inp, metadata, f.tensors)
    (tmp_path / "q").mkdir()
    out = compare(reference, tmp_path / "q", inp, "Q8_0")
    with gguf.read(out) as f:
        assert f.get("general.name") == "Phi" and f.get("test.strings") == ["a", "b", ""]
        assert list(f.metadata)[-2:] == ["general.quantization_version", "general.file_type"]


# ---------------------------------------------------------------------------------------------------------------------
# The mixtures at full size: llama-quantize --dry-run on sparse files with the real Phi-3 shapes.

FULL_SIZE = ("phi3-mini-4k", "phi3.5-mini", "phi3-medium")
ALL_FTYPES = [name for name, _ in QUANT_OPTIONS if name not in ("Q3_K", "Q4_K", "Q5_K")]  # aliases


def _sparse_full_size(path: Path, small: Path, preset_name: str) -> Path:
    """A GGUF header with the preset's real shapes (metadata from a small conversion of the same preset, the
    hyper-parameters replaced) followed by a hole as large as the tensor data."""
    p = PRESETS[preset_name]
    hd = p.hidden_size // p.num_attention_heads
    with gguf.read(small) as f:  # the header is made while the small file (whose metadata it reuses) is open
        metadata = dict(f.metadata)
        for key, value in (("embedding_length", p.hidden_size), ("feed_forward_length", p.intermediate_size),
                           ("block_count", p.num_hidden_layers), ("attention.head_count", p.num_attention_heads),
                           ("attention.head_count_kv", p.num_key_value_heads), ("rope.dimension_count", hd)):
            metadata[f"phi3.{key}"] = gguf.Value.uint32(value)
        kinds = {t.name: t.type for t in f.tensors}
        n, ff, vocab = p.hidden_size, p.intermediate_size, p.vocab_size
        qkv = n + 2 * p.num_key_value_heads * hd
        shapes = {"token_embd.weight": (n, vocab), "output_norm.weight": (n,), "output.weight": (n, vocab)}
        if "rope_factors_long.weight" in kinds:
            shapes["rope_factors_long.weight"] = shapes["rope_factors_short.weight"] = (hd // 2,)
        for i in range(p.num_hidden_layers):
            shapes.update({f"blk.{i}.attn_norm.weight": (n,), f"blk.{i}.attn_output.weight": (n, n),
                           f"blk.{i}.attn_qkv.weight": (n, qkv), f"blk.{i}.ffn_down.weight": (ff, n),
                           f"blk.{i}.ffn_norm.weight": (n,), f"blk.{i}.ffn_up.weight": (n, 2 * ff)})
        weight_type, vector_type = kinds["blk.0.attn_qkv.weight"], kinds["output_norm.weight"]
        tensors = [gguf.TensorSpec(name, weight_type if len(shape) == 2 else vector_type, shape, None)
                   for name, shape in shapes.items()]
        head, offsets = header_bytes(metadata, tensors, 32)
    start = head + bytes(-len(head) % 32)
    end = len(start) + offsets[-1] + tensor_nbytes(tensors[-1].type, tensors[-1].shape)
    with open(path, "wb") as out:
        out.write(start)
        out.truncate(end + (-end % 32))
    return path


@pytest.fixture(scope="module")
def full_size(tmp_path_factory, vocab_file):
    root = tmp_path_factory.mktemp("full-size")
    out = {}
    for preset in FULL_SIZE:
        ckpt = make_checkpoint(root / preset, preset, layers=1, hidden=96, heads=1, kv_heads=1, intermediate=64,
                               seed=0, vocab_path=vocab_file)
        small = convert(ckpt, root / f"{preset}-small.gguf", "bf16")
        out[preset] = _sparse_full_size(root / f"{preset}.gguf", small, preset)
        sums, counts = _imatrix_data(out[preset])
        out[preset, "imatrix"] = imatrix_io.write_gguf(root / f"{preset}-imatrix.gguf", sums, counts,
                                                       datasets=["d"], chunk_count=3)
    return out


_TENSOR_LINE = re.compile(r"^\[\s*\d+/\s*\d+\] .*$", re.MULTILINE)


@pytest.mark.parametrize("with_imatrix", [False, True])
@pytest.mark.parametrize("preset", FULL_SIZE)
def test_full_size_mixtures(reference, full_size, preset, with_imatrix):
    """Every file type, IQ types included: the per-tensor lines of ``--dry-run`` (type and size of each tensor)."""
    path = full_size[preset]
    extra = ["--imatrix", str(full_size[preset, "imatrix"])] if with_imatrix else []
    for ftype in ALL_FTYPES:
        r = run_reference(reference, ["--dry-run", *extra, str(path), ftype])
        lines = []
        try:
            quantize_file(path, None, ftype, dry_run=True, log=lines.append,
                          imatrix=str(full_size[preset, "imatrix"]) if with_imatrix else None)
        except RefllmError as e:
            assert r.returncode != 0, f"{ftype}: refllm failed ({e}), llama-quantize did not"
            continue
        assert r.returncode == 0, f"{ftype}: llama-quantize failed, refllm did not:\n{r.stderr[-1500:]}"
        ours = [line for line in lines if _TENSOR_LINE.match(line)]
        assert ours == _TENSOR_LINE.findall(r.stderr), ftype
        assert ("will require an imatrix" in r.stderr) == any("will require an imatrix" in x for x in lines), ftype


def test_phi3_mini_q4_k_m_table(full_size):
    """quants-spec §4.7: Q4_K_M on Phi-3-mini gives Q6_K to attn_qkv and ffn_down on the use_more_bits layers."""
    with gguf.read(full_size["phi3-mini-4k"]) as f:
        from refllm.quantize import make_plan

        plan = make_plan(f, "Q4_K_M", dry_run=True)
    types = {p.decision.name: p.decision.target.name for p in plan.tensors}
    more = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31}
    assert {i for i in range(32) if use_more_bits(i, 32)} == more
    for i in range(32):
        expect = "Q6_K" if i in more else "Q4_K"
        assert types[f"blk.{i}.attn_qkv.weight"] == expect and types[f"blk.{i}.ffn_down.weight"] == expect
        assert types[f"blk.{i}.ffn_up.weight"] == "Q4_K" and types[f"blk.{i}.attn_output.weight"] == "Q4_K"
        assert types[f"blk.{i}.attn_norm.weight"] == "BF16" or types[f"blk.{i}.attn_norm.weight"] == "F32"
    assert types["output.weight"] == "Q6_K" and types["token_embd.weight"] == "Q4_K"


def test_weights_order():
    names = ["token_embd.weight", "blk.10.ffn_up.weight", "blk.2.attn_qkv.weight", "output.weight",
             "blk.2.attn_norm.weight", "rope_factors_long.weight", "blk.1.ffn_down.weight", "output_norm.weight"]
    assert weights_order(names) == ["output.weight", "output_norm.weight", "rope_factors_long.weight",
                                    "token_embd.weight", "blk.1.ffn_down.weight", "blk.2.attn_norm.weight",
                                    "blk.2.attn_qkv.weight", "blk.10.ffn_up.weight"]


# ---------------------------------------------------------------------------------------------------------------------
# Bad input: a RefllmError with a clear message, and no output file (neither the file nor a partial one).


def _expect_error(inp: Path, tmp_path: Path, ftype: str, fragments: tuple[str, ...], **options) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir(exist_ok=True)
    with pytest.raises(RefllmError) as info:
        quantize_file(inp, out_dir / "x.gguf", ftype, **options)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert list(out_dir.iterdir()) == []


def test_unknown_type(models, tmp_path):
    _expect_error(models["mini-4k", "f16"], tmp_path, "Q4_K_X", ("unknown quantization type 'Q4_K_X'", "Q4_K_M"))
    _expect_error(models["mini-4k", "f16"], tmp_path, "Q4_K_M", ("invalid ggml_type 'q9_0'",),
                  output_tensor_type="q9_0")


IQ_FTYPES = ("IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ1_S", "IQ1_M", "IQ3_XXS", "IQ3_S", "IQ3_M", "IQ3_XS", "IQ4_NL",
             "IQ4_XS")


def _encodable(ftype: str, model: Path) -> bool:
    """Whether refllm encodes every type the file type gives this model's tensors."""
    from refllm.quantize import make_plan
    from refllm.quants import can_quantize

    with gguf.read(model) as f:
        plan = make_plan(f, ftype, dry_run=True)
    return all(can_quantize(p.decision.target) for p in plan.tensors if p.decision.converts)


def test_not_encodable_yet(models, tmp_path):
    """An IQ file type whose formats refllm cannot encode (yet) is refused with a clear message."""
    missing = [f for f in IQ_FTYPES if not _encodable(f, models["mini-4k", "f16"])]
    if not missing:
        pytest.skip("refllm encodes every IQ type")
    _expect_error(models["mini-4k", "f16"], tmp_path, missing[-1], ("does not encode",), imatrix=None)


@pytest.mark.parametrize("ftype", IQ_FTYPES)
def test_iq_file_types(reference, models, imatrices, tmp_path, ftype):
    """The IQ file types, as soon as refllm has their encoders (with an importance matrix: some require one)."""
    if not _encodable(ftype, models["mini-4k", "f16"]):
        pytest.skip(f"refllm does not encode all the types {ftype} uses yet")
    compare(reference, tmp_path, models["mini-4k", "f16"], ftype, imatrix=str(imatrices["gguf"]))


def test_quantized_input_needs_allow_requantize(reference, models, tmp_path):
    inp = tmp_path / "q8.gguf"
    assert run_reference(reference, [str(models["mini-4k", "f16"]), str(inp), "Q8_0"]).returncode == 0
    r = run_reference(reference, [str(inp), str(tmp_path / "ref.gguf"), "Q4_K_M"])
    assert r.returncode == 1 and "requantizing from type q8_0 is disabled" in r.stderr
    _expect_error(inp, tmp_path, "Q4_K_M", ("already quantized (q8_0)", "--allow-requantize"))
    # a target equal to what is there is a copy, not a requantization: allowed in both tools
    compare(reference, tmp_path, inp, "Q8_0")


def test_imatrix_from_another_model(reference, models, imatrices, tmp_path):
    inp = models["mini-4k", "f16"]
    r = run_reference(reference, ["--imatrix", str(imatrices["other"]), str(inp), str(tmp_path / "r.gguf"), "Q4_K_M"])
    message = "imatrix size 320 is different from tensor size 256 for output.weight"
    assert r.returncode == 1 and message in r.stderr
    _expect_error(inp, tmp_path, "Q4_K_M", (message, "belong to this model"),
                  imatrix=imatrices["other"])


def test_imatrix_required(reference, models, imatrices, tmp_path):
    inp = models["mini-4k", "f16"]
    assert run_reference(reference, [str(inp), str(tmp_path / "r.gguf"), "Q2_K_S"]).returncode == 1
    _expect_error(inp, tmp_path, "Q2_K_S", ("requires an importance matrix", "q2_K"))
    message = "Missing importance matrix for tensor blk.3.attn_output.weight"
    r = run_reference(reference, ["--imatrix", str(imatrices["bare-dat"]), str(inp), str(tmp_path / "r.gguf"),
                                  "Q2_K_S"])
    assert r.returncode == 1 and message in r.stderr
    _expect_error(inp, tmp_path, "Q2_K_S", (message,), imatrix=imatrices["bare-dat"])


def test_bad_imatrix_file(models, tmp_path):
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"\x02\x00\x00\x00\x05\x00\x00\x00abc")
    _expect_error(models["mini-4k", "f16"], tmp_path, "Q4_K_M", ("bad.dat", "imatrix", "ends inside"),
                  imatrix=bad)
    bad.write_bytes(b"")
    _expect_error(models["mini-4k", "f16"], tmp_path, "Q4_K_M", ("bad.dat", "imatrix"), imatrix=bad)


def test_error_while_writing_leaves_nothing(models, tmp_path, monkeypatch):
    from refllm.quantize import pipeline

    real, calls = pipeline.quants.quantize, []

    def failing(x, qtype, imatrix=None):
        calls.append(qtype)
        if len(calls) == 3:
            raise RefllmError("simulated failure")
        return real(x, qtype, imatrix)

    monkeypatch.setattr(pipeline.quants, "quantize", failing)
    _expect_error(models["mini-4k", "f16"], tmp_path, "Q8_0", ("simulated",))


# ---------------------------------------------------------------------------------------------------------------------
# The command line: llama-quantize's arguments, its log lines, exit status 1 and no file on errors.


def test_cli(reference, models, tmp_path, capsys):
    inp = models["h320", "bf16"]
    ours, ref = tmp_path / "ours.gguf", tmp_path / "ref.gguf"
    r = run_reference(reference, [str(inp), str(ref), "q4_k_m", "2"])
    assert main(["quantize", str(inp), str(ours), "q4_k_m", "2"]) == 0
    err = capsys.readouterr().err
    assert ours.read_bytes() == ref.read_bytes()
    assert _TENSOR_LINE.findall(err) == _TENSOR_LINE.findall(r.stderr)
    warnings = re.findall(r"^warning: .*$", err, re.MULTILINE)
    assert warnings == re.findall(r"^warning: .*$", r.stderr, re.MULTILINE)
    assert "warning: blk.0.attn_output.weight             - ncols    320 not divisible by 256 (required for type " \
           "   q4_K) -> falling back to    q5_0" in warnings
    for key in ("model size  =", "quant size  =", "required fallback quantization"):
        assert re.findall(re.escape(key) + r".*", err) == re.findall(re.escape(key) + r".*", r.stderr)

    # no output name: ggml-model-TYPE.gguf next to the input, as llama-quantize names it
    local = tmp_path / "in.gguf"
    os.link(inp, local)
    assert main(["quantize", "--pure", str(local), "Q8_0", "1"]) == 0
    assert (tmp_path / "ggml-model-Q8_0.gguf").exists()

    assert main(["quantize", str(inp), str(tmp_path / "no.gguf"), "Q9_K"]) == 1
    assert "error: unknown quantization type 'Q9_K'" in capsys.readouterr().err
    assert main(["quantize", str(ours), str(tmp_path / "no.gguf"), "Q4_0"]) == 1
    assert "--allow-requantize" in capsys.readouterr().err
    assert main(["quantize", str(inp), str(inp), "Q4_0"]) == 1
    assert "input and output files are the same" in capsys.readouterr().err
    assert not (tmp_path / "no.gguf").exists()


def test_thread_count_does_not_matter(models, tmp_path):
    inp = models["longrope", "f16"]
    a = quantize_file(inp, tmp_path / "1.gguf", "Q5_K_M", nthreads=1).path
    b = quantize_file(inp, tmp_path / "2.gguf", "Q5_K_M", nthreads=2).path
    assert a.read_bytes() == b.read_bytes()
