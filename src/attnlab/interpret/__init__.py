"""Why, not only where: what a head does and why it looks where it looks.

A floor above ``attnlab.inspect``: every tool reads or changes the model's activations through its
named hook points (``run_with_cache``, ``hooks_attached``) and nothing else.

- ``logit_lens``: the prediction read from the residual stream after every layer
- ``ablate`` / ``head_effects``: remove heads, measure a metric's change (for every head at once);
  ``ablate_from``: one head removed, run from its layer on a recorded clean run
- ``patch``: activation patching per layer and position (or head)
- ``attribution_patch``: the gradient estimate of every patch at once (one backward pass), and its
  ``agreement`` (Pearson's r) with ``patch``; ``estimate_head_effects``: the same estimate of every
  head's removal, and its ``effects_agreement`` with ``head_effects``
- ``direct_logit_attribution``: a logit split into every component's direct contribution
- ``score_decomposition``: one attention score (self- or cross-attention) split into query-side x
  key-side components; pre- and post-norm (a post-norm model's norms are affine at the recorded input)
- ``saliency``: one score per input token (input x gradient, integrated gradients)
- ``detect_heads``: induction, duplicate-token and previous-token heads on repeated random tokens
- ``head_contexts`` / ``corpus_roles`` (``scan_corpus``): a head's most specific links over a corpus of
  sentences, and every head's role scores there (``attnlab.interpret.corpus``); ``specificity``: the
  head finder's measure of a link (``attnlab.interpret.links``)

Metrics for the tools that take one are in ``attnlab.interpret.metrics``. Every result is a
dataclass with ``to_dict()`` for JSON.
"""

from attnlab.interpret import metrics
from attnlab.interpret._model import Inputs, Metric
from attnlab.interpret.ablation import HeadEffects, ablate, ablate_from, head_effects
from attnlab.interpret.attribution import (
    DirectLogitAttribution,
    ScoreDecomposition,
    direct_logit_attribution,
    score_decomposition,
)
from attnlab.interpret.attribution_patching import (
    agreement,
    attribution_patch,
    effects_agreement,
    estimate_head_effects,
)
from attnlab.interpret.corpus import (
    CorpusRoles,
    CorpusScan,
    HeadContexts,
    ScanCancelled,
    cached_scan,
    corpus_roles,
    head_contexts,
    scan_corpus,
)
from attnlab.interpret.detect import HeadDetection, detect_heads, repeated_random_tokens
from attnlab.interpret.lens import LogitLens, accumulated_names, accumulated_residual, logit_lens
from attnlab.interpret.links import specificity
from attnlab.interpret.patching import PatchResult, patch
from attnlab.interpret.saliency import Saliency, saliency

__all__ = [
    "CorpusRoles",
    "CorpusScan",
    "DirectLogitAttribution",
    "HeadContexts",
    "HeadDetection",
    "HeadEffects",
    "Inputs",
    "LogitLens",
    "Metric",
    "PatchResult",
    "Saliency",
    "ScanCancelled",
    "ScoreDecomposition",
    "ablate",
    "ablate_from",
    "accumulated_names",
    "accumulated_residual",
    "agreement",
    "attribution_patch",
    "cached_scan",
    "corpus_roles",
    "detect_heads",
    "direct_logit_attribution",
    "effects_agreement",
    "estimate_head_effects",
    "head_contexts",
    "head_effects",
    "logit_lens",
    "metrics",
    "patch",
    "repeated_random_tokens",
    "saliency",
    "scan_corpus",
    "score_decomposition",
    "specificity",
]
