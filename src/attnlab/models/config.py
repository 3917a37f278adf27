"""The one configuration type of every attnlab model.

A keyword-only dataclass that checks itself on construction and refuses keys it does not know, so a
typo in a config file is an error that names the key instead of a silently ignored setting. The
resolved config (``to_dict``) is saved beside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Literal

Family = Literal["encoder", "decoder", "encoder-decoder"]
Positions = Literal["sinusoidal", "learned", "rotary", "none"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "family": ("encoder", "decoder", "encoder-decoder"),
    "positions": ("sinusoidal", "learned", "rotary", "none"),
    "norm": ("layernorm", "rmsnorm"),
    "norm_placement": ("pre", "post"),
    "activation": ("relu", "gelu", "gelu_tanh", "swiglu"),
    "attention_backend": ("math", "sdpa"),
}


class ConfigError(ValueError):
    """A configuration that cannot describe a working model; the message names the field."""


def _default_norm_bias(bias: bool, norm: str) -> bool:
    return bias and norm == "layernorm"


@dataclass(kw_only=True)
class TransformerConfig:
    """Shape and flavour of a Transformer. The three families differ only in ``family``.

    ``n_layers`` is the encoder depth for ``encoder``/``encoder-decoder`` and the decoder depth for
    ``decoder``; ``n_decoder_layers`` (default: ``n_layers``) is the decoder depth of an
    encoder-decoder.

    ``bias``: biases in the attention projections and the feed-forward layers (the heads' own layers,
    BERT's MLM head, pooler and classifier, keep theirs). ``norm_bias``: a bias in every LayerNorm;
    ``None`` (the default) resolves to ``bias`` for ``norm="layernorm"`` and to ``False`` for
    ``"rmsnorm"``, which has no bias (``norm_bias=True`` with it is a ``ConfigError``). Checkpoints
    written before ``norm_bias`` existed had LayerNorm biases whatever ``bias`` said; their
    ``config.json`` is read that way (``attnlab.weights.checkpoint.load_config``).

    ``attn_only``: blocks without the feed-forward sub-layer (no ``ff``, no ``ff_norm``; ``d_ff`` is
    then unused), the attention-only models of Elhage et al. 2021 and Olsson et al. 2022.
    """

    family: Family
    vocab_size: int
    d_model: int
    n_heads: int
    n_layers: int
    d_ff: int
    max_len: int = 512
    n_decoder_layers: int | None = None
    n_kv_heads: int | None = None
    head_dim: int | None = None
    positions: Positions = "learned"
    rope_theta: float = 10000.0
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    norm_placement: Literal["pre", "post"] = "pre"
    final_norm: bool | None = None
    embedding_norm: bool = False
    activation: Literal["relu", "gelu", "gelu_tanh", "swiglu"] = "gelu"
    bias: bool = True
    norm_bias: bool | None = None
    fused_qkv: bool = False
    attn_only: bool = False
    dropout: float = 0.0
    attn_dropout: float = 0.0
    tie_embeddings: bool = True
    scale_embeddings: bool = False
    type_vocab_size: int = 0
    pad_token_id: int | None = None
    n_classes: int = 0
    class_names: tuple[str, ...] = ()  # a classifier's label names, in class order (optional)
    attention_backend: Literal["math", "sdpa"] = "sdpa"
    name: str = field(default="custom")

    def __post_init__(self) -> None:
        for key, allowed in _CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key}={getattr(self, key)!r} is not one of {allowed}")
        for key in ("vocab_size", "d_model", "n_heads", "n_layers", "d_ff", "max_len",
                    "n_decoder_layers", "n_kv_heads", "head_dim"):
            value = getattr(self, key)
            if value is None and key in ("n_decoder_layers", "n_kv_heads", "head_dim"):
                continue  # derived below
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{key} must be a positive integer, got {value!r}")
        for key in ("rope_theta", "norm_eps"):
            if not isinstance(getattr(self, key), (int, float)) or getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be a positive number, got {getattr(self, key)!r}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"pad_token_id={self.pad_token_id} is outside the vocabulary [0, {self.vocab_size})")
        if self.n_classes and self.family != "encoder":
            raise ConfigError(f"n_classes is for encoder classifiers; family={self.family!r} has no classification head")
        if self.n_decoder_layers is None:
            self.n_decoder_layers = self.n_layers
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.n_heads % self.n_kv_heads != 0:
            raise ConfigError(
                f"n_heads ({self.n_heads}) must be a positive multiple of n_kv_heads ({self.n_kv_heads})"
            )
        if self.head_dim is None:
            if self.d_model % self.n_heads != 0:
                raise ConfigError(
                    f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}), or set head_dim"
                )
            self.head_dim = self.d_model // self.n_heads
        if self.positions == "rotary" and self.head_dim % 2 != 0:
            raise ConfigError(f"rotary positions need an even head_dim, got {self.head_dim}")
        if self.positions == "sinusoidal" and self.d_model % 2 != 0:
            raise ConfigError(f"sinusoidal positions need an even d_model, got {self.d_model}")
        if self.final_norm is None:
            self.final_norm = self.norm_placement == "pre"
        if not isinstance(self.attn_only, bool):
            raise ConfigError(f"attn_only must be true or false, got {self.attn_only!r}")
        if not isinstance(self.bias, bool) or not isinstance(self.norm_bias, bool | None):
            raise ConfigError(f"bias and norm_bias must be true or false, got bias={self.bias!r}, "
                              f"norm_bias={self.norm_bias!r}")
        if self.norm_bias is None:
            self.norm_bias = _default_norm_bias(self.bias, self.norm)
        elif self.norm_bias and self.norm == "rmsnorm":
            raise ConfigError("norm_bias=True but norm='rmsnorm': an RMSNorm has no bias (use norm='layernorm')")
        for key in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"{key} must be in [0, 1), got {getattr(self, key)}")
        if self.fused_qkv and self.family == "encoder-decoder":
            raise ConfigError("fused_qkv is not available for encoder-decoder models (cross-attention)")
        if self.n_classes < 0 or self.type_vocab_size < 0:
            raise ConfigError("n_classes and type_vocab_size must be >= 0")
        self.class_names = tuple(self.class_names)  # JSON gives a list
        if self.class_names and len(self.class_names) != self.n_classes:
            raise ConfigError(f"class_names has {len(self.class_names)} names for n_classes={self.n_classes}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformerConfig:
        """Build from a dict (e.g. a checkpoint's ``config.json``); unknown keys are an error, and so is
        anything but a dict (a JSON list or string): ``ConfigError`` naming what was found."""
        if not isinstance(data, dict):
            raise ConfigError(f"expected a JSON object of config fields, found {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, known, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(f"unknown config key(s): {', '.join(hints)}")
        try:
            return cls(**data)
        except TypeError as exc:  # a missing required key
            raise ConfigError(str(exc)) from exc

    def replace(self, **changes: Any) -> TransformerConfig:
        """A copy with some fields changed (validated like a new config).

        Derived fields follow their sources: changing ``d_model`` or ``n_heads`` re-derives
        ``head_dim`` (unless given), and an ``n_kv_heads`` that equalled ``n_heads`` follows it.
        """
        data = {**self.to_dict(), **changes}
        if ("d_model" in changes or "n_heads" in changes) and "head_dim" not in changes:
            data["head_dim"] = None
        if "n_heads" in changes and "n_kv_heads" not in changes and self.n_kv_heads == self.n_heads:
            data["n_kv_heads"] = None
        if (("bias" in changes or "norm" in changes) and "norm_bias" not in changes
                and self.norm_bias == _default_norm_bias(self.bias, self.norm)):
            data["norm_bias"] = None  # it followed bias and norm: it follows them again
        return TransformerConfig.from_dict(data)
