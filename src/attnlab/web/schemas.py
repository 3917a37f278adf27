"""The JSON API's request and response types (FastAPI publishes them as the OpenAPI schema)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from attnlab.web.models import MAX_CHARS

DEFAULT_SENTENCE = "John gave the book to Sarah because she liked it."
MAX_NEW_TOKENS = 40

Text = Field(default=DEFAULT_SENTENCE, max_length=MAX_CHARS, description=f"at most {MAX_CHARS} characters")


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelSummary(BaseModel):
    name: str
    family: str
    description: str
    n_params: str
    source: str
    licence: str
    available: bool
    install_hint: str
    timeline: bool = Field(description="ships training snapshots for the timeline view")


class ModelsResponse(BaseModel):
    models: list[ModelSummary]
    default: str | None
    note: str | None = None


class TextRequest(Request):
    model: str
    text: str = Text


class HeadRoleOut(BaseModel):
    role: str | None
    scores: dict[str, float]


class AttentionResponse(BaseModel):
    model: str
    family: str
    causal: bool
    stack: str = Field(description="hook-name prefix of the stack shown ('' or 'encoder.')")
    tokens: list[str]
    ids: list[int]
    n_layers: int
    n_heads: int
    weights: list[list[list[list[float]]]] = Field(description="(layer, head, query, key), from hook_weights")
    mean_weights: list[list[list[float]]] = Field(description="(layer, query, key): hook_weights averaged over heads")
    roles: list[list[HeadRoleOut]] = Field(description="(layer, head), from attnlab.inspect.roles")


class QKVRequest(TextRequest):
    layer: int = Field(default=0, ge=0)
    head: int = Field(default=0, ge=0)
    focus: int = Field(default=0, ge=0, description="index of the query token")


class QKVResponse(BaseModel):
    model: str
    tokens: list[str]
    layer: int
    head: int
    focus: int
    d_k: int
    sqrt_d_k: float
    query: list[float] = Field(description="hook_q[focus]")
    keys: list[list[float]] = Field(description="hook_k, one row per key token")
    values: list[list[float]] = Field(description="hook_v, one row per key token")
    dots: list[float] = Field(description="q . k for every key")
    scores: list[float | None] = Field(description="hook_scores: scaled and masked (null = masked out)")
    masked: list[bool]
    weights: list[float] = Field(description="hook_weights: softmax of the scores")
    output: list[float] = Field(description="hook_z[focus]: the weighted sum of the values")
    max_scale_error: float = Field(description="max |q.k / sqrt(d_k) - hook_scores| over visible keys")
    hooks: dict[str, str]


class PartRequest(TextRequest):
    part: str
    layer: int = Field(default=0, ge=0)


class TensorView(BaseModel):
    hook: str
    label: str
    shape: list[int]
    rows: list[str]
    values: list[list[float]] = Field(description="rows x first columns of the recorded tensor")
    shown_columns: int
    min: float
    max: float


class TopToken(BaseModel):
    token: str
    value: float


class PartResponse(BaseModel):
    part: str
    model: str
    available: bool
    reason: str | None = None
    tensors: list[TensorView] = []
    top: list[list[TopToken]] = Field(default=[], description="per position: highest logits or probabilities")
    top_label: str | None = None


class OrderRequest(Request):
    model: str
    first: str = "Jake learned AI"
    second: str = "AI learned Jake"


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


class GenerateRequest(Request):
    model: str
    text: str = Field(default="ROMEO:", max_length=MAX_CHARS)
    max_new_tokens: int = Field(default=12, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(default=1.0, ge=0.0, le=5.0, description="0 = greedy")
    top_k: int = Field(default=0, ge=0, description="0 = off")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int = 0


class Candidate(BaseModel):
    token: str
    id: int
    prob: float = Field(description="softmax(logits / temperature)")
    kept: float = Field(description="after top-k / top-p, renormalised (0 if cut)")


class GenerationStep(BaseModel):
    token: str
    id: int
    candidates: list[Candidate]
    attention: list[list[list[float]]] = Field(description="(layer, head, key): the new token's query row")
    cache_length: int = Field(description="positions held in the KV cache after this step")


class GenerateResponse(BaseModel):
    model: str
    prompt_tokens: list[str]
    steps: list[GenerationStep]
    text: str
    engine: str


class Snapshot(BaseModel):
    step: int
    loss: float | None


class LossPoint(BaseModel):
    step: int
    value: float
    series: str


class TimelineResponse(BaseModel):
    model: str
    sentence: str
    snapshots: list[Snapshot]
    curve: list[LossPoint]
    n_layers: int
    n_heads: int


class TimelineAttentionRequest(Request):
    model: str = "shakespeare-char"
    step: int
    layer: int = Field(default=0, ge=0)
    head: int = Field(default=0, ge=0)


class TimelineAttentionResponse(BaseModel):
    model: str
    step: int
    layer: int
    head: int
    tokens: list[str]
    weights: list[list[float]]
    role: HeadRoleOut


class ContentPage(BaseModel):
    slug: str
    title: str
    html: str


class ContentIndex(BaseModel):
    pages: list[dict[str, str]]


class Box(BaseModel):
    id: str
    part: str
    label: str
    x: float
    y: float
    w: float
    h: float
    kind: str
    changed: str | None = None


class Arrow(BaseModel):
    source: str = Field(alias="from")
    target: str = Field(alias="to")

    model_config = ConfigDict(populate_by_name=True)


class Frame(BaseModel):
    label: str
    x: float
    y: float
    w: float
    h: float


class Variant(BaseModel):
    id: str
    title: str
    summary: str
    boxes: list[Box]
    arrows: list[Arrow]
    frames: list[Frame]


class ArchitectureResponse(BaseModel):
    width: float
    height: float
    variants: list[Variant]
