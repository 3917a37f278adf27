"""Read any activation of any model: named hook points and ``run_with_cache``.

Every family names its hook points after one scheme (whatever its modules are called):

- ``{stack}.embed.hook_tok_embed``, ``{stack}.embed.hook_pos_embed`` (absolute positions only),
  ``{stack}.embed.hook_embed``, each ``(batch, seq, d_model)``
- ``{stack}.blocks.{layer}.hook_resid_pre | hook_resid_mid | hook_resid_post`` ``(batch, seq, d_model)``
- ``{stack}.blocks.{layer}.attn.hook_q | hook_k | hook_v`` (before rotation), ``hook_rot_q | hook_rot_k``
  (rotary models, after rotation), ``hook_scores | hook_weights`` ``(batch, heads, q_len, k_len)``,
  ``hook_z`` ``(batch, heads, q_len, d_k)``, ``hook_out`` ``(batch, q_len, d_model)``; the same under
  ``cross_attn`` in the decoder of an encoder-decoder. With a KV cache, ``hook_k``, ``hook_v`` and
  ``hook_rot_k`` hold this call's tokens only; ``k_len`` of the scores and weights counts the cached ones.
- ``{stack}.blocks.{layer}.ff.hook_pre`` (before the non-linearity), ``ff.hook_hidden`` (after it)
  ``(batch, seq, d_ff)``, ``ff.hook_out`` ``(batch, seq, d_model)``
- ``{stack}.hook_resid_final`` ``(batch, seq, d_model)``: the stack's output after its final norm
- ``hook_logits``: the output head's logits

``{stack}`` is ``decoder`` for a decoder-only model, ``encoder`` for an encoder-only one, and both
for an encoder-decoder. Build names with ``hook_name`` rather than by formatting strings.

``run_with_cache`` attaches a recording hook to the points you name, runs the model once with the
``math`` attention backend (the fused one never computes attention weights) and returns the model's
output and an ``ActivationCache``. Hooks are removed and the backend restored even if the forward
pass raises, so a model is never left instrumented. A point asked for that does not exist, or exists
but never fires, is an error: an empty answer would look like a result.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.models.stack import STACK_NAMES, attention_backend, set_attention_backend
from attnlab.nn import HookPoint

NameFilter = str | Iterable[str] | Callable[[str], bool] | None


class HookNotFiredError(RuntimeError):
    """A hook point asked for by name exists but the forward pass never reached it."""


def hook_name(stack: str | None, layer: int | None, point: str) -> str:
    """The public name of a hook point.

    ``hook_name("decoder", 3, "attn.hook_weights")`` is ``"decoder.blocks.3.attn.hook_weights"``;
    ``hook_name("encoder", None, "embed.hook_embed")`` is ``"encoder.embed.hook_embed"``;
    ``hook_name(None, None, "hook_logits")`` is ``"hook_logits"``. Raises ``ValueError`` for an
    unknown stack, a negative layer, or a layer without a stack.
    """
    if stack is not None and stack not in STACK_NAMES:
        raise ValueError(f"stack must be one of {STACK_NAMES} or None, got {stack!r}")
    if layer is not None:
        if stack is None:
            raise ValueError("a layer belongs to a stack: give stack='encoder' or 'decoder'")
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
            raise ValueError(f"layer must be a non-negative integer, got {layer!r}")
        return f"{stack}.blocks.{layer}.{point}"
    return f"{stack}.{point}" if stack is not None else point


def hook_points(model: nn.Module) -> dict[str, HookPoint]:
    """All hook points of ``model`` by public name (see the module docstring), encoder before decoder.

    A hook point no model named (a bare ``nn`` module) goes by its module path. Raises
    ``ValueError`` if two points share a name.
    """
    points: dict[str, HookPoint] = {}
    for path, module in model.named_modules():
        if isinstance(module, HookPoint):
            name = module.name or path
            if name in points:
                raise ValueError(f"two hook points are named {name!r}")
            points[name] = module
    rank = {stack: i for i, stack in enumerate(STACK_NAMES)}
    order = sorted(points, key=lambda n: rank.get(n.split(".", 1)[0], len(rank)))  # stable: module order kept
    return {name: points[name] for name in order}


def stacks(model: nn.Module) -> tuple[str, ...]:
    """The block stacks of ``model`` by hook-name prefix: ``("decoder",)``, ``("encoder",)`` or both."""
    present = {name.split(".", 1)[0] for name in hook_points(model)}
    return tuple(s for s in STACK_NAMES if s in present)


def main_stack(model: nn.Module) -> str:
    """The only stack of ``model`` (``"decoder"`` or ``"encoder"``).

    Raises ``ValueError`` for an encoder-decoder (say which one you mean) or a model without stacks.
    """
    found = stacks(model)
    if len(found) != 1:
        raise ValueError(
            f"model has stacks {found}; name one ('encoder' or 'decoder')" if found else "model has no block stack"
        )
    return found[0]


def _patterns(names: NameFilter) -> list[str] | None:
    if names is None or callable(names):
        return None
    return [names] if isinstance(names, str) else list(names)


def _selector(names: NameFilter) -> Callable[[str], bool]:
    if names is None:
        return lambda _: True
    if callable(names):
        return names
    patterns = _patterns(names)
    assert patterns is not None
    return lambda name: any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _check_fired(names: NameFilter, fired: Iterable[str]) -> None:
    """Every name or glob of ``names`` (a predicate: the filter as a whole) matched a point that fired."""
    fired = list(fired)
    patterns = _patterns(names)
    if patterns is None:
        if names is not None and not fired:
            raise HookNotFiredError("none of the hook points selected by the predicate fired in this forward pass")
        return
    for p in patterns:
        if not any(fnmatch.fnmatchcase(n, p) for n in fired):
            raise HookNotFiredError(
                f"hook point {p!r} never fired in this forward pass (a part of the model it did not run, "
                "e.g. the encoder when only decode() ran)"
            )


class ActivationCache(Mapping[str, Tensor]):
    """Recorded activations by hook name (detached tensors).

    Besides plain ``cache[name]`` lookups it offers the views learners ask for most, by layer index,
    so nobody has to remember the dotted names. ``stack`` defaults to the model's only stack
    (``stacks``, given by ``run_with_cache``; else read from the recorded names); an encoder-decoder
    must name it.
    """

    def __init__(self, tensors: dict[str, Tensor], stacks: tuple[str, ...] | None = None) -> None:
        self._tensors = tensors
        if stacks is None:
            present = {n.split(".", 1)[0] for n in tensors}
            stacks = tuple(s for s in STACK_NAMES if s in present)
        self.stacks = stacks

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

    def stack(self, stack: str | None = None) -> str:
        """``stack`` checked, or the only stack when ``None``; ``KeyError`` if it must be named."""
        if stack is None:
            if len(self.stacks) != 1:
                raise KeyError(f"this model has stacks {self.stacks}: pass stack='encoder' or 'decoder'")
            return self.stacks[0]
        if stack not in self.stacks:
            raise KeyError(f"no stack {stack!r}; this model has {self.stacks}")
        return stack

    def _layer_point(self, layer: int, point: str, stack: str | None) -> Tensor:
        return self[hook_name(self.stack(stack), layer, point)]

    def attention(self, layer: int, *, stack: str | None = None, cross: bool = False) -> Tensor:
        """Attention weights of one layer, ``(batch, heads, q_len, k_len)``."""
        return self._layer_point(layer, ("cross_attn" if cross else "attn") + ".hook_weights", stack)

    def scores(self, layer: int, *, stack: str | None = None, cross: bool = False) -> Tensor:
        """Scaled, masked, pre-softmax scores of one layer, ``(batch, heads, q_len, k_len)``."""
        return self._layer_point(layer, ("cross_attn" if cross else "attn") + ".hook_scores", stack)

    def qkv(self, layer: int, *, stack: str | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Per-head queries, keys and values of one layer (before rotation), each ``(batch, heads, seq, d_k)``."""
        return tuple(self._layer_point(layer, f"attn.hook_{x}", stack) for x in "qkv")  # type: ignore[return-value]

    def residual(self, layer: int, where: str = "post", *, stack: str | None = None) -> Tensor:
        """Residual stream of one block: ``pre`` (input), ``mid`` or ``post`` (output)."""
        if where not in ("pre", "mid", "post"):
            raise ValueError(f"where must be 'pre', 'mid' or 'post', got {where!r}")
        return self._layer_point(layer, f"hook_resid_{where}", stack)


@contextlib.contextmanager
def hooks_attached(model: nn.Module, hooks: dict[str, Callable[[nn.Module, Any, Tensor], Tensor | None]]) -> Iterator[None]:
    """Attach forward hooks to named hook points for the duration of a ``with`` block; always removed.

    Raises ``KeyError`` for a name that is no hook point of ``model`` (before the block runs) and
    ``HookNotFiredError`` when the block ends without error but one of the points never fired.
    """
    points = hook_points(model)
    missing = sorted(set(hooks) - set(points))
    if missing:
        raise KeyError(f"no hook point named {missing[0]!r}; see attnlab.inspect.hook_points(model)")
    fired: set[str] = set()

    def watching(name: str, fn: Callable[[nn.Module, Any, Tensor], Tensor | None]) -> Callable[..., Tensor | None]:
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor | None:
            fired.add(name)
            return fn(module, inputs, output)

        return hook

    handles = [points[name].register_forward_hook(watching(name, fn)) for name, fn in hooks.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
    _check_fired(list(hooks), fired)


@contextlib.contextmanager
def math_backend(model: nn.Module) -> Iterator[None]:
    """Use the weight-returning attention backend inside the block, then restore the previous one."""
    previous = attention_backend(model)
    set_attention_backend(model, "math")
    try:
        yield
    finally:
        set_attention_backend(model, previous)


def run_with_cache(model: nn.Module, *args: Any, names: NameFilter = None, device: str | torch.device | None = None,
                   **kwargs: Any) -> tuple[Any, ActivationCache]:
    """Run ``model(*args, **kwargs)`` without gradients and record the named activations.

    ``names`` is ``None`` (everything that fires), a name or glob (``"*hook_weights"``), a list of
    names or globs, or a predicate. ``device`` (TransformerLens's argument of the same name): where the
    recorded activations are kept, each moved there as it is recorded (dtype and values unchanged),
    e.g. ``"cpu"`` to read a GPU model's activations as plain numbers; ``None`` (default) leaves them
    on the device that computed them. The output is returned where the model computed it.
    Returns ``(output, cache)``. Raises ``KeyError`` when a name or glob matches no hook point, and
    ``HookNotFiredError`` when one matches only points that never fired (e.g. ``encoder.*`` when
    ``model`` is an encoder-decoder's ``decode``-only call).
    """
    select = _selector(names)
    for p in _patterns(names) or []:
        if not any(fnmatch.fnmatchcase(n, p) for n in hook_points(model)):
            raise KeyError(f"no hook point matches {p!r}; see attnlab.inspect.hook_points(model)")
    recorded: dict[str, Tensor] = {}

    def recorder(name: str) -> Callable[[nn.Module, Any, Tensor], None]:
        def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            recorded[name] = output.detach() if device is None else output.detach().to(device)

        return hook

    wanted = {name: recorder(name) for name in hook_points(model) if select(name)}
    if not wanted:
        raise KeyError(f"no hook point matches {names!r}; see attnlab.inspect.hook_points(model)")
    with torch.no_grad(), math_backend(model):
        points = hook_points(model)
        handles = [points[name].register_forward_hook(hook) for name, hook in wanted.items()]
        try:
            output = model(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()
    if names is not None:
        _check_fired(names, recorded)
    return output, ActivationCache(recorded, stacks(model))
