"""Every hook name ``attnlab.interpret`` uses is built here, and only here.

The names follow one scheme for every family (``{stack}.blocks.{l}.attn.hook_z``, ``{stack}`` being
``decoder`` or ``encoder``, ``hook_logits`` for the output head). Until ``attnlab.inspect`` speaks that
scheme itself, ``resolve`` translates it into the module paths the models have today; when it does,
``_MODULE_PATHS`` becomes ``False`` and nothing else changes.
"""

from __future__ import annotations

from torch import nn

_MODULE_PATHS = True


def _module_prefixes(model: nn.Module) -> dict[str, str]:
    """Scheme prefix -> module-path prefix, per family (the layout of the model classes)."""
    kind = type(model).__name__
    if kind == "DecoderLM":
        return {"decoder.embed.": "embed.", "decoder.": "stack."}
    if kind == "EncoderModel":
        return {"encoder.embed.": "embed.", "encoder.": "stack."}
    if kind in ("EncoderForMaskedLM", "EncoderForClassification"):
        return {"encoder.embed.": "encoder.embed.", "encoder.": "encoder.stack."}
    if kind == "EncoderDecoder":
        return {"encoder.embed.": "src_embed.", "decoder.embed.": "tgt_embed.", "encoder.": "encoder.", "decoder.": "decoder."}
    raise TypeError(f"attnlab.interpret does not know the model class {kind}")


def resolve(model: nn.Module, name: str) -> str:
    """The hook-point name ``attnlab.inspect`` knows for a scheme name."""
    if not _MODULE_PATHS:
        return name
    for prefix, path in _module_prefixes(model).items():
        if name.startswith(prefix):
            return path + name[len(prefix):]
    return name


def embed(model: nn.Module, stack: str, point: str) -> str:
    """``{stack}.embed.hook_{point}``: ``tok_embed``, ``pos_embed`` or ``embed``."""
    return resolve(model, f"{stack}.embed.hook_{point}")


def block(model: nn.Module, stack: str, layer: int, point: str) -> str:
    """``{stack}.blocks.{layer}.{point}``, e.g. ``point="attn.hook_z"`` or ``"hook_resid_pre"``."""
    return resolve(model, f"{stack}.blocks.{layer}.{point}")


def logits(model: nn.Module) -> str:
    return resolve(model, "hook_logits")
