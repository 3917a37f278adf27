"""A head across a corpus in a notebook: its most specific links, sentence by sentence, and its roles.

Kept apart from ``views.py``: the data is ``attnlab.interpret.corpus``'s (one cached pass over the
corpus serves every head of the model), drawn by the walkthrough's ``headContexts`` (``views.js``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import nn

from attnlab import interpret
from attnlab.catalog import LoadedModel, load
from attnlab.show._html import View
from attnlab.tokenizers.base import Tokenizer


def head_contexts(model: str | LoadedModel | nn.Module, layer: int, head: int, *, corpus: Sequence[str] | None = None,
                  k: int = 10, tokenizer: Tokenizer | None = None, stack: str | None = None,
                  cache: bool = True, cache_dir: str | Path | None = None, progress: bool = True) -> View:
    """Head (``layer``, ``head``)'s top ``k`` sentences of ``corpus`` (default: World English Bible verses,
    ``attnlab.interpret.corpus.default_corpus``), the query and key tokens marked, with its role scores over
    the corpus and their thresholds. ``model``: a catalogue name, a ``LoadedModel``, or a model with
    ``tokenizer=``. The pass is cached unless ``cache=False`` (``scan_corpus``): a second head of the same model is instant.
    Raises ``KeyError`` for an unknown catalogue name, ``ValueError`` for a module without a tokenizer or
    a head the model does not have."""
    name = model if isinstance(model, str) else None
    if isinstance(model, str):
        model = load(model)
    if isinstance(model, LoadedModel):
        name, tokenizer, model = model.name, tokenizer or model.tokenizer, model.model
    if tokenizer is None:
        raise ValueError("a model given as a module needs tokenizer= (the corpus is text)")
    scan = interpret.scan_corpus(model, tokenizer, corpus, stack=stack, cache=cache, cache_dir=cache_dir, progress=progress)
    found = scan.head_contexts(layer, head, k)
    data = {**found.to_dict(), "model": name or type(model).__name__, "skipped": scan.skipped,
            "roles": scan.roles.of_head(layer, head)}
    note = (f"{found.sentences} sentences; each listed once, at the query -> key pair this head links most specifically "
            f"(its weight minus the mean weight of the sentence's other real tokens on that key).")
    return View("head_contexts", f"What does L{layer}H{head} do?", data, note)
