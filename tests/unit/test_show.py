"""attnlab.show: each view draws the tools' own numbers, with the walkthrough's views.js inlined,
and nothing that would reach the network."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from attnlab import interpret, show
from attnlab.catalog import load
from attnlab.inspect import run_with_cache
from attnlab.show._html import views_module

pytestmark = pytest.mark.usefixtures("one_thread")
TEXT = "ROMEO: But soft"
#: XML namespace names are identifiers that browsers never fetch; any other http(s) string is a URL.
NAMESPACES = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xhtml"}


def external_urls(page: str) -> list[str]:
    urls = re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\"'<>)]*", page)
    return [u for u in urls if u not in NAMESPACES]


@pytest.fixture(scope="module")
def loaded():
    return load("shakespeare-char")


def ids_of(loaded) -> torch.Tensor:
    return torch.tensor([loaded.tokenizer.encode(TEXT)])


def test_views_js_is_inlined_not_copied() -> None:
    module = views_module()
    source = (Path(show.__file__).parents[1] / "web" / "static" / "views.js").read_text()
    assert "export " not in module.split("return {")[0].replace("// export", "")
    for name in ("tokenLines", "heatmap", "headGrid", "colour"):
        assert f"function {name}(" in source and f"function {name}(" in module
    assert not list(Path(show.__file__).parent.glob("views*.js"))  # no second copy in the package


def test_attention_view_draws_the_recorded_weights(loaded, tmp_path: Path) -> None:
    view = show.attention(loaded, TEXT, layer=1, head=2)
    _, cache = run_with_cache(loaded.model, ids_of(loaded), names="*hook_weights")
    recorded = [cache.attention(layer)[0] for layer in range(4)]
    torch.testing.assert_close(torch.tensor(view.data["weights"]), torch.stack(recorded), atol=0, rtol=0)
    assert view.data["tokens"] == loaded.tokenizer.tokens(loaded.tokenizer.encode(TEXT))
    page = view.save(tmp_path / "view.html").read_text()
    assert page.startswith("<!doctype html>") and 'class="attnlab-show"' in page
    assert "function tokenLines(" in page and "renderView(" in page
    assert external_urls(page) == []
    assert _without_ids(view._repr_html_()) == _without_ids(view.html)


def _without_ids(fragment: str) -> str:
    return re.sub(r"attnlab-[0-9a-f]{32}", "ID", fragment)


def test_a_view_shown_twice_draws_into_each_output(loaded) -> None:
    """Issue 22 item 8: every rendering has its own element id, and its script finds that element."""
    view = show.attention(loaded, TEXT)
    outputs = [view._repr_html_(), view._repr_html_(), view.html]
    ids = []
    for fragment in outputs:
        (element,) = re.findall(r'<div class="attnlab-show" id="([^"]+)"', fragment)
        (target,) = re.findall(r'document\.getElementById\("([^"]+)"\)', fragment)
        assert target == element  # the script draws into its own output
        ids.append(element)
    assert len(set(ids)) == len(ids)


def test_logit_lens_view(loaded) -> None:
    view = show.logit_lens(loaded, TEXT, target="e")
    lens = interpret.logit_lens(loaded.model, ids_of(loaded), target=loaded.tokenizer.encode("e")[0])
    assert view.data["top_ids"] == lens.top_ids[:, 0].tolist()
    assert view.data["target_rank"] == lens.target_rank[:, 0].tolist()
    assert view.data["target_token"] == "e"
    assert set(view.data["vocab"]) >= {str(i) for i in lens.top_ids.flatten().tolist()}
    with pytest.raises(ValueError, match="one token"):
        show.logit_lens(loaded, TEXT, target="ee")


def test_head_effects_and_saliency_views(loaded) -> None:
    ids = ids_of(loaded)
    top = int(loaded.model(ids)[0, -1].argmax())
    effects = interpret.head_effects(loaded.model, ids, interpret.metrics.token_logprob(top))
    view = show.head_effects(loaded, TEXT)
    torch.testing.assert_close(torch.tensor(view.data["effects"]), effects.effects, atol=1e-6, rtol=0)
    sal = interpret.saliency(loaded.model, ids, top)
    view = show.saliency(loaded, TEXT)
    torch.testing.assert_close(torch.tensor(view.data["scores"], dtype=torch.float64), sal.scores, atol=1e-6, rtol=0)
    assert len(view.data["tokens"]) == ids.shape[1]


def test_head_finder_view(loaded) -> None:
    view = show.head_finder(loaded, TEXT)
    det = interpret.detect_heads(loaded.model, low=4)
    assert view.data["detection"]["scores"]["induction"] == det.scores["induction"].tolist()
    assert len(view.data["roles"]) == 4 and len(view.data["roles"][0]) == 4


def test_show_errors(loaded) -> None:
    with pytest.raises(ValueError, match="empty"):
        show.attention(loaded, "")
    with pytest.raises(ValueError, match="tokenizer"):
        show.attention(loaded.model, TEXT)
    with pytest.raises(KeyError):
        show.attention("no-such-model", TEXT)
    view = show.attention(loaded.model, [1, 2, 3])  # ids without a tokenizer: labelled by id
    assert view.data["tokens"] == ["1", "2", "3"]


@pytest.fixture(scope="module")
def translator():
    from attnlab.web.demo import register_demo_models

    register_demo_models()
    return load("demo-translator")


def test_every_view_on_an_encoder_decoder(translator) -> None:
    """An encoder-decoder is drawn, not refused: source ``text </s>``, target ``<s>`` + its own greedy
    translation; each view's numbers are the library's on that pair."""
    from attnlab.generate import translate_ids

    tok, model = translator.tokenizer, translator.model
    bos, eos = tok.token_id("<s>"), tok.token_id("</s>")
    src = [*tok.encode("In the beginning"), eos]
    out, _ = translate_ids(model, src, bos_id=bos, eos_id=eos, max_new_tokens=model.config.max_len - 1)
    x = (torch.tensor([src]), torch.tensor([[bos, *out]]))
    view = show.attention(translator, "In the beginning", layer=1, head=2)
    _, cache = run_with_cache(model, *x, names="encoder.blocks.1.attn.hook_weights")
    assert view.data["weights"][1] == cache["encoder.blocks.1.attn.hook_weights"][0].tolist()
    assert view.data["tokens"] == tok.tokens(src)
    lens = show.logit_lens(translator, "In the beginning")
    assert lens.data["top_ids"] == interpret.logit_lens(model, x).to_dict()["top_ids"]
    assert lens.data["tokens"] == tok.tokens([bos, *out])
    top = int(interpret.ablate(model, x, [])[0, -1].argmax())
    effects = show.head_effects(translator, "In the beginning", cross=True)
    ref = interpret.head_effects(model, x, interpret.metrics.token_logprob(top), cross=True)
    assert effects.data["effects"] == ref.effects.tolist() and effects.data["cross"]
    sal = show.saliency(translator, "In the beginning")
    assert sal.data["scores"] == interpret.saliency(model, x, top).scores.tolist()
    assert len(sal.data["scores"]) == len(src)  # the source tokens are scored
    finder = show.head_finder(translator, "In the beginning")
    assert len(finder.data["roles"]) == model.config.n_layers


def test_a_model_without_a_vocabulary_head_says_why_in_one_sentence() -> None:
    from attnlab.web.demo import register_demo_models

    register_demo_models()
    encoder = load("demo-encoder")
    with pytest.raises(ValueError, match=r"^EncoderModel has no vocabulary head \(it outputs a sentence embedding, "
                                         r"not a next token\), so it has no logit lens$"):
        show.logit_lens(encoder, "hello")
    show.head_effects(encoder, "hello", metric=interpret.metrics.embedding_similarity(
        interpret.ablate(encoder.model, torch.tensor([encoder.tokenizer.encode("hello")]), [])))


def test_each_view_note_carries_its_check(loaded) -> None:
    """The fidelity ledger in show: each view's caption prints its check, computed on this input."""
    ids = ids_of(loaded)
    top = int(interpret.ablate(loaded.model, ids, [])[0, -1].argmax())
    sal = interpret.saliency(loaded.model, ids, top)
    total = sal.value - sal.baseline_value
    note = show.saliency(loaded, TEXT).note
    assert f"the scores sum to {float(sal.scores.sum()):.4g}, f(input) - f(baseline) is {total:.4g}" in note
    assert f"relative gap {abs(sal.completeness_gap) / abs(total):.1e}" in note
    effects = interpret.head_effects(loaded.model, ids, interpret.metrics.token_logprob(top)).effects
    layer, head = divmod(int(effects.abs().argmax()), effects.shape[1])
    note = show.head_effects(loaded, TEXT).note
    gap = float(re.search(r"within (\S+)\.$", note)[1])
    assert f"(layer {layer} head {head})" in note and gap <= 1e-5
    note = show.logit_lens(loaded, TEXT).note
    assert float(re.search(r"logits within (\S+)\.$", note)[1]) <= 1e-5
