"""The Order & masks view: the sinusoidal table, and two word orders through an encoder with and without
its positions (``POST /api/positions``). Its page side is ``static/order.js`` (which also draws a causal
mask and one layer's heads from ``POST /api/attention``).
"""

from __future__ import annotations

import threading

import torch
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from torch import nn

from attnlab import catalog as cat
from attnlab.generate import model_device
from attnlab.inspect import hook_name
from attnlab.models import sinusoidal_table
from attnlab.models.variants import without_positions
from attnlab.web import schemas as s
from attnlab.web.errors import PayloadError
from attnlab.web.models import forward, get_model, model_copy, model_input, on_unload, tokenize
from attnlab.web.payloads import _floats
from attnlab.web.view import Mount


class OrderRequest(s.Request):
    model: str = s.Model
    first: str = Field(default="Jake learned AI", min_length=1, max_length=s.MAX_CHARS, description=s._TOKENS)
    second: str = Field(default="AI learned Jake", min_length=1, max_length=s.MAX_CHARS, description=s._TOKENS)


class OrderComparison(BaseModel):
    positions: bool
    distances: list[list[float]] = Field(description="|out_first[i] - out_second[j]|, from the last hook_resid_post")
    nearest: list[float] = Field(description="for each token of the first sentence, distance to its closest match")


class PositionsResponse(BaseModel):
    table: list[list[float]] = Field(description="sinusoidal PE(pos, dim), attnlab.nn.positions")
    model: str | None
    model_positions: str | None
    first_tokens: list[str]
    second_tokens: list[str]
    comparisons: list[OrderComparison]
    note: str | None = None


def routes(router: APIRouter, mount: Mount) -> None:
    """``POST /api/positions``: ``positions(OrderRequest)`` in a worker."""

    @router.post("/api/positions", responses=mount.errors(404, 503), name="positions")
    async def positions_route(request: Request, req: OrderRequest) -> PositionsResponse:
        return await mount.heavy(request, positions, req)


_UNPOSITIONED: dict[tuple[str, str], nn.Module] = {}  # (name, device) -> the copy
_UNPOSITIONED_LOCK = threading.Lock()


def _forget_unpositioned(name: str) -> None:
    with _UNPOSITIONED_LOCK:
        for key in [k for k in _UNPOSITIONED if k[0] == name]:
            del _UNPOSITIONED[key]


on_unload(_forget_unpositioned)  # the copy goes with the model


def _without_positions(loaded: cat.LoadedModel) -> nn.Module:
    """A copy of the model with its positional information removed (absolute table or rotary), on the
    model's device (kept per device: a copy made for one is never handed to a model on another)."""
    key = (loaded.name, str(model_device(loaded.model)))
    with _UNPOSITIONED_LOCK:
        if key not in _UNPOSITIONED:
            _UNPOSITIONED[key] = model_copy(loaded, without_positions)
        return _UNPOSITIONED[key]


def _order_model(name: str | None) -> cat.LoadedModel | None:
    """The model for the order experiment: the chosen one if it is an encoder, else the first available encoder."""
    if name:
        chosen = get_model(name)
        if chosen.config.family == "encoder":
            return chosen
    for info in cat.catalog():
        if info.family == "encoder" and info.available:
            return get_model(info.name)
    return None


def positions(req: OrderRequest) -> PositionsResponse:
    """The sinusoidal table, and two word orders through an encoder with and without positions."""
    table = _floats(sinusoidal_table(50, 64))
    loaded = _order_model(req.model)
    if loaded is None:
        return PositionsResponse(
            table=table, model=None, model_positions=None, first_tokens=[], second_tokens=[], comparisons=[],
            note="the order experiment needs an encoder model (bidirectional); none is available",
        )
    first_ids, first_tokens = tokenize(loaded, req.first)
    second_ids, second_tokens = tokenize(loaded, req.second)
    if sorted(first_ids) != sorted(second_ids):
        raise PayloadError("the two sentences must hold the same tokens in a different order")
    from attnlab.inspect import run_with_cache  # the position-free copy is run the same way

    last = hook_name("encoder", loaded.config.n_layers - 1, "hook_resid_post")  # the last block's output
    comparisons = []
    for positioned, model in ((True, loaded.model), (False, _without_positions(loaded))):
        outs = []
        for ids in (first_ids, second_ids):
            if positioned:
                _, cache = forward(loaded, ids, names=last)
            else:
                with _UNPOSITIONED_LOCK:
                    _, cache = run_with_cache(model, model_input(model, ids), names=last, device="cpu")
            outs.append(cache[last][0].double())
        dist = torch.cdist(outs[0], outs[1])
        comparisons.append(OrderComparison(positions=positioned, distances=dist.tolist(), nearest=dist.min(dim=1).values.tolist()))
    note = None if req.model == loaded.name else f"shown with the encoder {loaded.name!r}: a decoder's causal mask already breaks the symmetry"
    return PositionsResponse(
        table=table, model=loaded.name, model_positions=loaded.config.positions, first_tokens=first_tokens,
        second_tokens=second_tokens, comparisons=comparisons, note=note,
    )
