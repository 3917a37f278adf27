"""Weight initialisation for training from scratch, chosen by the config (where the normalisation sits).

The one initialisation: ``attnlab.train`` and the experiments both call ``init_weights``.

PyTorch's defaults give embeddings unit variance; with tied embeddings the first logits are then
~sqrt(d_model) large and the initial loss is far above ln(vocab). So every model is re-initialised:

- pre-norm (GPT-2, Radford et al. 2019): every matrix from N(0, 0.02), and the projections that write
  into the residual stream shrunk by 1/sqrt(2 * layers), which keeps the residual stream's variance
  from growing with depth (each block only *adds* to it; nothing renormalises it).
- post-norm (the 2017 Transformer, BERT): each sublayer's output is renormalised together with the
  residual, so a sublayer must contribute at the residual's scale from the start, or the encoder's
  signal reaching the decoder through cross-attention (and its gradient) is vanishingly small and a
  small model never learns to use its source. Xavier-uniform matrices keep every projection
  variance-preserving at any width; embeddings are N(0, 1/d_model), i.e. unit variance once scaled
  by sqrt(d_model) (section 3.4), and logits of unit scale through the tied output layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from attnlab.models.config import TransformerConfig


@torch.no_grad()
def init_weights(model: nn.Module, config: TransformerConfig, std: float = 0.02) -> None:
    """Re-initialise ``model`` (built from ``config``) in place for training from scratch.

    Pre-norm: linear and embedding weights ~ N(0, ``std``), biases 0, residual-stream projections
    (``attn.out_proj``, ``ff.down``) ~ N(0, ``std / sqrt(2 * layers)``). Post-norm: Xavier-uniform
    linear weights, N(0, 1/d_model) embeddings (the module docstring says why). Norm layers keep
    weight 1, bias 0.
    """
    if config.norm_placement == "post":
        _post_norm_init(model, config)
        return
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


def _post_norm_init(model: nn.Module, config: TransformerConfig) -> None:
    embeddings = [m.weight for m in model.modules() if isinstance(m, nn.Embedding)]
    for weight in embeddings:
        nn.init.normal_(weight, mean=0.0, std=config.d_model**-0.5)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            if not any(module.weight is w for w in embeddings):  # a tied output layer keeps the embedding's init
                nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
