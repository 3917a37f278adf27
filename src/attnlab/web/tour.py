"""The guided tour ("Start here"): its steps are content, not code.

Each step is one Markdown file under ``web/content/tour/`` (``NN-name.md``, read in file-name order)
that opens with a small front-matter block naming its live widget and the widget's preset::

    ---
    widget: attention
    model: minilm
    text: John gave the book to Sarah because she liked it.
    layer: 5
    head: 3
    query: she
    key: sarah
    learn: self-attention
    view: attention
    ---

``query`` and ``key`` name tokens by their text (the page finds them in the tokenized sentence);
a sentence that states a fact about the figure writes its numbers and comparisons as slots,
``{{weight it book}}`` or ``{{cmp weight john sarah ; weight she sarah}}``, computed by
``attnlab.web.claims`` from the payload the widget draws (``step(n)``, ``GET /api/tour/{n}``);
``learn`` is the explanation page the step links to, ``view`` the explore-freely view it opens, ``strip``
the parts of the model strip it lights (derived from the widget when left out: ``strip_part``). Adding
a step is adding a file.

**Predict, then see**: ``predict: true`` (on an ``attention``, ``generate`` or ``order`` step) makes the page
ask first and draw the figure only after the learner answers or skips; the question's choices and the
model's answer are built in the page from the widget's payload. The text after a line ``<!-- reveal -->``
(``REVEAL``) is the step's ``reveal_html``: the page adds it only after the answer, so the question part must
not give the answer away. A preset model that is not installed is replaced by an available model of the
same family (else any available model), and the step says so in one line.

The toy step's numbers come from ``attnlab.inspect.attention_steps`` (the math backend) on hand-set vectors.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import torch

from attnlab import catalog as cat
from attnlab.inspect import attention_steps
from attnlab.web import claims, content
from attnlab.web import schemas as s
from attnlab.web.errors import NotFoundError

TOUR_DIR = content.CONTENT_DIR / "tour"
WIDGETS = ("attention", "qkv", "toy", "part", "order", "embed", "timeline", "heads", "translate", "arch", "generate", "figure", "finder",
           "ablation", "ffn")
_INT_KEYS = ("layer", "head")
_KEYS = {"widget", "model", "text", "layer", "head", "query", "key", "learn", "view", "part", "variant",
         "experiment", "softmax", "predict", "strip"}
#: Widgets a step can ask about before drawing (``predict: true``): the page's tour.js ``PREDICTS`` builds each question.
PREDICT_WIDGETS = ("attention", "generate", "order")
#: The line that ends a predict step's question text; what follows is shown after the answer.
REVEAL = "<!-- reveal -->"
_FILE = re.compile(r"^\d\d-[a-z0-9-]+\.md$")

# The toy: three tokens, two-number vectors chosen by hand (d_k = 2) so the arithmetic fits on paper.
TOY_TOKENS = ["the", "cat", "it"]
TOY_QUERY = 2  # "it" looks for the noun
TOY_Q = [[0.0, 2.0], [0.5, 1.5], [2.0, 1.0]]  # one query per token: clicking a token moves the focus
TOY_K = [[0.0, 1.0], [2.0, 0.5], [0.5, 0.5]]
TOY_V = [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]


def _front_matter(text: str, name: str) -> tuple[dict[str, str], str]:
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---" or "---" not in (x.strip() for x in lines[1:]):
        raise ValueError(f"tour step {name} must open with a '---' front-matter block")
    end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    meta: dict[str, str] = {}
    for line in lines[1:end]:
        key, sep, value = line.partition(":")
        if not sep or key.strip() not in _KEYS:
            raise ValueError(f"tour step {name}: unknown front-matter line {line!r}; keys: {', '.join(sorted(_KEYS))}")
        meta[key.strip()] = value.strip()
    if meta.get("widget") not in WIDGETS:
        raise ValueError(f"tour step {name}: widget must be one of {', '.join(WIDGETS)}")
    if meta.get("predict", "false") not in ("true", "false"):
        raise ValueError(f"tour step {name}: predict is 'true' or 'false', not {meta['predict']!r}")
    if meta.get("predict") == "true" and meta["widget"] not in PREDICT_WIDGETS:
        raise ValueError(f"tour step {name}: only {', '.join(PREDICT_WIDGETS)} steps can ask first (predict: true)")
    return meta, "\n".join(lines[end + 1 :])


def _split_reveal(body: str, meta: dict[str, str], name: str) -> tuple[str, str | None]:
    """A predict step's question text and the text shown after the answer (split at ``REVEAL``)."""
    lines = body.split("\n")
    cuts = [i for i, line in enumerate(lines) if line.strip() == REVEAL]
    if meta.get("predict") != "true":
        if cuts:
            raise ValueError(f"tour step {name}: {REVEAL} only ends the question of a step with predict: true")
        return body, None
    if len(cuts) != 1:
        raise ValueError(f"tour step {name}: a predict step has exactly one {REVEAL} line after its question")
    cut = cuts[0]
    return "\n".join(lines[:cut]), "\n".join(lines[cut + 1 :])


def _resolve_model(name: str | None) -> tuple[str | None, str | None]:
    """``name`` if installed, else an available model of its family (the catalogue's; else any), with a one-line note."""
    if not name:
        return None, None
    infos = cat.catalog()
    by_name = {i.name: i for i in infos}
    if name in by_name and by_name[name].available:
        return name, None
    family = by_name[name].family if name in by_name else None
    available = [i for i in infos if i.available]
    same = [i for i in available if i.family == family] or available
    if not same:
        return None, f"this step needs the model {name!r}, which is not installed (`make install`)"
    return same[0].name, f"the model {name!r} is not installed, so this step shows {same[0].name!r} instead"


@lru_cache(maxsize=1)
def _files() -> tuple[tuple[str, dict[str, str], str, str, str | None], ...]:
    """(slug, front matter, title, text HTML, reveal HTML or None) per step file, slots not yet computed."""
    steps = []
    for path in sorted(p for p in TOUR_DIR.iterdir() if _FILE.match(p.name)):
        meta, body = _front_matter(path.read_text(encoding="utf-8"), path.name)
        claims.check_slots(body)
        strip_part(meta)
        first = body.strip().splitlines()[0] if body.strip() else path.stem
        title = first.lstrip("#").strip()
        question, reveal = _split_reveal(body, meta, path.name)
        steps.append((path.stem, meta, title, content.render(question), None if reveal is None else content.render(reveal)))
    return tuple(steps)


# The model strip's parts (static/strip.js) a widget is about; a widget missing here shows the whole model.
STRIP_PARTS = ("embed", "position", "attention", "cross", "ffn", "residual", "output")
_STRIP_OF_WIDGET = {
    "attention": "attention", "qkv": "attention", "toy": "attention", "heads": "attention", "finder": "attention",
    "ablation": "attention", "timeline": "attention", "embed": "embed position", "order": "position",
    "translate": "cross", "generate": "output", "ffn": "ffn residual",
}
_STRIP_OF_PART = {
    "input-embedding": "embed", "output-embedding": "embed", "positional-encoding": "position",
    "self-attention": "attention", "masked-self-attention": "attention", "cross-attention": "cross",
    "add-norm": "residual", "feed-forward": "ffn", "linear": "output", "softmax": "output",
}


def strip_part(meta: dict[str, str]) -> str | None:
    """The strip parts a step lights: its ``strip`` front matter, else its part widget's part, else its widget's
    (``None``: the whole model, as the families and the scaling steps show it). An unknown name is a ``ValueError``."""
    named = meta.get("strip") or (_STRIP_OF_PART.get(meta.get("part", "")) if meta.get("widget") == "part" else None) \
        or _STRIP_OF_WIDGET.get(meta.get("widget", ""))
    for part in (named or "").split():
        if part not in STRIP_PARTS:
            raise ValueError(f"unknown strip part {part!r}; parts: {', '.join(STRIP_PARTS)}")
    return named


def learn_order() -> list[str]:
    """Explanation slugs in the order the tour meets them (then the remaining pages, alphabetically)."""
    seen: list[str] = []
    for _, meta, _, _, _ in _files():
        slug = meta.get("learn")
        if slug and slug not in seen:
            seen.append(slug)
    return seen


def toy() -> s.ToyAttention:
    """The hand-set toy through the library's attention function (``attnlab.inspect.attention_steps``): every
    query's row (the page's focus moves when a token is clicked), the default focus's row also flat."""
    q, k, v = (torch.tensor(m, dtype=torch.float64)[None, None] for m in (TOY_Q, TOY_K, TOY_V))
    steps = attention_steps(q, k, v)
    rows = [s.ToyRow(q=TOY_Q[i], dots=[sum(a * b for a, b in zip(TOY_Q[i], key, strict=True)) for key in TOY_K],
                     scores=steps.scores[0, 0, i].tolist(), weights=steps.weights[0, 0, i].tolist(),
                     output=steps.out[0, 0, i].tolist())
            for i in range(len(TOY_TOKENS))]
    i = TOY_QUERY
    return s.ToyAttention(tokens=TOY_TOKENS, query=i, d_k=2, keys=TOY_K, values=TOY_V, rows=rows,
                          **rows[i].model_dump())


def _step(n: int, slug: str, meta: dict[str, str], title: str, html: str) -> s.TourStep:
    model, note = _resolve_model(meta.get("model"))
    preset = s.TourPreset(
        widget=meta["widget"], model=model, text=meta.get("text"),
        layer=int(meta["layer"]) if "layer" in meta else None, head=int(meta["head"]) if "head" in meta else None,
        query=meta.get("query"), key=meta.get("key"), part=meta.get("part"), variant=meta.get("variant"),
        experiment=meta.get("experiment"), softmax=meta.get("softmax") == "true", predict=meta.get("predict") == "true",
    )
    if model != meta.get("model") and meta.get("model"):
        preset.layer = preset.head = 0 if preset.layer is not None else None  # the preset's numbers fit the named model only
    return s.TourStep(n=n, slug=slug, title=title, html=html, preset=preset, note=note,
                      learn=meta.get("learn"), view=meta.get("view"), strip=strip_part(meta))


def tour() -> s.TourResponse:
    """Every step with its text and resolved preset (models swapped for installed ones); computed slots read
    "…" here (``claims.PENDING``; nothing is computed): ``step(n)`` renders them."""
    steps = []
    for n, (slug, meta, title, html, reveal) in enumerate(_files(), start=1):
        out = _step(n, slug, meta, title, claims.SLOT.sub(claims.PENDING, html))
        out.reveal_html = None if reveal is None else claims.SLOT.sub(claims.PENDING, reveal)
        steps.append(out)
    return s.TourResponse(steps=steps, toy=toy())


def step(n: int, runs_dir: Path | None = None) -> s.TourStep:
    """Step ``n`` (1-based) with its slots computed from its widget's payload and listed in ``claims``.

    ``runs_dir``: where the figure widget's experiment results are looked up (the app's experiments
    folder). A slot that cannot be computed (a stand-in model lacks the step's words) reads "(n/a)" and
    the step's note says why. Raises ``NotFoundError`` for a step that does not exist.
    """
    files = _files()
    if not 1 <= n <= len(files):
        raise NotFoundError(f"no tour step {n}; the tour has steps 1 to {len(files)}")
    slug, meta, title, html, reveal = files[n - 1]
    out = _step(n, slug, meta, title, html)
    pre = out.preset
    facts = claims.Step(widget=pre.widget, model=pre.model, text=pre.text, layer=pre.layer, head=pre.head,
                        experiment=pre.experiment, part=pre.part, query=pre.query, runs_dir=runs_dir)
    out.html, out.claims, failed = claims.render(html, facts)
    if reveal is not None:
        out.reveal_html, more, failed_after = claims.render(reveal, facts)
        out.claims += more
        failed = failed or failed_after
    if failed:
        out.note = f"{out.note}; {failed}" if out.note else failed
    return out
