"""Llama-architecture GGUF files (llama.cpp's format) into attnlab's ``DecoderLM`` and a tokenizer.

A GGUF file holds metadata (architecture, shapes, tokenizer vocabulary and merges, chat template)
and tensors, most of them quantized in blocks (Q4_1: 32 weights share a float16 scale and minimum,
each weight is 4 bits). We read it with the ``gguf`` package and dequantize every tensor to float32,
so the model runs with exactly the values the quantized file encodes.

Two layout facts matter (checked against Hugging Face's own GGUF import in the tests):
- GGUF lists dimensions fastest-first, the reverse of PyTorch: a ``[576, 1536]`` GGUF tensor is a
  ``(1536, 576)`` PyTorch weight. The bytes are the same; only the shape is written backwards.
- llama.cpp's converter permutes the rows of W_Q and W_K so that rotary pairs are adjacent
  (dimension ``2i`` with ``2i+1``, the interleaved pairing of the original RoPE code). attnlab's
  ``RotaryEmbedding`` pairs dimension ``i`` with ``i + head_dim/2`` ("rotate half"), like Hugging
  Face, so ``unpermute_rotary`` undoes the permutation head by head.

So a GGUF file takes the same weight path as a Hugging Face checkpoint, with two steps in front:
dequantize -> undo the rotary permutation -> rename to Hugging Face Llama keys ->
``attnlab.weights.hf.from_hf_state_dict("llama", ...)`` (one key map, one key/shape check).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize
from tokenizers import pre_tokenizers
from torch import Tensor

from attnlab.models import DecoderLM, TransformerConfig
from attnlab.models.config import ConfigError
from attnlab.tokenizers.byte_level import byte_level_bpe, gpt2_pre_tokenizer
from attnlab.tokenizers.hf_json import HFJsonTokenizer
from attnlab.weights.checkpoint import MAX_POSITIONS
from attnlab.weights.hf import check_hf_layout, from_hf_state_dict
from attnlab.weights.keymap import CheckpointMismatchError

Q = GGMLQuantizationType
# The tensor types we dequantize (plain floats and the common llama.cpp block formats).
SUPPORTED_TYPES = frozenset(
    {Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K}
)
SUPPORTED_ARCHITECTURES = ("llama",)
_CONTROL_TOKEN = 3  # llama.cpp token type: special tokens such as <|im_start|>
MAX_SIZE = 1 << 24  # any one size in the metadata (width, heads, layers, vocabulary): 16 Mi at most


class GGUFError(ValueError):
    """A GGUF file attnlab cannot use; the message names the file and the problem."""


@dataclass
class GGUFFile:
    """The metadata and (still quantized) tensors of one GGUF file."""

    path: Path
    metadata: dict[str, Any]
    tensors: dict[str, Any]  # name -> gguf.ReaderTensor

    def get(self, key: str, default: Any = None, *, required: bool = False) -> Any:
        if key not in self.metadata:
            if required:
                raise GGUFError(f"{self.path}: metadata key {key!r} is missing")
            return default
        return self.metadata[key]

    @property
    def architecture(self) -> str:
        return str(self.get("general.architecture", required=True))

    def tensor(self, name: str) -> Tensor:
        """One tensor, dequantized to float32, in PyTorch's dimension order."""
        if name not in self.tensors:
            raise GGUFError(f"{self.path}: tensor {name!r} is missing")
        t = self.tensors[name]
        shape = _shape(t)
        if t.tensor_type in (Q.F32, Q.F16):
            values = np.array(t.data, dtype=np.float32)
        else:
            values = dequantize(t.data, t.tensor_type)
        return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32).reshape(shape))


def read_gguf(path: str | Path) -> GGUFFile:
    """Open a GGUF file and check it can be used: readable, complete, only supported tensor types."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise GGUFError(f"{path}: cannot open ({exc})") from None
    if magic != b"GGUF":
        raise GGUFError(f"{path}: not a GGUF file (starts with {magic!r}, expected b'GGUF')")
    try:
        reader = GGUFReader(path)
    except Exception as exc:  # the reader raises ValueError, KeyError, IndexError... on damaged files
        raise GGUFError(f"{path}: corrupt or truncated GGUF file ({type(exc).__name__}: {exc})") from None
    metadata: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            metadata[key] = field.contents()
        except Exception as exc:
            raise GGUFError(f"{path}: metadata {key!r} cannot be read ({exc})") from None
    tensors = {}
    for t in reader.tensors:
        if t.tensor_type not in SUPPORTED_TYPES:
            names = ", ".join(sorted(q.name for q in SUPPORTED_TYPES))
            raise GGUFError(
                f"{path}: tensor {t.name!r} uses quantization {t.tensor_type.name}, which attnlab does not "
                f"support (supported: {names})"
            )
        if t.data.nbytes != int(t.n_bytes):
            raise GGUFError(f"{path}: tensor {t.name!r} is truncated ({t.data.nbytes} of {int(t.n_bytes)} bytes)")
        tensors[t.name] = t
    return GGUFFile(path=path, metadata=metadata, tensors=tensors)


def llama_config(gf: GGUFFile, *, name: str | None = None, max_len: int | None = None) -> TransformerConfig:
    """The attnlab config a llama-architecture GGUF describes (pre-norm RMSNorm, SwiGLU, RoPE, GQA).

    ``max_len`` (default: the file's context length) caps the positions, which sizes the rotary
    tables and the default KV cache; it changes no weight.
    """
    arch = gf.architecture
    if arch not in SUPPORTED_ARCHITECTURES:
        raise GGUFError(
            f"{gf.path}: architecture {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    scaling = [k for k in gf.metadata if k.startswith(f"{arch}.rope.scaling")]
    if scaling and gf.get(f"{arch}.rope.scaling.type", "none") not in ("none",):
        raise GGUFError(f"{gf.path}: RoPE scaling ({', '.join(scaling)}) is not supported")

    def meta(key: str, default: Any = None) -> Any:
        return gf.get(f"{arch}.{key}", default, required=default is None)

    def size(key: str, default: Any = None, limit: int = MAX_SIZE) -> int:
        value = meta(key, default)
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or not 1 <= value <= limit:
            raise GGUFError(f"{gf.path}: metadata {arch}.{key} is {value!r}; expected an integer in [1, {limit}]")
        return int(value)

    d_model, n_heads = size("embedding_length"), size("attention.head_count")
    n_kv_heads = size("attention.head_count_kv", n_heads)
    if d_model % n_heads or n_heads % n_kv_heads or (d_model // n_heads) % 2:
        raise GGUFError(f"{gf.path}: metadata sizes do not fit together: embedding_length {d_model} must split "
                        f"into head_count {n_heads} heads of an even width, and head_count into head_count_kv "
                        f"{n_kv_heads} groups")
    head_dim = d_model // n_heads
    rotary_dims = size("rope.dimension_count", head_dim)
    if rotary_dims != head_dim:
        raise GGUFError(f"{gf.path}: partial rotary ({rotary_dims} of {head_dim} dims per head) is not supported")
    tokens = gf.get("tokenizer.ggml.tokens")
    vocab_size = size("vocab_size", len(tokens) if tokens is not None else None)
    positions = max_len or size("context_length", limit=1 << 40)
    if positions > MAX_POSITIONS:  # the rotary tables are sized by it: pass max_len to use such a file
        raise GGUFError(f"{gf.path}: context length {positions} is above the limit of {MAX_POSITIONS} positions; "
                        f"load it with max_len=N (N <= {MAX_POSITIONS})")
    theta, eps = float(meta("rope.freq_base", 10000.0)), float(meta("attention.layer_norm_rms_epsilon"))
    if not (math.isfinite(theta) and theta > 0 and math.isfinite(eps) and eps > 0):
        raise GGUFError(f"{gf.path}: metadata rope.freq_base {theta} and layer_norm_rms_epsilon {eps} must be "
                        f"finite and positive")
    try:
        return TransformerConfig(
            name=name or str(gf.get("general.name", gf.path.stem)), family="decoder", vocab_size=vocab_size,
            d_model=d_model, n_heads=n_heads, n_kv_heads=n_kv_heads, n_layers=size("block_count"),
            d_ff=size("feed_forward_length"), max_len=positions, positions="rotary", rope_theta=theta,
            norm="rmsnorm", norm_eps=eps, norm_placement="pre", activation="swiglu", bias=False,
            tie_embeddings="output.weight" not in gf.tensors,
            fused_qkv=True,  # one Q/K/V matmul, as for Hugging Face Llama checkpoints (config_from_hf)
        )
    except ConfigError as exc:
        raise GGUFError(f"{gf.path}: {exc}") from None


def check_llama_layout(gf: GGUFFile, config: TransformerConfig) -> None:
    """Before anything is allocated: the tensors the file's header lists must be the ones ``config``
    implies (names and shapes, checked on the meta device), and the model they make, in float32, must
    fit in this machine's memory. Raises ``GGUFError`` naming the file and the key or the sizes."""
    header = {_hf_name(gf, name): torch.empty(_shape(t), device="meta") for name, t in gf.tensors.items()}
    try:
        check_hf_layout("llama", header, config)
    except CheckpointMismatchError as exc:
        raise GGUFError(f"{gf.path}: {exc} (checked before allocating)") from None
    with torch.device("meta"):
        n_params = sum(t.numel() for t in DecoderLM(config).state_dict().values())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    if memory is not None and 4 * n_params > memory:
        raise GGUFError(f"{gf.path}: the model has {n_params:,} parameters, {4 * n_params / 2**30:.1f} GiB in float32, "
                        f"more than this machine's {memory / 2**30:.1f} GiB of memory")


def _shape(t: Any) -> tuple[int, ...]:
    """A GGUF tensor's shape in PyTorch's order (GGUF lists dimensions fastest-first)."""
    return tuple(int(d) for d in reversed(list(t.shape)))


def unpermute_rotary(weight: Tensor, n_heads: int) -> Tensor:
    """Undo llama.cpp's Q/K row permutation: per head, rows (pair, 2) -> (2, pair).

    llama.cpp stores head row ``2j + s`` (``s`` in {0, 1}) what Hugging Face stores at row
    ``j + s * head_dim / 2``; reading each head as ``(head_dim/2, 2)`` and transposing restores it.
    """
    rows, cols = weight.shape
    head_dim = rows // n_heads
    return weight.reshape(n_heads, head_dim // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


# GGUF tensor names -> Hugging Face ``LlamaForCausalLM`` keys: the rename step of GGUF's weight path.
_TOP_TO_HF = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_TO_HF = {  # per block: blk.{i}.<GGUF name> -> model.layers.{i}.<Hugging Face name>
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")


def _hf_name(gf: GGUFFile, name: str) -> str:
    """The Hugging Face Llama key of the GGUF tensor ``name``; ``GGUFError`` when it has none."""
    block = _BLOCK.match(name)
    if name in _TOP_TO_HF:
        return _TOP_TO_HF[name]
    if block and block.group(2) in _LAYER_TO_HF:
        return f"model.layers.{block.group(1)}.{_LAYER_TO_HF[block.group(2)]}"
    raise GGUFError(f"{gf.path}: unexpected tensor {name!r} for a llama model")


def hf_llama_state_dict(gf: GGUFFile, config: TransformerConfig) -> dict[str, Tensor]:
    """The file's tensors as a Hugging Face Llama checkpoint: dequantized, Q/K un-permuted, renamed.

    Raises ``GGUFError`` for a tensor name that has no Hugging Face Llama counterpart.
    """
    out: dict[str, Tensor] = {}
    for name in gf.tensors:
        key = _hf_name(gf, name)
        tensor = gf.tensor(name)
        if name.endswith("attn_q.weight"):
            tensor = unpermute_rotary(tensor, config.n_heads)
        elif name.endswith("attn_k.weight"):
            assert config.n_kv_heads is not None
            tensor = unpermute_rotary(tensor, config.n_kv_heads)
        out[key] = tensor
    return out


def llama_state_dict(gf: GGUFFile, config: TransformerConfig) -> dict[str, Tensor]:
    """A ``DecoderLM`` state dict from the file, through the same key map as Hugging Face checkpoints.

    dequantize -> undo the rotary permutation -> rename to Hugging Face keys (``hf_llama_state_dict``)
    -> ``attnlab.weights.hf.from_hf_state_dict("llama", ...)``, which checks every key and shape
    first. A mismatch (tensors the metadata does not imply, a wrong shape) raises ``GGUFError``
    naming the file and the key.
    """
    try:
        return from_hf_state_dict("llama", hf_llama_state_dict(gf, config), config)
    except CheckpointMismatchError as exc:
        raise GGUFError(f"{gf.path}: {exc}") from None


# Pre-tokenizers of the llama.cpp "gpt2" tokenizer model that we reproduce exactly.
_PRE_TOKENIZERS = {
    "default": gpt2_pre_tokenizer,
    "gpt2": gpt2_pre_tokenizer,
    # SmolLM: every digit is its own piece, then GPT-2's regular expression (llama.cpp's "smollm").
    "smollm": lambda: pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), gpt2_pre_tokenizer()]
    ),
}


def gguf_tokenizer(gf: GGUFFile) -> HFJsonTokenizer:
    """The byte-level BPE tokenizer stored in the metadata (tokens, merges, token types).

    Control tokens (type 3, e.g. ``<|im_start|>``) are special: text that spells one encodes as
    text unless the caller passes ``allow_special=True`` (``HFJsonTokenizer.encode``)."""
    kind = gf.get("tokenizer.ggml.model", required=True)
    if kind != "gpt2":
        raise GGUFError(f"{gf.path}: tokenizer model {kind!r} is not supported (only byte-level BPE, 'gpt2')")
    pre = str(gf.get("tokenizer.ggml.pre", "default"))
    if pre not in _PRE_TOKENIZERS:
        raise GGUFError(f"{gf.path}: pre-tokenizer {pre!r} is not supported ({', '.join(_PRE_TOKENIZERS)})")
    tokens: list[str] = list(gf.get("tokenizer.ggml.tokens", required=True))
    merges = [tuple(m.split(" ", 1)) for m in gf.get("tokenizer.ggml.merges", required=True)]
    if any(len(m) != 2 for m in merges):
        raise GGUFError(f"{gf.path}: tokenizer.ggml.merges holds an entry that is not two symbols")
    types = list(gf.get("tokenizer.ggml.token_type", [1] * len(tokens)))
    special = [t for t, k in zip(tokens, types, strict=True) if k == _CONTROL_TOKEN]
    hf = byte_level_bpe({t: i for i, t in enumerate(tokens)}, merges, special=special, pre_tokenizer=_PRE_TOKENIZERS[pre]())
    return HFJsonTokenizer(hf, add_special_tokens=False)


def load_llama_gguf(
    path: str | Path, *, name: str | None = None, max_len: int | None = None
) -> tuple[DecoderLM, HFJsonTokenizer, GGUFFile]:
    """Build a ``DecoderLM`` and its tokenizer from a llama-architecture GGUF file.

    Every size in the metadata is checked (positive, within limits, divisible as the model needs) and
    the tensors the header lists are checked against them before anything is allocated; a file that
    fails raises ``GGUFError`` naming it and the problem."""
    gf = read_gguf(path)
    config = llama_config(gf, name=name, max_len=max_len)
    tokenizer = gguf_tokenizer(gf)
    tokenizer.check_vocab_size(config.vocab_size, source=gf.path)
    check_llama_layout(gf, config)  # before the model is allocated
    model = DecoderLM(config)
    model.load_state_dict(llama_state_dict(gf, config))
    model.eval()
    return model, tokenizer, gf


def chat_system_default(template: str) -> str | None:
    """The default system message a ChatML template inserts when the chat does not start with one."""
    found = re.search(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", template, flags=re.S)
    return found.group(1) if found else None
