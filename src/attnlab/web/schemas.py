"""The JSON API's request and response types (FastAPI publishes them as the OpenAPI schema).

Every limit the server enforces on a request is stated here, in the schema, where JSON Schema can say
it (lengths, ranges, types). Requests are validated in pydantic's strict mode: ``false`` is not an
integer and ``"1"`` is not a number. What depends on the model chosen (its number of layers and heads,
its token limit, the characters its tokenizer knows) cannot be written in the schema; the bounds here
are the largest any model may use, and a value past the chosen model's own size is a 422 whose
``detail`` names the limit (``ErrorBody``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from attnlab.web.models import MAX_CHARS, MAX_TOKENS

DEFAULT_SENTENCE = "John gave the book to Sarah because she liked it."
MAX_NEW_TOKENS = 40
MAX_BEAM = 4
MAX_TRANSLATION_TOKENS = 64
MAX_LAYER = 255  # the largest layer / head index a request may name (models are far smaller)
MAX_HEAD = 255
MAX_STEP = 2**31 - 1
MAX_TOP_K = 1_000_000
# torch.Generator.manual_seed takes 64 bits, but a JSON number is exact only up to 2**53 - 1 (I-JSON, RFC
# 7493; JavaScript); a larger bound is written in the schema as a float that rounds up past it.
MAX_SEED = 2**53 - 1
MAX_NAME = 100


_TOKENS = (f"at most {MAX_CHARS} characters, and at most {MAX_TOKENS} tokens of the chosen model (fewer when "
           "its context is shorter); text the model's tokenizer cannot encode, or over its token limit, is a 422")
Text = Field(default=DEFAULT_SENTENCE, min_length=1, max_length=MAX_CHARS, description=_TOKENS)
Model = Field(min_length=1, max_length=MAX_NAME, examples=["shakespeare-char"],
              description="a catalogue name from GET /api/models; unknown: 404, known but not installed: 503")
Layer = Field(default=0, ge=0, le=MAX_LAYER, description="block index; past the chosen model's depth: 422")
Head = Field(default=0, ge=0, le=MAX_HEAD, description="head index; past the chosen model's heads: 422")


class Request(BaseModel):
    """Base of every request body: unknown keys are refused, and types are strict (no coercion)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), strict=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _json_integers(cls, value: object, info: ValidationInfo) -> object:
        """JSON counts ``37.0`` as the integer 37 (JSON Schema's ``integer``), strict pydantic would not:
        an ``int`` field takes a number with no fraction. ``true`` and ``"3"`` are still refused."""
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and field.annotation is int and isinstance(value, float) and value.is_integer():
            return int(value)
        return value


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where in the request: 'body', then the field names / indices")
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every 4xx answer: ``detail`` is one line naming the problem; ``errors`` lists schema violations."""

    detail: str
    errors: list[FieldError] = Field(default=[], description="one entry per field that broke the schema (422 only)")


class EmptyRequest(Request):
    """A JSON object with nothing in it: state-changing routes take a JSON body so that a plain
    cross-site form cannot call them."""


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
    token_kind: str = Field(default="subword", description="'character' (every letter a token) or 'subword'")
    preferred_view: str | None = Field(default=None, description="the view it is made for: encoder, generate or translate")
    demo: bool = Field(default=False, description="a tiny random-weight stand-in (serve --demo)")


class ModelsResponse(BaseModel):
    models: list[ModelSummary]
    default: str | None
    note: str | None = None
    views: dict[str, str | None] = Field(default={}, description="the model each kind of view starts with: encoder, generate, translate")
    device: str = Field(default="cpu", description="where the models run (attnlab serve --device): cpu, cuda:0, mps")


class TextRequest(Request):
    model: str = Model
    text: str = Text


class HeadRoleOut(BaseModel):
    role: str | None
    scores: dict[str, float]


class CorpusRolesOut(BaseModel):
    """Every head's role scores over the corpus (attnlab.interpret.corpus), from the latest
    corpus pass of the model in this server (POST /api/heads/contexts)."""

    sentences: int
    thresholds: dict[str, float]
    cases: dict[str, int]
    scores: dict[str, list[list[float | None]]] = Field(description="role -> (layer, head)")
    roles: list[list[list[str]]] = Field(description="(layer, head): the roles given, best margin first")


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
    corpus_roles: CorpusRolesOut | None = Field(
        default=None, description="every head's roles over a corpus, once POST /api/heads/contexts has run for this model")


class PartRequest(TextRequest):
    part: str = Field(max_length=MAX_NAME, description="a part of the diagram (GET /api/architecture); unknown: 422")
    layer: int = Layer
    head: int = Field(default=0, ge=0, le=MAX_HEAD,
                      description="attention parts: the head whose strongest keys ``tokens`` lists; past the model's heads: 422")
    tensors: bool = Field(default=True, description="false: leave out the heatmaps (``tensors``), keep the per-token "
                                                    "summary and ``top`` (what the diagram's hover card shows)")


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


class VectorSummary(BaseModel):
    """One token's vector in one recorded tensor, over all its numbers (a heatmap shows only the first columns)."""

    hook: str
    label: str
    first: list[float] = Field(description="the vector's first numbers")
    norm: float = Field(description="its length (L2 norm)")
    mean: float = Field(description="the mean of its numbers")
    std: float = Field(description="the standard deviation of its numbers (population, as LayerNorm computes it)")


class AttendedKey(BaseModel):
    key: int = Field(description="index of the key token")
    token: str
    weight: float


class TokenSummary(BaseModel):
    """What one token's rows of a part hold, in a few numbers: what the diagram's hover card prints."""

    position: int
    token: str
    id: int
    vectors: list[VectorSummary] = Field(default=[], description="one per recorded (token x width) tensor of the part")
    attends: list[AttendedKey] = Field(default=[], description="attention parts: the keys head ``head`` weighs most, "
                                                               "highest first (masked keys, weight 0, left out)")


class PartResponse(BaseModel):
    part: str
    model: str
    available: bool
    reason: str | None = None
    formula: str | None = Field(default=None, description="what the part computes in this model, with its sizes")
    tensors: list[TensorView] = []
    top: list[list[TopToken]] = Field(default=[], description="per position: highest logits or probabilities")
    top_label: str | None = None
    tokens: list[TokenSummary] = Field(default=[], description="per token of the part's stack: its summary")


class GenerateRequest(Request):
    model: str = Field(default=..., min_length=1, max_length=MAX_NAME, examples=["shakespeare-char"],
                       description="a decoder from GET /api/models (another family: 422; unknown: 404; not installed: 503)")
    text: str = Field(default="ROMEO:", min_length=1, max_length=MAX_CHARS,
                      description=_TOKENS + "; the prompt and the new tokens must fit in the model's context")
    max_new_tokens: int = Field(default=12, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(default=1.0, ge=0.0, le=5.0, description="0 = greedy")
    top_k: int = Field(default=0, ge=0, le=MAX_TOP_K, description="0 = off; more than the vocabulary: 422")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="at most 2**53 - 1, the largest integer exact in JSON")


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
    learning_layer: int = Field(description="layer of the head whose attention changed most from the first to the last snapshot")
    learning_head: int = Field(description="that head (the view opens on it)")
    learning_change: float = Field(description="its mean total-variation distance between first and last snapshot, in [0, 1]")


class TimelineAttentionRequest(Request):
    model: str = Field(default="bible-bpe", min_length=1, max_length=MAX_NAME,
                       description="a model with a timeline (GET /api/models: `timeline`); without one: 404")
    step: int = Field(ge=0, le=MAX_STEP, description="a snapshot's training step (GET /api/timeline); another: 422")
    layer: int = Layer
    head: int = Head


class TimelineAttentionResponse(BaseModel):
    model: str
    step: int
    layer: int
    head: int
    tokens: list[str]
    weights: list[list[float]]
    role: HeadRoleOut
    role_steps: list[int] = Field(description="every snapshot's step, in order: the x axis of role_scores")
    role_scores: dict[str, list[float | None]] = Field(
        description="role -> this head's score at each of role_steps (attnlab.interpret.corpus roles on the "
                    "timeline sentence; induction on repeated random tokens); null: the sentence has no case")
    role_thresholds: dict[str, float] = Field(description="role -> the score at which a head is given the role")
    role_summary: str = Field(description="one sentence per role, computed from role_scores and role_thresholds")


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
    content: str = Field(description="slug of the part's explanation page (GET /api/content/{slug})")


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
    unloaded: list[str] = Field(default=[], description="large models unloaded to make room (least recently used first)")


class ModelUnloadResponse(BaseModel):
    name: str
    loaded: bool = Field(description="false: the model is no longer held (it loads again on its next use)")
    was_loaded: bool


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
    runs_dir: str = Field(description="where this server looks for your runs, relative to its working folder "
                          "(or home) when inside it: the page is never shown an absolute path")
    note: str
    skipped: list[str] = Field(default=[], description="result files that could not be shown, each "
                               "'folder/results.json: why' (relative to the runs folder)")


class TranslateRequest(Request):
    model: str = Field(default="translator", min_length=1, max_length=MAX_NAME,
                       description="an encoder-decoder translator from GET /api/models (another family: 422)")
    text: str = Field(default="The word of Yahweh came to me, saying,", min_length=1,
                      max_length=MAX_CHARS, description=_TOKENS)
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
    predict: bool = Field(default=False, description="the page asks the learner first and draws the figure after the answer")


class TourClaim(BaseModel):
    slot: str = Field(description="the slot of the step's Markdown, e.g. 'weight it book' (see attnlab.web.claims)")
    text: str = Field(description="the text it was rendered as")
    values: list[float] = Field(default=[], description="the numbers behind the text, from the widget's payload")


class TourStep(BaseModel):
    n: int = Field(description="1-based step number (the page's #tour/N)")
    slug: str
    title: str
    html: str = Field(description="the step's text; in GET /api/tour its computed slots still read {{...}}: "
                                  "GET /api/tour/{n} renders them")
    preset: TourPreset
    note: str | None = Field(default=None, description="set when the preset's model is not installed and another stands in")
    reveal_html: str | None = Field(default=None, description="a predict step's text for after the answer (its slots computed "
                                                              "as html's are); the page adds it only then")
    claims: list[TourClaim] | None = Field(default=None, description="the computed slots (GET /api/tour/{n} only)")
    learn: str | None = Field(default=None, description="the explanation page of this step")
    view: str | None = Field(default=None, description="the explore-freely view this step opens")
    strip: str | None = Field(default=None, description="the parts of the model strip this step is about, space-separated "
                                                        "(embed, position, attention, cross, ffn, residual, output); null: "
                                                        "the whole model (attnlab.web.tour.strip_part)")


class ToyRow(BaseModel):
    """One query's arithmetic in the toy (the page redraws it when a token is clicked)."""

    q: list[float]
    dots: list[float]
    scores: list[float] = Field(description="q . k / sqrt(d_k), recorded by attnlab.nn.attention's score hook")
    weights: list[float]
    output: list[float]


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
    rows: list[ToyRow] = Field(description="every query's arithmetic, one per token (rows[query] is the fields above)")


class TourResponse(BaseModel):
    steps: list[TourStep]
    toy: ToyAttention


class FinderRequest(TextRequest):
    query: int = Field(ge=0, le=MAX_TOKENS - 1, description="index of the query token; past the text's tokens: 422")
    key: int = Field(ge=0, le=MAX_TOKENS - 1, description="index of the key token; past the text's tokens: 422")


class RankedHead(BaseModel):
    layer: int
    head: int
    label: str = Field(description="'L{layer} H{head}', as in the layers x heads grid")
    weight: float = Field(description="hook_weights[layer][head, query, key]")
    others: float = Field(description="mean weight on the key from the other real queries that can see it "
                                      "(special tokens and the key itself left out)")
    specificity: float = Field(description="weight - others: > 0 when this query singles the key out")
    link: bool = Field(description="specificity >= the response's threshold")
    verdict: str


class FinderResponse(BaseModel):
    model: str
    tokens: list[str]
    query: int
    key: int
    causal: bool
    special: list[int] = Field(description="positions of special tokens ([CLS], [SEP], BOS), left out of 'others'")
    others: int = Field(description="how many other real queries the 'others' mean is over")
    threshold: float = Field(description="a head is a link when its specificity is at least this")
    heads: list[RankedHead] = Field(description="every head, highest specificity first")


class NextTokenRequest(Request):
    model: str = Model
    text: str = Field(default="John gave the book to Sarah because she", min_length=1, max_length=MAX_CHARS,
                      description=_TOKENS)


class NextTokenResponse(BaseModel):
    model: str
    prompt_tokens: list[str]
    prompt_ids: list[int] = Field(description="the prompt's token ids (the tour's next-token question "
                                                          "draws distractors from them)")
    hook: str = Field(description="the hook the logits were read from")
    logits: list[float] = Field(description="hook_logits at the last position, one per vocabulary entry")
    labels: dict[str, str] = Field(description="token id -> label, for the highest logits")
