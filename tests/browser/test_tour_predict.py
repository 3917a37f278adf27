"""Predict, then see: tour steps that ask the learner first and let the live model answer.

Each question's answer and every number of its explanation are recomputed here from the model itself
(``run_with_cache`` on the same model and sentence) or from the route the widget draws (the Order experiment),
never read off the page; before the answer, neither the figure nor the step's reveal text is in the page.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from attnlab import catalog as cat
from attnlab.inspect import run_with_cache

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TWIN = 1e-3  # an exact twin in the Order experiment: nearest-match distance under this (the view's verdict)

KINDS = ("attention", "generate", "order")


def _available(name: str) -> bool:
    return any(i.name == name and i.available for i in cat.catalog())


def _step(page, base: str, widget: str) -> dict:
    steps = page.request.get(f"{base}/api/tour").json()["steps"]
    step = next(s for s in steps if s["preset"]["widget"] == widget and s["preset"]["predict"])
    if step["note"]:
        pytest.skip(f"step {step['n']} needs a model that is not installed: {step['note']}")
    return step


def _share(x: float) -> str:  # tour.js share(x): two decimals, or two digits in scientific notation below 0.005
    if x >= 0.005:
        return f"{x:.2f}"
    mantissa, exp = f"{x:.1e}".split("e")
    return f"{mantissa}e{int(exp)}"


def _distance(x: float) -> str:  # views.js distance(x)
    if x < 1e-4:
        return "< 1e-4"
    if x >= 0.01:
        return f"{x:.2f}"
    mantissa, exp = f"{x:.1e}".split("e")
    return f"{mantissa}e{int(exp)}"


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 11 <= n % 100 <= 13 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


class Expected:
    """The question's choices (value -> label), the model's answer and the sentence for each pick, recomputed."""

    def __init__(self, ui, step: dict) -> None:
        pre = step["preset"]
        self.pre = pre
        getattr(self, f"_{pre['widget']}")(ui)

    def _attention(self, ui) -> None:
        pre = self.pre
        loaded = cat.load(pre["model"])
        ids = loaded.tokenizer.encode(pre["text"])
        tokens = loaded.tokenizer.tokens(ids)
        q = [t.lower() for t in tokens].index(pre["query"].lower())
        _, cache = run_with_cache(loaded.model, torch.tensor([ids]), names="*hook_weights")
        row = cache.attention(pre["layer"])[0, pre["head"], q].double().tolist()
        answer = max(range(len(row)), key=lambda i: (row[i], -i))
        runner = max((i for i in range(len(row)) if i != answer), key=lambda i: (row[i], -i))
        who, word = f"“{tokens[q]}”", lambda i: f"“{tokens[i]}”"
        self.choices = {str(i): t for i, t in enumerate(tokens)}
        self.answer = str(answer)
        self.wrong = str(min(range(len(row)), key=lambda i: (row[i], i)))  # the word it looks at least
        w = lambda i: _share(row[i])  # noqa: E731
        self.right = lambda v: (f"Right: {word(int(v))} gets {w(int(v))} of the attention of {who} in this head, the most of any "
                                f"word (next: {word(runner)}, {w(runner)}).")
        self.explain = lambda v: (f"You picked {word(int(v))}: it gets {w(int(v))} of the attention of {who} in this head; "
                                  f"{word(answer)} gets {w(answer)}, the most of any word.")
        self.skipped = f"The model's answer: {word(answer)}, with {w(answer)} of the attention of {who}, the most of any word."
        self.numbers = [w(answer)]

    def _generate(self, ui) -> None:
        pre = self.pre
        loaded = cat.load(pre["model"])
        ids = loaded.tokenizer.encode(pre["text"])
        _, cache = run_with_cache(loaded.model, torch.tensor([ids]), names="hook_logits")
        logits = cache["hook_logits"][0, -1].double()
        probs = torch.softmax(logits, -1)
        order = logits.argsort(descending=True, stable=True).tolist()
        favourites = order[:3]
        sentence = [i for i in dict.fromkeys(ids) if i not in favourites]
        distractors = sorted(sentence, key=lambda i: -probs[i].item())[:2]
        label = lambda i: json.dumps(loaded.tokenizer.tokens([i])[0], ensure_ascii=False)  # noqa: E731
        model = pre["model"]
        rank = lambda i: 1 + int((logits > logits[i]).sum())  # noqa: E731
        answer = order[0]
        self.choices = {str(i): label(i) for i in favourites + distractors}
        self.answer = str(answer)
        self.wrong = str(distractors[0])
        p = lambda i: _share(probs[i].item())  # noqa: E731
        self.right = lambda v: (f"Right: {model} gives {label(int(v))} a probability of {p(int(v))}, its first choice (next: "
                                f"{label(order[1])}, {p(order[1])}).")
        self.explain = lambda v: (f"You picked {label(int(v))}: {model} gives it {p(int(v))} (its {_ordinal(rank(int(v)))} choice); "
                                  f"it gives {label(answer)} {p(answer)}, its first choice.")
        self.skipped = f"The model's answer: {label(answer)}, with a probability of {p(answer)}, its first choice."
        self.numbers = [p(answer)]

    def _order(self, ui) -> None:
        o = ui.page.request.post(f"{ui.base}/api/positions", data={"model": self.pre["model"]}).json()
        n = len(o["first_tokens"])
        nearest = {c["positions"]: [min(row) for row in c["distances"]] for c in o["comparisons"]}
        twins = {k: sum(d < TWIN for d in v) for k, v in nearest.items()}
        count = twins[False]
        answer = "all" if count == n else "none" if count == 0 else "some"
        self.choices = {"all": f"all {n}", "some": f"some, not all {n}", "none": "none"}
        self.answer = answer
        self.wrong = "some" if answer != "some" else "none"
        facts = (f"without positions {count} of the {n} tokens have an exact twin in the other order (the largest distance to a "
                 f"nearest match is {_distance(max(nearest[False]))}); with positions, {twins[True]} do (largest "
                 f"{_distance(max(nearest[True]))})")
        self.right = lambda v: f"Right: {facts}."
        self.explain = lambda v: f"You picked “{self.choices[v]}”: {facts}."
        self.skipped = f"The model's answer: “{self.choices[answer]}”: {facts}."
        self.numbers = [_distance(max(nearest[True]))]


def _open_asking(ui, n: int) -> None:
    page = ui.page
    page.goto("about:blank")
    ui.open(f"#tour/{n}")  # a deep link straight to the step asks too
    page.wait_for_selector(f"#view-tour[data-step='{n}'] .tour-widget[data-state=asking] .predict-choices button",
                           timeout=120_000)
    page.wait_for_selector(f"#view-tour[data-step='{n}'] .tour-text[data-claims=ready]")


def _hidden_before_the_answer(ui, step: dict, exp: Expected) -> None:
    """The question is up; the figure, its numbers and the reveal text are nowhere in the page yet."""
    page = ui.page
    widget = page.locator(".tour-widget")
    assert widget.locator("svg, table, img").count() == 0
    assert page.get_attribute(".tour-text", "data-reveal") == "waiting"
    assert page.inner_text(".predict-result") == ""
    shown = {b["value"]: b["label"] for b in page.locator(".predict-choices button").evaluate_all(
        "bs => bs.map(b => ({value: b.dataset.choice, label: b.textContent}))")}
    assert shown == exp.choices
    assert page.locator(".predict-choices button.answer, .predict-choices button[aria-pressed=true]").count() == 0
    dom_text = page.evaluate("document.querySelector('main').textContent")  # what a screen reader could reach
    opening = re.sub(r"<[^>]+>", "", step["reveal_html"])[:30]  # the reveal text's first words
    assert len(opening) == 30 and opening not in dom_text, opening
    for number in exp.numbers:
        assert number not in dom_text, number


def _revealed(ui, n: int, step: dict) -> None:
    page = ui.page
    page.wait_for_selector(f"#view-tour[data-step='{n}'] .tour-widget[data-state=ready]", timeout=120_000)
    assert page.get_attribute(".tour-text", "data-reveal") == "shown"
    assert page.locator(".tour-widget svg").count() > 0  # the figure is drawn after the answer
    assert page.locator(".tour-text .claim.pending").count() == 0
    assert page.locator(".predict-choices button:not([disabled])").count() == 0


@pytest.mark.parametrize("widget", KINDS)
def test_a_wrong_guess_is_explained_with_the_models_numbers(make_ui, widget) -> None:
    ui = make_ui(1440, 900)
    step = _step(ui.page, ui.base, widget)
    exp = Expected(ui, step)
    n = step["n"]
    _open_asking(ui, n)
    _hidden_before_the_answer(ui, step, exp)
    ui.screenshot(f"tour-predict-{widget}-asking-1440x900")
    ui.page.click(f".predict-choices button[data-choice='{exp.wrong}']")
    _revealed(ui, n, step)
    panel = ui.page.locator(".predict")
    assert panel.get_attribute("data-right") == "false" and panel.get_attribute("data-answer") == exp.answer
    assert ui.page.inner_text(".predict-result") == exp.explain(exp.wrong)
    assert ui.page.get_attribute(f".predict-choices button[data-choice='{exp.wrong}']", "aria-pressed") == "true"
    assert "answer" in ui.page.get_attribute(f".predict-choices button[data-choice='{exp.answer}']", "class")
    ui.screenshot(f"tour-predict-{widget}-wrong-1440x900")
    assert ui.errors == []


@pytest.mark.parametrize("widget", KINDS)
def test_a_right_guess_and_a_skip_show_the_models_answer(make_ui, widget) -> None:
    ui = make_ui(1024, 768)
    step = _step(ui.page, ui.base, widget)
    exp = Expected(ui, step)
    n = step["n"]
    _open_asking(ui, n)
    ui.screenshot(f"tour-predict-{widget}-asking-1024x768")
    ui.page.click(f".predict-choices button[data-choice='{exp.answer}']")
    _revealed(ui, n, step)
    assert ui.page.get_attribute(".predict", "data-right") == "true"
    assert ui.page.inner_text(".predict-result") == exp.right(exp.answer)
    # the text and the figure stay side by side at 1024 px, the figure's top above the fold
    text, fig = ui.page.locator(".tour-text").bounding_box(), ui.page.locator(".tour-widget").bounding_box()
    assert fig["x"] >= text["x"] + text["width"] and fig["y"] < 768, (text, fig)
    ui.screenshot(f"tour-predict-{widget}-right-1024x768")

    _open_asking(ui, n)
    ui.page.click(".predict-skip")
    _revealed(ui, n, step)
    assert ui.page.get_attribute(".predict", "data-right") == "skipped"
    assert ui.page.inner_text(".predict-result") == exp.skipped
    assert ui.page.locator(".predict-choices button[aria-pressed=true]").count() == 0
    ui.screenshot(f"tour-predict-{widget}-skipped-1024x768")
    assert ui.errors == []
