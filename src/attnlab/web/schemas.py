"""The JSON API's request and response types (FastAPI publishes them as the OpenAPI schema)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from attnlab.web.models import MAX_CHARS

DEFAULT_SENTENCE = "John gave the book to Sarah because she liked it."
MAX_NEW_TOKENS = 40
MAX_BEAM = 4
MAX_TRANSLATION_TOKENS = 64

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
    loaded: bool = Field(default=False, description="already loaded in this server (the next request will not wait for it)")


class ModelsResponse(BaseModel):
    models: list[ModelSummary]
    default: str | None
    note: str | None = None
    views: dict[str, str | None] = Field(default={}, description="the model each kind of view starts with: encoder, generate, translate")


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
    stack: str = Field(description="the stack shown, 'decoder' or 'encoder' (the first part of its hook names)")
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
    query: list[float] = Field(description="hook_q[focus] (hook_rot_q, after rotation, for rotary models)")
    keys: list[list[float]] = Field(description="hook_k, one row per key token (hook_rot_k for rotary models)")
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
    formula: str | None = Field(default=None, description="what the part computes (shown on hover)")


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


class ModelLoadResponse(BaseModel):
    name: str
    family: str
    loaded: bool
    seconds: float = Field(description="time this request spent loading (0 when it was already loaded)")


class ExperimentFigure(BaseModel):
    file: str
    url: str
    title: str
    caption_html: str = Field(description="how to read this plot, rendered from web/content/experiments/NAME.md")


class ExperimentResultSet(BaseModel):
    id: str = Field(description="'runs/<folder>' (your run) or 'reference/<folder>' (shipped with attnlab)")
    source: str
    label: str
    mode: str
    command: str = Field(description="the command that produced these results, as recorded in results.json")
    summary: list[str]
    notes: list[str]
    machine: dict[str, str]
    elapsed_s: float | None
    figures: list[ExperimentFigure]
    results_url: str


class Experiment(BaseModel):
    name: str
    title: str
    subtitle: str
    intro_html: str
    discussion_html: str
    command: str
    results: list[ExperimentResultSet] = Field(description="your runs first, then the reference run")


class ExperimentsResponse(BaseModel):
    experiments: list[Experiment]
    runs_dir: str = Field(description="where this server looks for your runs")
    note: str


class TranslateRequest(Request):
    model: str = "translator"
    text: str = Field(default="In the beginning God created the heaven and the earth.", max_length=MAX_CHARS)
    beam_size: int = Field(default=1, ge=1, le=MAX_BEAM)
    max_new_tokens: int = Field(default=MAX_TRANSLATION_TOKENS, ge=1, le=MAX_TRANSLATION_TOKENS)


class TranslateResponse(BaseModel):
    model: str
    text: str = Field(description="the translation (decoded output)")
    logprob: float
    beam_size: int
    source_tokens: list[str] = Field(description="the source tokens followed by </s>")
    target_tokens: list[str] = Field(
        description="the token each decoder position writes: the output tokens, then </s> (row i reads <s> t_0 .. t_{i-1})")
    decoder_input_tokens: list[str] = Field(description="what the teacher-forced decoder reads: <s> then the output tokens")
    n_layers: int
    n_heads: int
    weights: list[list[list[list[float]]]] = Field(
        description="(layer, head, target, source): decoder cross_attn.hook_weights of a teacher-forced run over the translation")
    mean_weights: list[list[list[float]]] = Field(description="(layer, target, source): weights averaged over heads")
    hooks: list[str]


# --- the guided tour and the head finder (web/tour.py, web/finder.py) ----------------------------------


class TourPreset(BaseModel):
    widget: str = Field(description="which live widget the step shows (see attnlab.web.tour.WIDGETS)")
    model: str | None = None
    text: str | None = None
    layer: int | None = None
    head: int | None = None
    query: str | None = Field(default=None, description="the focus token, by its text (found in the tokenized sentence)")
    key: str | None = Field(default=None, description="a key token, by its text")
    part: str | None = None
    variant: str | None = None
    experiment: str | None = None
    softmax: bool = False


class TourStep(BaseModel):
    n: int = Field(description="1-based step number (the page's #tour/N)")
    slug: str
    title: str
    html: str
    preset: TourPreset
    note: str | None = Field(default=None, description="set when the preset's model is not installed and another stands in")
    learn: str | None = Field(default=None, description="the explanation page of this step")
    view: str | None = Field(default=None, description="the explore-freely view this step opens")


class ToyAttention(BaseModel):
    tokens: list[str]
    query: int
    d_k: int
    q: list[float]
    keys: list[list[float]]
    values: list[list[float]]
    dots: list[float]
    scores: list[float] = Field(description="q . k / sqrt(d_k), recorded by attnlab.nn.attention's score hook")
    weights: list[float]
    output: list[float]


class TourResponse(BaseModel):
    steps: list[TourStep]
    toy: ToyAttention


class FinderRequest(Request):
    model: str
    text: str = Text
    query: int = Field(ge=0, le=10_000, description="index of the query token")
    key: int = Field(ge=0, le=10_000, description="index of the key token")


class RankedHead(BaseModel):
    layer: int
    head: int
    label: str = Field(description="'L{layer} H{head}', as in the layers x heads grid")
    weight: float = Field(description="hook_weights[layer][head, query, key]")
    others: float = Field(description="mean weight on the key from the other queries that can see it")
    specificity: float = Field(description="weight - others: > 0 when this query singles the key out")
    verdict: str


class FinderResponse(BaseModel):
    model: str
    tokens: list[str]
    query: int
    key: int
    causal: bool
    heads: list[RankedHead] = Field(description="every head, highest weight first")


class NextTokenRequest(Request):
    model: str
    text: str = Field(default="John gave the book to Sarah because she", max_length=MAX_CHARS)


class NextTokenResponse(BaseModel):
    model: str
    prompt_tokens: list[str]
    hook: str = Field(description="the hook the logits were read from")
    logits: list[float] = Field(description="hook_logits at the last position, one per vocabulary entry")
    labels: dict[str, str] = Field(description="token id -> label, for the highest logits")
