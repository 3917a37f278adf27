"""Variants of a built model, for experiments that switch one idea off.

``without_positions``: the same model with no position information at all, the walkthrough's "does
order matter?" experiment. Without positions self-attention sees a bag of tokens: an encoder's
outputs are then permuted exactly as its inputs are (Vaswani et al. 2017, section 3.5, say why
positions are added in the first place).
"""

from __future__ import annotations

import copy

from torch import nn

from attnlab.models.config import TransformerConfig
from attnlab.models.stack import Embeddings
from attnlab.nn import MultiHeadAttention


def without_positions(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` (any family) with its positions removed, in eval mode.

    Absolute positions (learned or sinusoidal, added to the token embeddings) and rotary positions
    (applied to queries and keys inside attention) are both dropped; every other weight is copied
    unchanged, and each config in the copy says ``positions="none"``. ``model`` is not modified.
    """
    clone = copy.deepcopy(model)
    for module in clone.modules():
        if isinstance(module, Embeddings):
            module.positions = None
        elif isinstance(module, MultiHeadAttention):
            module.rotary = None
        config = getattr(module, "config", None)
        if isinstance(config, TransformerConfig):
            module.config = config.replace(positions="none")
    return clone.eval()
