"""A head across a corpus in a notebook: its most specific links, sentence by sentence, and its roles.

Kept apart from ``views.py``: the pass is ``attnlab.interpret.scan_corpus`` (one cached pass over the
corpus serves every head of the model), run here with the notebook's options (any corpus, cache
folder, progress bar); the payload is the walkthrough's (``web.corpus.head_contexts_of``, the builder of
``POST /api/heads/contexts``), drawn by its ``headContexts`` (``views.js``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from attnlab import interpret
from attnlab.interpret import corpus as hc
from attnlab.show._html import View
from attnlab.show._loaded import ModelLike, loaded_model
from attnlab.tokenizers.base import Tokenizer
from attnlab.web.corpus import default_corpus_label, head_contexts_of


def head_contexts(model: ModelLike, layer: int, head: int, *, corpus: Sequence[str] | None = None,
                  k: int = 10, tokenizer: Tokenizer | None = None, stack: str | None = None,
                  cache: bool = True, cache_dir: str | Path | None = None, progress: bool = True) -> View:
    """Head (``layer``, ``head``)'s top ``k`` sentences of ``corpus`` (default: World English Bible verses,
    ``attnlab.interpret.corpus.default_corpus``), the query and key tokens marked, with its role scores over
    the corpus and their thresholds: ``POST /api/heads/contexts``'s payload. ``model``: a catalogue name, a
    ``LoadedModel``, or a model with ``tokenizer=``. The pass is cached unless ``cache=False`` (``scan_corpus``):
    a second head of the same model is instant. Raises ``KeyError`` for an unknown catalogue name, ``ValueError``
    for a module without a tokenizer or a head the model does not have."""
    loaded = loaded_model(model, tokenizer)
    if loaded.tokenizer is None:
        raise ValueError("a model given as a module needs tokenizer= (the corpus is text)")
    if corpus is None:
        corpus, label = hc.default_corpus(), default_corpus_label(hc.DEFAULT_SENTENCES)
    else:
        corpus = list(corpus)
        label = f"the {len(corpus)} sentences given to attnlab.show.head_contexts"
    scan = interpret.scan_corpus(loaded.model, loaded.tokenizer, corpus, stack=stack, cache=cache, cache_dir=cache_dir,
                                 progress=progress)
    data = head_contexts_of(loaded.name, scan, layer, head, k, corpus=label).model_dump(mode="json")
    note = (f"{data['sentences']} sentences; each listed once, at the query -> key pair this head links most specifically "
            f"(its weight minus the mean weight of the sentence's other real tokens on that key).")
    return View("head_contexts", f"What does L{layer}H{head} do?", data, note)
