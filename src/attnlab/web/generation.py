"""The generation playground: next-token probabilities, sampling controls, attention and the KV cache.

The library's decoding loop (``attnlab.generate.stream_ids``) runs the prompt once through the model,
then one token at a time with its ``DecodingCache``, as a real decoder does, and chooses each token
with its sampler (``sample_next``); hooks record, for each step, the logits and the attention row
of the position that makes the prediction (its query against every cached key), read back on the
CPU whatever device the model runs on. The bars show the
distribution before and after temperature, top-k and top-p from the same code
(``attnlab.generate.sampling_distribution``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from torch import Tensor, nn

from attnlab.generate import GenerationError, Sampling, sampling_distribution, stream_ids, tempered_distribution
from attnlab.inspect import hook_name, hooks_attached, math_backend
from attnlab.web import sampling
from attnlab.web import schemas as s
from attnlab.web.errors import PayloadError
from attnlab.web.models import get_model, model_lock, tokenize
from attnlab.web.view import Mount

N_CANDIDATES = 12


def routes(router: APIRouter, mount: Mount) -> None:
    """The Generate view's routes: ``POST /api/next-token`` (``sampling.next_token``: the logits the sliders
    filter) and ``POST /api/generate`` (``generate``, a long route: one slot), each in a worker."""

    @router.post("/api/next-token", responses=mount.errors(404, 503), name="next_token")
    async def next_token_route(request: Request, req: s.NextTokenRequest) -> s.NextTokenResponse:
        return await mount.heavy(request, sampling.next_token, req)

    @router.post("/api/generate", responses=mount.errors(404, 503), name="generate")
    async def generate_route(request: Request, req: s.GenerateRequest) -> s.GenerateResponse:
        return await mount.heavy(request, generate, req, long=True)


def generate(req: s.GenerateRequest) -> s.GenerateResponse:
    loaded = get_model(req.model)
    if loaded.config.family != "decoder" or not loaded.model.can_generate:
        raise PayloadError(f"the playground needs a decoder model; {loaded.name!r} is {loaded.config.family}")
    if req.top_k > loaded.tokenizer.vocab_size:
        raise PayloadError(f"top_k is {req.top_k}; the vocabulary has only {loaded.tokenizer.vocab_size} tokens")
    room = loaded.config.max_len - req.max_new_tokens
    ids, prompt_tokens = tokenize(loaded, req.text, limit=min(64, room))
    try:
        sampling = Sampling(temperature=req.temperature, top_k=req.top_k, top_p=req.top_p)
    except GenerationError as exc:
        raise PayloadError(str(exc)) from None
    layers = [hook_name("decoder", layer, "attn.hook_weights") for layer in range(loaded.config.n_layers)]
    recorded: dict[str, Tensor] = {}  # each step's forward pass overwrites the previous one's

    def record(name: str) -> Callable[[nn.Module, Any, Tensor], None]:
        def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            recorded[name] = output.detach()

        return hook

    steps: list[s.GenerationStep] = []
    hooks = {name: record(name) for name in [*layers, "hook_logits"]}
    with model_lock(loaded.name), math_backend(loaded.model), hooks_attached(loaded.model, hooks):
        # The library's decoding loop (prompt once, then one cached token per step, the same sampler
        # and seed); the hooks hand us the logits and attention each chosen token came from.
        for token, _ in stream_ids(loaded.model, ids, max_new_tokens=req.max_new_tokens, sampling=sampling,
                                   seed=req.seed):
            last = recorded["hook_logits"][0, -1].cpu()
            probs = tempered_distribution(last, sampling)
            kept = sampling_distribution(last, sampling)
            attention = [recorded[n][0, :, -1].cpu().double().tolist() for n in layers]  # (layer, head, key)
            best = probs.topk(min(N_CANDIDATES, probs.numel())).indices.tolist()
            if token not in best:
                best[-1] = token
            steps.append(s.GenerationStep(
                token=loaded.tokenizer.tokens([token])[0], id=token,
                candidates=[s.Candidate(token=loaded.tokenizer.tokens([i])[0], id=i, prob=float(probs[i]), kept=float(kept[i])) for i in best],
                attention=attention, cache_length=len(ids) + len(steps),  # the keys this step's query saw
            ))
            if len(steps) == req.max_new_tokens:
                break  # stop before the loop runs the next token's forward pass
    return s.GenerateResponse(
        model=loaded.name, prompt_tokens=prompt_tokens, steps=steps,
        text=loaded.tokenizer.decode(ids + [st.id for st in steps]), engine="attnlab.generate.sample_next, KV cache",
    )
