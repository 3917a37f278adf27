"""What every ``attnlab.show`` view accepts as its model, made into the ``catalog.LoadedModel`` that the
web's payload builders take (``web.payloads.attention_of``, ``web.finder.rank_heads_of``,
``web.corpus.head_contexts_of``, ``web.why.why_of``)."""

from __future__ import annotations

import dataclasses

from torch import nn

from attnlab.catalog import LoadedModel, ModelInfo, load
from attnlab.models import FamilyModel
from attnlab.tokenizers.base import Tokenizer

ModelLike = str | LoadedModel | nn.Module


def loaded_model(model: ModelLike, tokenizer: Tokenizer | None = None) -> LoadedModel:
    """``model`` as a ``LoadedModel``: a catalogue name is loaded (``catalog.load``, CPU), a ``LoadedModel``
    is used as it is (its tokenizer replaced by ``tokenizer`` when one is given), and a bare module of one
    of attnlab's families is wrapped under its class name, with ``tokenizer`` (``None`` when given
    without one: then only token ids can be read, labelled by their numbers). Raises ``KeyError`` for an
    unknown catalogue name and ``TypeError`` for a module that is not one of attnlab's model families."""
    if isinstance(model, str):
        model = load(model)
    if isinstance(model, LoadedModel):
        return model if tokenizer is None else dataclasses.replace(model, tokenizer=tokenizer)
    if not isinstance(model, FamilyModel):
        raise TypeError(f"attnlab.show draws attnlab's model families, got {type(model).__name__}")
    name = type(model).__name__
    n_params = sum(p.numel() for p in model.parameters())
    info = ModelInfo(name=name, family=model.config.family, description="a model given to attnlab.show as a module",
                     n_params=f"{n_params / 1e6:.1f}M", source="in memory", licence="unknown", install_hint="",
                     is_available=lambda: True, loader=lambda: wrapped)
    wrapped = LoadedModel(name=name, model=model, tokenizer=tokenizer, config=model.config, info=info)  # type: ignore[arg-type]
    return wrapped
