"""What does L3H1 do? One head's most specific links over a corpus of sentences, and its roles there.

``POST /api/heads/contexts`` runs ``attnlab.interpret.scan_corpus`` over ``sentences`` verses of the World
English Bible (``default_corpus``) for the model's self-attention stack (the one the head grid shows),
on a private copy of the model (the pass takes a while and must not hold the model's lock), cancelled
when the client goes away, and cached on disk: the first head asked of a model pays for the pass, every
later head of that model and corpus is read from the cache. The result of the latest pass per model is
kept in memory too, so the head grid's payload (``corpus_roles``) can carry every head's role scores
once a pass exists.
"""

from __future__ import annotations

import threading

from pydantic import BaseModel, Field

from attnlab import interpret
from attnlab.interpret import corpus as hc
from attnlab.interpret.links import LINK
from attnlab.train.corpora import CorpusError
from attnlab.web import schemas as s
from attnlab.web.errors import PayloadError
from attnlab.web.heavy import Abandoned, abandoned
from attnlab.web.models import get_model, model_copy, on_unload, self_attention_stack

MAX_SENTENCES = 5000
MAX_K = 50
_SCANS: dict[str, hc.CorpusScan] = {}
_SCANS_GUARD = threading.Lock()


def _forget(name: str) -> None:
    with _SCANS_GUARD:
        _SCANS.pop(name, None)


on_unload(_forget)


class HeadContextsRequest(s.Request):
    model: str = s.Model
    layer: int = s.Layer
    head: int = s.Head
    k: int = Field(default=10, ge=1, le=MAX_K, description="how many sentences to return, most specific first")
    sentences: int = Field(default=hc.DEFAULT_SENTENCES, ge=1, le=MAX_SENTENCES,
                           description="World English Bible verses in the corpus (evenly spread over the book)")


class ContextOut(BaseModel):
    sentence: str
    tokens: list[str]
    query: int = Field(description="index into tokens of the query token")
    key: int = Field(description="index into tokens of the key token the query links to")
    weight: float = Field(description="the head's attention weight from query to key")
    specificity: float = Field(description="weight minus the mean weight of the other real tokens on the key")


class RoleScoreOut(BaseModel):
    role: str
    score: float | None = Field(description="mean share of attention on the role's pattern; null: no case in the corpus")
    threshold: float
    cases: int = Field(description="how many (sentence, query) cases the score averages")
    given: bool = Field(description="score >= threshold")


class HeadContextsResponse(BaseModel):
    model: str
    stack: str
    layer: int
    head: int
    corpus: str
    sentences: int = Field(description="sentences read (verses longer than the token limit are left out)")
    skipped: int
    link_threshold: float = Field(description="specificity at or above which the head finder calls a pair a link")
    contexts: list[ContextOut]
    roles: list[RoleScoreOut]
    summary: str = Field(description="one sentence computed from the numbers above")
    corpus_roles: s.CorpusRolesOut = Field(description="every head's roles over the same corpus (for the grid's legend)")
    from_cache: bool


def corpus_roles_out(scan: hc.CorpusScan) -> s.CorpusRolesOut:
    roles = scan.roles
    d = roles.to_dict()
    n_layers, n_heads = scan.query.shape[1:]
    return s.CorpusRolesOut(sentences=len(scan.sentences), thresholds=d["thresholds"], cases=d["cases"], scores=d["scores"],
                          roles=[[roles.roles(layer, head) for head in range(n_heads)] for layer in range(n_layers)])


def latest_roles(model: str) -> s.CorpusRolesOut | None:
    """The role scores of the latest corpus pass of ``model`` in this process, if any."""
    with _SCANS_GUARD:
        scan = _SCANS.get(model)
    return corpus_roles_out(scan) if scan is not None else None


def head_contexts(req: HeadContextsRequest) -> HeadContextsResponse:
    """``POST /api/heads/contexts``: the corpus pass of the request's model (see the module docstring), then
    ``head_contexts_of``."""
    loaded = get_model(req.model)
    stack = self_attention_stack(loaded)
    n_heads = loaded.config.n_heads
    if req.layer >= stack.n_layers or req.head >= n_heads:
        raise PayloadError(f"head L{req.layer}H{req.head} does not exist: {loaded.name!r} has {stack.n_layers} layers "
                           f"of {n_heads} heads")
    try:
        corpus = hc.default_corpus(req.sentences)
    except CorpusError as exc:
        raise PayloadError(f"the corpus cannot be read: {exc}") from None
    scan = interpret.cached_scan(loaded.model, loaded.tokenizer, corpus, stack=stack.stack)
    if scan is None:
        model = model_copy(loaded)
        try:
            scan = interpret.scan_corpus(model, loaded.tokenizer, corpus, stack=stack.stack, cancel=abandoned, progress=False)
        except hc.ScanCancelled:
            raise Abandoned("the client disconnected during the corpus pass") from None
    with _SCANS_GUARD:
        _SCANS[loaded.name] = scan
    return head_contexts_of(loaded.name, scan, req.layer, req.head, req.k, corpus=default_corpus_label(len(corpus)))


def default_corpus_label(verses: int) -> str:
    """How the payload names ``hc.default_corpus(verses)``."""
    return f"World English Bible (public domain), {verses} verses evenly spread"


def head_contexts_of(model: str, scan: hc.CorpusScan, layer: int, head: int, k: int, *, corpus: str) -> HeadContextsResponse:
    """Head (``layer``, ``head``)'s top ``k`` contexts and role scores in a finished corpus pass ``scan`` of
    the model named ``model``, whose corpus ``corpus`` names. ``attnlab.show.head_contexts`` draws the same
    payload. Raises ``ValueError`` for a head the scanned stack does not have or ``k < 1``."""
    found = scan.head_contexts(layer, head, k)
    return HeadContextsResponse(
        model=model, stack=scan.stack, layer=layer, head=head, corpus=corpus,
        sentences=len(scan.sentences), skipped=scan.skipped, link_threshold=LINK,
        contexts=[ContextOut(**c.to_dict()) for c in found.contexts],
        roles=[RoleScoreOut(**r) for r in scan.roles.of_head(layer, head)],
        summary=found.summary(), corpus_roles=corpus_roles_out(scan), from_cache=scan.from_cache,
    )
