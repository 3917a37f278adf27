"""Translation as alignment: what the decoder's cross-attention looks at while it writes each word.

The sentence is translated by the library (``attnlab.translate.translate_text``: greedy or a small
beam, bounded length). Then the model is run once more, teacher-forced over its own translation
(``model(source + </s>, <s> + output)``) through ``run_with_cache``, and each decoder layer's
``cross_attn.hook_weights`` is returned as it was recorded: row i is the decoder position that has
read ``<s> t_0 .. t_{i-1}`` and writes ``t_i`` (the last row writes ``</s>``); its columns are the
source tokens. Nothing here re-derives attention (Bahdanau et al. 2015 drew the same picture for an
RNN; in a Transformer every layer and head has its own).
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from attnlab.generate import GenerationError
from attnlab.inspect import hook_name, run_with_cache
from attnlab.translate import bos_eos_ids, translate_text
from attnlab.web import schemas as s
from attnlab.web.errors import PayloadError
from attnlab.web.models import MAX_TOKENS, get_model, model_info, model_input, model_lock, tokenize
from attnlab.web.view import Mount


def routes(router: APIRouter, mount: Mount) -> None:
    """``POST /api/translate``: ``translate(TranslateRequest)`` in a worker, as a long route (one slot)."""

    @router.post("/api/translate", responses=mount.errors(404, 503), name="translate")
    async def translate_route(request: Request, req: s.TranslateRequest) -> s.TranslateResponse:
        return await mount.heavy(request, translate, req, long=True)


def translate(req: s.TranslateRequest) -> s.TranslateResponse:
    info = model_info(req.model)
    if info.family != "encoder-decoder":  # checked before loading: no reason to wait for a model we cannot use
        raise PayloadError(
            f"translation needs an encoder-decoder model (source -> target, with cross-attention); "
            f"{req.model!r} is {info.family}-only" if info.family in ("encoder", "decoder") else
            f"translation needs an encoder-decoder model; {req.model!r} is {info.family}"
        )
    loaded = get_model(req.model)
    tokenizer = loaded.tokenizer
    bos_eos = bos_eos_ids(tokenizer)
    if bos_eos is None:
        raise PayloadError(
            f"model {req.model!r} has no <s> and </s> tokens: it is an encoder-decoder but not a trained translator"
        )
    bos, eos = bos_eos
    max_len = loaded.config.max_len
    tokenize(loaded, req.text, limit=min(MAX_TOKENS, max_len) - 1)  # the limits, with room for </s>
    with model_lock(loaded.name):
        try:
            result = translate_text(loaded.model, tokenizer, req.text, beam_size=req.beam_size,
                                    max_new_tokens=req.max_new_tokens)  # kept within max_len by translate_text
        except (GenerationError, ValueError) as exc:
            raise PayloadError(f"cannot translate this text: {exc}") from None
        source, output = list(result.source_ids), list(result.target_ids)
        src, tgt = model_input(loaded, source), model_input(loaded, [bos, *output])
        names = [hook_name("decoder", layer, "cross_attn.hook_weights")
                 for layer in range(loaded.config.n_decoder_layers or 0)]
        if not names:
            raise PayloadError(f"model {req.model!r} has no decoder layers")
        _, cache = run_with_cache(loaded.model, src, tgt, names=names, device="cpu")
    layers = [cache[n][0].double() for n in names]  # each (heads, target, source)
    return s.TranslateResponse(
        model=loaded.name, text=result.text, logprob=float(result.logprob), beam_size=req.beam_size,
        source_tokens=[str(t) for t in tokenizer.tokens(source)],
        target_tokens=[str(t) for t in tokenizer.tokens([*output, eos])],
        decoder_input_tokens=[str(t) for t in tokenizer.tokens([bos, *output])],
        n_layers=len(layers), n_heads=layers[0].shape[0],
        weights=[w.tolist() for w in layers], mean_weights=[w.mean(dim=0).tolist() for w in layers], hooks=names,
    )
