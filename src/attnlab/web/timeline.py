"""The training timeline: the bundled model's snapshots, its loss curve, and a head's attention per step.

``attnlab train`` leaves, beside the final weights, snapshot checkpoints (``snapshots/step-000200/``
holding ``model.safetensors``) and a ``metrics.jsonl`` log (one JSON object per line with a ``step``
and ``loss`` / ``val_loss`` values); the bundled ``bible-bpe`` model (subword tokens) ships both. Each
snapshot's weights are loaded into a copy of the catalogue model (``load_weights`` checks every name
and shape), on the device the model runs on, and run through ``run_with_cache`` on a fixed sentence,
so the slider shows what that step's weights actually compute.

Beside the map, the chosen head's role scores at every snapshot (``role_scores``): the corpus roles of
``attnlab.interpret.corpus`` (``corpus_roles`` with the timeline sentence as its one-sentence corpus:
previous-token, first-token, duplicate-token and pronoun-noun on that sentence; induction on random
tokens repeated twice, ``detect_heads``), each with its threshold in ``ROLE_THRESHOLDS``; every head's
scores are computed once per (model, step) and cached like the snapshot weights. The toolbar's role label
at a step (``toolbar_role``) is read from the same scores: one vocabulary and one set of thresholds
(``attnlab.inspect.roles.ROLE_THRESHOLDS``) for the label, the curves and the head grid's legend.

The view opens on the head that *learned the most*: the one whose attention on the sentence moved
furthest from its first snapshot by the last (``learning_head``), so the first picture already shows
noise turning into structure.
"""

from __future__ import annotations

import json
import math
import threading
from importlib import resources
from pathlib import Path

import torch
from fastapi import APIRouter, Query, Request
from torch import nn

from attnlab import catalog as cat
from attnlab.generate import model_device
from attnlab.inspect import run_with_cache
from attnlab.interpret.corpus import ROLE_THRESHOLDS, ROLES, CorpusRoles, corpus_roles
from attnlab.web import schemas as s
from attnlab.web.errors import NotFoundError, PayloadError
from attnlab.web.models import get_model, model_copy, model_input, on_unload, self_attention_stack, tokenize
from attnlab.web.view import Mount
from attnlab.weights.checkpoint import CheckpointError, load_weights, snapshot_weights

SENTENCE = "ROMEO: But soft, what light through yonder window breaks?"
SENTENCES = {  # the fixed sentence of each bundled model's timeline (a model registered later brings its own)
    "bible-bpe": "The king said to his servants that they should bring him the bread and the wine.",
    "shakespeare-char": SENTENCE,
}

_DIRS: dict[str, Path] = {}
_SENTENCES: dict[str, str] = {}
_SNAPSHOT_MODELS: dict[tuple[str, int, str], nn.Module] = {}  # (model, step, device) -> weights of that step
_ROLE_SCORES: dict[tuple[str, int, str], CorpusRoles] = {}  # (model, step, device) -> every head's role scores
_LOCK = threading.Lock()


def register_timeline(model: str, directory: Path, sentence: str = SENTENCE) -> None:
    """Declare where a model's training snapshots and metrics live (the bundled model is found by default)."""
    _DIRS[model] = Path(directory)
    _SENTENCES[model] = sentence


def _directory(model: str) -> Path:
    if model in _DIRS:
        return _DIRS[model]
    bundled = Path(str(resources.files("attnlab"))) / "bundled" / model
    if bundled.is_dir():
        return bundled
    raise NotFoundError(f"model {model!r} has no training timeline (no snapshots under attnlab/bundled/{model}/)")


def has_timeline(model: str) -> bool:
    """Whether ``model`` ships snapshots (checked on disk, without loading the model)."""
    try:
        return bool(snapshots(model))
    except NotFoundError:
        return False


def snapshots(model: str) -> dict[int, Path]:
    """Snapshot weight files by training step: ``step-<n>/model.safetensors`` or ``step_<n>.safetensors``."""
    found = snapshot_weights(_directory(model))
    if not found:
        raise NotFoundError(f"model {model!r} ships no training snapshots")
    return found


def _curve(model: str) -> list[s.LossPoint]:
    points: list[s.LossPoint] = []
    for path in sorted(_directory(model).rglob("metrics.jsonl")):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):  # not JSON, or nested past the parser's recursion limit
                continue
            step = row.get("step") if isinstance(row, dict) else None
            if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < 2**63:
                continue
            for key, value in row.items():
                if "loss" in key and _finite(value) is not None:
                    points.append(s.LossPoint(step=step, value=_finite(value), series=key))
    return points


def _finite(value: object) -> float | None:
    """``value`` as a finite float, else None (a string, a bool, NaN, infinity, an integer past float range)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def timeline(model: str) -> s.TimelineResponse:
    loaded = get_model(model)
    steps = snapshots(model)
    curve = _curve(model)
    cfg = loaded.config
    layer, head, change = learning_head(model)
    return s.TimelineResponse(
        model=model, sentence=_sentence(loaded), snapshots=[s.Snapshot(step=k, loss=_loss_at(curve, k)) for k in steps],
        curve=curve, n_layers=cfg.n_layers, n_heads=cfg.n_heads,
        learning_layer=layer, learning_head=head, learning_change=change,
    )


def _all_weights(loaded: cat.LoadedModel, step: int, path: Path) -> torch.Tensor:
    """Every head's attention on the timeline sentence with the weights of ``step``: (layers, heads, q, k),
    float32, on the CPU (one forward pass of the snapshot model, under the timeline's lock)."""
    ids, _ = tokenize(loaded, _sentence(loaded))
    stack = self_attention_stack(loaded)
    names = [stack.name(layer, "attn.hook_weights") for layer in range(stack.n_layers)]
    with _LOCK:
        model = _snapshot_model(loaded, step, path)
        _, cache = run_with_cache(model, model_input(model, ids), names=names, device="cpu")
    return torch.stack([cache[name][0] for name in names])


def learning_head(model: str) -> tuple[int, int, float]:
    """``(layer, head, change)``: the head whose attention moved most between the first and last snapshot.

    ``change`` is the total-variation distance between a query's attention row at the first snapshot and
    at the last, ``0.5 * sum_k |a_first - a_last|`` (0: unchanged, 1: moved to entirely other tokens),
    averaged over the sentence's queries; the query at position 0 of a causal model, which can only see
    itself, is left out. Raises ``NotFoundError`` for a model without snapshots.
    """
    loaded = get_model(model)
    steps = snapshots(model)
    first, last = min(steps), max(steps)
    a, b = (_all_weights(loaded, step, steps[step]).double() for step in (first, last))
    start = 1 if self_attention_stack(loaded).causal else 0
    change = 0.5 * (a - b).abs().sum(-1)[..., start:].mean(-1)  # (layers, heads)
    best = int(change.argmax())
    layer, head = divmod(best, change.shape[1])
    return layer, head, float(change[layer, head])


def _loss_at(curve: list[s.LossPoint], step: int) -> float | None:
    """The latest training loss logged at or before ``step`` (the log is not always written at snapshot steps)."""
    train = [p for p in curve if p.series in ("loss", "train_loss") and p.step <= step]
    return max(train, key=lambda p: p.step).value if train else None


def _sentence(loaded: cat.LoadedModel) -> str:
    return _SENTENCES.get(loaded.name, SENTENCES.get(loaded.name, SENTENCE))


def _snapshot_model(loaded: cat.LoadedModel, step: int, path: Path) -> nn.Module:
    key = (loaded.name, step, str(model_device(loaded.model)))
    if key not in _SNAPSHOT_MODELS:
        model = model_copy(loaded)  # under the model's lock, on its device; load_weights copies into it
        try:
            load_weights(model, path)
        except CheckpointError as exc:
            raise PayloadError(f"snapshot at step {step} does not fit model {loaded.name!r}: {exc}") from None
        if len(_SNAPSHOT_MODELS) >= 16:
            _SNAPSHOT_MODELS.pop(next(iter(_SNAPSHOT_MODELS)))
        _SNAPSHOT_MODELS[key] = model.eval()
    return _SNAPSHOT_MODELS[key]


def _roles_at(loaded: cat.LoadedModel, step: int, path: Path) -> CorpusRoles:
    """Every head's role scores with the weights of ``step`` (``corpus_roles`` on the timeline sentence,
    uncached on disk, no progress bar), computed once per (model, step, device) under the timeline's lock."""
    key = (loaded.name, step, str(model_device(loaded.model)))  # the snapshot copies' key: they run where the model does
    with _LOCK:
        if key not in _ROLE_SCORES:  # (the snapshot weights are loaded only when the scores are not cached)
            model = _snapshot_model(loaded, step, path)
            _ROLE_SCORES[key] = corpus_roles(model, loaded.tokenizer, [_sentence(loaded)], cache=False, progress=False)
        return _ROLE_SCORES[key]


def role_scores(loaded: cat.LoadedModel, steps: dict[int, Path], layer: int, head: int) -> dict[str, list[float | None]]:
    """Head (``layer``, ``head``)'s score per role at every snapshot of ``steps`` (in step order); ``None``
    where the sentence has no case for a role (a character model has no whole-word pronoun, say)."""
    out: dict[str, list[float | None]] = {role: [] for role in ROLES}
    for step in sorted(steps):
        roles = _roles_at(loaded, step, steps[step])
        for item in roles.of_head(layer, head):
            out[item["role"]].append(item["score"])
    return out


def toolbar_role(roles: CorpusRoles, layer: int, head: int) -> s.HeadRoleOut:
    """The toolbar's role label of head (``layer``, ``head``) at one snapshot, in the corpus roles' vocabulary and
    thresholds (the curves beside it): the role given with the largest margin over its threshold, or ``None``;
    ``scores``: every role's score at that snapshot (roles without a case in the sentence left out)."""
    given = roles.roles(layer, head)
    return s.HeadRoleOut(role=given[0] if given else None,
                         scores={r["role"]: r["score"] for r in roles.of_head(layer, head) if r["score"] is not None})


def roles_summary(steps: list[int], scores: dict[str, list[float | None]], thresholds: dict[str, float]) -> str:
    """One sentence per role computed from ``scores``: the first snapshot step at which the score reaches its
    threshold and whether it is still there at the last, or its highest score when it never does."""
    parts = []
    for role, values in scores.items():
        known = [(step, v) for step, v in zip(steps, values, strict=True) if v is not None]
        if not known:
            parts.append(f"{role}: no case in the sentence")
            continue
        bar = thresholds[role]
        reached = [step for step, v in known if v >= bar]
        if reached:
            end = "and stays above it" if known[-1][1] >= bar else f"but ends at {known[-1][1]:.2f}"
            parts.append(f"{role} reaches its threshold {bar:g} at step {reached[0]} {end}")
        else:
            step, top = max(known, key=lambda sv: sv[1])
            parts.append(f"{role} stays below its threshold {bar:g} (highest {top:.2f}, at step {step})")
    return "; ".join(parts) + "."


def _forget_snapshots(name: str) -> None:
    with _LOCK:
        for key in [k for k in _SNAPSHOT_MODELS if k[0] == name]:
            del _SNAPSHOT_MODELS[key]
        for key in [k for k in _ROLE_SCORES if k[0] == name]:
            del _ROLE_SCORES[key]


on_unload(_forget_snapshots)  # the snapshot copies go with the model


def attention_at(req: s.TimelineAttentionRequest) -> s.TimelineAttentionResponse:
    """One head's attention on the fixed sentence with the weights of training step ``req.step``."""
    loaded = get_model(req.model)
    steps = snapshots(req.model)
    if req.step not in steps:
        raise PayloadError(f"no snapshot at step {req.step}; steps: {', '.join(map(str, steps))}")
    _, tokens = tokenize(loaded, _sentence(loaded))
    stack = self_attention_stack(loaded)
    if not 0 <= req.layer < stack.n_layers:
        raise PayloadError(f"layer {req.layer} does not exist; this model has {stack.n_layers}")
    weights = _all_weights(loaded, req.step, steps[req.step])[req.layer]
    if not 0 <= req.head < weights.shape[0]:
        raise PayloadError(f"head {req.head} does not exist; this model has {weights.shape[0]}")
    scores = role_scores(loaded, steps, req.layer, req.head)
    order = sorted(steps)
    return s.TimelineAttentionResponse(
        model=req.model, step=req.step, layer=req.layer, head=req.head, tokens=tokens,
        weights=weights[req.head].double().tolist(), role=toolbar_role(_roles_at(loaded, req.step, steps[req.step]), req.layer, req.head),
        role_steps=order, role_scores=scores, role_thresholds=dict(ROLE_THRESHOLDS),
        role_summary=roles_summary(order, scores, ROLE_THRESHOLDS),
    )


def routes(router: APIRouter, mount: Mount) -> None:
    """``GET /api/timeline?model=`` (the snapshots and loss curve) and ``POST /api/timeline/attention`` (one
    head's attention at one snapshot), each in a worker."""

    @router.get("/api/timeline", responses=mount.errors(404, 503), name="timeline_index")
    async def timeline_index(request: Request, model: str = Query("bible-bpe", min_length=1, max_length=s.MAX_NAME)
                             ) -> s.TimelineResponse:
        return await mount.heavy(request, timeline, model)

    @router.post("/api/timeline/attention", responses=mount.errors(404, 503), name="timeline_attention")
    async def timeline_attention(request: Request, req: s.TimelineAttentionRequest) -> s.TimelineAttentionResponse:
        return await mount.heavy(request, attention_at, req)
