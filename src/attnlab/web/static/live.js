// Models run in the browser: the answers of POST /api/attention, /api/qkv and /api/next-token computed
// here, by onnxruntime-web, from the graphs `attnlab.site.onnx.export_model` writes (issue 28, item 2).
//
// A static site holds, relative to the page: `vendor/onnxruntime-web/` (the WebAssembly runtime,
// copied by `attnlab.site.onnx.vendor_runtime`; no CDN) and `models/<name>/` (model.onnx, its
// tokenizer's file, manifest.json). The graph's outputs are the model's hook points (each named by its
// hook), so this file selects, slices and labels as the server's payload builders do
// (web/payloads.py `attention`, web/qkv.py `qkv`, web/sampling.py `next_token`); it recomputes nothing
// but what those builders compute from the hooks themselves (head means, q . k, the head roles of
// attnlab.inspect.roles with the thresholds the manifest carries).
//
//   liveAnswer(path, body) -> the JSON the server would answer, or null when this page cannot answer
//   (no exported model of that name, a route it does not compute). Bad input throws a LiveError whose
//   `status` and `body` ({detail, errors}) are the server's 4xx answer.

import { TokenizeError, makeTokenizer, pyRepr } from "./live-tokenizers.js";

const FORMAT = 2;
const RUNTIME = "vendor/onnxruntime-web/";
const MAX_INDEX = 255; // schemas.MAX_LAYER / MAX_HEAD

export class LiveError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.body = { detail, errors: [] };
  }
}

const settings = { base: null };
let runtime = null;
const models = new Map(); // name -> Promise<model | null>
let queue = Promise.resolve(); // forward passes run one at a time: one WebAssembly runtime serves every session

/** Where the site's root is (default: the page's own address). */
export function configureLive({ base } = {}) {
  settings.base = base ?? null;
  models.clear();
}

function baseUrl() {
  return settings.base ?? document.baseURI;
}

async function ort() {
  if (!runtime) {
    runtime = (async () => {
      const root = new URL(RUNTIME, baseUrl()).href;
      const mod = await import(root + "ort.wasm.min.mjs");
      mod.env.wasm.wasmPaths = root;
      mod.env.wasm.numThreads = 1; // a static host sends no cross-origin isolation headers
      mod.env.wasm.proxy = false;
      return mod;
    })();
    runtime.catch(() => { runtime = null; });
  }
  return runtime;
}

async function fetchOk(url) {
  const res = await fetch(url);
  return res.ok ? res : null;
}

async function openModel(name) {
  const folder = new URL(`models/${encodeURIComponent(name)}/`, baseUrl());
  const res = await fetchOk(new URL("manifest.json", folder));
  if (!res) return null;
  const manifest = await res.json();
  if (manifest.format !== FORMAT) return null;
  const vocab = await fetchOk(new URL(manifest.tokenizer.file, folder));
  if (!vocab) return null;
  const tokenizer = makeTokenizer(manifest.tokenizer, await vocab.text());
  const lib = await ort();
  const session = await lib.InferenceSession.create(new URL("model.onnx", folder).href,
    { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  return { name, manifest, tokenizer, session, lib };
}

/** The exported model `name` (cached), or null when the site has none. */
export function liveModel(name) {
  if (!models.has(name)) {
    const opening = openModel(name).catch((err) => { models.delete(name); throw err; });
    models.set(name, opening);
  }
  return models.get(name);
}

/** Ids and labels of `text`, with the server's limits and messages (attnlab.web.models.tokenize). */
export function tokenizeFor(model, text) {
  const { limits } = model.manifest;
  const quoted = pyRepr(model.name);
  if (typeof text !== "string" || !text.trim()) throw new LiveError(422, "text is empty: type a sentence");
  const length = Array.from(text).length;
  if (length > limits.max_chars) {
    throw new LiveError(422, `text is ${length} characters long; the limit is ${limits.max_chars} characters`);
  }
  let ids;
  try {
    ids = model.tokenizer.encode(text);
  } catch (err) {
    if (!(err instanceof TokenizeError)) throw err;
    throw new LiveError(422, `model ${quoted} cannot encode this text (unsupported characters?): ${err.message}`);
  }
  if (!ids.length) throw new LiveError(422, `text gives no tokens for model ${quoted}`);
  if (ids.length > limits.max_tokens) {
    throw new LiveError(422, `text is ${ids.length} tokens long for model ${quoted}; the limit is ${limits.max_tokens} tokens`);
  }
  return { ids, tokens: model.tokenizer.tokens(ids).map(String) };
}

/** One forward pass: every output of the graph, by hook name, as {data, dims}. One at a time (`queue`). */
async function run(model, ids) {
  const go = async () => {
    const feeds = { [model.manifest.input.name]: new model.lib.Tensor("int64", BigInt64Array.from(ids, BigInt), [1, ids.length]) };
    const out = await model.session.run(feeds);
    const byHook = {};
    for (const o of model.manifest.outputs) byHook[o.hook] = { data: out[o.name].data, dims: out[o.name].dims.map(Number) };
    return byHook;
  };
  const result = queue.then(go, go);
  queue = result.catch(() => {});
  return result;
}

/** Nested arrays of `t` with its first `drop` axes fixed at `index` (the batch of one). */
function nest({ data, dims }, index = [0]) {
  const strides = dims.map((_, i) => dims.slice(i + 1).reduce((a, b) => a * b, 1));
  let offset = index.reduce((acc, k, i) => acc + k * strides[i], 0);
  const shape = dims.slice(index.length);
  const build = (axis) => {
    if (axis === shape.length) return data[offset++];
    return Array.from({ length: shape[axis] }, () => build(axis + 1));
  };
  return build(0);
}

function checkIndex(what, value, count) {
  if (!(value >= 0 && value < count)) throw new LiveError(422, `${what} ${value} does not exist; this model has ${count} (0 to ${count - 1})`);
}

function intField(body, key, max) {
  const value = body[key] ?? 0;
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new LiveError(422, `${key} must be an integer from 0 to ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

function hook(manifest, layer, point) {
  return `${manifest.stack}.blocks.${layer}.attn.${point}`;
}

const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** attnlab.inspect.roles.pattern_scores + detect_role on one head's (q, k) weights: of the specific patterns that
 * reach their threshold, the one with the largest margin over it; else broad when that reaches its threshold. */
function headRole(w, causal, rule) {
  const n = w.length;
  const [previousName, firstName, sameName, broadName] = rule.names;
  const scores = Object.fromEntries(rule.names.map((r) => [r, 0]));
  if (n >= 2) {
    const rows = Array.from({ length: n - 1 }, (_, i) => i + 1);
    scores[previousName] = mean(rows.map((r) => w[r][r - 1]));
    scores[firstName] = mean(rows.map((r) => w[r][0]));
    scores[sameName] = mean(rows.map((r) => w[r][r]));
    const broad = mean(rows.map((r) => {
      const entropy = -w[r].reduce((acc, p) => acc + p * Math.log(Math.max(p, 1e-300)), 0);
      return entropy / Math.log(causal ? r + 1 : n);
    }));
    scores[broadName] = Math.min(Math.max(broad, 0), 1);
  }
  const margin = (r) => scores[r] - rule.thresholds[r];
  const best = [previousName, firstName, sameName].reduce((a, b) => (margin(b) > margin(a) ? b : a));
  let role = null;
  if (margin(best) >= 0) role = best;
  else if (scores[broadName] >= rule.thresholds[broadName]) role = broadName;
  return { role, scores };
}

async function attention(model, body) {
  const m = model.manifest;
  const { ids, tokens } = tokenizeFor(model, body.text);
  const out = await run(model, ids);
  const weights = Array.from({ length: m.n_layers }, (_, l) => nest(out[hook(m, l, "hook_weights")])); // (heads, q, k)
  const meanWeights = weights.map((heads) => heads[0].map((row, q) => row.map((_, k) => mean(heads.map((h) => h[q][k])))));
  return {
    model: m.model, family: m.family, causal: m.causal, stack: m.stack, tokens, ids,
    n_layers: m.n_layers, n_heads: weights[0].length, weights, mean_weights: meanWeights,
    roles: weights.map((heads) => heads.map((w) => headRole(w, m.causal, m.roles))),
    corpus_roles: null, // the server's comes from a corpus pass run on it; a static page has none
  };
}

async function qkv(model, body) {
  const m = model.manifest;
  const layer = intField(body, "layer", MAX_INDEX);
  const head = intField(body, "head", MAX_INDEX);
  const focus = intField(body, "focus", m.limits.max_tokens - 1);
  const { ids, tokens } = tokenizeFor(model, body.text);
  checkIndex("layer", layer, m.n_layers);
  const rot = m.positions === "rotary" ? "rot_" : "";
  const points = { q: `${rot}q`, k: `${rot}k`, v: "v", scores: "scores", weights: "weights", z: "z" };
  const names = Object.fromEntries(Object.entries(points).map(([p, point]) => [p, hook(m, layer, `hook_${point}`)]));
  const out = await run(model, ids);
  const [qAll, kAll, vAll] = ["q", "k", "v"].map((p) => nest(out[names[p]])); // (heads | kv heads, seq, d_k)
  const nHeads = qAll.length;
  checkIndex("head", head, nHeads);
  checkIndex("focus token", focus, ids.length);
  const kvHead = Math.floor(head / Math.floor(nHeads / kAll.length)); // grouped-query attention shares K/V heads
  const q = qAll[head][focus];
  const keys = kAll[kvHead];
  const values = vAll[kvHead];
  const scores = nest(out[names.scores])[head][focus];
  const weights = nest(out[names.weights])[head][focus];
  const dK = q.length;
  const dots = keys.map((key) => key.reduce((acc, x, i) => acc + x * q[i], 0));
  const masked = scores.map((s) => s === -Infinity);
  let error = 0;
  dots.forEach((d, j) => { if (!masked[j]) error = Math.max(error, Math.abs(d / Math.sqrt(dK) - scores[j])); });
  return {
    model: m.model, tokens, layer, head, focus, d_k: dK, sqrt_d_k: Math.sqrt(dK), query: q, keys, values, dots,
    scores: scores.map((s, j) => (masked[j] ? null : s)), masked, weights, output: nest(out[names.z])[head][focus],
    max_scale_error: error, hooks: names,
  };
}

async function nextToken(model, body) {
  const m = model.manifest;
  if (m.family !== "decoder") {
    throw new LiveError(422, `next-token sampling needs a decoder model; ${pyRepr(m.model)} is ${m.family}`);
  }
  const { ids, tokens } = tokenizeFor(model, body.text);
  const out = await run(model, ids);
  const all = nest(out.hook_logits); // (seq, vocab)
  const logits = all[all.length - 1];
  const top = logits.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1])
    .slice(0, Math.min(m.limits.next_token_labels, logits.length)).map(([, i]) => i);
  const labels = model.tokenizer.tokens(top);
  return {
    model: m.model, prompt_tokens: tokens, prompt_ids: ids, hook: "hook_logits", logits,
    labels: Object.fromEntries(top.map((i, k) => [String(i), String(labels[k])])),
  };
}

const ROUTES = { "/api/attention": attention, "/api/qkv": qkv, "/api/next-token": nextToken };

/** The answer of `POST path` with JSON `body`, computed in this page; null when it cannot be. */
export async function liveAnswer(path, body) {
  const route = ROUTES[new URL(path, "http://page/").pathname];
  if (!route || !body || typeof body.model !== "string" || typeof body.text !== "string") return null;
  const model = await liveModel(body.model);
  if (!model) return null;
  return route(model, body);
}

/** The routes liveAnswer computes. */
export const LIVE_ROUTES = Object.freeze(Object.keys(ROUTES));
