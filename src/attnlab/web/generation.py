"""The generation playground: next-token probabilities, sampling controls, attention and the KV cache.

The prompt is run once through the model, then one token at a time with its ``DecodingCache``, as a
real decoder does; each step records the attention row of the position that makes the prediction (its
query against every cached key) with ``run_with_cache``. The token is chosen by the library's sampler
(``attnlab.generate.sample_next``), and the bars show the distribution before and after temperature,
top-k and top-p from the same code (``attnlab.generate.sampling_distribution``).
"""

from __future__ import annotations

import torch

from attnlab.generate import GenerationError, Sampling, sample_next, sampling_distribution
from attnlab.inspect import hook_name, run_with_cache
from attnlab.web import schemas as s
from attnlab.web.errors import PayloadError
from attnlab.web.models import get_model, model_lock, tokenize

N_CANDIDATES = 12


def generate(req: s.GenerateRequest) -> s.GenerateResponse:
    loaded = get_model(req.model)
    if loaded.config.family != "decoder" or not hasattr(loaded.model, "new_cache"):
        raise PayloadError(f"the playground needs a decoder model; {loaded.name!r} is {loaded.config.family}")
    if req.top_k > loaded.tokenizer.vocab_size:
        raise PayloadError(f"top_k is {req.top_k}; the vocabulary has only {loaded.tokenizer.vocab_size} tokens")
    room = loaded.config.max_len - req.max_new_tokens
    ids, prompt_tokens = tokenize(loaded, req.text, limit=min(64, room))
    try:
        sampling = Sampling(temperature=req.temperature, top_k=req.top_k, top_p=req.top_p)
    except GenerationError as exc:
        raise PayloadError(str(exc)) from None
    generator = torch.Generator().manual_seed(req.seed)
    steps: list[s.GenerationStep] = []
    with model_lock(loaded.name):
        kv = loaded.model.new_cache()
        x = torch.tensor([ids])
        layers = [hook_name("decoder", layer, "attn.hook_weights") for layer in range(loaded.config.n_layers)]
        for _ in range(req.max_new_tokens):
            logits, cache = run_with_cache(loaded.model, x, cache=kv, names=layers)
            last = logits[0, -1]
            probs = torch.softmax(last.float() / (req.temperature or 1.0), dim=-1)
            kept = sampling_distribution(last, sampling)
            token = sample_next(last, sampling, generator)
            attention = [cache[n][0, :, -1].double().tolist() for n in layers]  # (layer, head, key)
            best = probs.topk(min(N_CANDIDATES, probs.numel())).indices.tolist()
            if token not in best:
                best[-1] = token
            steps.append(s.GenerationStep(
                token=loaded.tokenizer.tokens([token])[0], id=token,
                candidates=[s.Candidate(token=loaded.tokenizer.tokens([i])[0], id=i, prob=float(probs[i]), kept=float(kept[i])) for i in best],
                attention=attention, cache_length=kv.length,
            ))
            x = torch.tensor([[token]])
    return s.GenerateResponse(
        model=loaded.name, prompt_tokens=prompt_tokens, steps=steps,
        text=loaded.tokenizer.decode(ids + [st.id for st in steps]), engine="attnlab.generate.sample_next, KV cache",
    )
