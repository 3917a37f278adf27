"""Latency of every attnlab.interpret tool on a 12-token input, one thread (issues 12 and 26).

    .venv/bin/python benchmarks/bench_interpret.py [--models shakespeare-char,minilm,smollm2] [--repeats 3]
        [--no-transformer-lens]

Then, unless ``--no-transformer-lens``: the tools TransformerLens also has, timed beside its own in
the same run on one random GPT-2-small-shaped model (12 layers x 12 heads, width 768, vocabulary
50,257; Hugging Face ``GPT2LMHeadModel`` from a config, converted to attnlab by ``load_hf_model`` and
wrapped by TransformerLens's ``TransformerBridge``; nothing downloaded), with the ratio, and the
agreement of attribution patching with exact patching (Pearson r over every head) on SmolLM2 and on
that model.

Goals: under 2 s per tool on the bundled decoder and on minilm, under 10 s on smollm2. Each tool
runs ``--repeats`` times after one warm-up; the median is printed. A tool a model's family does not
define (the logit lens on minilm, which has no vocabulary head; direct attributions and score
decompositions on a post-norm model) is reported as "n/a" with the reason. The machine may be
shared: quote the median of runs on an idle machine.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from bench_pretrained import median_seconds  # this folder is on the path when a benchmark runs

from attnlab import interpret
from attnlab.catalog import load
from attnlab.interpret import metrics

SENTENCES = {
    "shakespeare-char": "To be, or no",  # 12 characters
    "minilm": "the cat sat on the mat because it was tired",
    "smollm2": "The capital of France is Paris, and the capital of",
}


def twelve_tokens(name: str, tokenizer) -> torch.Tensor:
    ids = tokenizer.encode(SENTENCES[name])
    ids = (ids * 12)[:12]
    return torch.tensor([ids])


def tools(model: torch.nn.Module, ids: torch.Tensor) -> dict[str, Callable[[], object]]:
    lm = model.config.family != "encoder" or hasattr(model, "lm_head")
    if lm:
        with torch.no_grad():
            top = int(model(ids)[0, -1].argmax())
        metric = metrics.token_logprob(top)
        target: int | Callable = top
    else:
        def metric(hidden: torch.Tensor) -> torch.Tensor:
            return hidden[:, 0].norm(dim=-1)

        target, top = metric, 0
    corrupted = ids.flip(1)
    baseline = 0 if model.config.positions in ("rotary", "none") else None
    return {
        "logit_lens": lambda: interpret.logit_lens(model, ids, target=top),
        "head_effects": lambda: interpret.head_effects(model, ids, metric),
        "patch(resid)": lambda: interpret.patch(model, ids, corrupted, metric, where="resid"),
        "patch(head)": lambda: interpret.patch(model, ids, corrupted, metric, where="head"),
        "attribution_patch(head)": lambda: interpret.attribution_patch(model, ids, corrupted, metric, where="head"),
        "direct_logit_attribution": lambda: interpret.direct_logit_attribution(model, ids, top),
        "score_decomposition": lambda: interpret.score_decomposition(model, ids, 1, 0, 11, 3),
        "saliency(x-grad)": lambda: interpret.saliency(model, ids, target, method="input_x_gradient", baseline=baseline),
        "saliency(IG, 50)": lambda: interpret.saliency(model, ids, target, baseline=baseline),
        "detect_heads": lambda: interpret.detect_heads(model, seq_len=16, batch=4, low=4),
    }


def gpt2_pair() -> tuple[torch.nn.Module, object, torch.nn.Module]:
    """A random GPT-2-small-shaped Hugging Face model, attnlab's conversion of it and TransformerLens's
    bridge around it (offline: the bridge gets the model object and a local word-level tokenizer)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers
    from tokenizers import Tokenizer
    from tokenizers import models as tok_models
    from transformer_lens.model_bridge import TransformerBridge

    from attnlab.weights.hf import load_hf_model

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=768, n_layer=12, n_head=12, n_positions=1024, attn_implementation="eager")
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    ours = load_hf_model(hf).eval()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(tok_models.WordLevel({f"t{i}": i for i in range(cfg.vocab_size)}, unk_token="t0")),
        bos_token="t0", eos_token="t0", pad_token="t0", add_bos_token=True, name_or_path="local-bench",
    )
    bridge = TransformerBridge.boot_transformers("gpt2", hf_model=hf, tokenizer=tok)
    bridge.eval()
    return ours, bridge, hf


def versus_transformer_lens(repeats: int) -> None:
    from transformer_lens import patching
    from transformer_lens.tools.analysis.attribution_patching import attribution_patch as tl_attribution_patch
    from transformer_lens.tools.analysis.logit_lens import logit_lens as tl_logit_lens

    ours, bridge, _ = gpt2_pair()
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(0, 50257, (1, 12), generator=g)
    corrupted = clean.clone()
    corrupted[0, 4] = (corrupted[0, 4] + 1) % 50257
    answer = int(clean[0, -1])
    metric = metrics.token_logprob(answer)
    L, H = ours.config.n_layers, ours.config.n_heads

    def tl_head_effects() -> torch.Tensor:  # TransformerLens's way: one run_with_hooks per head
        with torch.no_grad():
            clean_m = metric(bridge(clean)).mean()
            out = torch.zeros(L, H)
            for layer in range(L):
                for head in range(H):
                    def zero(z, hook, head=head):  # (batch, pos, head, d_head)
                        z = z.clone()
                        z[:, :, head] = 0
                        return z
                    out[layer, head] = metric(bridge.run_with_hooks(clean, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero)])).mean() - clean_m
        return out

    def tl_patch(name: str) -> Callable[[], object]:
        def run() -> object:
            _, cache = bridge.run_with_cache(clean)
            return getattr(patching, name)(bridge, corrupted, cache, lambda logits: metric(logits).mean())
        return run

    pairs = {
        "logit_lens": (lambda: interpret.logit_lens(ours, clean), lambda: tl_logit_lens(bridge, clean, positions=None)),
        "head_effects": (lambda: interpret.head_effects(ours, clean, metric), tl_head_effects),
        "patch(resid)": (lambda: interpret.patch(ours, clean, corrupted, metric, where="resid"),
                         tl_patch("get_act_patch_resid_pre")),
        "patch(head)": (lambda: interpret.patch(ours, clean, corrupted, metric, where="head"),
                        tl_patch("get_act_patch_attn_head_out_all_pos")),
        "attribution_patch(head)": (
            lambda: interpret.attribution_patch(ours, clean, corrupted, metric, where="head"),
            lambda: tl_attribution_patch(bridge, clean, corrupted, lambda logits: metric(logits).sum())),
    }
    print(f"\nGPT-2-small-shaped random model ({L} layers x {H} heads, width 768), 12 tokens, 1 thread: "
          f"attnlab vs TransformerLens {_version('transformer-lens')} TransformerBridge, same run, median of {repeats}")
    for tool, (mine, theirs) in pairs.items():
        a, b = median_seconds(mine, repeats), median_seconds(theirs, repeats)
        print(f"  {tool:26s} attnlab {a:7.3f} s   TransformerLens {b:7.3f} s   ratio {a / b:5.2f}")
    print_agreement("gpt2-random", ours, clean, corrupted, metric)


def print_agreement(name: str, model: torch.nn.Module, clean: torch.Tensor, corrupted: torch.Tensor, metric) -> None:
    est = interpret.attribution_patch(model, clean, corrupted, metric, where="head")
    exact = interpret.patch(model, clean, corrupted, metric, where="head")
    print(f"  attribution patching vs exact patching on {name}: r = {interpret.agreement(est, exact):.3f} "
          f"over {exact.values.numel()} heads")


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="shakespeare-char,minilm,smollm2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-transformer-lens", action="store_true", help="skip the side-by-side with TransformerLens")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name in [n for n in args.models.split(",") if n]:
        loaded = load(name)
        model = loaded.model.eval()
        ids = twelve_tokens(name, loaded.tokenizer)
        print(f"{name} ({model.config.family}, {model.config.n_layers} layers x {model.config.n_heads} heads), "
              f"{ids.shape[1]} tokens, 1 thread")
        for tool, fn in tools(model, ids).items():
            try:
                fn()
            except ValueError as e:
                print(f"  {tool:26s}   n/a  ({str(e)[:70]})")
                continue
            print(f"  {tool:26s} {median_seconds(fn, args.repeats):7.3f} s")
        if model.config.family == "decoder":
            corrupted = ids.clone()
            corrupted[0, 4] = int(ids[0, 5])
            with torch.no_grad():
                top = int(model(ids)[0, -1].argmax())
            print_agreement(name, model, ids, corrupted, metrics.token_logprob(top))
    if not args.no_transformer_lens:
        versus_transformer_lens(args.repeats)


if __name__ == "__main__":
    main()
