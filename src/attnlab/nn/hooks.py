"""Named places in the forward pass where activations can be read or changed.

A ``HookPoint`` is an identity module. Because it is a module, it gets a dotted name from
``model.named_modules()`` (``blocks.3.attn.hook_weights``) and PyTorch's forward hooks can be attached
to it; ``attnlab.inspect`` does exactly that and nothing else. With no hook attached it costs one
function call.
"""

from __future__ import annotations

from torch import Tensor, nn


class HookPoint(nn.Module):
    """Identity; the name under which a tensor can be watched (TransformerLens's idea)."""

    def forward(self, x: Tensor) -> Tensor:
        return x
