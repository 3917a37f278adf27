"""``attnlab site OUT``: the walkthrough as a static folder, every answer recorded from the real app.

Why record rather than re-render: the page already draws from JSON answers, so the static edition
needs no second copy of any payload builder or drawing. ``export_site`` runs ``create_app`` in process
(a Starlette ``TestClient``), asks it every request the page makes for the chosen models and sentences
(the bodies the front end sends, ``web/static/model.js``'s ``api``), and writes each answer to
``OUT/api/<hash>.json``; ``OUT/site.json`` maps each request's canonical key (``request_key``) to its
file. The page's fetch layer (``web/static/site.js``) computes the same key and reads the file, so
a request that was not recorded is never answered with another one's numbers: it goes to the
in-browser models (``static/live.js``, when present) or the page says in one line that it needs the
server.

What is recorded, per exported model and sentence (``plan`` below): the tour (every step, its text
with computed numbers, and its widget's requests), the Attention view (every layer and head: one
answer), Q·K·V at layer 0 head 0 and at each head a tour step shows on that sentence, at the focus
the view opens on (and every focus of the heads the tour shows), the architecture parts at layer 0 and the
tour's layers, next-token logits (decoders), the greedy translation (encoder-decoders), the order
experiment, the training timeline's snapshots at the head that learned most, the model strip's shape,
the feed-forward step at every token the tour's widget offers, the explanations and the experiment
figures. Generation, the Why view, corpus contexts, beam search and training are not recorded: they
need the server. Beside the answers, the character model and MiniLM (``LIVE_MODELS``) are written for
onnxruntime-web (``_live_models``), so the page computes a sentence nobody recorded.

Numbers are written as the app wrote them, except that a float that is exactly a float32 value is
written with the shortest decimal that reads back to that float32 (``_compact``): no number the
page shows changes, and the files are about 40 % smaller.
"""

from __future__ import annotations

import hashlib
import html as html_
import json
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np

SITE_FILE = "site.json"
SERVER_PAGE = "server.html"
BUDGET_MB = 60  # the default set (answers + in-browser models + runtime) stays under this (README "A static classroom edition"; tested)
#: The models the static site also runs in the browser (``attnlab.site.onnx``), when exported: a student's own sentence
#: in Attention, Q·K·V and (decoders) next-token is computed by onnxruntime-web from these.
LIVE_MODELS = ("shakespeare-char", "minilm")
DEFAULT_SENTENCE = "John gave the book to Sarah because she liked it."  # web/static/model.js DEFAULT_SENTENCE
FAMILY_VARIANT = {"encoder": "encoder-only", "decoder": "decoder-only", "encoder-decoder": "encoder-decoder"}


class SiteError(Exception):
    """A site that cannot be written: an unknown or uninstalled model, a destination that is not a folder."""


def request_key(method: str, path: str, body: Any = None) -> str:
    """The canonical key of one request: ``"POST /api/qkv {...}"`` with the body's keys sorted at every
    level and no spaces (``JSON.stringify`` of the sorted body, as ``site.js`` computes it); a GET has no body."""
    if body is None:
        return f"{method} {path}"
    return f"{method} {path} {json.dumps(body, sort_keys=True, separators=(',', ':'), ensure_ascii=False)}"


def _compact(value: Any) -> Any:
    """``value`` with every float that is exactly a float32 written as that float32's shortest decimal."""
    if isinstance(value, float):
        if np.isfinite(value):
            f32 = np.float32(value)
            if float(f32) == value:
                return float(str(f32))  # numpy prints a float32's shortest round-tripping decimal
        return value
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


def find_token(tokens: list[str], word: str | None) -> int | None:
    """The index of the token spelled ``word`` (case and the tokenizers' space markers ignored): model.js findToken."""
    if word is None:
        return None
    norm = lambda t: re.sub(r"^(Ġ|▁|##)", "", str(t)).strip().lower()  # noqa: E731
    return next((i for i, t in enumerate(tokens) if norm(t) == norm(word)), None)


def default_focus(tokens: list[str]) -> int:
    """The focus a view opens on: "she" when present, else the last token before a closing [SEP]/</s>
    (model.js defaultFocus)."""
    she = find_token(tokens, "she")
    if she is not None:
        return she
    last = len(tokens) - 1
    return last - 1 if last > 0 and re.fullmatch(r"\[SEP\]|</s>", tokens[last]) else last


@dataclass
class SiteReport:
    """What ``export_site`` wrote: the folder, each file's size in bytes (relative POSIX path -> bytes),
    the number of recorded answers, the requests that answered with an error (key -> detail), and the
    in-browser models (``live``) or why there are none (``live_note``)."""

    out: Path
    files: dict[str, int] = field(default_factory=dict)
    answers: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    #: model -> "int8" | "float32" for each model the page runs in the browser; empty when none was written
    live: dict[str, str] = field(default_factory=dict)
    #: one line saying why no in-browser model was written (no onnxruntime-web), else None
    live_note: str | None = None

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())


class _Recorder:
    """Asks the in-process app and writes each distinct answer once under ``api/``."""

    def __init__(self, client: Any, out: Path, progress: Callable[[str], None]) -> None:
        self.client, self.out, self.progress = client, out, progress
        self.index: dict[str, dict[str, Any]] = {}
        self.data: dict[str, Any] = {}
        self.errors: dict[str, str] = {}

    def ask(self, method: str, path: str, body: Any = None) -> Any:
        """The app's answer (its JSON), or ``None`` when it answered an error (recorded too: the page shows it)."""
        key = request_key(method, path, body)
        if key not in self.index:
            if self.index and len(self.index) % 50 == 0:
                self.progress(f"{len(self.index)} answers recorded; now {key[:90]}")
            answer = self.client.request(method, path, json=body) if body is not None else self.client.request(method, path)
            data = answer.json()
            self.write(key, data, answer.status_code)
            if answer.status_code >= 400:
                self.errors[key] = str(data.get("detail", answer.status_code))
        return self.data[key] if self.index[key]["status"] < 400 else None

    def write(self, key: str, data: Any, status: int = 200) -> None:
        name = f"api/{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"
        (self.out / name).write_text(json.dumps(_compact(data), separators=(",", ":"), ensure_ascii=False), encoding="utf-8")
        self.index[key] = {"file": name, "status": status}
        self.data[key] = data

    def get(self, path: str) -> Any:
        return self.ask("GET", path)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.ask("POST", path, body)


def _attention(rec: _Recorder, model: str, text: str) -> Any:
    return rec.post("/api/attention", {"model": model, "text": text})


def _part(rec: _Recorder, model: str, text: str, part: str, layer: int = 0, head: int = 0, tensors: bool = True) -> Any:
    return rec.post("/api/part", {"model": model, "text": text, "part": part, "layer": layer, "head": head, "tensors": tensors})


def _qkv(rec: _Recorder, model: str, text: str, layer: int, head: int, focus: int) -> Any:
    return rec.post("/api/qkv", {"model": model, "text": text, "layer": layer, "head": head, "focus": focus})


def _rank(rec: _Recorder, model: str, text: str, query: int | None, key: int | None) -> None:
    if query is not None and key is not None:
        rec.post("/api/heads/rank", {"model": model, "text": text, "query": query, "key": key})


def _timeline(rec: _Recorder, model: str, layer: int | None = None, head: int | None = None) -> None:
    """The timeline's snapshots and, at every snapshot, the head the page opens on (the one that learned most)."""
    tl = rec.get(f"/api/timeline?model={quote(model, safe='')}")
    if tl is None:
        return
    layer = min(tl["learning_layer"] if layer is None else layer, tl["n_layers"] - 1)
    head = min(tl["learning_head"] if head is None else head, tl["n_heads"] - 1)
    for snap in tl["snapshots"]:
        rec.post("/api/timeline/attention", {"model": model, "step": snap["step"], "layer": layer, "head": head})


def _widget(rec: _Recorder, pre: dict[str, Any], models: list[dict[str, Any]]) -> None:
    """The requests a tour step's widget makes (web/static/tour.js WIDGETS), for its preset."""
    w, model, text = pre["widget"], pre.get("model"), pre.get("text")
    layer, head = pre.get("layer"), pre.get("head")
    if w in ("attention", "heads", "finder", "qkv"):
        att = _attention(rec, model, text)
        if att is None:
            return
        q, k = find_token(att["tokens"], pre.get("query")), find_token(att["tokens"], pre.get("key"))
        if w in ("attention", "heads", "finder"):
            _rank(rec, model, text, q, k)  # the heads and finder widgets, and the view "Explore freely" opens
        if w == "qkv" or (w == "attention" and layer is not None):
            for focus in range(len(att["tokens"])):  # the widget's rows are clickable, and so are the view's
                _qkv(rec, model, text, layer, head, focus)
    elif w == "embed":
        _part(rec, model, text, pre["part"])
        _part(rec, model, text, "positional-encoding")
    elif w == "order":
        rec.post("/api/positions", {"model": model})
    elif w == "part":
        _part(rec, model, text, pre["part"], layer or 0)
    elif w == "timeline":
        m = next((x for x in models if x["timeline"] and x["available"]), None)
        if m:
            _timeline(rec, m["name"], layer, head)
    elif w == "translate":
        rec.post("/api/translate", {"model": model, "text": text, "beam_size": 1})
    elif w == "arch":
        rec.get("/api/architecture")
    elif w == "generate":
        rec.post("/api/next-token", {"model": model, "text": text})
    elif w == "figure":
        rec.get("/api/experiments")
    elif w == "ablation":
        rec.post("/api/ablation", {"model": model, "text": text, "layer": layer, "head": head})
    elif w == "ffn":  # tour.js ffnWidget: the sentence's tokens are buttons that move the focus
        att = _attention(rec, model, text)
        for focus in range(len(att["tokens"]) if att else 0):
            rec.post("/api/ffn", {"model": model, "text": text, "layer": layer or 0, "focus": focus})


def _explore(rec: _Recorder, info: dict[str, Any], text: str, heads: Iterable[tuple[int, int]], parts: list[str],
             views: dict[str, Any], every_part: list[str]) -> None:
    """The explore views' requests for one model and sentence (attention.js, qkv.js, arch.js, generate.js,
    translate.js, order.js): ``heads`` are the (layer, head) pairs the tour shows on this sentence; ``parts`` the
    model's family's diagram parts (at layer 0 and the tour's layers), ``every_part`` every diagram's (at layer 0:
    a link such as #arch/dec-embed opens another family's box on the current model)."""
    model, family = info["name"], info["family"]
    rec.post("/api/shape", {"model": model})  # the model strip (strip.js) and the diagram of its own family (arch.js)
    att = _attention(rec, model, text)
    if family == "decoder":
        rec.post("/api/next-token", {"model": model, "text": text})
    if family == "encoder-decoder":
        rec.post("/api/translate", {"model": model, "text": text, "beam_size": 1})
    mask_model = model if family == "decoder" else views.get("generate")
    if mask_model:
        _attention(rec, mask_model, text)  # the Order view's causal-mask triangle
    if att is None:
        return
    tokens, shown = att["tokens"], set(heads) | {(0, 0)}  # (0, 0): where the view opens without the tour
    for layer, head in sorted(shown):
        if layer < att["n_layers"] and head < att["n_heads"]:
            for focus in sorted({0, default_focus(tokens)}):  # the view asks focus 0, then its default focus
                _qkv(rec, model, text, layer, head, focus)
    layers = sorted({0} | {layer for layer, _ in shown})
    for part in every_part:
        _part(rec, model, text, part, 0)
        _part(rec, model, text, part, 0, 0, tensors=False)
    for part in parts:
        for layer in layers:
            _part(rec, model, text, part, layer)  # a box clicked
            for head in sorted({0} | {h for lay, h in shown if lay == layer}):
                _part(rec, model, text, part, layer, head, tensors=False)  # its hover card


def _experiment_files(rec: _Recorder, client: Any, out: Path) -> None:
    """The experiment figures and results files, written where the (relative) URLs of the recorded answer point."""
    key = request_key("GET", "/api/experiments")
    data = rec.data.get(key)
    if data is None:
        return
    for exp in data.get("experiments", []):
        for result in exp.get("results", []):
            for item in [*result.get("figures", []), result]:
                url_key = "url" if "url" in item else "results_url"
                url = item.get(url_key)
                if not url or not url.startswith("/api/experiments/"):
                    continue
                target = (out / unquote(url).lstrip("/")).resolve()
                if out.resolve() not in target.parents:
                    raise SiteError(f"an experiment file's URL leaves the site folder: {url}")
                answer = client.get(url)
                if answer.status_code == 200:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(answer.content)
                item[url_key] = url.lstrip("/")  # relative: the site may live under any path
    rec.write(key, data)


def _generate_prompt(static_dir: Path) -> str | None:
    """The prompt the Generate view opens with (its input's value in generate.js), read from the page itself."""
    found = re.search(r'id="gen-prompt"[^>]*\svalue="([^"]*)"', (static_dir / "generate.js").read_text(encoding="utf-8"))
    return html_.unescape(found.group(1)) if found else None


def _static_files(out: Path, static_dir: Path, device: str) -> None:
    """The page's own files, and its index.html made relative and marked as a static site."""
    shutil.copytree(static_dir, out / "static", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.map", "node_modules"))
    html = (static_dir / "index.html").read_text(encoding="utf-8")
    html = html.replace('<html lang="en">', f'<html lang="en" data-site="{SITE_FILE}">', 1)
    html = html.replace('href="/static/', 'href="static/').replace('src="/static/', 'src="static/')
    footer = ("<footer>Every number drawn from a model comes from that model's own forward pass (<code>attnlab.inspect.run_with_cache"
              "</code>; the toy step's from its hand-set toy, the experiment plots from the experiments' recorded runs), computed in advance"
              f" on a {device} by <code>attnlab site</code>: this copy needs no server, and what it "
              'holds no answer for says so. <span id="serve-device" hidden></span></footer>')
    html = re.sub(r"<footer>.*?</footer>", lambda _: footer, html, count=1, flags=re.S)
    if re.search(r'(href|src)="/', html):
        raise SiteError("index.html still names an absolute path; the static site needs relative URLs")
    (out / "index.html").write_text(html, encoding="utf-8")
    (out / ".nojekyll").write_text("", encoding="utf-8")  # GitHub Pages: serve the files as they are


def _server_page(out: Path) -> None:
    """``server.html``: how to run the server, the README's own "Quick start" section (the page links to it)."""
    from attnlab.web import content

    readme = Path(__file__).resolve().parents[3] / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    found = re.search(r"^## Quick start\n(.*?)(?=^## )", text, flags=re.M | re.S)
    body = found.group(1) if found else "In a clone of attnlab, run `make serve` and open http://127.0.0.1:8000."
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in body.splitlines() if line.startswith("|")]
    listed = "\n".join(f"- {r[0]}: {r[1]}" for r in rows[2:] if len(r) >= 2)  # content.render has no tables
    body = re.sub(r"(^\|.*\n?)+", lambda _: listed + "\n", body, count=1, flags=re.M)
    html = content.render("# Run the attnlab server\n\nThe static edition holds answers computed in advance. Everything "
                          "else (your own sentences on any model, generation, the Why view, training) needs the server:\n"
                          + body)
    (out / SERVER_PAGE).write_text(
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Run the attnlab server</title>'
        '<link rel="stylesheet" href="static/style.css"></head><body><main class="view">'
        f'{html}<p><a href="index.html">Back to the walkthrough</a></p></main></body></html>', encoding="utf-8")


def plan_pairs(tour: dict[str, Any], available: set[str], models: Iterable[str], sentences: Iterable[str],
               only: set[str] | None = None) -> dict[str, list[str]]:
    """Model -> the sentences exported for it: the tour's own (each step's model and sentence; models of
    sentence-less steps with the default sentence), the default sentence, and the added ones; ``models`` adds models.
    ``only``: keep just these models (and their tour steps)."""
    pairs: dict[str, list[str]] = {}
    for step in tour["steps"]:
        pre = step["preset"]
        if pre.get("model") in available and (only is None or pre["model"] in only):
            pairs.setdefault(pre["model"], [])
            if pre.get("text"):
                pairs[pre["model"]].append(pre["text"])
    for name in models:
        pairs.setdefault(name, [])
    for name in pairs:
        pairs[name] = list(dict.fromkeys([*pairs[name], DEFAULT_SENTENCE, *sentences]))
    return pairs


def _onnx_deviation(model_file: Path, manifest: dict[str, Any], answers: list[tuple[Any, Any]]) -> float:
    """The largest difference between what the graph at ``model_file`` gives and the app's recorded answers
    (``(attention answer, next-token answer or None)`` per sentence): every attention weight, and every
    next-token probability (softmax of the last position's logits), run by Python's onnxruntime (a dependency:
    an int8 model never ships unchecked)."""
    import onnxruntime

    def softmax(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max())
        return e / e.sum()

    session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    names = [o["name"] for o in manifest["outputs"]]
    worst = 0.0
    for att, nxt in answers:
        out = dict(zip(names, session.run(names, {manifest["input"]["name"]: np.array([att["ids"]], dtype=np.int64)}),
                       strict=True))
        for layer, heads in enumerate(att["weights"]):
            got = out[f"{manifest['stack']}.blocks.{layer}.attn.hook_weights"][0]
            worst = max(worst, float(np.abs(got - np.array(heads, dtype=np.float64)).max()))
        if nxt is not None and "hook_logits" in out:
            probs = softmax(out["hook_logits"][0, -1].astype(np.float64))
            worst = max(worst, float(np.abs(probs - softmax(np.array(nxt["logits"], dtype=np.float64))).max()))
    return worst


def _live_models(rec: _Recorder, out: Path, pairs: dict[str, list[str]], progress: Callable[[str], None],
                 report: SiteReport) -> None:
    """The in-browser models (``LIVE_MODELS`` among the exported ones) and onnxruntime-web, under ``out``:
    int8 where the graph's attention weights and probabilities stay within ``onnx.INT8_BOUND`` of the app's
    recorded answers on every exported sentence of that model, else float32. Fills ``report.live``, or
    ``report.live_note`` when onnxruntime-web is not installed (then the site has no in-browser models)."""
    from attnlab import catalog as cat
    from attnlab.site import onnx

    names = [n for n in LIVE_MODELS if n in pairs]
    for old in ("models", "vendor"):
        shutil.rmtree(out / old, ignore_errors=True)  # an earlier export's, which site.json would no longer name
    if not names:
        return
    try:
        onnx.runtime_dir()
    except FileNotFoundError as exc:
        report.live_note = f"no in-browser models: {exc}"
        return
    loaded = [cat.load(n) for n in names]
    progress(f"exporting {', '.join(names)} for the browser (onnxruntime-web)")
    written = onnx.export_for_site(out, loaded, int8=True)
    for model in loaded:
        answers = [(rec.data.get(request_key("POST", "/api/attention", {"model": model.name, "text": t})),
                    rec.data.get(request_key("POST", "/api/next-token", {"model": model.name, "text": t}))) for t in pairs[model.name]]
        answers = [a for a in answers if a[0] is not None]
        worst = _onnx_deviation(out / "models" / model.name / "model.onnx", written["models"][model.name], answers)
        if worst > onnx.INT8_BOUND:
            progress(f"{model.name}: int8 moves a number by {worst:.3g} > {onnx.INT8_BOUND}: exported in float32")
            onnx.export_model(model, out / "models" / model.name, int8=False)
            report.live[model.name] = "float32"
        else:
            progress(f"{model.name}: int8 moves its attention weights and probabilities by at most {worst:.3g} "
                     f"on the site's sentences (bound {onnx.INT8_BOUND})")
            report.live[model.name] = "int8"


def export_site(out: str | Path, *, models: Iterable[str] = (), sentences: Iterable[str] = (),
                only: Iterable[str] | None = None, live: bool = True,
                progress: Callable[[str], None] = lambda _: None) -> SiteReport:
    """Write the static walkthrough to ``out`` (created; files it holds from an earlier export are replaced).

    ``models``: catalogue names to add to the tour's; ``sentences``: sentences to add for every exported
    model; ``only``: export just these models (the tour's steps on other models then say they need the
    server); ``live``: also write the in-browser models (``LIVE_MODELS``, see ``_live_models``) when
    onnxruntime-web is installed. Returns a ``SiteReport``. Raises ``SiteError`` for an unknown or
    uninstalled model or an ``out`` that is a file. Runs every forward pass on the CPU in float32
    (``create_app``'s default).
    """
    from fastapi.testclient import TestClient

    from attnlab.web.app import STATIC_DIR, create_app

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SiteError(f"{out} is a file; give a folder to write the site into")
    models, sentences = list(models), list(sentences)
    only = None if only is None else set(only)
    (out / "api").mkdir(parents=True, exist_ok=True)
    for old in (out / "api").glob("*.json"):
        old.unlink()
    with TestClient(create_app(), base_url="http://127.0.0.1") as client:
        rec = _Recorder(client, out, progress)
        catalogue = rec.get("/api/models")
        by_name = {m["name"]: m for m in catalogue["models"]}
        for name in [*models, *(only or ())]:
            if name not in by_name:
                raise SiteError(f"no model {name!r}; models: {', '.join(by_name)}")
            if not by_name[name]["available"]:
                raise SiteError(f"model {name!r} is not installed: {by_name[name]['install_hint']}")
        available = {n for n, m in by_name.items() if m["available"]}
        tour = rec.get("/api/tour")
        pairs = plan_pairs(tour, available, [*models, *sorted(only or ())], sentences, only)
        timeline_models = [n for n in pairs if by_name[n]["timeline"]]
        for name in pairs:
            rec.post(f"/api/models/{quote(name, safe='')}/load", {})
        # The models answer as the static site has them: the others say they need the server.
        # Each view's and the page's default model is one the site holds (an exported model of the same family).
        held = lambda name: name if name in pairs else next(  # noqa: E731
            (n for n in pairs if name in by_name and by_name[n]["family"] == by_name[name]["family"]), None)
        shown = dict(catalogue, models=[m if m["name"] in pairs else dict(
            m, available=False, install_hint="not in this static site: run the server (make serve, see the README)")
            for m in catalogue["models"]], views={k: held(v) for k, v in catalogue["views"].items()})
        if shown.get("default") not in pairs:
            shown["default"] = held(shown.get("default")) or next(iter(pairs), None)
        rec.write(request_key("GET", "/api/models"), shown)
        for step in tour["steps"]:
            if step["preset"].get("model") and step["preset"]["model"] not in pairs:
                continue  # a step on a model this site does not hold: it says that it needs the server
            rec.get(f"/api/tour/{step['n']}")
            _widget(rec, step["preset"], shown["models"])
        index = rec.get("/api/content")
        for page in index["pages"]:
            rec.get(f"/api/content/{quote(page['slug'], safe='')}")
        layout = rec.get("/api/architecture")
        rec.get("/api/experiments")
        _experiment_files(rec, client, out)
        shown_heads: dict[tuple[str, str], set[tuple[int, int]]] = {}
        for step in tour["steps"]:
            pre = step["preset"]
            if pre.get("layer") is not None and pre.get("head") is not None:
                shown_heads.setdefault((pre["model"], pre["text"]), set()).add((pre["layer"], pre["head"]))
        every_part = list(dict.fromkeys(b["part"] for v in layout["variants"] for b in v["boxes"]))
        prompt = _generate_prompt(STATIC_DIR)
        for name, texts in pairs.items():
            variant = next(v for v in layout["variants"] if v["id"] == FAMILY_VARIANT[by_name[name]["family"]])
            parts = list(dict.fromkeys(b["part"] for b in variant["boxes"]))
            if by_name[name]["family"] == "encoder":
                rec.post("/api/positions", {"model": name})
            if by_name[name]["family"] == "decoder" and prompt:
                rec.post("/api/next-token", {"model": name, "text": prompt})  # the Generate view's own prompt
            for text in texts:
                _explore(rec, by_name[name], text, shown_heads.get((name, text), set()), parts, shown["views"], every_part)
        for name in timeline_models:
            _timeline(rec, name)
    report = SiteReport(out=out, answers=len(rec.index), errors=rec.errors)
    if live:
        _live_models(rec, out, pairs, progress, report)
    _static_files(out, STATIC_DIR, catalogue["device"])
    _server_page(out)
    site = {"format": 1, "models": list(pairs), "sentences": pairs, "answers": rec.index, "server": SERVER_PAGE,
            "live": bool(report.live), "live_models": report.live}  # site.js asks static/live.js only when true
    (out / SITE_FILE).write_text(json.dumps(site, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        report.files[path.relative_to(out).as_posix()] = path.stat().st_size
    return report
