"""Weight initialisation for training from scratch (GPT-2's scheme, Radford et al. 2019).

PyTorch's defaults give embeddings unit variance; with tied embeddings the first logits are then
~sqrt(d_model) large and the initial loss is far above ln(vocab). Drawing every matrix from
N(0, 0.02) and shrinking the projections that write into the residual stream by 1/sqrt(2 * layers)
keeps the residual stream's variance from growing with depth.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from attnlab.models.config import TransformerConfig


@torch.no_grad()
def init_weights(model: nn.Module, config: TransformerConfig, std: float = 0.02) -> None:
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
    layers = config.n_layers + (config.n_decoder_layers or 0 if config.family == "encoder-decoder" else 0)
    residual_std = std / math.sqrt(2 * layers)
    for name, param in model.named_parameters():
        if name.endswith(("attn.out_proj.weight", "ff.down.weight")):
            nn.init.normal_(param, mean=0.0, std=residual_std)
