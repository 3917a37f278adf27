"""Generation settings: every numeric one is refused by name when it is not a number in range, and
every positive temperature, however small, behaves like its limit (greedy), in every logits dtype."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attnlab.generate import (
    GREEDY_BELOW,
    GenerationError,
    Sampling,
    generate_batch,
    generate_batch_ids,
    sample_next,
    sampling_distribution,
    stream,
    stream_ids,
    translate_ids,
)
from attnlab.models import DecoderLM, EncoderDecoder, TransformerConfig
from attnlab.tokenizers import CharTokenizer
from attnlab.translate import translate_text

pytestmark = pytest.mark.usefixtures("one_thread")

CHARS = CharTokenizer("abcdefgh .\n")
TINY_TEMPERATURES = [1e-30, 1e-38, 1.1754943508222875e-38, 1e-45, 5e-324, GREEDY_BELOW / 2]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def lm() -> DecoderLM:
    torch.manual_seed(0)
    config = TransformerConfig(family="decoder", vocab_size=CHARS.vocab_size, d_model=16, n_heads=2, n_layers=1,
                               d_ff=32, max_len=16)
    return DecoderLM(config).eval()


def seq2seq() -> EncoderDecoder:
    torch.manual_seed(0)
    config = TransformerConfig(family="encoder-decoder", vocab_size=CHARS.vocab_size, d_model=16, n_heads=2,
                               n_layers=1, d_ff=32, max_len=12)
    return EncoderDecoder(config).eval()


class TwoSpecials(CharTokenizer):
    """The character tokenizer with the two ids the translator looks up by name."""

    def token_id(self, token: str) -> int:
        return {"<s>": 0, "</s>": 1}[token]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("temperature", TINY_TEMPERATURES)
def test_a_tiny_temperature_is_greedy_in_every_dtype(dtype, temperature) -> None:
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        logits = (torch.randn(1000, generator=g) * 8).to(dtype)
        if trial % 2:  # exact ties at the top: greedy's rule (the lowest id) decides, as with T=0
            logits[[17, 400, 999]] = logits.max() + 1
        greedy = int(logits.argmax())
        sampling = Sampling(temperature=temperature)
        dist = sampling_distribution(logits, sampling)
        assert dist.dtype == torch.float32 and not dist.isnan().any()
        assert int(dist.argmax()) == greedy and float(dist[greedy]) == 1.0 and float(dist.sum()) == 1.0
        assert torch.equal(dist, sampling_distribution(logits, Sampling(temperature=0)))
        assert {sample_next(logits, sampling, g) for _ in range(5)} == {greedy}
        with_filters = Sampling(temperature=temperature, top_k=3, top_p=0.5)
        assert sample_next(logits, with_filters, g) == greedy


@pytest.mark.parametrize("dtype", DTYPES)
def test_small_but_sampling_temperatures_stay_finite(dtype) -> None:
    """Just above the greedy limit the division would overflow float32 for large logits: it does not."""
    logits = torch.tensor([3e4, 3e4 - 1e-4, -6e4, 0.0]).to(dtype)
    for temperature in (GREEDY_BELOW, 1e-3, 1.0, 1e30):
        dist = sampling_distribution(logits, Sampling(temperature=temperature))
        assert torch.isfinite(dist).all() and abs(float(dist.sum()) - 1) < 1e-6
    flat = sampling_distribution(logits, Sampling(temperature=1e300))  # the other limit: uniform
    torch.testing.assert_close(flat, torch.full((4,), 0.25))


def test_sample_next_draws_from_sampling_distribution() -> None:
    """The two agree: empirical frequencies of sample_next match sampling_distribution."""
    logits = torch.tensor([2.0, 1.5, 1.0, 0.0, -1.0, -3.0]).to(torch.bfloat16)
    g = torch.Generator().manual_seed(1)
    for sampling in (Sampling(temperature=0.7), Sampling(temperature=1.3, top_k=4), Sampling(top_p=0.8)):
        dist = sampling_distribution(logits, sampling)
        n = 20_000
        counts = torch.bincount(torch.tensor([sample_next(logits, sampling, g) for _ in range(n)]), minlength=6)
        assert torch.all((counts / n - dist).abs() < 0.015), (sampling, counts / n, dist)
        assert set(torch.nonzero(counts).flatten().tolist()) == set(torch.nonzero(dist).flatten().tolist())


def test_a_tiny_top_p_keeps_the_most_likely_token() -> None:
    logits = torch.tensor([0.0, 1.0, 3.0, 1.0])
    for top_p in (5e-324, 1e-300, 1e-8):
        dist = sampling_distribution(logits, Sampling(top_p=top_p))
        assert dist.tolist() == [0.0, 0.0, 1.0, 0.0]


def test_generation_at_a_tiny_temperature_equals_greedy() -> None:
    model = lm()
    prompt = CHARS.encode("bad ")
    greedy = [t for t, _ in stream_ids(model, prompt, max_new_tokens=12, sampling=Sampling(temperature=0))]
    for temperature in (1e-30, 1e-45):
        tiny = [t for t, _ in stream_ids(model, prompt, max_new_tokens=12, sampling=Sampling(temperature=temperature),
                                         top_probs=2)]
        assert tiny == greedy


NOT_NUMBERS = [math.nan, math.inf, -math.inf, True, False, "1", None, [1]]


@pytest.mark.parametrize(
    ("name", "bad", "good"),
    [
        ("temperature", [-1e-30, -1, *NOT_NUMBERS, 1e309], [0, 0.0, 5e-324, 1e-30, 1, 2.5, 1e300, np.float32(0.5)]),
        ("top_k", [-1, 2.0, 1.5, *NOT_NUMBERS], [0, 1, 50, 10**6, np.int64(3)]),
        ("top_p", [0, 0.0, -0.1, 1.0000001, 2, *NOT_NUMBERS], [5e-324, 1e-30, 0.5, 1, 1.0]),
    ],
)
def test_sampling_refuses_what_is_not_a_number_in_range(name, bad, good) -> None:
    for value in bad:
        with pytest.raises(GenerationError, match=name) as info:
            Sampling(**{name: value})
        assert "\n" not in str(info.value) and ("]" in str(info.value) or ">" in str(info.value))
    for value in good:
        assert getattr(Sampling(**{name: value}), name) == value


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("max_new_tokens", [-1, 2.0, *NOT_NUMBERS]),
        ("seed", [-1, 2**64, 2**100, 1.0, math.nan, math.inf, True, "3"]),
        ("top_probs", [-1, 1.5, *NOT_NUMBERS]),
        ("sampling", [0.7, "greedy", {"temperature": 1}]),
    ],
)
def test_decoder_settings_are_checked_where_they_enter(name, bad) -> None:
    model = lm()
    for value in bad:
        with pytest.raises(GenerationError, match=name):
            next(stream_ids(model, [1, 2], **{name: value}))
        with pytest.raises(GenerationError, match=name):
            next(stream(model, CHARS, "ab", **{name: value}))
        if name != "top_probs":  # the batch loop reports no candidates; every other setting is the same
            with pytest.raises(GenerationError, match=name):  # issue 22 item 9: it accepted some of these
                generate_batch_ids(model, [[1, 2]], **{name: value})
            with pytest.raises(GenerationError, match=name):
                generate_batch(model, CHARS, ["ab"], **{name: value})


@pytest.mark.parametrize("bad", [[], [1.0, 2], [1.7], [True, 2], [np.float32(1)], "ab", None, 3])
def test_a_prompt_that_is_not_token_ids_is_refused_by_both_decoder_loops(bad) -> None:
    model = lm()
    with pytest.raises(GenerationError, match="prompt"):
        next(stream_ids(model, bad))
    with pytest.raises(GenerationError, match="prompt"):
        generate_batch_ids(model, [[3], bad])
    assert generate_batch_ids(model, [[np.int64(3), 4]], max_new_tokens=2, seed=1) == [
        [t for t, _ in stream_ids(model, [3, 4], max_new_tokens=2, seed=1)]]
    for seed in (0, 2**64 - 1, np.int64(5)):  # the whole range torch accepts
        assert len(list(stream_ids(model, [1, 2], max_new_tokens=2, seed=seed))) == 2


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("beam_size", [0, -1, 2.0, CHARS.vocab_size + 1, 10**12, *NOT_NUMBERS]),
        ("max_new_tokens", [-1, 2.0, *NOT_NUMBERS]),
        ("length_penalty", [-0.5, math.nan, math.inf, True, "0.6", None]),
        ("bos_id", [-1, CHARS.vocab_size, 0.0, None]),
        ("eos_id", [-1, CHARS.vocab_size, 1.0, None]),
    ],
)
def test_translation_settings_are_checked_where_they_enter(name, bad) -> None:
    model = seq2seq()
    for value in bad:
        kwargs = {"bos_id": 0, "eos_id": 1, name: value}
        with pytest.raises(GenerationError, match=name):
            translate_ids(model, [3, 4, 1], **kwargs)
        if name in ("beam_size", "max_new_tokens") and value is not None:
            with pytest.raises(GenerationError, match=name):
                translate_text(model, TwoSpecials("abcdefgh .\n"), "bad", **{name: value})
    assert len(translate_ids(model, [3, 4, 1], bos_id=0, eos_id=1, max_new_tokens=3,
                             beam_size=CHARS.vocab_size)[0]) <= 3


def test_tempered_distribution_never_overflows() -> None:
    from attnlab.generate import tempered_distribution

    logits = torch.tensor([2.0, -1.0, 0.5, 2.0]).to(torch.bfloat16)
    at_one = torch.softmax(logits.float(), dim=-1)
    for temperature in (0, *TINY_TEMPERATURES):  # greedy: the candidates at temperature 1
        torch.testing.assert_close(tempered_distribution(logits, Sampling(temperature=temperature)), at_one)
    torch.testing.assert_close(tempered_distribution(logits, Sampling(temperature=0.5)),
                               torch.softmax(logits.float() / 0.5, dim=-1))


def test_the_playground_route_answers_tiny_temperature_and_top_p(tmp_path) -> None:
    """The web playground draws its bars with the same functions: no NaN, no 500."""
    from fastapi.testclient import TestClient

    from attnlab.web.app import create_app
    from attnlab.web.demo import register_demo_models

    register_demo_models(tmp_path)
    client = TestClient(create_app(), base_url="http://127.0.0.1")
    req = {"model": "demo-decoder", "text": "the cat", "max_new_tokens": 3, "seed": 3}
    greedy = client.post("/api/generate", json={**req, "temperature": 0}).json()
    for tiny in ({"temperature": 1.1754943508222875e-38}, {"temperature": 1e-30}, {"top_p": 5e-324}):
        response = client.post("/api/generate", json={**req, **tiny})
        assert response.status_code == 200, response.text
        assert [s["id"] for s in response.json()["steps"]] == [s["id"] for s in greedy["steps"]]
