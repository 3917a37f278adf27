"""Read any activation of any model: named hook points and ``run_with_cache``.

Every ``HookPoint`` in a model has a dotted name (``stack.blocks.0.attn.hook_weights``).
``run_with_cache`` attaches a recording hook to the points you name, runs the model once with the
``math`` attention backend (the fused one never computes attention weights) and returns the model's
output and an ``ActivationCache``. Hooks are removed and the backend restored even if the forward
pass raises, so a model is never left instrumented.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.models.stack import attention_backend, set_attention_backend
from attnlab.nn import HookPoint

NameFilter = str | Iterable[str] | Callable[[str], bool] | None


def hook_points(model: nn.Module) -> dict[str, HookPoint]:
    """All hook points of ``model`` by name, in forward order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, HookPoint)}


def _selector(names: NameFilter) -> Callable[[str], bool]:
    if names is None:
        return lambda _: True
    if callable(names):
        return names
    patterns = [names] if isinstance(names, str) else list(names)
    return lambda name: any(fnmatch.fnmatchcase(name, p) for p in patterns)


class ActivationCache(Mapping[str, Tensor]):
    """Recorded activations by hook name (detached tensors).

    Besides plain ``cache[name]`` lookups it offers the views learners ask for most, by layer index,
    so nobody has to remember the dotted names.
    """

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        self._tensors = tensors

    def __getitem__(self, name: str) -> Tensor:
        try:
            return self._tensors[name]
        except KeyError:
            close = [n for n in self._tensors if name.split(".")[-1] in n][:5]
            hint = f"; similar recorded names: {close}" if close else ""
            raise KeyError(f"{name!r} was not recorded{hint}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def _layer_point(self, layer: int, point: str, stack: str | None) -> Tensor:
        pattern = re.compile(rf"(^|\.)blocks\.{layer}\.{re.escape(point)}$")
        matches = [n for n in self._tensors if pattern.search(n) and (stack is None or n.startswith(stack + "."))]
        if len(matches) != 1:
            raise KeyError(
                f"expected one recorded '{point}' for layer {layer}"
                + (f" in {stack!r}" if stack else "")
                + f", found {matches or 'none'} (pass stack='encoder' or 'decoder' for seq2seq models)"
            )
        return self._tensors[matches[0]]

    def attention(self, layer: int, *, stack: str | None = None, cross: bool = False) -> Tensor:
        """Attention weights of one layer, ``(batch, heads, q_len, k_len)``."""
        return self._layer_point(layer, ("cross_attn" if cross else "attn") + ".hook_weights", stack)

    def scores(self, layer: int, *, stack: str | None = None, cross: bool = False) -> Tensor:
        """Scaled, masked, pre-softmax scores of one layer, ``(batch, heads, q_len, k_len)``."""
        return self._layer_point(layer, ("cross_attn" if cross else "attn") + ".hook_scores", stack)

    def qkv(self, layer: int, *, stack: str | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Per-head queries, keys and values of one layer, each ``(batch, heads, seq, d_k)``."""
        return tuple(self._layer_point(layer, f"attn.hook_{x}", stack) for x in "qkv")  # type: ignore[return-value]

    def residual(self, layer: int, where: str = "post", *, stack: str | None = None) -> Tensor:
        """Residual stream of one block: ``pre`` (input), ``mid`` or ``post`` (output)."""
        return self._layer_point(layer, f"hook_resid_{where}", stack)


@contextlib.contextmanager
def hooks_attached(model: nn.Module, hooks: dict[str, Callable[[nn.Module, Any, Tensor], Tensor | None]]) -> Iterator[None]:
    """Attach forward hooks to named hook points for the duration of a ``with`` block; always removed."""
    points = hook_points(model)
    missing = sorted(set(hooks) - set(points))
    if missing:
        raise KeyError(f"no hook point named {missing[0]!r}; see attnlab.inspect.hook_points(model)")
    handles = [points[name].register_forward_hook(fn) for name, fn in hooks.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def math_backend(model: nn.Module) -> Iterator[None]:
    """Use the weight-returning attention backend inside the block, then restore the previous one."""
    previous = attention_backend(model)
    set_attention_backend(model, "math")
    try:
        yield
    finally:
        set_attention_backend(model, previous)


def run_with_cache(model: nn.Module, *args: Any, names: NameFilter = None, **kwargs: Any) -> tuple[Any, ActivationCache]:
    """Run ``model(*args, **kwargs)`` without gradients and record the named activations.

    ``names`` is ``None`` (everything), a glob (``"*hook_weights"``), a list of globs or names, or a
    predicate. Returns ``(output, cache)``.
    """
    select = _selector(names)
    recorded: dict[str, Tensor] = {}

    def recorder(name: str) -> Callable[[nn.Module, Any, Tensor], None]:
        def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            recorded[name] = output.detach()

        return hook

    wanted = {name: recorder(name) for name in hook_points(model) if select(name)}
    if not wanted:
        raise KeyError(f"no hook point matches {names!r}; see attnlab.inspect.hook_points(model)")
    with torch.no_grad(), math_backend(model), hooks_attached(model, wanted):
        output = model(*args, **kwargs)
    return output, ActivationCache(recorded)
