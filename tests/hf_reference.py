"""Hugging Face reference models built from the same files as ours, for parity tests and benchmarks.

A test helper, not library code (``benchmarks/`` imports it from here too). Needs ``transformers``
(a test/benchmark dependency, imported lazily). The SmolLM2 reference gets its tensors through Hugging Face's own GGUF conversion (``LlamaTensorProcessor`` un-permutes
Q/K its own way), so a wrong un-permutation in ``attnlab.weights.gguf`` shows up as a logit
mismatch instead of cancelling out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

_TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
_PER_LAYER = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}


def hf_llama_from_gguf(model: nn.Module, gf: Any) -> nn.Module:
    """``LlamaForCausalLM`` holding the GGUF file's dequantized weights, shaped like ``model``'s config.

    Raises if any key is unexpected or missing, other than the output layer (tied to the embedding).
    """
    import transformers
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    c = model.config
    config = transformers.LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_ff, num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads, num_key_value_heads=c.n_kv_heads, rms_norm_eps=c.norm_eps,
        rope_theta=c.rope_theta, max_position_embeddings=c.max_len, tie_word_embeddings=True,
    )
    processor = LlamaTensorProcessor(config={"num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads})
    state = {}
    for name in gf.tensors:
        weights = processor.process(gf.tensor(name).numpy(), name).weights
        if name in _TOP:
            key = _TOP[name]
        else:
            _, layer, part, _ = name.split(".")
            key = f"model.layers.{layer}.{_PER_LAYER[part]}.weight"
        state[key] = torch.from_numpy(np.ascontiguousarray(weights))
    hf = transformers.LlamaForCausalLM(config).eval()
    result = hf.load_state_dict(state, strict=False)
    if result.unexpected_keys or result.missing_keys != ["lm_head.weight"]:
        raise RuntimeError(
            f"reference Llama did not take the GGUF weights: unexpected {result.unexpected_keys}, "
            f"missing {result.missing_keys}"
        )
    hf.tie_weights()
    return hf
