"""Every hook name ``attnlab.interpret`` uses is built here, and only here.

The names follow ``attnlab.inspect``'s one scheme for every family (``{stack}.blocks.{l}.attn.hook_z``,
``{stack}`` being ``decoder`` or ``encoder``; ``hook_logits`` for the output head), built by
``attnlab.inspect.hook_name``. Tools write scheme names; ``resolve`` is where a translation would go
if the scheme ever differed from what ``inspect`` accepts (today it is the identity).
"""

from __future__ import annotations

from torch import nn

from attnlab.inspect import hook_name


def resolve(model: nn.Module, name: str) -> str:
    """The hook-point name ``attnlab.inspect`` knows for a scheme name (the same name)."""
    del model
    return name


def embed(model: nn.Module, stack: str, point: str) -> str:
    """``{stack}.embed.hook_{point}``: ``tok_embed``, ``pos_embed`` or ``embed``."""
    return resolve(model, hook_name(stack, None, f"embed.hook_{point}"))


def block(model: nn.Module, stack: str, layer: int, point: str) -> str:
    """``{stack}.blocks.{layer}.{point}``, e.g. ``point="attn.hook_z"`` or ``"hook_resid_pre"``."""
    return resolve(model, hook_name(stack, layer, point))


def logits(model: nn.Module) -> str:
    return resolve(model, hook_name(None, None, "hook_logits"))
