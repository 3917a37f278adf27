"""Metrics for ablation, patching and saliency: model output ``(batch, ...)`` -> ``(batch,)`` floats.

Every tool that runs interventions in a batch (one batch row per head or per position) calls the
metric once on the stacked outputs, so a metric must reduce each row on its own. A metric that reads
only the last position says so (``metric.last_position_only = True``): the batched tools then read
out that position alone (the logits of the other positions are never computed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.interpret._model import Metric


def token_logprob(token: int, position: int = -1) -> Metric:
    """Log-probability of ``token`` at ``position`` of ``(batch, seq, vocab)`` logits."""

    def metric(logits: Tensor) -> Tensor:
        return torch.log_softmax(logits[:, position].float(), dim=-1)[:, token]

    metric.last_position_only = position == -1  # type: ignore[attr-defined]
    return metric


def token_logit(token: int, position: int = -1) -> Metric:
    """The raw logit of ``token`` at ``position``."""

    def metric(logits: Tensor) -> Tensor:
        return logits[:, position, token]

    metric.last_position_only = position == -1  # type: ignore[attr-defined]
    return metric


def logit_diff(token: int, other: int, position: int = -1) -> Metric:
    """``logit[token] - logit[other]`` at ``position`` (Wang et al. 2022's IOI metric)."""

    def metric(logits: Tensor) -> Tensor:
        return logits[:, position, token] - logits[:, position, other]

    metric.last_position_only = position == -1  # type: ignore[attr-defined]
    return metric


def next_token_loss(input_ids: Tensor) -> Metric:
    """Mean next-token cross-entropy of each row against ``input_ids`` ``(batch, seq)`` shifted by one
    (a decoder's own training loss). Works on any number of stacked copies of the batch."""

    def metric(logits: Tensor) -> Tensor:
        targets = input_ids.repeat(logits.shape[0] // input_ids.shape[0], 1)[:, 1:]
        losses = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), reduction="none")
        return losses.view(targets.shape).mean(dim=1)

    return metric


def embedding_similarity(reference: Tensor) -> Metric:
    """Cosine similarity of each row's mean-pooled hidden states ``(batch, seq, d_model)`` to the
    mean-pooled ``reference`` ``(1, seq, d_model)`` (an encoder's clean run): 1 when nothing changed.
    For encoders without a vocabulary head, whose output is a sentence embedding (Reimers & Gurevych 2019)."""
    pooled = reference.mean(dim=1)  # (1, d_model)

    def metric(hidden: Tensor) -> Tensor:
        return F.cosine_similarity(hidden.mean(dim=1), pooled.expand(hidden.shape[0], -1), dim=-1)

    return metric
