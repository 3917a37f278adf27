// Data: talks to the JSON API and holds what the page currently shows. No drawing here.

import { SITE, staticCall } from "./site.js";

export class ApiError extends Error {}

// One JSON request: GET without `body`, else POST it (the static edition: its recorded answer); an error answer throws ApiError with its `detail`.
export async function call(path, body) {
  if (SITE) return staticCall(path, body, (detail) => new ApiError(detail)); // the static edition (site.js)
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof data.detail === "string" ? data.detail
      : Array.isArray(data.detail) ? data.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ")
      : response.statusText;
    throw new ApiError(detail);
  }
  return data;
}

export const api = {
  models: () => call("/api/models"),
  load: (model) => call(`/api/models/${encodeURIComponent(model)}/load`, {}),
  architecture: () => call("/api/architecture"),
  contentIndex: () => call("/api/content"),
  content: (slug) => call(`/api/content/${encodeURIComponent(slug)}`),
  attention: (model, text) => call("/api/attention", { model, text }),
  qkv: (model, text, layer, head, focus) => call("/api/qkv", { model, text, layer, head, focus }),
  shape: (model) => call("/api/shape", { model }),
  ffn: (model, text, layer, focus) => call("/api/ffn", { model, text, layer, focus }),
  part: (model, text, part, layer = 0, { head = 0, tensors = true } = {}) => call("/api/part", { model, text, part, layer, head, tensors }),
  positions: (model) => call("/api/positions", { model }),
  generate: (request) => call("/api/generate", request),
  timeline: (model) => call(`/api/timeline?model=${encodeURIComponent(model)}`),
  timelineAttention: (model, step, layer, head) => call("/api/timeline/attention", { model, step, layer, head }),
  translate: (model, text, beam_size) => call("/api/translate", { model, text, beam_size }),
  experiments: () => call("/api/experiments"),
  tour: () => call("/api/tour"),
  tourStep: (n) => call(`/api/tour/${n}`),
  nextToken: (model, text) => call("/api/next-token", { model, text }),
  rankHeads: (model, text, query, key) => call("/api/heads/rank", { model, text, query, key }),
  headContexts: (model, layer, head, k = 10) => call("/api/heads/contexts", { model, layer, head, k }),
  ablation: (model, text, layer, head) => call("/api/ablation", { model, text, layer, head }),
};

export const DEFAULT_SENTENCE = "John gave the book to Sarah because she liked it.";

// The page's state. `payloads` keeps the last JSON each view drew (exported by the JSON button).
export const state = {
  models: [],
  model: null,
  text: DEFAULT_SENTENCE,
  variant: "encoder-decoder",
  variantPicked: false, // the reader chose a family with the buttons (else: the current model's)
  part: null,
  layer: 0,
  head: 0, // a number, or "mean" for the average over heads
  focus: null, // null: defaultFocus of the sentence
  key: null, // the head finder's key token (null: none chosen)
  genStep: 0,
  timelineIndex: 0,
  tlLayer: null, // null: the head that learned most (GET /api/timeline: learning_layer, learning_head)
  tlHead: null,
  tlModel: null, // the model tlLayer/tlHead belong to
  tlFromUrl: false, // tlLayer/tlHead came from the URL (kept over the learning head)
  trModel: null,
  trLayer: null, // null: the last layer
  trHead: "mean",
  trFocus: 0,
  expRuns: {}, // experiment name -> index of the result set shown
  payloads: {},
};

export function currentModel() {
  return state.models.find((m) => m.name === state.model) || null;
}

// The URL hash remembers the view, its selection and its state: #arch/enc-attn, #learn/scaling, #tour/3,
// #attention?model=minilm&text=...&layer=5&head=3&query=8&key=6.
export function parseHash(hash) {
  const [path, query = ""] = hash.replace(/^#/, "").split("?");
  const [view, arg] = path.split("/");
  const params = Object.fromEntries(new URLSearchParams(query));
  return { view: view || "tour", arg: arg ? decodeURIComponent(arg) : null, params };
}

export function formatHash(view, arg, params = null) {
  const base = arg ? `#${view}/${encodeURIComponent(arg)}` : `#${view}`;
  const entries = Object.entries(params || {}).filter(([, v]) => v !== null && v !== undefined && v !== "");
  return entries.length ? `${base}?${new URLSearchParams(entries).toString()}` : base;
}

// The index of the token spelled `word` (case and the tokenizers' space markers ignored), or null.
export function findToken(tokens, word) {
  if (word === null || word === undefined) return null;
  const norm = (t) => String(t).replace(/^(Ġ|▁|##)/, "").trim().toLowerCase();
  const i = tokens.findIndex((t) => norm(t) === norm(word));
  return i < 0 ? null : i;
}

// The focus a view starts on: the default sentence's pronoun "she" when present, else the last token
// (never token 0 of a causal model, whose only possible weight is 1 on itself).
export function defaultFocus(tokens) {
  const she = findToken(tokens, "she");
  if (she !== null) return she;
  const last = tokens.length - 1;
  return last > 0 && /^\[SEP\]$|^<\/s>$/.test(tokens[last]) ? last - 1 : last;
}

// The next-token distribution the sampler draws from, computed in the page so the sliders redraw at
// once. It follows attnlab.generate.sampling_distribution rule for rule (a browser test checks them
// equal): temperature 0 is greedy (all mass on the first highest logit); else logits / T, then top-k
// keeps every logit >= the k-th largest (ties kept), then top-p drops each token whose higher-ranked
// tokens already hold p of the mass, then a softmax.
export function samplingDistribution(logits, { temperature = 1, top_k = 0, top_p = 1 } = {}) {
  const n = logits.length;
  const out = new Float64Array(n);
  if (temperature === 0) {
    let best = 0;
    for (let i = 1; i < n; i += 1) if (logits[i] > logits[best]) best = i;
    out[best] = 1;
    return out;
  }
  const z = Array.from(logits, (v) => v / temperature);
  if (top_k > 0 && top_k < n) {
    const kth = [...z].sort((a, b) => b - a)[top_k - 1];
    for (let i = 0; i < n; i += 1) if (z[i] < kth) z[i] = -Infinity;
  }
  if (top_p < 1) {
    const order = z.map((_, i) => i).sort((a, b) => z[b] - z[a] || a - b); // stable, highest first
    const p = softmax(order.map((i) => z[i]));
    let before = 0;
    order.forEach((i, r) => { if (before >= top_p) z[i] = -Infinity; before += p[r]; });
  }
  return Float64Array.from(softmax(z));
}

export function softmax(values) {
  let m = -Infinity;
  for (const v of values) if (v > m) m = v;
  const e = values.map((v) => (v === -Infinity ? 0 : Math.exp(v - m)));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

// Bars for the sliders: the `n` tokens with the highest logits, softmax(logits / T) and the filtered
// distribution, in the shape views.probabilityBars draws.
export function nextTokenCandidates(data, settings, n = 12) {
  const ids = Object.keys(data.labels).map(Number).sort((a, b) => data.logits[b] - data.logits[a]).slice(0, n);
  const T = settings.temperature || 1;
  const plain = softmax(data.logits.map((v) => v / T));
  const kept = samplingDistribution(data.logits, settings);
  return { id: null, candidates: ids.map((id) => ({ token: data.labels[id], id, prob: plain[id], kept: kept[id] })) };
}

// A model's line in the model lists: its name, family, and whether its files are missing.
export function modelLabel(m) {
  return `${m.name} (${m.family}${m.available ? "" : ", not installed"})`;
}

// The sentence a URL names: its text=, else (a deep link that names a selection but no sentence) the view's
// default sentence, never the previous page's; a bare tab link (no parameters) keeps the current one.
export function linkedText(params, current, fallback) {
  if (params.text) return params.text;
  return Object.keys(params).length ? fallback : current;
}
