"""The hyperparameters of a Phi-3 GGUF file, read as llama.cpp reads them (``llama_model::load_hparams`` and
``llama_model_phi3::load_arch_hparams``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RefllmError
from ..gguf import GGUFFile


@dataclass(frozen=True)
class Phi3Params:
    n_vocab: int  # rows of token_embd.weight
    n_embd: int  # phi3.embedding_length (hidden size)
    n_layer: int  # phi3.block_count
    n_head: int  # phi3.attention.head_count
    n_head_kv: int  # phi3.attention.head_count_kv (< n_head: grouped-query attention)
    n_ff: int  # phi3.feed_forward_length
    head_dim: int  # n_embd / n_head
    n_rot: int  # phi3.rope.dimension_count (default: head_dim)
    rope_base: float  # phi3.rope.freq_base (default 10000)
    rms_eps: float  # phi3.attention.layer_norm_rms_epsilon
    n_ctx_train: int  # phi3.context_length
    n_ctx_orig: int  # phi3.rope.scaling.original_context_length (default: n_ctx_train)
    attn_factor: float  # phi3.rope.scaling.attn_factor (default 1.0; written only with LongRoPE)
    sliding_window: int  # phi3.attention.sliding_window (0: none); llama.cpp ignores it for phi3
    longrope: bool  # rope_factors_long/short.weight are present

    @property
    def n_embd_q(self) -> int:
        return self.n_head * self.head_dim

    @property
    def n_embd_kv(self) -> int:
        return self.n_head_kv * self.head_dim

    def tensor_shapes(self, fused_qkv: bool = True) -> dict[str, tuple[int, ...]]:
        """The GGUF shape (ggml order, ``{n_in, n_out}``) every tensor of the model must have, by name — what
        llama.cpp's loader checks (``create_tensor`` in ``llama_model_phi3::load_arch_tensors``).  ``output.weight``
        and the LongRoPE factors are optional; with ``fused_qkv=False`` the layers hold ``attn_q/k/v``."""
        E, V, F = self.n_embd, self.n_vocab, self.n_ff
        shapes = {"token_embd.weight": (E, V), "output_norm.weight": (E,), "output.weight": (E, V),
                  "rope_factors_long.weight": (self.n_rot // 2,), "rope_factors_short.weight": (self.n_rot // 2,)}
        for il in range(self.n_layer):
            blk = f"blk.{il}."
            if fused_qkv:
                shapes[blk + "attn_qkv.weight"] = (E, self.n_embd_q + 2 * self.n_embd_kv)
            else:
                shapes.update({blk + "attn_q.weight": (E, self.n_embd_q), blk + "attn_k.weight": (E, self.n_embd_kv),
                               blk + "attn_v.weight": (E, self.n_embd_kv)})
            shapes.update({blk + "attn_norm.weight": (E,), blk + "attn_output.weight": (self.n_embd_q, E),
                           blk + "ffn_norm.weight": (E,), blk + "ffn_up.weight": (E, 2 * F),
                           blk + "ffn_down.weight": (F, E)})
        return shapes

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> Phi3Params:
        arch = f.get("general.architecture")
        if arch != "phi3":
            raise RefllmError(f"{f.path}: general.architecture is {arch!r}; refllm runs phi3 models")

        def key(name: str, default=None):
            value = f.get(f"phi3.{name}", default)
            if value is None:
                raise RefllmError(f"{f.path}: missing metadata key phi3.{name}")
            return value

        n_embd = int(key("embedding_length"))
        n_head = int(key("attention.head_count"))
        n_head_kv = int(key("attention.head_count_kv", n_head))
        if n_embd % n_head or n_head % n_head_kv:
            raise RefllmError(f"{f.path}: {n_embd} / {n_head} heads / {n_head_kv} KV heads do not divide")
        head_dim = n_embd // n_head
        n_ctx_train = int(key("context_length"))
        names = {t.name for t in f.tensors}
        if "token_embd.weight" not in names:
            raise RefllmError(f"{f.path}: missing tensor 'token_embd.weight'")
        embd = f.tensor("token_embd.weight")
        if len(embd.shape) != 2:
            raise RefllmError(f"{f.path}: tensor 'token_embd.weight' has shape {list(embd.shape)}; expected "
                              f"[{n_embd}, n_vocab]")
        return cls(
            n_vocab=embd.shape[1],
            n_embd=n_embd,
            n_layer=int(key("block_count")),
            n_head=n_head,
            n_head_kv=n_head_kv,
            n_ff=int(key("feed_forward_length")),
            head_dim=head_dim,
            n_rot=int(key("rope.dimension_count", head_dim)),
            rope_base=float(key("rope.freq_base", 10000.0)),
            rms_eps=float(key("attention.layer_norm_rms_epsilon")),
            n_ctx_train=n_ctx_train,
            n_ctx_orig=int(key("rope.scaling.original_context_length", n_ctx_train)),
            attn_factor=float(key("rope.scaling.attn_factor", 1.0)),
            sliding_window=int(key("attention.sliding_window", 0)),
            longrope="rope_factors_long.weight" in names and "rope_factors_short.weight" in names,
        )
