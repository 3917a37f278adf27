"""Named places in the forward pass where activations can be read or changed.

A ``HookPoint`` is an identity module. PyTorch's forward hooks can be attached to it, and
``attnlab.inspect`` does exactly that and nothing else. Its public ``name`` (``decoder.blocks.3.attn.
hook_weights``) is given by the model that owns it (``name_hook_points``), after one scheme for every
family; it is not the module path, so a state-dict key can change without renaming a hook and the
other way round.

A model has a dozen hook points per layer, and a batch-1 decoding step calls all of them, so an
unwatched point must cost next to nothing: ``__call__`` returns its input after one check for
attached hooks (``watched``) and takes ``nn.Module``'s full call path only when there are some.
``torch.compile`` traces the same check and keeps only the identity.

That makes a compiled graph depend on which hooks were attached when it was traced, and
``torch.compile`` does not guard on hooks (``torch._dynamo.config.skip_nnmodule_hook_guards``): a hook
attached later would be silently ignored by the graph. ``HookWatch`` is how a caller of a compiled
graph sees, cheaply and before every call, whether any hook is attached now.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.modules import module as _module
from torch.utils.hooks import RemovableHandle


def _global_hook_dicts() -> tuple[dict, ...]:
    return (_module._global_forward_hooks, _module._global_forward_pre_hooks,
            _module._global_backward_hooks, _module._global_backward_pre_hooks)


def _global_hooks() -> bool:
    return any(_global_hook_dicts())


def _hook_dicts(module: nn.Module) -> tuple[dict, ...]:
    return (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks, module._backward_pre_hooks)


class HookWatch:
    """Whether any module hook (forward, forward-pre, backward, backward-pre; the module's own or a
    global one) is attached anywhere in ``module``'s tree; when nothing changed since the last call,
    answered by comparing one counter and a few dict sizes (~2 us on a busy 2-core machine).

    Every hook registration creates a ``torch.utils.hooks.RemovableHandle``, which takes the next
    number of one global counter; a removal shrinks the dict it was in. So the full walk over the
    modules is redone only when the counter moved or one of the dicts that held hooks at the last
    walk (and the global ones) changed size. Hooks written straight into a module's private dicts,
    bypassing ``register_*_hook``, are not seen.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self._counter = -1
        self._hooked = False
        self._dicts: tuple[dict, ...] = ()
        self._sizes: tuple[int, ...] = ()

    def hooked(self) -> bool:
        """``True`` when at least one hook is attached now."""
        if RemovableHandle.next_id == self._counter and tuple(map(len, self._dicts)) == self._sizes:
            return self._hooked
        self._counter = RemovableHandle.next_id
        held = [d for m in self.module.modules() for d in _hook_dicts(m) if d]
        self._hooked = bool(held) or _global_hooks()
        self._dicts = (*held, *_global_hook_dicts())
        self._sizes = tuple(map(len, self._dicts))
        return self._hooked


class HookPoint(nn.Module):
    """Identity; the name under which a tensor can be watched (TransformerLens's idea).

    ``name`` is ``None`` until the owning model names it (see ``name_hook_points``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.name: str | None = None

    @property
    def watched(self) -> bool:
        """Whether anything would see this point's tensor: a hook of its own or a global module hook."""
        return bool(
            self._forward_hooks or self._forward_pre_hooks or self._backward_hooks
            or self._backward_pre_hooks or _global_hooks()
        )

    def forward(self, x: Tensor) -> Tensor:
        """The identity: ``x`` of any shape and dtype comes back as it is (the hooks see and may replace it)."""
        return x

    def __call__(self, x: Tensor) -> Tensor:
        if self.watched:
            return super().__call__(x)
        return x


def name_hook_points(module: nn.Module, prefix: str) -> None:
    """Name every hook point inside ``module`` ``f"{prefix}.{path}"``, ``path`` relative to ``module``.

    A model calls this once per part it is built from (``decoder`` for its block stack,
    ``decoder.embed`` for its embeddings), so names follow the public scheme whatever the attribute
    names of the modules are. An empty ``prefix`` names by the relative path alone.
    """
    for path, m in module.named_modules():
        if isinstance(m, HookPoint):
            m.name = f"{prefix}.{path}" if prefix and path else (prefix or path)
