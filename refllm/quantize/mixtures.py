"""Which ggml type each tensor gets: llama.cpp's quantization *mixtures* (``src/llama-quant.cpp``).

A file type such as Q4_K_M does not quantize every tensor to Q4_K.  ``llama-quantize`` walks the tensors in a fixed
order and, for each one, decides:

1. whether it may be quantized at all (``tensor_allows_quantization``): 1-D tensors, norms, biases, ... keep their
   type;
2. its *category* from its name (``tensor_get_category``): token embedding, output, attn_v-like, ffn_down, ...;
3. its type (``llama_tensor_get_type`` → ``llama_tensor_get_type_impl``): the file type's default type, bumped up for
   the sensitive tensors — the output matrix, attention V (and, in this llama.cpp version, Phi-3's *fused* QKV,
   which counts as "attn_v-like"), the first and last eighth of the ffn_down layers, ...;
4. a fallback when the row length ``ne[0]`` is not a multiple of the chosen type's block size
   (``tensor_type_fallback``): Q4_K → Q5_0, Q6_K → Q8_0, ... and F16 when even 32 does not divide it.

Some rules count tensors as they go (``i_attention_wv``, ``i_ffn_down``), so the *order* of the walk matters: it is
the loader's ``weights_map`` order (:func:`weights_order`).  This module is a line-by-line reading of those
functions; docs/quantize.md has the tables.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import RefllmError
from ..ggml_types import TYPE_SIZES, GGMLType
from .ftypes import DEFAULT_TYPE, FType, is_quantized, type_name

T = GGMLType
F = FType


class Category(enum.Enum):
    """``enum class tensor_category``: broad roles, recognised from the tensor name."""

    TOKEN_EMBD = "token_embd"
    ATTENTION_Q = "attn_q"
    ATTENTION_V = "attn_v"
    ATTENTION_K = "attn_k"
    ATTENTION_QKV = "attn_qkv"
    ATTENTION_KV_B = "attn_kv_b"
    ATTENTION_OUTPUT = "attn_output"
    FFN_UP = "ffn_up"
    FFN_GATE = "ffn_gate"
    FFN_DOWN = "ffn_down"
    OUTPUT = "output"
    OTHER = "other"


C = Category


def category(name: str) -> Category:
    """``tensor_get_category``: the first test that matches wins (so Phi-3's fused ``ffn_up`` is FFN_UP)."""
    if name == "output.weight":
        return C.OUTPUT
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return C.TOKEN_EMBD
    for fragment, cat in (("attn_qkv.weight", C.ATTENTION_QKV), ("attn_kv_b.weight", C.ATTENTION_KV_B),
                          ("attn_v.weight", C.ATTENTION_V), ("attn_k.weight", C.ATTENTION_K),
                          ("attn_q.weight", C.ATTENTION_Q), ("attn_output.weight", C.ATTENTION_OUTPUT),
                          ("ffn_up", C.FFN_UP), ("ffn_gate", C.FFN_GATE), ("ffn_down", C.FFN_DOWN)):
        if fragment in name:
            return cat
    return C.OTHER


def is_attn_v(cat: Category) -> bool:
    """``category_is_attn_v``: V, the fused QKV and MLA's KV_B are all treated as "attention V"."""
    return cat in (C.ATTENTION_V, C.ATTENTION_QKV, C.ATTENTION_KV_B)


def n_dims(shape: Sequence[int]) -> int:
    """``ggml_n_dims``: the number of dimensions without the trailing 1s (at least 1)."""
    n = len(shape)
    while n > 1 and shape[n - 1] == 1:
        n -= 1
    return max(n, 1)


def ne(shape: Sequence[int], i: int) -> int:
    return shape[i] if i < len(shape) else 1


_LAYER = re.compile(r"blk\.\s*([+-]?\d+)")  # sscanf(name, "blk.%d.", &layer): "%d" skips blanks, takes a sign


def layer_of(name: str) -> int | None:
    """The layer number ``sscanf(name, "blk.%d.")`` reads, or None."""
    m = _LAYER.match(name)
    return int(m.group(1)) if m else None


def weights_order(names: Sequence[str]) -> list[str]:
    """The loader's ``weights_map`` order (``weight_name_comparer``, src/llama-model-loader.h): by the layer number
    of ``blk.N.`` (names without one count as layer -1, so they come first), then by name (bytewise)."""

    def key(name: str):
        layer = layer_of(name)
        return (-1 if layer is None else layer, name.encode("utf-8", "surrogateescape"))

    return sorted(names, key=key)


@dataclass(frozen=True)
class ModelInfo:
    """The hyper-parameters the rules look at (what ``llama_model::load_hparams`` puts into ``hparams``)."""

    arch: str
    n_layer: int  # hparams.n_layer_all: {arch}.block_count
    n_head: int  # n_head(0)
    n_head_kv: int  # n_head_kv(0)
    n_expert: int = 0  # {arch}.expert_count
    is_70b: bool = False  # model.type == LLM_TYPE_70B

    @property
    def n_gqa(self) -> int:
        """``hparams.n_gqa()``: query heads per KV head (integer division; 0 without KV heads)."""
        return self.n_head // self.n_head_kv if self.n_head_kv else 0

    @classmethod
    def from_metadata(cls, metadata: Mapping, where: str = "input") -> ModelInfo:
        def get(key, default=None):
            value = metadata.get(key)
            if value is None:
                if default is None:
                    raise RefllmError(f"{where}: metadata key {key!r} is missing")
                return default
            data = value.to_python()
            if isinstance(data, list):  # per-layer arrays (head counts): the rules use layer 0's
                if not data:
                    raise RefllmError(f"{where}: metadata key {key!r} is an empty array")
                data = data[0]
            if isinstance(data, bool) or not isinstance(data, int):
                raise RefllmError(f"{where}: metadata key {key!r} must be an integer, not {data!r}")
            return data

        arch_value = metadata.get("general.architecture")
        if arch_value is None or not isinstance(arch_value.data, str):
            raise RefllmError(f"{where}: metadata key 'general.architecture' is missing")
        arch = arch_value.data
        n_layer = get(f"{arch}.block_count")
        n_head = get(f"{arch}.attention.head_count", 0)
        n_head_kv = get(f"{arch}.attention.head_count_kv", n_head)
        n_expert = get(f"{arch}.expert_count", 0)
        # model types: only LLM_TYPE_70B matters here (src/models/*.cpp, load_arch_hparams)
        is_70b = ((arch == "llama" and n_layer == 80 and n_head != n_head_kv)
                  or (arch in ("qwen2", "deci", "olmo") and n_layer == 80) or (arch == "jais2" and n_layer == 68))
        return cls(arch, n_layer, n_head, n_head_kv, n_expert, is_70b)


@dataclass
class Options:
    """The ``llama_model_quantize_params`` fields that steer the type choice."""

    ftype: FType
    pure: bool = False  # --pure: no mixture rules, every tensor gets the default type (fallbacks still apply)
    output_tensor_type: GGMLType | None = None  # --output-tensor-type
    token_embedding_type: GGMLType | None = None  # --token-embedding-type
    quantize_output_tensor: bool = True  # False with --leave-output-tensor
    only_copy: bool = False  # the COPY "type"
    tensor_types: list[tuple[str, GGMLType]] = field(default_factory=list)  # --tensor-type PATTERN=TYPE
    has_imatrix: bool = False


@dataclass
class Decision:
    """What happens to one tensor."""

    name: str
    shape: tuple[int, ...]
    type: GGMLType  # its type in the input
    target: GGMLType
    category: Category
    allows_quantization: bool
    requires_imatrix: bool

    @property
    def converts(self) -> bool:
        """True when the data must be re-encoded (the target differs from the input type); else copied."""
        return self.target != self.type


def allows_quantization(name: str, shape: Sequence[int], arch: str, options: Options) -> bool:
    """``tensor_allows_quantization``: only 2-D and 3-D weights are quantized, and not all of them."""
    if options.only_copy:
        return False
    if n_dims(shape) < 2:  # 1-D: norms, biases, rope factors
        return False
    # "ends with 'weight'" is name.rfind("weight") == name.size() - 6 in C++; for a 5-byte name the right-hand side
    # wraps around to npos, which is also what rfind returns, so such a name passes too
    size = len(name.encode("utf-8", "surrogateescape"))
    quantize = name.endswith("weight") or size == 5
    quantize &= "_norm.weight" not in name
    quantize &= options.quantize_output_tensor or name != "output.weight"
    for fragment in ("ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel", "per_layer_model_proj"):
        quantize &= fragment not in name
    # LLM_TN(arch)(POS_EMBD / TOKEN_TYPES, "weight"): the BERT-style position and token-type tables
    quantize &= name not in ("position_embd.weight", "token_types.weight")
    for fragment in ("ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight", "indexer.q_proj.weight"):
        quantize &= fragment not in name
    if arch == "glm5-next":
        for fragment in ("hc_", "indexer.attn_q_b", "indexer.attn_k", "indexer.proj", "indexer_compressor_gate",
                         "indexer_compressor_ape", "ssm_f_a.weight", "ssm_f_b.weight", "ssm_g_a.weight",
                         "ssm_g_b.weight", "ssm_beta.weight", "attn_kv_a_mqa.weight", "attn_k_b.weight",
                         "attn_v_b.weight"):
            quantize &= fragment not in name
    for suffix in ("first", "w0", "w1", "w2", "v0", "v1", "v2", "a0", "a1", "a2", "g1", "g2", "decay_w1",
                   "decay_w2", "lerp_fused"):  # RWKV's small 2-D weights
        quantize &= f"time_mix_{suffix}.weight" not in name
    quantize &= "attn_rel_b.weight" not in name  # T5's relative position bias
    for fragment in (".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd",
                     ".patch_merger", "a.rvq.codebook", "mm.a.code_embd"):  # multimodal and audio tensors
        quantize &= fragment not in name
    return quantize


def requires_imatrix(name: str, target: GGMLType, ftype: FType) -> bool:
    """``tensor_requires_imatrix``: the very-low-bit types refuse to run without an importance matrix."""
    if name in ("token_embd.weight", "per_layer_token_embd.weight", "output.weight"):
        return False
    if target in (T.IQ3_XXS, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ1_M, T.IQ1_S):
        return True
    return target == T.Q2_K and ftype == F.MOSTLY_Q2_K_S  # K-quants need none, except Q2_K inside Q2_K_S


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """The layers that get more bits: the first and last eighth, and every third layer in between (C++ integer
    division and remainder; ``(i - n/8) % 3`` is never negative here because ``i >= n/8`` when it is evaluated)."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or _cmod(i_layer - n_layers // 8, 3) == 2


def _cdiv(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _cmod(a: int, b: int) -> int:
    return a - b * _cdiv(a, b)


class Chooser:
    """``quantize_state_impl``: the model, the options and the running counters of one quantization.

    Call :meth:`choose` once per tensor, in :func:`weights_order`; the counters advance as in llama.cpp.
    """

    def __init__(self, model: ModelInfo, options: Options, names: Sequence[str]):
        self.model, self.options = model, options
        self.default_type = DEFAULT_TYPE.get(options.ftype)
        if self.default_type is None:
            raise RefllmError(f"invalid output file type {int(options.ftype)} ({options.ftype.name}): llama.cpp has "
                              f"no default tensor type for it")
        self.patterns = [(re.compile(p), t) for p, t in options.tensor_types]
        # init_quantize_state_counters
        cats = [category(n) for n in names]
        self.n_attention_wv = sum(1 for c in cats if is_attn_v(c))
        self.has_tied_embeddings = C.OUTPUT not in cats  # tied until an output.weight is seen
        self.n_ffn_down = self.n_ffn_gate = self.n_ffn_up = model.n_layer
        self.i_attention_wv = self.i_ffn_down = self.i_ffn_gate = self.i_ffn_up = 0
        self.n_fallback = 0
        self.messages: list[str] = []  # the warnings llama.cpp logs while choosing (fallbacks, overrides)

    # -- llama_tensor_get_type ------------------------------------------------------------------------------------

    def choose(self, name: str, shape: Sequence[int], current: GGMLType) -> Decision:
        opts = self.options
        cat = category(name)
        allowed = allows_quantization(name, shape, self.model.arch, opts)
        target = self._get_type(name, shape, current, cat) if allowed else current
        return Decision(name, tuple(shape), current, target, cat, allowed,
                        requires_imatrix(name, target, opts.ftype))

    def _get_type(self, name: str, shape: Sequence[int], current: GGMLType, cat: Category) -> GGMLType:
        opts = self.options
        if opts.token_embedding_type is not None and cat == C.TOKEN_EMBD:
            # per_layer_token_embd follows --token-embedding-type unless a --tensor-type pattern names it
            named = name == "per_layer_token_embd.weight" and any(p.search(name) for p, _ in self.patterns)
            if not named:
                return opts.token_embedding_type
        if opts.output_tensor_type is not None and cat == C.OUTPUT:
            return opts.output_tensor_type

        new_type = self.default_type
        if not is_quantized(self.default_type):  # F32 / F16 / BF16 file types: no rules, no fallback
            return new_type
        manual = False
        for pattern, qtype in self.patterns:  # --tensor-type: the first matching pattern wins
            if pattern.search(name):
                if qtype != new_type:
                    self.messages.append(f"llama_tensor_get_type: {name:<36} - applying manual override: "
                                         f"{type_name(new_type)} -> {type_name(qtype)}")
                    new_type = qtype
                manual = True
                break
        if not manual and not opts.pure:
            new_type = self._get_type_impl(name, shape, new_type, cat)
        return self._fallback(name, shape, new_type)

    # -- tensor_type_fallback -------------------------------------------------------------------------------------

    def _fallback(self, name: str, shape: Sequence[int], target: GGMLType) -> GGMLType:
        ncols = ne(shape, 0)
        block = TYPE_SIZES[target].block_size
        if ncols % block == 0:
            return target
        message = (f"warning: {name:<36} - ncols {ncols:6d} not divisible by {block:3d} "
                   f"(required for type {type_name(target):>7}) ")
        self.n_fallback += 1
        if target in (T.IQ1_S, T.IQ1_M, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ4_XS):
            result = T.IQ4_NL
        elif target in (T.Q2_0, T.Q2_K, T.Q3_K, T.TQ1_0, T.TQ2_0):
            result = T.Q4_0
        elif target == T.Q4_K:
            result = T.Q5_0
        elif target == T.Q5_K:
            result = T.Q5_1
        elif target == T.Q6_K:
            result = T.Q8_0
        elif block <= 32:
            result = target  # already a 32-block type: the check below turns it into F16
        else:
            raise RefllmError(f"tensor {name!r}: ne[0] = {ncols} is not a multiple of {block} and llama.cpp defines "
                              f"no tensor type fallback for type {type_name(target)}")
        if ncols % TYPE_SIZES[result].block_size:
            message += "(WARNING: must use F16 due to unusual shape) "
            result = T.F16
        self.messages.append(message + f"-> falling back to {type_name(result):>7}")
        return result

    # -- llama_tensor_get_type_impl -------------------------------------------------------------------------------

    def _layer_info(self, i_layer: int, n_layer: int, name: str) -> tuple[int, int]:
        """With experts the layer comes from the name (expert tensors are not in layer order); else the counter."""
        if max(1, self.model.n_expert) > 1:
            layer = layer_of(name)
            if layer is None:
                raise RefllmError(f"Failed to determine layer for tensor {name}")
            if not 0 <= layer < n_layer:
                raise RefllmError(f"Bad layer {layer} for tensor {name}. Must be in [0, {n_layer})")
            i_layer = layer
        return i_layer, n_layer

    def _get_type_impl(self, name: str, shape: Sequence[int], new_type: GGMLType, cat: Category) -> GGMLType:
        ftype, arch, hp = self.options.ftype, self.model.arch, self.model
        n_expert = hp.n_expert
        falcon = arch == "falcon"

        # GLM5_NEXT keeps a few projections at Q8_0 or better
        if arch == "glm5-next" and any(f in name for f in ("attn_q_a", "attn_q_b", "nextn.eh_proj")):
            if new_type not in (T.F32, T.BF16, T.F16):
                return T.Q8_0

        if cat == C.OUTPUT or (self.has_tied_embeddings and cat == C.TOKEN_EMBD):
            # the output matrix (or the embedding table that doubles as it): Q6_K for almost every file type
            if self.options.output_tensor_type is not None:
                new_type = self.options.output_tensor_type
            else:
                nx, qk_k = ne(shape, 0), TYPE_SIZES[new_type].block_size
                if ftype == F.MOSTLY_MXFP4_MOE:
                    new_type = T.Q8_0
                elif falcon or nx % qk_k != 0:
                    new_type = T.Q8_0
                elif ftype in (F.MOSTLY_IQ2_XXS, F.MOSTLY_IQ2_XS, F.MOSTLY_IQ3_XXS, F.MOSTLY_IQ1_S, F.MOSTLY_IQ2_S,
                               F.MOSTLY_IQ2_M, F.MOSTLY_IQ1_M):
                    new_type = T.Q5_K
                elif new_type != T.Q8_0:
                    new_type = T.Q6_K
        elif ftype == F.MOSTLY_MXFP4_MOE:
            # MoE expert tensors (3-D) -> MXFP4, everything else -> Q8_0
            bailing_expert = arch == "bailingmoe3" and cat in (C.FFN_UP, C.FFN_GATE, C.FFN_DOWN)
            if ne(shape, 2) > 1 and (arch != "bailingmoe3" or bailing_expert):
                new_type = T.MXFP4
            else:
                new_type = T.Q8_0
        elif cat == C.TOKEN_EMBD:  # an untied embedding table
            if self.options.token_embedding_type is not None:
                new_type = self.options.token_embedding_type
            elif ftype in (F.MOSTLY_IQ2_XXS, F.MOSTLY_IQ2_XS, F.MOSTLY_IQ1_S, F.MOSTLY_IQ1_M):
                new_type = T.Q2_K
            elif ftype in (F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M, F.MOSTLY_IQ3_XXS):
                new_type = T.IQ3_S
            elif ftype in (F.MOSTLY_TQ1_0, F.MOSTLY_TQ2_0, F.MOSTLY_Q2_0):
                new_type = T.Q4_K
        elif ftype in (F.MOSTLY_IQ2_XXS, F.MOSTLY_IQ2_XS, F.MOSTLY_IQ1_S, F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M,
                       F.MOSTLY_IQ1_M):
            iq2_sm = ftype in (F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M)
            if is_attn_v(cat):
                if hp.n_gqa >= 4 or n_expert >= 4:
                    new_type = T.Q4_K
                else:
                    new_type = T.IQ3_S if iq2_sm else T.Q2_K
                self.i_attention_wv += 1
            elif n_expert == 8 and cat == C.ATTENTION_K:
                new_type = T.Q4_K
            elif cat == C.FFN_DOWN:
                if self.i_ffn_down < self.n_ffn_down // 8:
                    new_type = T.IQ3_S if iq2_sm else T.Q2_K
                self.i_ffn_down += 1
            elif cat == C.ATTENTION_OUTPUT:
                if n_expert == 8:
                    new_type = T.Q5_K
                elif ftype in (F.MOSTLY_IQ1_S, F.MOSTLY_IQ1_M):
                    new_type = T.IQ2_XXS
                elif iq2_sm:
                    new_type = T.IQ3_S
        elif is_attn_v(cat):
            # attention V, and the fused QKV of Phi-3 (so the ATTENTION_QKV branch further down is never reached)
            i_wv = self.i_attention_wv
            if ftype == F.MOSTLY_Q2_K:
                new_type = T.Q4_K if hp.n_gqa >= 4 else T.Q3_K
            elif ftype == F.MOSTLY_Q2_K_S and hp.n_gqa >= 4:
                new_type = T.Q4_K
            elif ftype == F.MOSTLY_IQ3_XXS:
                new_type = T.Q4_K if hp.n_gqa >= 4 else (T.IQ3_S if not self.options.has_imatrix else T.IQ3_XXS)
            elif ftype in (F.MOSTLY_IQ3_XS, F.MOSTLY_IQ3_S) and hp.n_gqa >= 4:
                new_type = T.Q4_K
            elif ftype == F.MOSTLY_IQ3_M:
                new_type = T.Q4_K
            elif ftype == F.MOSTLY_Q3_K_M:
                new_type = T.Q5_K if i_wv < 2 else T.Q4_K
            elif ftype == F.MOSTLY_Q3_K_L:
                new_type = T.Q5_K
            elif ftype in (F.MOSTLY_IQ4_NL, F.MOSTLY_IQ4_XS) and hp.n_gqa >= 4:
                new_type = T.Q5_K
            elif ftype in (F.MOSTLY_Q4_K_M, F.MOSTLY_Q5_K_M) and use_more_bits(i_wv, self.n_attention_wv):
                new_type = T.Q6_K
            elif ftype == F.MOSTLY_Q4_K_S and i_wv < 4:
                new_type = T.Q5_K
            if hp.is_70b and new_type in (T.Q3_K, T.Q4_K):
                new_type = T.Q5_K  # 70B: 8 heads share attn_v, so it is small; give it more bits
            if n_expert == 8:
                new_type = T.Q8_0
            self.i_attention_wv += 1
        elif cat == C.ATTENTION_K:
            if n_expert == 8:
                new_type = T.Q8_0
            elif ftype == F.MOSTLY_IQ3_XS:
                new_type = T.IQ3_XXS
            elif ftype == F.MOSTLY_IQ3_XXS:
                new_type = T.IQ2_S
        elif cat == C.ATTENTION_Q:
            if ftype == F.MOSTLY_IQ3_XS:
                new_type = T.IQ3_XXS
            elif ftype == F.MOSTLY_IQ3_XXS:
                new_type = T.IQ2_S
        elif cat == C.FFN_DOWN:
            i_layer, n_layer = self._layer_info(self.i_ffn_down, self.n_ffn_down, name)
            has_imatrix = self.options.has_imatrix
            if ftype == F.MOSTLY_Q2_K:
                new_type = T.Q3_K
            elif ftype == F.MOSTLY_Q2_K_S:
                if i_layer < n_layer // 8:
                    new_type = T.Q4_K
            elif ftype == F.MOSTLY_IQ3_XXS and not has_imatrix:
                new_type = T.Q4_K if i_layer < n_layer // 8 else T.Q3_K
            elif ftype == F.MOSTLY_Q3_K_M:
                new_type = (T.Q5_K if i_layer < n_layer // 16
                            else T.Q4_K if not falcon or use_more_bits(i_layer, n_layer) else T.Q3_K)
            elif ftype == F.MOSTLY_IQ3_M and (i_layer < n_layer // 8
                                              or (n_expert == 8 and use_more_bits(i_layer, n_layer))):
                new_type = T.Q4_K
            elif ftype == F.MOSTLY_Q3_K_L:
                new_type = T.Q4_K if falcon else T.Q5_K
            elif ftype == F.MOSTLY_Q4_K_M:
                if falcon:
                    new_type = (T.Q6_K if i_layer < n_layer // 16
                                else T.Q5_K if use_more_bits(i_layer, n_layer) else T.Q4_K)
                elif use_more_bits(i_layer, n_layer):
                    new_type = T.Q6_K
            elif (i_layer < n_layer // 8 and ftype in (F.MOSTLY_IQ4_NL, F.MOSTLY_IQ4_XS) and not has_imatrix):
                new_type = T.Q5_K
            elif ftype == F.MOSTLY_Q5_K_M and use_more_bits(i_layer, n_layer):
                new_type = T.Q6_K
            elif ftype == F.MOSTLY_Q4_K_S and not falcon and i_layer < n_layer // 8:
                new_type = T.Q5_K
            elif ftype in (F.MOSTLY_Q4_0, F.MOSTLY_Q5_0) and has_imatrix and i_layer < n_layer // 8:
                # guard the first ffn_down layers of Q4_0/Q5_0, only with an imatrix (Q4_1/Q5_1 misbehave without)
                new_type = T.Q4_1 if ftype == F.MOSTLY_Q4_0 else T.Q5_1
            self.i_ffn_down += 1
        elif cat == C.ATTENTION_OUTPUT:
            if not falcon:
                if n_expert == 8:
                    if ftype in (F.MOSTLY_Q2_K, F.MOSTLY_IQ3_XS, F.MOSTLY_IQ3_XXS, F.MOSTLY_Q3_K_S, F.MOSTLY_Q3_K_M,
                                 F.MOSTLY_IQ4_NL, F.MOSTLY_Q4_K_S, F.MOSTLY_Q4_K_M, F.MOSTLY_IQ3_S, F.MOSTLY_IQ3_M,
                                 F.MOSTLY_IQ4_XS):
                        new_type = T.Q5_K
                else:
                    new_type = {F.MOSTLY_Q2_K: T.Q3_K, F.MOSTLY_IQ3_XXS: T.IQ3_S, F.MOSTLY_Q3_K_M: T.Q4_K,
                                F.MOSTLY_Q3_K_L: T.Q5_K, F.MOSTLY_IQ3_M: T.Q4_K}.get(ftype, new_type)
            elif ftype == F.MOSTLY_Q3_K_L:
                new_type = T.Q4_K
        elif cat == C.ATTENTION_QKV:
            # unreachable in this llama.cpp version: is_attn_v() above already took the fused QKV.  Kept to show what
            # older versions did with Phi-3's attn_qkv (Q4_K_M -> Q5_K on every layer, ...).
            if ftype in (F.MOSTLY_Q3_K_M, F.MOSTLY_Q3_K_L, F.MOSTLY_IQ3_M):
                new_type = T.Q4_K
            elif ftype == F.MOSTLY_Q4_K_M:
                new_type = T.Q5_K
            elif ftype == F.MOSTLY_Q5_K_M:
                new_type = T.Q6_K
        elif cat == C.FFN_GATE:
            i_layer, n_layer = self._layer_info(self.i_ffn_gate, self.n_ffn_gate, name)
            if ftype == F.MOSTLY_IQ3_XS and n_layer // 8 <= i_layer < 7 * n_layer // 8:
                new_type = T.IQ3_XXS
            self.i_ffn_gate += 1
        elif cat == C.FFN_UP:
            i_layer, n_layer = self._layer_info(self.i_ffn_up, self.n_ffn_up, name)
            if ftype == F.MOSTLY_IQ3_XS and n_layer // 8 <= i_layer < 7 * n_layer // 8:
                new_type = T.IQ3_XXS
            self.i_ffn_up += 1
        return new_type


def choose_types(tensors: Sequence[tuple[str, Sequence[int], GGMLType]], model: ModelInfo,
                 options: Options) -> tuple[list[Decision], list[str]]:
    """Decide every tensor's type.  ``tensors`` are ``(name, shape, type)`` in :func:`weights_order`; returns the
    decisions in the same order and llama.cpp's warnings (fallbacks, manual overrides)."""
    chooser = Chooser(model, options, [name for name, _, _ in tensors])
    decisions = [chooser.choose(name, shape, GGMLType(qtype)) for name, shape, qtype in tensors]
    return decisions, chooser.messages
