"""Next-token logits for the sampling sliders: sent once, filtered in the page.

The page applies temperature, top-k and top-p itself (``samplingDistribution`` in ``static/model.js``)
so the sliders redraw at once; that function follows ``attnlab.generate.sampling_distribution`` rule
for rule, and a browser test checks the two agree on a table of settings, ties included. The logits
are ``hook_logits`` at the last position of one ``run_with_cache`` forward pass.
"""

from __future__ import annotations

from attnlab.inspect import hook_name
from attnlab.web import schemas as s
from attnlab.web.errors import PayloadError
from attnlab.web.models import forward, get_model, tokenize

N_LABELLED = 200


def next_token(req: s.NextTokenRequest) -> s.NextTokenResponse:
    """All next-token logits after ``req.text``, and the labels of the ``N_LABELLED`` highest."""
    loaded = get_model(req.model)
    if loaded.config.family != "decoder":
        raise PayloadError(f"next-token sampling needs a decoder model; {loaded.name!r} is {loaded.config.family}")
    ids, tokens = tokenize(loaded, req.text)
    name = hook_name(None, None, "hook_logits")
    _, cache = forward(loaded, ids, names=name)
    logits = cache[name][0, -1].double()  # (vocab,)
    top = logits.topk(min(N_LABELLED, logits.numel())).indices.tolist()
    labels = loaded.tokenizer.tokens(top)
    return s.NextTokenResponse(model=loaded.name, prompt_tokens=tokens, prompt_ids=list(ids), hook=name, logits=logits.tolist(),
                               labels={str(i): str(t) for i, t in zip(top, labels, strict=True)})
