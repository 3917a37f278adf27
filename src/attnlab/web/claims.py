"""Claims as computations: the numbers and comparisons a tour step states, computed from its figure's payload.

A tour step's Markdown may hold **slots**, ``{{fn arg ...}}``; each is replaced by text computed from the
same payload builder the step's widget draws from (``payloads.attention``, ``finder.rank_heads``,
``timeline.attention_at``, ``ablation.ablation``, ``translation.translate``, the experiment's ``results.json``), so
a sentence cannot drift from its figure. ``{{cmp A ; B}}`` compares two one-number slots and renders
"more than", "less than" or "about as much as" (``cmpv``: "higher than", "lower than", "about the same as"). Token arguments name tokens by their text, as the
preset's ``query`` and ``key`` do (case and the tokenizers' space markers ignored).

Every rendered slot is returned as a ``TourClaim`` (the slot, its text and the numbers behind it), so
a test can recompute each one from the widget's data and fail when a sentence stops being true.

Slots (``Q``, ``K``: token texts; layer and head are the preset's unless ``L``/``H`` are given):

- ``weight Q K [L H]``: the attention weight of query ``Q`` on key ``K`` (``hook_weights``).
- ``others Q K``, ``specificity Q K``, ``link Q K``: the head finder's numbers for that head; ``link``
  renders "a link" or "not a link" against ``finder.LINK``. ``most_others Q K``: the largest weight on
  ``K`` from any other real query. ``threshold``: ``finder.LINK``.
- ``best Q K``, ``best_weight Q K``, ``best_specificity Q K``, ``best_link Q K``: the finder's first head.
- ``layers``, ``heads_per_layer``: the attention payload's shape; ``columns``, ``width``: how many of the
  part widget's vector numbers are drawn, of how many.
- ``heads``, ``role ROLE``, ``role_threshold``, ``favourite first|last``: the layers x heads grid: how many
  heads, how many carry a role label, a role's threshold (``role_threshold [ROLE]``, default first-token), how many heads' most-attended key
  (mean over the real queries) is the first or the last token.
- ``entropy first|last``, ``entropy_max``: the timeline figure: mean entropy (bits) of the attention rows
  of the shown head at the first / last snapshot, and of uniform attention over what each row may see.
- ``scaling_trend``, ``scaling_alpha``, ``scaling_sizes``: the scaling experiment's run the figure shows.
- ``induction_jump``, ``induction_loss``, ``induction_drop``, ``induction_end``, ``induction_control``: the induction-heads
  experiment's run the figure shows (its 2-layer attention-only model's ``shift_jump``, ``steepest_loss_drop``,
  last snapshot and ``where_heads_look``, and its 1-layer control).
- ``ablation_metric``, ``ablation_clean``, ``ablation_removed``, ``ablation_top``, ``ablation_top_removed``,
  ``ablation_best``: the ablation payload of the preset's head (zero ablation).
- ``embed_id W``, ``embed_position W``, ``embed_value W tok|pos|input D``, ``embed_sum``: the embedding
  widget (the preset's ``part`` and ``positional-encoding``): token ``W``'s id and position, dimension ``D`` of its
  token embedding, position vector or the input of block 0 (three decimals), and whether token + position =
  input holds on every drawn number ("exactly", or "to within" the largest difference).
- ``nearest with|without``, ``twins with|without``, ``order_tokens``: the Order view's experiment ("Jake
  learned AI" vs "AI learned Jake" through the preset's encoder, with and without its positions): the largest
  distance from a token of the first order to its nearest match in the second, how many tokens have an exact
  twin (distance under 1e-3, the view's verdict), and how many tokens the sentence has.
- ``ffn_units``, ``ffn_width``, ``ffn_activation``, ``ffn_negative before|after``, ``ffn_lowest before|after``,
  ``ffn_zero``, ``ffn_length stream|out|result``: the feed-forward widget (``ffn.ffn`` at the preset's layer for
  the preset's ``query`` token): the hidden layer's size, the model's width, the non-linearity's name, how many
  hidden units are negative before (``ff.hook_pre``) and after it (``ff.hook_hidden``) and the lowest of them,
  how many are exactly zero after it, and the length of the residual stream entering the sub-layer
  (``hook_resid_mid``), of the feed-forward output (``ff.hook_out``) and of the block's output (``hook_resid_post``).
- ``align Q``, ``align_weight Q``, ``translation``: the translator's greedy output and, for target
  token ``Q``, the source token its last layer's cross-attention (mean of heads) weighs most.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from itertools import pairwise
from pathlib import Path
from typing import Any

from attnlab import catalog as cat
from attnlab.inspect.roles import ROLE_THRESHOLDS
from attnlab.web import ablation as ablation_
from attnlab.web import ffn as ffn_
from attnlab.web import finder, order, payloads, timeline, translation
from attnlab.web import schemas as s
from attnlab.web.errors import PayloadError
from attnlab.web.experiments import RUNS, Index, default_runs_dir
from attnlab.web.models import get_model, tokenize

SLOT = re.compile(r"\{\{\s*(.+?)\s*\}\}")
#: What a slot reads before it is computed (GET /api/tour lists the steps without computing anything).
PENDING = '<span class="claim pending">…</span>'
#: Two numbers closer than this read "about as much as" (half the last shown digit).
SAME = 0.005


def norm(token: str) -> str:
    """A token's text as the page's ``findToken`` compares it: space markers and case ignored."""
    return re.sub(r"^(Ġ|▁|##)", "", str(token)).strip().lower()


def find(tokens: list[str], word: str) -> int:
    """Index of the token spelled ``word``; a ``PayloadError`` names the tokens when it is missing."""
    for i, t in enumerate(tokens):
        if norm(t) == norm(word):
            return i
    raise PayloadError(f"no token {word!r} in {tokens}")


def num(x: float) -> str:
    """A weight, loss or entropy as the tour prints it: two decimals."""
    return f"{x:.2f}"


def thousands(n: float) -> str:
    return f"{n / 1000:,.0f}k"


@dataclass
class Value:
    text: str
    values: list[float] = field(default_factory=list)


@dataclass
class Step:
    """The preset a step's widget draws, with its payloads computed once and on demand."""

    widget: str
    model: str | None
    text: str | None
    layer: int | None
    head: int | None
    experiment: str | None = None
    part: str | None = None
    query: str | None = None
    runs_dir: Path | None = None

    def _need(self, what: str) -> Any:
        value = getattr(self, what)
        if value is None:
            raise PayloadError(f"a {self.widget} step needs '{what}' in its front matter for this slot")
        return value

    @cached_property
    def attention(self) -> s.AttentionResponse:
        return payloads.attention(s.TextRequest(model=self._need("model"), text=self._need("text")))

    def finder(self, q: str, k: str) -> s.FinderResponse:
        att = self.attention
        key = (q, k)
        cache = self.__dict__.setdefault("_finder", {})
        if key not in cache:
            cache[key] = finder.rank_heads(s.FinderRequest(model=self._need("model"), text=self._need("text"),
                                                           query=find(att.tokens, q), key=find(att.tokens, k)))
        return cache[key]

    def head_row(self, q: str, k: str, layer: int | None = None, head: int | None = None) -> s.RankedHead:
        layer = self._need("layer") if layer is None else layer
        head = self._need("head") if head is None else head
        return next(h for h in self.finder(q, k).heads if h.layer == layer and h.head == head)

    @cached_property
    def part_view(self) -> s.TensorView:
        """The first tensor the part widget draws (``payloads.part`` at the preset's layer, or 0)."""
        p = payloads.part(s.PartRequest(model=self._need("model"), text=self._need("text"), part=self._need("part"),
                                        layer=self.layer or 0))
        if not p.tensors:
            raise PayloadError(f"the part {self.part!r} shows no tensor")
        return p.tensors[0]

    @cached_property
    def embed(self) -> tuple[s.PartResponse, s.PartResponse]:
        """The embedding widget's two parts: the token embeddings with what enters block 0 (``part``), and the
        position vectors (``positional-encoding``)."""
        req = {"model": self._need("model"), "text": self._need("text"), "layer": 0}
        return (payloads.part(s.PartRequest(part=self._need("part"), **req)),
                payloads.part(s.PartRequest(part="positional-encoding", **req)))

    @cached_property
    def order(self) -> order.PositionsResponse:
        """The Order view's experiment ("Jake learned AI" vs "AI learned Jake" through an encoder)."""
        return order.positions(order.OrderRequest(model=self._need("model")))

    @cached_property
    def timeline(self) -> tuple[s.TimelineAttentionResponse, s.TimelineAttentionResponse]:
        name = timeline_model()
        tl = timeline.timeline(name)
        layer = tl.learning_layer if self.layer is None else min(self.layer, tl.n_layers - 1)
        head = tl.learning_head if self.head is None else min(self.head, tl.n_heads - 1)
        first, last = tl.snapshots[0].step, tl.snapshots[-1].step
        return tuple(timeline.attention_at(s.TimelineAttentionRequest(model=name, step=step, layer=layer, head=head))
                     for step in (first, last))  # type: ignore[return-value]

    @cached_property
    def scaling(self) -> dict[str, Any]:
        return experiment_data(self._need("experiment"), self.runs_dir or default_runs_dir())

    @cached_property
    def ablation(self) -> ablation_.AblationResponse:
        return ablation_.ablation(ablation_.AblationRequest(model=self._need("model"), text=self._need("text"),
                                                            layer=self._need("layer"), head=self._need("head")))

    @cached_property
    def ffn(self) -> ffn_.FFNResponse:
        """The feed-forward widget's payload: the preset's ``query`` token through layer ``layer`` (or 0)."""
        model, text = self._need("model"), self._need("text")
        focus = find(tokenize(get_model(model), text)[1], self._need("query"))
        return ffn_.ffn(ffn_.FFNRequest(model=model, text=text, layer=self.layer or 0, focus=focus))

    @cached_property
    def translation(self) -> s.TranslateResponse:
        return translation.translate(s.TranslateRequest(model=self._need("model"), text=self._need("text"), beam_size=1))


def timeline_model() -> str:
    """The model the timeline widget shows: the first available catalogue model with training snapshots."""
    for info in cat.catalog():
        if info.available and timeline.has_timeline(info.name):
            return info.name
    raise PayloadError("no installed model ships training snapshots")


def experiment_data(name: str, runs_dir: Path) -> dict[str, Any]:
    """``data`` of the run the Experiments page (and the tour's figure) shows first for ``name``:
    your newest run, else the reference run (the order of ``experiments.experiments``)."""
    runs = [r for r in Index(runs_dir).runs if r.entry["name"] == name]
    runs.sort(key=lambda r: (r.source != RUNS, -(Path(r.entry["results"]).stat().st_mtime if r.source == RUNS else 0.0), r.run))
    if not runs:
        raise PayloadError(f"no results for the {name} experiment yet")
    record = json.loads(Path(runs[0].entry["results"]).read_text())
    data = record.get("data") if isinstance(record, dict) else None
    if not isinstance(data, dict):
        raise PayloadError(f"the {name} run {runs[0].run} ({runs[0].source}) has no data")
    return data


def _layer_head(args: list[str]) -> tuple[int | None, int | None]:
    return (int(args[2]), int(args[3])) if len(args) >= 4 else (None, None)


def _weight(step: Step, args: list[str]) -> Value:
    att = step.attention
    layer, head = _layer_head(args)
    layer = step._need("layer") if layer is None else layer
    head = step._need("head") if head is None else head
    w = att.weights[layer][head][find(att.tokens, args[0])][find(att.tokens, args[1])]
    return Value(num(w), [w])


def _others(step: Step, args: list[str]) -> Value:
    h = step.head_row(args[0], args[1], *_layer_head(args))
    return Value(num(h.others), [h.others])


def _specificity(step: Step, args: list[str]) -> Value:
    h = step.head_row(args[0], args[1], *_layer_head(args))
    return Value(num(h.specificity), [h.specificity])


def _link(step: Step, args: list[str]) -> Value:
    h = step.head_row(args[0], args[1], *_layer_head(args))
    return Value("a link" if h.link else "not a link", [h.specificity])


def _most_others(step: Step, args: list[str]) -> Value:
    f = step.finder(args[0], args[1])
    layer, head = _layer_head(args)
    layer = step._need("layer") if layer is None else layer
    head = step._need("head") if head is None else head
    att = step.attention
    specials = set(f.special)
    q, k = f.query, f.key
    column = [row[k] for row in att.weights[layer][head]]
    seen = [w for i, w in enumerate(column) if i not in specials and i not in (q, k) and (not f.causal or i >= k)]
    top = max(seen)
    return Value(num(top), [top])


def _threshold(step: Step, args: list[str]) -> Value:
    return Value(f"{finder.LINK}", [finder.LINK])


def _best(step: Step, args: list[str]) -> Value:
    h = step.finder(args[0], args[1]).heads[0]
    return Value(f"layer {h.layer}, head {h.head}", [h.layer, h.head])


def _best_weight(step: Step, args: list[str]) -> Value:
    h = step.finder(args[0], args[1]).heads[0]
    return Value(num(h.weight), [h.weight])


def _best_specificity(step: Step, args: list[str]) -> Value:
    h = step.finder(args[0], args[1]).heads[0]
    return Value(num(h.specificity), [h.specificity])


def _best_link(step: Step, args: list[str]) -> Value:
    h = step.finder(args[0], args[1]).heads[0]
    return Value("a link" if h.link else "not a link", [h.specificity])


def _layers(step: Step, args: list[str]) -> Value:
    return Value(str(step.attention.n_layers), [step.attention.n_layers])


def _heads_per_layer(step: Step, args: list[str]) -> Value:
    return Value(str(step.attention.n_heads), [step.attention.n_heads])


def _columns(step: Step, args: list[str]) -> Value:
    return Value(str(step.part_view.shown_columns), [step.part_view.shown_columns])


def _width(step: Step, args: list[str]) -> Value:
    return Value(str(step.part_view.shape[-1]), [step.part_view.shape[-1]])


ROUNDING = 1e-4
#: Below this two final vectors are "exact twins" (the Order view's verdict; ``views.js``' ``TWIN`` is the same).
TWIN = 1e-3
"""Below this a distance between float32 vectors is rounding: two runs of the same sum in another order differ by
about 1e-5, so a smaller number is printed as ``< 1e-4`` rather than as digits that change between runs."""


def distance(x: float) -> str:
    """A distance between two vectors as the tour prints it: two decimals, two digits in scientific notation below
    0.01 (so a near-zero distance is not printed as a bare 0.00), written as the page's ``toExponential(1)``
    writes it (``1.2e-3``), and ``< 1e-4`` below :data:`ROUNDING` (``views.js``' ``distance`` is the same rule)."""
    if x < ROUNDING:
        return "< 1e-4"
    return f"{x:.2f}" if x >= 0.01 else re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{x:.1e}")


def _comparison(step: Step, args: list[str]) -> Any:
    want = {"with": True, "without": False}.get(args[0] if args else "")
    if want is None:
        raise PayloadError("an order slot names 'with' or 'without' (positions)")
    return next(c for c in step.order.comparisons if c.positions is want)


def _nearest(step: Step, args: list[str]) -> Value:
    worst = max(_comparison(step, args).nearest)
    return Value(distance(worst), [worst])


def _twins(step: Step, args: list[str]) -> Value:
    n = sum(d < TWIN for d in _comparison(step, args).nearest)
    return Value(str(n), [n])


def _order_tokens(step: Step, args: list[str]) -> Value:
    return Value(str(len(step.order.first_tokens)), [len(step.order.first_tokens)])


def _embed_rows(step: Step, word: str) -> tuple[int, s.TokenSummary, dict[str, list[float]]]:
    part, pos = step.embed
    if not part.tensors or not pos.tensors:
        raise PayloadError(f"{part.model!r} records no token or position vectors for {step.part!r}")
    i = find([t.token for t in part.tokens], word)
    tok, inp = part.tensors[0], part.tensors[1]
    return i, part.tokens[i], {"tok": tok.values[i], "input": inp.values[i], "pos": pos.tensors[0].values[i]}


def _embed_id(step: Step, args: list[str]) -> Value:
    _, summary, _ = _embed_rows(step, args[0])
    return Value(str(summary.id), [summary.id])


def _embed_position(step: Step, args: list[str]) -> Value:
    i, _, _ = _embed_rows(step, args[0])
    return Value(str(i), [i])


def _embed_value(step: Step, args: list[str]) -> Value:
    """``embed_value W tok|pos|input D``: dimension ``D`` of token ``W``'s vector, three decimals."""
    x = _embed_rows(step, args[0])[2][args[1]][int(args[2])]
    return Value(f"{x:.3f}", [x])


def _embed_sum(step: Step, args: list[str]) -> Value:
    """Whether token + position = input holds on every number drawn: "exactly" or "to within E"."""
    part, pos = step.embed
    err = max(abs(a + b - c) for ra, rb, rc in zip(part.tensors[0].values, pos.tensors[0].values, part.tensors[1].values,
                                                   strict=True) for a, b, c in zip(ra, rb, rc, strict=True))
    text = "exactly" if err == 0 else "to within float32 rounding (< 1e-4)" if err < ROUNDING else f"to within {distance(err)}"
    return Value(text, [err])


def _heads(step: Step, args: list[str]) -> Value:
    att = step.attention
    return Value(str(att.n_layers * att.n_heads), [att.n_layers * att.n_heads])


def _role(step: Step, args: list[str]) -> Value:
    n = sum(r.role == args[0] for layer in step.attention.roles for r in layer)
    return Value(str(n), [n])


def _role_threshold(step: Step, args: list[str]) -> Value:
    """``role_threshold [ROLE]``: the threshold at which a head is given ``ROLE`` (default ``first-token``)."""
    bar = ROLE_THRESHOLDS[args[0] if args else "first-token"]
    return Value(num(bar), [bar])


def _favourite(step: Step, args: list[str]) -> Value:
    """How many heads' most-attended key, averaged over the real (non-special) queries, is the first or last token."""
    att = step.attention
    specials = set(finder.special_ids(get_model(att.model).tokenizer))
    real = [i for i, t in enumerate(att.ids) if t not in specials] or list(range(len(att.ids)))
    target = {"first": 0, "last": len(att.tokens) - 1}[args[0]]
    n = 0
    for layer in att.weights:
        for w in layer:
            mean = [sum(w[q][k] for q in real) / len(real) for k in range(len(att.tokens))]
            n += max(range(len(mean)), key=lambda k: (mean[k], -k)) == target
    return Value(str(n), [n])


def row_entropy(weights: list[list[float]], *, causal: bool = True) -> tuple[float, float]:
    """Mean entropy in bits of the rows 1.. of a square attention map, and of uniform rows over what each sees."""
    rows = range(1, len(weights))
    h = [-sum(p * math.log2(p) for p in weights[i] if p > 0) for i in rows]
    top = [math.log2(i + 1 if causal else len(weights)) for i in rows]
    return sum(h) / len(h), sum(top) / len(top)


def _entropy(step: Step, args: list[str]) -> Value:
    a = step.timeline[{"first": 0, "last": 1}[args[0]]]
    h, _ = row_entropy(a.weights)
    return Value(num(h), [h])


def _entropy_max(step: Step, args: list[str]) -> Value:
    _, top = row_entropy(step.timeline[0].weights)
    return Value(num(top), [top])


def _scaling_runs(step: Step) -> list[dict[str, Any]]:
    return sorted(step.scaling["runs"], key=lambda r: r["params"])


def _scaling_trend(step: Step, args: list[str]) -> Value:
    """One sentence on how the final loss moves with size: falling all the way, or where it stops falling."""
    runs = _scaling_runs(step)
    losses = [r["val_loss"] for r in runs]
    first, last = runs[0], runs[-1]
    best = min(runs, key=lambda r: r["val_loss"])
    if all(b < a for a, b in pairwise(losses)):
        text = (f"each bigger model reaches a lower loss, from {num(first['val_loss'])} ({thousands(first['params'])} "
                f"parameters) to {num(last['val_loss'])} ({thousands(last['params'])})")
        return Value(text, [first["val_loss"], last["val_loss"]])
    text = (f"the loss falls from {num(first['val_loss'])} ({thousands(first['params'])} parameters) to "
            f"{num(best['val_loss'])} ({thousands(best['params'])}), but it does not keep falling: the largest model "
            f"({thousands(last['params'])}) ends at {num(last['val_loss'])}, "
            f"{'higher' if last['val_loss'] > best['val_loss'] else 'no lower'} than the {thousands(best['params'])} one. "
            "Every size saw the same small amount of text, so the largest models are likely undertrained: the "
            "papers' scaling laws grow the data with the model")
    return Value(text, [first["val_loss"], best["val_loss"], last["val_loss"]])


def _scaling_alpha(step: Step, args: list[str]) -> Value:
    alpha = step.scaling["fit"]["alpha_params"]
    return Value(f"{alpha:.3f}", [alpha])


def _scaling_sizes(step: Step, args: list[str]) -> Value:
    n = len(step.scaling["runs"])
    return Value(str(n), [n])


def _induction_runs(step: Step) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The induction-heads run the figure shows: its data, the 2-layer attention-only model and its 1-layer control."""
    data = step.scaling  # the ``data`` of the front matter's experiment (``experiment_data``)
    try:
        return data, data["runs"]["attn-only 2L"], data["runs"]["attn-only 1L"]
    except KeyError as exc:
        raise PayloadError(f"the {step.experiment} run has no attention-only 2- and 1-layer models") from exc


def _ordinal_key(d: int) -> str:
    return "the token after the earlier occurrence" if d == 0 else f"the token {d} after the one after the earlier occurrence"


def _induction_jump(step: Step, args: list[str]) -> Value:
    """Where a head formed: the interval in which the 2-layer model's best last-layer attention on one key of the
    earlier copy (``shift_jump``: any shift ``d``) rose fastest, with the scores before and after and the head."""
    j = _induction_runs(step)[1]["shift_jump"]
    layer, head = j["head"].removeprefix("L").split("H")  # "L1H2"
    text = (f"between steps {j['from_step']} and {j['to_step']}, head {head} of layer {layer} began to look back into "
            f"the earlier copy: its attention on one key there, {_ordinal_key(j['d'])}, rose from {num(j['from_score'])} "
            f"to {num(j['to_score'])}")
    return Value(text, [j["from_score"], j["to_score"]])


def _induction_loss(step: Step, args: list[str]) -> Value:
    """The loss on the repeated tokens (and on all tokens) at both ends of that interval."""
    j = _induction_runs(step)[1]["shift_jump"]
    text = (f"the loss on the repeated tokens went from {num(j['from_repeat_loss'])} to {num(j['to_repeat_loss'])} nats "
            f"(on all tokens: {num(j['from_val_loss'])} to {num(j['to_val_loss'])})")
    return Value(text, [j["from_repeat_loss"], j["to_repeat_loss"]])


def _induction_drop(step: Step, args: list[str]) -> Value:
    """Where the 2-layer model's loss on the repeated tokens fell fastest, and whether that is the head's interval."""
    two = _induction_runs(step)[1]
    d, j = two["steepest_loss_drop"], two["shift_jump"]
    same = (d["from_step"], d["to_step"]) == (j["from_step"], j["to_step"])
    text = (f"that loss fell fastest between steps {d['from_step']} and {d['to_step']} ({num(d['from_loss'])} to "
            f"{num(d['to_loss'])} nats){', the same interval' if same else ''}")
    return Value(text, [d["from_step"], d["to_step"]])


def _induction_end(step: Step, args: list[str]) -> Value:
    """At the last snapshot: the textbook induction score against the bound, and where the two layers' heads look."""
    data, two, _ = _induction_runs(step)
    last, bound = two["snapshots"][-1], data["bound"]
    shift, off = two["where_heads_look"]["best_shift"], two["where_heads_look"]["best_offset"]
    side = "above" if last["best_induction"] >= bound else "below"
    text = (f"after {last['step']} steps the loss on the repeated tokens is {num(last['repeat_loss'])} nats; the textbook "
            f"induction score (attention on exactly the token after the earlier occurrence) is {num(last['best_induction'])}, "
            f"{side} the bound of {bound:g}")
    if shift["d"] == off["d"] > 0:
        text += (f", because this model copies with a shifted pair of heads: a first-layer head looks {off['d']} tokens "
                 f"back ({num(off['weight'])} of its attention), and the second-layer head looks {shift['d']} tokens "
                 f"further along the earlier copy ({num(shift['weight'])}), where the first head has left the token to "
                 "predict")
    return Value(text, [last["best_induction"], off["weight"], shift["weight"]])


def _induction_control(step: Step, args: list[str]) -> Value:
    """The 1-layer control: its best attention on any key of the earlier copy and its final repeated-token loss."""
    data, _, one = _induction_runs(step)
    best = max(x["best_shift"] for x in one["snapshots"])
    loss = one["snapshots"][-1]["repeat_loss"]
    text = (f"the one-layer model's best head never put more than {num(best)} of its attention on any such key, and its "
            f"loss on the repeated tokens ended at {num(loss)} nats (guessing among {data['settings']['vocab']} tokens: "
            f"{num(data['chance_loss'])})")
    return Value(text, [best, loss])


def _ablation_metric(step: Step, args: list[str]) -> Value:
    return Value(step.ablation.metric)


def _ablation_clean(step: Step, args: list[str]) -> Value:
    v = step.ablation.clean
    return Value(num(v), [v])


def _ablation_removed(step: Step, args: list[str]) -> Value:
    v = step.ablation.ablated
    return Value(num(v), [v])


def _ablation_top(step: Step, args: list[str]) -> Value:
    c = step.ablation.clean_top[0]
    return Value(repr(c.token), [c.id])


def _ablation_top_removed(step: Step, args: list[str]) -> Value:
    c = step.ablation.ablated_top[0]
    return Value(repr(c.token), [c.id])


def _ablation_best(step: Step, args: list[str]) -> Value:
    """The head whose removal changes the metric most (largest |effect|), as 'layer L, head H'."""
    effects = step.ablation.head_effects
    layer, head = max(((i, j) for i, row in enumerate(effects) for j in range(len(row))),
                      key=lambda ij: (abs(effects[ij[0]][ij[1]]), -ij[0], -ij[1]))
    return Value(f"layer {layer}, head {head}", [layer, head])


def _align(step: Step, args: list[str]) -> Value:
    p = step.translation
    t = find(p.target_tokens, args[0])
    row = p.mean_weights[p.n_layers - 1][t]
    j = max(range(len(row)), key=lambda i: row[i])
    return Value(norm(p.source_tokens[j]), [j])


def _align_weight(step: Step, args: list[str]) -> Value:
    p = step.translation
    row = p.mean_weights[p.n_layers - 1][find(p.target_tokens, args[0])]
    return Value(num(max(row)), [max(row)])


ACTIVATION_NAMES = {"relu": "ReLU", "gelu": "GELU", "gelu_tanh": "GELU (tanh)", "swiglu": "SwiGLU"}


def _ffn_side(args: list[str], sides: tuple[str, ...]) -> str:
    if not args or args[0] not in sides:
        raise PayloadError(f"this feed-forward slot names one of {', '.join(sides)}")
    return args[0]


def _ffn_units(step: Step, args: list[str]) -> Value:
    return Value(f"{step.ffn.d_ff:,}", [step.ffn.d_ff])


def _ffn_width(step: Step, args: list[str]) -> Value:
    return Value(str(step.ffn.d_model), [step.ffn.d_model])


def _ffn_activation(step: Step, args: list[str]) -> Value:
    return Value(ACTIVATION_NAMES[step.ffn.activation])


def _ffn_negative(step: Step, args: list[str]) -> Value:
    n = step.ffn.negative_before if _ffn_side(args, ("before", "after")) == "before" else step.ffn.negative_after
    return Value(f"{n:,}", [n])


def _ffn_lowest(step: Step, args: list[str]) -> Value:
    x = min(getattr(step.ffn, _ffn_side(args, ("before", "after"))))
    return Value(num(x), [x])


def _ffn_zero(step: Step, args: list[str]) -> Value:
    return Value(f"{step.ffn.zero_after:,}", [step.ffn.zero_after])


def _ffn_length(step: Step, args: list[str]) -> Value:
    x = math.sqrt(sum(v * v for v in getattr(step.ffn, _ffn_side(args, ("stream", "out", "result")))))
    return Value(num(x), [x])


def _translation(step: Step, args: list[str]) -> Value:
    return Value(step.translation.text)


SLOTS: dict[str, Callable[[Step, list[str]], Value]] = {
    "weight": _weight, "others": _others, "specificity": _specificity, "link": _link, "most_others": _most_others,
    "threshold": _threshold,
    "best": _best, "best_weight": _best_weight, "best_specificity": _best_specificity,
    "best_link": _best_link,
    "heads": _heads, "layers": _layers, "heads_per_layer": _heads_per_layer, "columns": _columns, "width": _width,
    "role": _role, "role_threshold": _role_threshold, "favourite": _favourite,
    "entropy": _entropy, "entropy_max": _entropy_max,
    "scaling_trend": _scaling_trend, "scaling_alpha": _scaling_alpha, "scaling_sizes": _scaling_sizes,
    "induction_jump": _induction_jump, "induction_loss": _induction_loss, "induction_drop": _induction_drop, "induction_end": _induction_end,
    "induction_control": _induction_control,
    "ablation_metric": _ablation_metric, "ablation_clean": _ablation_clean, "ablation_removed": _ablation_removed,
    "ablation_top": _ablation_top, "ablation_top_removed": _ablation_top_removed, "ablation_best": _ablation_best,
    "embed_id": _embed_id, "embed_position": _embed_position, "embed_value": _embed_value, "embed_sum": _embed_sum,
    "nearest": _nearest, "twins": _twins, "order_tokens": _order_tokens,
    "align": _align, "align_weight": _align_weight, "translation": _translation,
    "ffn_units": _ffn_units, "ffn_width": _ffn_width, "ffn_activation": _ffn_activation, "ffn_negative": _ffn_negative,
    "ffn_lowest": _ffn_lowest, "ffn_zero": _ffn_zero, "ffn_length": _ffn_length,
}


def _one(step: Step, expr: str) -> Value:
    fn, *args = expr.split()
    if fn not in SLOTS:
        raise ValueError(f"unknown tour slot {fn!r}; slots: {', '.join(sorted(SLOTS))}")
    return SLOTS[fn](step, args)


def evaluate(step: Step, expr: str) -> Value:
    """The text and numbers of one slot (``cmp A ; B`` compares two one-number slots)."""
    kind = expr.split(" ", 1)[0]
    if kind in COMPARE:
        left, sep, right = expr[len(kind) + 1 :].partition(";")
        if not sep:
            raise ValueError(f"a comparison slot reads 'cmp A ; B', not {expr!r}")
        a, b = _one(step, left.strip()), _one(step, right.strip())
        if len(a.values) != 1 or len(b.values) != 1:
            raise ValueError(f"{kind!r} compares one-number slots: {expr!r}")
        x, y = a.values[0], b.values[0]
        return Value(compare_words(kind, x, y), [x, y])
    return _one(step, expr)


#: Comparison slots and their words (same, greater, smaller): amounts, and values on a scale (log-probabilities).
COMPARE = {"cmp": ("about as much as", "more than", "less than"), "cmpv": ("about the same as", "higher than", "lower than")}


def compare_words(kind: str, x: float, y: float) -> str:
    """How ``x`` compares with ``y`` in the words of comparison slot ``kind`` (closer than ``SAME``: the same)."""
    same, more, less = COMPARE[kind]
    return same if abs(x - y) < SAME else more if x > y else less


def check_slots(markdown: str) -> None:
    """Refuse a step whose slots name no known function (at load time, without computing anything)."""
    for m in SLOT.finditer(markdown):
        expr = m.group(1)
        kind = expr.split(" ", 1)[0]
        names = [part.split()[0] for part in expr[len(kind) + 1 :].split(";")] if kind in COMPARE else [kind]
        for name in names:
            if name not in SLOTS:
                raise ValueError(f"unknown tour slot {name!r} in {{{{{expr}}}}}; slots: {', '.join(sorted(SLOTS))}")


def render(rendered_html: str, step: Step) -> tuple[str, list[s.TourClaim], str | None]:
    """The step's HTML (its Markdown rendered; slots pass through Markdown untouched) with every slot replaced
    by its computed text (HTML-escaped), the claims, and a note when a slot cannot be computed (a stand-in
    model lacks the step's tokens): those slots then read "(n/a)"."""
    claims: list[s.TourClaim] = []
    failed: list[str] = []

    def fill(m: re.Match[str]) -> str:
        expr = m.group(1)
        try:
            v = evaluate(step, expr)
        except (PayloadError, KeyError, IndexError, StopIteration) as exc:
            failed.append(f"{expr}: {exc}")
            return '<span class="claim failed">(n/a)</span>'
        claims.append(s.TourClaim(slot=expr, text=v.text, values=v.values))
        return f'<span class="claim" data-slot="{html.escape(expr)}">{html.escape(v.text, quote=False)}</span>'

    out = SLOT.sub(fill, rendered_html)
    note = None
    if failed:
        note = f"{len(failed)} number(s) in this text could not be computed for {step.model or 'this step'}: {failed[0]}"
    return out, claims, note

