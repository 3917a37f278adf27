"""attnlab.interpret against TransformerLens and Captum on the same tiny random GPT-2.

One random ``GPT2LMHeadModel`` is converted to attnlab by ``attnlab.weights.hf.load_hf_model`` (the
function users call) and wrapped by TransformerLens's own ``TransformerBridge`` (its raw-weights
mode, whose outputs are the Hugging Face model's), offline: the bridge is given the model object and
a local tokenizer, so nothing is fetched. Captum's ``IntegratedGradients`` runs on the Hugging Face
model's ``inputs_embeds``, with the same zero baseline and the same Gauss-Legendre rule.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
pytest.importorskip("transformer_lens")
transformers.logging.set_verbosity_error()

from attnlab import interpret  # noqa: E402
from attnlab.interpret import metrics  # noqa: E402
from attnlab.weights.hf import load_hf_model  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
VOCAB, LAYERS, HEADS = 99, 3, 4
close = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=LAYERS, n_head=HEADS, n_positions=64,
                                  bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    hf = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    hf.eval()
    ours = load_hf_model(hf).eval()
    from tokenizers import Tokenizer
    from tokenizers import models as tok_models
    from transformer_lens.model_bridge import TransformerBridge

    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(tok_models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0")),
        bos_token="t0", eos_token="t0", pad_token="t0", add_bos_token=True, name_or_path="local-test",
    )
    bridge = TransformerBridge.boot_transformers("gpt2", hf_model=hf, tokenizer=tok)
    bridge.eval()
    return hf, ours, bridge


@pytest.fixture
def tokens() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    clean = torch.randint(1, VOCAB, (2, 10), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2] = torch.randint(1, VOCAB, (2,), generator=g)
    corrupted[:, 5] = torch.randint(1, VOCAB, (2,), generator=g)
    return clean, corrupted


def test_same_logits(models, tokens) -> None:
    _, ours, bridge = models
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens[0]), bridge(tokens[0]), **close)


def test_accumulated_residual_and_logit_lens(models, tokens) -> None:
    _, ours, bridge = models
    x = tokens[0]
    labels, resid = interpret.accumulated_residual(ours, x)
    _, cache = bridge.run_with_cache(x)
    ref, ref_labels = cache.accumulated_resid(return_labels=True)
    assert len(labels) == len(ref_labels) == LAYERS + 1
    torch.testing.assert_close(resid, ref, **close)
    from transformer_lens.tools.analysis.logit_lens import logit_lens as tl_logit_lens

    ref_lens = tl_logit_lens(bridge, x, positions=None)  # final norm with recomputed statistics, per layer
    ours_lens = interpret.logit_lens(ours, x)
    torch.testing.assert_close(ours_lens.logits, ref_lens.values, **close)


def _tl_zero_head(layer: int, head: int):
    def hook(z, hook):  # (batch, pos, head, d_head)
        z = z.clone()
        z[:, :, head] = 0
        return z

    return (f"blocks.{layer}.attn.hook_z", hook)


def test_head_ablation_effects(models, tokens) -> None:
    _, ours, bridge = models
    x = tokens[0]
    target = int(x[0, -1])
    metric = metrics.token_logprob(target)
    effects = interpret.head_effects(ours, x, metric)
    with torch.no_grad():
        clean = metric(bridge(x)).mean()
        ref = torch.zeros(LAYERS, HEADS)
        for layer in range(LAYERS):
            for head in range(HEADS):
                out = bridge.run_with_hooks(x, fwd_hooks=[_tl_zero_head(layer, head)])
                ref[layer, head] = metric(out).mean() - clean
    assert ref.abs().max() > 1e-3  # the comparison is not between two near-zero tables
    torch.testing.assert_close(effects.effects, ref, **close)


@pytest.mark.parametrize(("where", "tl_name"), [
    ("resid", "get_act_patch_resid_pre"),
    ("attn", "get_act_patch_attn_out"),
    ("mlp", "get_act_patch_mlp_out"),
    ("head", "get_act_patch_attn_head_out_all_pos"),
])
def test_activation_patching(models, tokens, where: str, tl_name: str) -> None:
    from transformer_lens import patching

    _, ours, bridge = models
    clean, corrupted = tokens
    answer = int(clean[0, -1])

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(logits[:, -1], dim=-1)[:, answer]

    ours_result = interpret.patch(ours, clean, corrupted, metric, where=where)
    _, clean_cache = bridge.run_with_cache(clean)
    ref = getattr(patching, tl_name)(bridge, corrupted, clean_cache, lambda logits: metric(logits).mean())
    assert ref.shape == ours_result.values.shape
    assert (ref - ref.mean()).abs().max() > 1e-3
    torch.testing.assert_close(ours_result.values, ref.float(), **close)


def test_integrated_gradients_match_captum(models, tokens) -> None:
    from captum.attr import IntegratedGradients

    hf, ours, _ = models
    x = tokens[0][:1]
    token = 17
    embeds = hf.transformer.wte(x).detach()

    def forward(e: torch.Tensor) -> torch.Tensor:
        return hf(inputs_embeds=e).logits[:, -1, token]

    ig = IntegratedGradients(forward)
    ref, delta = ig.attribute(embeds, baselines=torch.zeros_like(embeds), n_steps=50,
                              method="gausslegendre", return_convergence_delta=True)
    ours_sal = interpret.saliency(ours, x, token, steps=50)
    torch.testing.assert_close(ours_sal.scores.float(), ref.sum(-1)[0], **close)
    assert ours_sal.completeness_gap == pytest.approx(float(delta), abs=1e-4)


def test_attribution_patching_matches_transformer_lens(models, tokens) -> None:
    """TransformerLens scores each (head, position) node ``(a_clean - a_corrupt) . grad`` on the corrupt
    run, averaged over the pairs; summed over positions that is ``attribution_patch``'s per-head value."""
    from transformer_lens.tools.analysis.attribution_patching import attribution_patch as tl_attribution_patch

    _, ours, bridge = models
    clean, corrupted = tokens
    answer = int(clean[0, -1])
    metric = metrics.token_logprob(answer)
    est = interpret.attribution_patch(ours, clean, corrupted, metric, where="head")
    ref_nodes = tl_attribution_patch(bridge, clean, corrupted, lambda logits: metric(logits).sum())
    ref = torch.zeros(LAYERS, HEADS)
    for node, score in ref_nodes.node_scores.items():
        if node.kind == "attn_head_out":
            ref[node.layer, node.head] += score
    assert ref.abs().max() > 1e-3
    torch.testing.assert_close(est.values - est.baseline, ref, **close)
