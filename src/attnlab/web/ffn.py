"""The model strip's facts and the feed-forward step: a model's shape (``POST /api/shape``) and one token
through one block's feed-forward network (``POST /api/ffn``), both served with the Architecture view's routes
(``web/arch.py``).

The shape is the model's own config (``TransformerConfig``: depth, width, heads, what its blocks hold) with the
diagram drawn for it (``diagram.variant_of``). The feed-forward numbers are hook points' (``ff.hook_pre``,
``ff.hook_hidden``, ``ff.hook_out``, ``hook_resid_mid``, ``hook_resid_post`` via ``run_with_cache``); the one
sum computed here, the residual stream plus the feed-forward output, is reported with its distance from
``hook_resid_post`` (zero up to rounding in a pre-norm block; a post-norm block normalises the sum after it).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from attnlab.inspect import hook_points
from attnlab.web import diagram
from attnlab.web import schemas as s
from attnlab.web.errors import PayloadError
from attnlab.web.models import forward, get_model, self_attention_stack, tokenize
from attnlab.web.payloads import _check_index, _floats
from attnlab.web.view import Mount


class ShapeRequest(s.Request):
    model: str = s.Model


class ShapeResponse(BaseModel):
    model: str
    family: str = Field(description="encoder | decoder | encoder-decoder")
    n_layers: int = Field(description="blocks of the encoder (encoder-only and encoder-decoder) or of the decoder (decoder-only)")
    n_decoder_layers: int | None = Field(description="blocks of the decoder of an encoder-decoder, else null")
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    attn_only: bool = Field(description="blocks without a feed-forward sub-layer")
    norm: str = Field(description="layernorm | rmsnorm")
    norm_placement: str = Field(description="pre (x + f(norm(x))) | post (norm(x + f(x)))")
    positions: str = Field(description="sinusoidal | learned | rotary | none")
    activation: str
    output: str | None = Field(description="'vocabulary' (next or masked token), 'classes' or null (no output head)")
    variant: s.Variant = Field(description="the architecture diagram of its family, as this model has it")


def shape(req: ShapeRequest) -> ShapeResponse:
    """The chosen model's shape from its config, and the diagram of what its blocks really hold."""
    loaded = get_model(req.model)
    c = loaded.config
    output = ("classes" if c.n_classes else "vocabulary") if "hook_logits" in hook_points(loaded.model) else None
    return ShapeResponse(
        model=loaded.name, family=c.family, n_layers=c.n_layers,
        n_decoder_layers=c.n_decoder_layers if c.family == "encoder-decoder" else None, d_model=c.d_model,
        n_heads=c.n_heads, n_kv_heads=c.n_kv_heads, d_ff=c.d_ff, attn_only=c.attn_only, norm=c.norm,
        norm_placement=c.norm_placement, positions=c.positions, activation=c.activation, output=output,
        variant=diagram.variant_of(c),
    )


class FFNRequest(s.TextRequest):
    layer: int = s.Layer
    focus: int = Field(default=0, ge=0, le=s.MAX_TOKENS - 1, description="index of the token; past the text's tokens: 422")


class FFNResponse(BaseModel):
    model: str
    tokens: list[str]
    layer: int
    focus: int
    activation: str = Field(description="relu | gelu | gelu_tanh | swiglu (then 'before' is the gate's input)")
    norm_placement: str
    d_model: int
    d_ff: int
    before: list[float] = Field(description="ff.hook_pre[focus]: what enters the non-linearity, (d_ff,)")
    after: list[float] = Field(description="ff.hook_hidden[focus]: the hidden layer after it, (d_ff,)")
    negative_before: int = Field(description="units of `before` below 0")
    negative_after: int = Field(description="units of `after` below 0")
    zero_after: int = Field(description="units of `after` exactly 0")
    stream: list[float] = Field(description="hook_resid_mid[focus]: the residual stream entering the feed-forward sub-layer")
    out: list[float] = Field(description="ff.hook_out[focus]: what the feed-forward network adds")
    added: list[float] = Field(description="stream + out, the residual addition")
    result: list[float] = Field(description="hook_resid_post[focus]: the block's output")
    max_add_error: float = Field(description="max |stream + out - hook_resid_post|: rounding in a pre-norm block; a "
                                             "post-norm block normalises the sum, so there it is the norm's change")
    hooks: dict[str, str]


def ffn(req: FFNRequest) -> FFNResponse:
    """One token through block ``req.layer``'s feed-forward network, from its hook points."""
    loaded = get_model(req.model)
    if loaded.config.attn_only:
        raise PayloadError(f"model {loaded.name!r} is attention-only: its blocks have no feed-forward network")
    ids, tokens = tokenize(loaded, req.text)
    stack = self_attention_stack(loaded)
    _check_index("layer", req.layer, stack.n_layers)
    _check_index("focus token", req.focus, len(ids))
    points = {"before": "ff.hook_pre", "after": "ff.hook_hidden", "out": "ff.hook_out", "stream": "hook_resid_mid",
              "result": "hook_resid_post"}
    names = {k: stack.name(req.layer, p) for k, p in points.items()}
    _, cache = forward(loaded, ids, names=list(names.values()))
    row = {k: cache[n][0, req.focus].double() for k, n in names.items()}
    added = row["stream"] + row["out"]
    return FFNResponse(
        model=loaded.name, tokens=tokens, layer=req.layer, focus=req.focus, activation=loaded.config.activation,
        norm_placement=loaded.config.norm_placement, d_model=loaded.config.d_model, d_ff=row["after"].shape[-1],
        before=_floats(row["before"]), after=_floats(row["after"]), negative_before=int((row["before"] < 0).sum()),
        negative_after=int((row["after"] < 0).sum()), zero_after=int((row["after"] == 0).sum()),
        stream=_floats(row["stream"]), out=_floats(row["out"]), added=_floats(added), result=_floats(row["result"]),
        max_add_error=float((added - row["result"]).abs().max()), hooks=names,
    )


def routes(router: APIRouter, mount: Mount) -> None:
    """``POST /api/shape`` and ``POST /api/ffn`` (in a worker: each may load the model)."""

    @router.post("/api/shape", responses=mount.errors(404, 503), name="shape")
    async def shape_route(request: Request, req: ShapeRequest) -> ShapeResponse:
        return await mount.heavy(request, shape, req)

    @router.post("/api/ffn", responses=mount.errors(404, 503), name="ffn")
    async def ffn_route(request: Request, req: FFNRequest) -> FFNResponse:
        return await mount.heavy(request, ffn, req)
