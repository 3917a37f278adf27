"""Named places in the forward pass where activations can be read or changed.

A ``HookPoint`` is an identity module. Because it is a module, it gets a dotted name from
``model.named_modules()`` (``blocks.3.attn.hook_weights``) and PyTorch's forward hooks can be attached
to it; ``attnlab.inspect`` does exactly that and nothing else.

A model has a dozen hook points per layer, and a batch-1 decoding step calls all of them, so an
unwatched point must cost next to nothing: ``__call__`` returns its input after one check for
attached hooks (its own or PyTorch's global module hooks) and takes ``nn.Module``'s full call path
only when there are some. ``torch.compile`` traces the same check and keeps only the identity.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.modules import module as _module


def _global_hooks() -> bool:
    return bool(
        _module._global_forward_hooks or _module._global_forward_pre_hooks
        or _module._global_backward_hooks or _module._global_backward_pre_hooks
    )


class HookPoint(nn.Module):
    """Identity; the name under which a tensor can be watched (TransformerLens's idea)."""

    def forward(self, x: Tensor) -> Tensor:
        return x

    def __call__(self, x: Tensor) -> Tensor:
        if (
            self._forward_hooks or self._forward_pre_hooks or self._backward_hooks
            or self._backward_pre_hooks or _global_hooks()
        ):
            return super().__call__(x)
        return x
