// Wiring: reads the controls and the URL hash, asks model.js for data, hands it to views.js.

import { api, currentModel, DEFAULT_SENTENCE, defaultFocus, findToken, formatHash, nextTokenCandidates, parseHash, state } from "./model.js";
import { drawStep } from "./tour.js";
import * as V from "./views.js";
import { clearWhyIfOther, drawWhy } from "./why.js";

const $ = (id) => document.getElementById(id);
let layout = null;
let view = "tour";
let tourData = null;
let tourStep = 1;
let viewDefaults = {};
let timelineData = null;
const tickets = {}; // per view: only the answer to the latest request is drawn

function ticket(name) {
  tickets[name] = (tickets[name] || 0) + 1;
  const mine = tickets[name];
  return () => mine === tickets[name];
}

function showError(message) {
  $("error").hidden = !message;
  $("error").textContent = message || "";
}

async function guarded(fn) {
  try { showError(""); await fn(); } catch (e) { showError(e.message || String(e)); }
}

// What a view drew from its last answer: cleared when a request of that view fails, so an error line never
// stands above the previous sentence's (or model's) results.
const RESULTS = {
  attention: ["att-focus-label", "att-lines", "att-heatmap", "finder-result", "att-grid", "weights-table", "finder-query", "finder-key"],
  finder: ["finder-result"],
  translate: ["tr-output", "tr-focus-label", "tr-lines", "tr-heatmap", "tr-table"],
  why: ["why-root"],
  qkv: ["qkv-title", "qkv-body"],
  order: ["pe-heatmap", "mask-triangle", "order-note", "order-body", "heads-row"],
  "next-token": ["gen-next"],
  generate: ["gen-text", "gen-step-label", "gen-bars", "gen-attn", "gen-cache"],
};

function clearResults(v) {
  for (const id of RESULTS[v]) V.clear($(id));
  delete state.payloads[v];
  if (v === "attention") { delete $("view-attention").dataset.sentence; finder = null; }
  if (v === "translate") delete $("view-translate").dataset.sentence;
  if (v === "next-token") nextToken = null;
  if (v === "generate") $("gen-result").hidden = true;
}

// Run a view's request; if it fails while it is still the view's latest, clear what the view shows.
async function clearingOnError(v, current, fn) {
  try { return await fn(); } catch (e) { if (current()) clearResults(v); throw e; }
}

// --- what is in flight: "loading model X" while a model loads, "computing…" for slow answers -----------

const activity = new Map(); // id -> { text, start, shown }
let activityId = 0;
let activityTimer = null;

function renderActivity() {
  const shown = [...activity.values()].filter((a) => a.shown);
  document.body.setAttribute("aria-busy", String(shown.length > 0));
  $("status").hidden = !shown.length;
  if (!shown.length) {
    clearInterval(activityTimer); activityTimer = null;
    delete $("status").dataset.loading; document.body.removeAttribute("data-loading-model");
    return;
  }
  const loadingModels = shown.filter((a) => a.model).map((a) => a.model);
  if (loadingModels.length) $("status").dataset.loading = loadingModels.join(" ");
  else delete $("status").dataset.loading;
  document.body.toggleAttribute("data-loading-model", loadingModels.length > 0); // dims the views that wait for it
  $("status-text").textContent = shown.map((a) => `${a.text} ${Math.floor((performance.now() - a.start) / 1000)} s`).join(" · ");
  if (!activityTimer) activityTimer = setInterval(renderActivity, 500);
}

// Show `text` while `promise` runs: at once when `immediate`, else only if it takes longer than 400 ms.
async function track(text, promise, { immediate = false, model = null } = {}) {
  const id = (activityId += 1);
  const entry = { text, start: performance.now(), shown: immediate, model };
  activity.set(id, entry);
  const timer = immediate ? null : setTimeout(() => { entry.shown = true; renderActivity(); }, 400);
  if (immediate) renderActivity();
  try { return await promise; } finally { clearTimeout(timer); activity.delete(id); renderActivity(); }
}

const loading = {}; // model name -> the promise of its load request

// Make sure the server has `name` loaded before a request needs it, saying so while it loads. Models
// the server already holds (GET /api/models says `loaded`) cost nothing; concurrent callers share one load.
function needModel(name) {
  const m = state.models.find((x) => x.name === name);
  if (!m || m.loaded) return Promise.resolve();
  if (!loading[name]) {
    const option = document.querySelector(`#model option[value="${CSS.escape(name)}"]`);
    loading[name] = track(`Loading model ${name} (first time takes a few seconds)…`, api.load(name), { immediate: true, model: name })
      .then(() => { m.loaded = true; })
      .finally(() => { delete loading[name]; if (option) option.textContent = modelLabel(m); });
    if (option) option.textContent = `${modelLabel(m)} — loading…`;
  }
  return loading[name];
}

function modelLabel(m) {
  return `${m.name} (${m.family}${m.available ? "" : ", not installed"})`;
}

function setHash(arg, params = null) {
  const next = formatHash(view, arg, params);
  if (location.hash !== next) history.replaceState(null, "", next);
}

// Update the URL of view `v` only while it is the one shown (an answer may arrive after the user moved on).
function setHashFor(v, params) {
  if (view === v) setHash(null, params);
}

// A view's state in the URL (model, text, layer, head, query, key), so a link restores it. Selections
// push a history entry, so Back returns to the previous head or token.
function stateParams() {
  return { model: state.model, text: state.text, layer: state.layer, head: state.head, query: state.focus, key: state.key };
}

function pushState() {
  const next = formatHash(view, null, stateParams());
  if (location.hash !== next) history.pushState(null, "", next);
}

// The sentence a URL names: its text=, else (a deep link that names a selection but no sentence) the view's
// default sentence, never the previous page's; a bare tab link (no parameters) keeps the current one.
function linkedText(params, current, fallback) {
  if (params.text) return params.text;
  return Object.keys(params).length ? fallback : current;
}

// Read model/text/layer/head/query/key from the URL into the state; true when the model or text changed.
function applyParams(params) {
  let changed = false;
  if (params.model && state.models.some((m) => m.name === params.model && m.available) && params.model !== state.model) {
    state.model = params.model; $("model").value = params.model; changed = true;
  }
  const text = linkedText(params, state.text, DEFAULT_SENTENCE);
  if (text !== state.text) { state.text = text; $("sentence").value = text; changed = true; }
  const int = (v) => (v === undefined || v === "" || !/^\d+$/.test(v) ? null : Number(v));
  if (int(params.layer) !== null) state.layer = int(params.layer);
  if (params.head === "mean") state.head = "mean"; else if (int(params.head) !== null) state.head = int(params.head);
  if (int(params.query) !== null) state.focus = int(params.query);
  else if (changed) state.focus = null; // a new sentence without a query= starts on its own default focus
  state.key = int(params.key);
  return changed;
}

// --- start-up ---------------------------------------------------------------------------------------

async function start() {
  $("sentence").value = DEFAULT_SENTENCE;
  const [models, arch] = await Promise.all([api.models(), api.architecture()]);
  layout = arch;
  state.models = models.models;
  state.model = models.default;
  viewDefaults = models.views || {};
  $("serve-device").textContent = `the server's ${models.device}`; // attnlab serve --device
  for (const m of models.models) {
    const opt = V.el("option", { value: m.name, disabled: m.available ? null : "" }, $("model"), modelLabel(m));
    opt.title = m.available ? m.description : `Install: ${m.install_hint}`;
  }
  if (state.model) $("model").value = state.model;
  $("model-note").hidden = !models.note;
  $("model-note").textContent = models.note || "";
  document.querySelectorAll(".export").forEach(addExportButtons);
  wire();
  if (!location.hash) history.replaceState(null, "", "#tour/1"); // the landing page is the guided tour
  await route();
  document.body.dataset.ready = "true";
}

function wire() {
  $("input-form").addEventListener("submit", (e) => { e.preventDefault(); state.text = $("sentence").value; state.focus = null; state.key = null; refresh(); });
  $("model").addEventListener("change", () => { state.model = $("model").value; state.layer = 0; state.head = 0; state.focus = null; state.key = null; refresh(); });
  $("finder-run").addEventListener("click", () => { state.focus = Number($("finder-query").value); state.key = Number($("finder-key").value); pushState(); guarded(runFinder); });
  $("present").addEventListener("click", togglePresenter);
  document.addEventListener("keydown", onKey);
  document.querySelectorAll("button.variant").forEach((b) => b.addEventListener("click", () => { state.variant = b.dataset.variant; state.variantPicked = true; drawArch(); }));
  $("qkv-layer").addEventListener("change", () => { state.layer = Number($("qkv-layer").value); pushState(); guarded(drawQKV); });
  $("qkv-head").addEventListener("change", () => { state.head = Number($("qkv-head").value); pushState(); guarded(drawQKV); });
  $("att-layer").addEventListener("change", () => { state.layer = Number($("att-layer").value); pushState(); drawAttention(); });
  $("att-head").addEventListener("change", () => { const v = $("att-head").value; state.head = v === "mean" ? "mean" : Number(v); pushState(); drawAttention(); });
  $("gen-form").addEventListener("submit", (e) => { e.preventDefault(); guarded(runGeneration); });
  $("gen-prompt").addEventListener("input", () => { clearTimeout(promptTimer); promptTimer = setTimeout(() => guarded(loadNextToken), 600); });
  $("gen-step").addEventListener("input", () => { state.genStep = Number($("gen-step").value); drawGenStep(); });
  $("timeline-slider").addEventListener("input", () => { state.timelineIndex = Number($("timeline-slider").value); guarded(drawTimelineStep); });
  $("tl-layer").addEventListener("change", () => { state.tlLayer = Number($("tl-layer").value); guarded(drawTimelineStep); });
  $("tl-head").addEventListener("change", () => { state.tlHead = Number($("tl-head").value); guarded(drawTimelineStep); });
  $("tr-form").addEventListener("submit", (e) => { e.preventDefault(); clearTimeout(typingTimer); guarded(runTranslation); });
  $("tr-text").addEventListener("input", () => { clearTimeout(typingTimer); typingTimer = setTimeout(() => guarded(runTranslation), 600); });
  $("tr-model").addEventListener("change", () => { state.trModel = $("tr-model").value; guarded(runTranslation); });
  $("tr-beam").addEventListener("change", () => guarded(runTranslation));
  $("tr-layer").addEventListener("change", () => { state.trLayer = Number($("tr-layer").value); drawTranslation(); });
  $("tr-head").addEventListener("change", () => { const v = $("tr-head").value; state.trHead = v === "mean" ? "mean" : Number(v); drawTranslation(); });
  window.addEventListener("hashchange", () => route());
}

// The URL state of the views with their own inputs: the translator's sentence and focus, the timeline's
// snapshot, layer and head, the generation prompt.
function ownParams(v, params) {
  const int = (x) => (x !== undefined && /^\d+$/.test(x) ? Number(x) : null);
  if (v === "translate") {
    const text = linkedText(params, $("tr-text").value, $("tr-text").defaultValue);
    if (text !== $("tr-text").value) { $("tr-text").value = text; delete state.payloads.translate; state.trFocus = 0; }
    if (int(params.layer) !== null) state.trLayer = int(params.layer);
    if (params.head === "mean" || int(params.head) !== null) state.trHead = params.head === "mean" ? "mean" : int(params.head);
    if (int(params.query) !== null) state.trFocus = int(params.query);
  } else if (v === "timeline") {
    if (int(params.layer) !== null) state.tlLayer = int(params.layer);
    if (int(params.head) !== null) state.tlHead = int(params.head);
    if (int(params.step) !== null) state.tlStep = int(params.step);
    state.tlFromUrl = int(params.layer) !== null && int(params.head) !== null;
  } else if (v === "generate") {
    $("gen-prompt").value = linkedText(params, $("gen-prompt").value, $("gen-prompt").defaultValue);
    if (params.model && state.models.some((m) => m.name === params.model && m.available)) { state.model = params.model; $("model").value = params.model; }
  }
}

// The first visit to Attention or Q·K·V without a URL state starts where the tour showed it: the step
// presetting that view for this model and sentence gives the layer, head, focus and key (tour content,
// not code, decides what a good first picture is).
let startedFromTour = false;
let pendingWords = null; // the preset's query/key words, resolved once the sentence's tokens are known

async function startFromTour() {
  startedFromTour = true;
  if (!tourData) tourData = await api.tour();
  const step = tourData.steps.find((s) => s.view === view && s.preset.model === state.model && s.preset.text === state.text &&
    s.preset.layer !== null && s.preset.head !== null);
  if (!step) return;
  state.layer = step.preset.layer; state.head = step.preset.head;
  pendingWords = { query: step.preset.query, key: step.preset.key };
}

// Arrow keys move through the tour (anywhere but in a text field); P toggles presenter mode.
function onKey(e) {
  if (e.target.closest && e.target.closest("input, select, textarea") || e.altKey || e.ctrlKey || e.metaKey) return;
  if (view === "tour" && tourData && (e.key === "ArrowRight" || e.key === "ArrowLeft")) {
    const n = Math.min(tourData.steps.length, Math.max(1, tourStep + (e.key === "ArrowRight" ? 1 : -1)));
    if (n !== tourStep) { e.preventDefault(); location.hash = `#tour/${n}`; }
  } else if (e.key === "p" || e.key === "P") togglePresenter();
  else if (e.key === "Escape" && document.body.classList.contains("presenter")) togglePresenter();
}

function togglePresenter() {
  const on = document.body.classList.toggle("presenter");
  $("present").setAttribute("aria-pressed", String(on));
}

// --- the guided tour ---------------------------------------------------------------------------------

async function drawTour(arg) {
  if (!tourData) tourData = await api.tour();
  const n = Math.min(tourData.steps.length, Math.max(1, Number(arg) || 1));
  tourStep = n;
  if (String(n) !== arg) history.replaceState(null, "", `#tour/${n}`);
  const current = ticket("tour");
  const ctx = {
    toy: tourData.toy, models: state.models, need: needModel,
    track: (promise) => track("computing…", promise), go: (hash) => { location.hash = hash; },
  };
  const { widget, draw, fill } = drawStep($("view-tour"), tourData, n, ctx);
  widget.dataset.state = "loading";
  const text = api.tourStep(n).then((rendered) => { if (current()) fill(rendered); });
  try {
    await Promise.all([draw(), text]);
    if (current()) widget.dataset.state = "ready";
  } catch (e) {
    if (current()) { widget.dataset.state = "error"; throw e; }
  }
}

async function route() {
  const { view: v, arg, params } = parseHash(location.hash);
  view = document.getElementById(`view-${v}`) ? v : "tour";
  document.body.dataset.view = view;
  if (["translate", "timeline", "generate"].includes(view)) ownParams(view, params);
  else if (applyParams(params) && view !== "attention") delete state.payloads.attention;
  if ((view === "attention" || view === "qkv") && !Object.keys(params).length && !startedFromTour) await guarded(startFromTour);
  V.hideCard();
  document.querySelectorAll(".view").forEach((s) => { s.hidden = s.id !== `view-${view}`; });
  document.querySelectorAll("#tabs a").forEach((a) => a.setAttribute("aria-current", a.dataset.view === view ? "page" : "false"));
  if (view === "tour") await guarded(() => drawTour(arg));
  else if (view === "arch") { if (arg) state.part = arg; await guarded(drawArch); }
  else if (view === "learn") await guarded(() => drawLearn(arg));
  else if (view === "experiments") await guarded(() => drawExperiments(arg));
  else if (view === "translate") await guarded(startTranslation);
  else await refresh();
}

async function refresh() {
  await guarded(async () => {
    if (view === "translate") return startTranslation();
    if (view === "experiments" || view === "learn" || view === "tour") return null;
    if (!state.model) throw new Error("no model is available: install one (see the README)");
    if (view === "arch") return drawArch();
    if (view === "attention") return loadAttention();
    if (view === "qkv") return drawQKV();
    if (view === "why") return loadWhy();
    if (view === "order") return drawOrder();
    if (view === "generate") return loadNextToken();
    if (view === "timeline") return loadTimeline();
    return null;
  });
}

// --- why (attnlab.interpret; drawing in why.js) --------------------------------------------------------

async function loadWhy() {
  const current = ticket("why");
  const head = state.head === "mean" ? 0 : state.head;
  clearWhyIfOther($("why-root"), state.model, state.text); // nothing of another model or sentence while this one computes
  const p = await clearingOnError("why", current, () => track("computing…", api.why(state.model, state.text, state.layer, head, state.focus)));
  if (!current()) return;
  state.payloads.why = p;
  setHashFor("why", stateParams());
  drawWhy($("why-root"), p, (l, h) => { state.layer = l; state.head = h; pushState(); guarded(loadWhy); },
    (i) => { state.focus = i; pushState(); guarded(loadWhy); }, state.text);
}

// --- architecture -----------------------------------------------------------------------------------

// The diagram of the current model's family, until the reader picks another with the buttons.
const FAMILY_VARIANT = { encoder: "encoder-only", decoder: "decoder-only", "encoder-decoder": "encoder-decoder" };

async function drawArch() {
  const wanted = state.variantPicked ? state.variant : FAMILY_VARIANT[currentModel()?.family] || state.variant;
  const variant = layout.variants.find((v) => v.id === wanted) || layout.variants[0];
  if (state.part && !variant.boxes.some((b) => b.id === state.part)) {
    const other = layout.variants.find((v) => v.boxes.some((b) => b.id === state.part));
    if (other) return drawArchVariant(other);
  }
  return drawArchVariant(variant);
}

async function drawArchVariant(variant) {
  state.variant = variant.id;
  document.querySelectorAll("button.variant").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.variant === variant.id)));
  $("variant-summary").textContent = variant.summary;
  V.drawDiagram($("diagram"), layout, variant, state.part, (box) => selectPart(box), liveValues);
  state.payloads.arch = { architecture: variant };
  const box = variant.boxes.find((b) => b.id === state.part);
  if (box) await showPart(box);
}

// The hover card's live values: the same /api/part answer as the click panel (one forward pass through
// run_with_cache), without its heatmaps, at the chosen layer and head; the focus token's row of it.
// Answers are kept per (model, text, part, layer, head), which fixes the request: every focus token is
// in one answer, and two boxes of the same part (the add & norms) share it.
const hoverAnswers = new Map();
const HOVER_KEEP = 64;

// The layer chosen in the Attention view for this model (layer 0 before it has shown this model).
function chosenLayer() {
  const seen = state.payloads.attention;
  return seen && seen.model === state.model && state.layer < seen.n_layers ? state.layer : 0;
}

async function liveValues(box) {
  const model = state.model, layer = chosenLayer(), head = state.head === "mean" ? 0 : state.head;
  const key = JSON.stringify([model, state.text, box.part, layer, head]);
  if (!hoverAnswers.has(key)) {
    const answer = needModel(model).then(() => api.part(model, state.text, box.part, layer, { head, tensors: false }));
    answer.catch(() => hoverAnswers.delete(key)); // a failed request is asked again on the next hover
    hoverAnswers.set(key, answer);
    if (hoverAnswers.size > HOVER_KEEP) hoverAnswers.delete(hoverAnswers.keys().next().value);
  }
  const part = await hoverAnswers.get(key);
  const tokens = part.tokens.map((t) => t.token);
  const focus = state.focus !== null && state.focus < tokens.length ? state.focus : defaultFocus(tokens);
  return { part, row: part.tokens[focus], model, family: currentModel()?.family, layer, head,
    headNote: state.head === "mean" ? "Head 0: the Attention tab's average over heads is not summarised here."
      : "Layer and head as chosen in the Attention tab." };
}

async function selectPart(box) {
  state.part = box.id;
  setHash(box.id);
  await guarded(() => drawArch());
  document.querySelector(`[data-box="${box.id}"]`)?.focus();
}

async function showPart(box) {
  const panel = V.clear($("part-panel"));
  panel.dataset.part = box.part;
  const current = ticket("content");
  const page = await api.content(box.content); // the box names its explanation page (diagram.CONTENT_OF_PART)
  if (!current()) return;
  const article = V.el("div", { class: "explanation", "data-slug": page.slug }, panel);
  article.innerHTML = page.html; // rendered server-side from our own Markdown, everything else escaped
  if (box.changed) V.el("p", { class: "note" }, panel, `In this family: ${box.changed}`);
  const layer = chosenLayer();
  V.el("h3", {}, panel, `Live values: ${state.model}, “${state.text}”, layer ${layer}`);
  const live = V.el("div", { id: "part-live" }, panel, "computing…");
  const currentPart = ticket("part");
  await needModel(state.model);
  const part = await track("computing…", api.part(state.model, state.text, box.part, layer));
  if (!currentPart()) return;
  V.clear(live);
  V.tensorViews(live, part);
  state.payloads.arch = { architecture: state.payloads.arch.architecture, part };
}

// --- attention explorer -------------------------------------------------------------------------------

async function loadAttention() {
  const current = ticket("attention");
  const text = state.text;
  const p = await clearingOnError("attention", current, async () => {
    await needModel(state.model);
    return track("computing…", api.attention(state.model, text));
  });
  if (!current()) return;
  $("view-attention").dataset.sentence = text;
  state.payloads.attention = p;
  fillSelect($("att-layer"), p.n_layers, state.layer = Math.min(state.layer, p.n_layers - 1), "layer");
  fillSelect($("att-head"), p.n_heads, state.head = state.head === "mean" ? "mean" : Math.min(state.head, p.n_heads - 1), "head", true);
  if (pendingWords) {
    state.focus = findToken(p.tokens, pendingWords.query) ?? state.focus;
    state.key = findToken(p.tokens, pendingWords.key);
    pendingWords = null;
  }
  state.focus = state.focus === null || state.focus >= p.tokens.length ? defaultFocus(p.tokens) : state.focus;
  setHashFor("attention", stateParams());
  for (const id of ["finder-query", "finder-key"]) {
    V.clear($(id));
    p.tokens.forEach((t, i) => V.el("option", { value: i }, $(id), `${i}: ${t}`));
  }
  drawAttention();
  if (state.key !== null && state.key < p.tokens.length) await runFinder();
  else { finder = null; V.clear($("finder-result")); drawGrid(); }
}

let finder = null; // the head finder's last answer (for the grid's outlines)

async function runFinder() {
  const p = state.payloads.attention;
  if (!p) return;
  const current = ticket("finder");
  const f = await clearingOnError("finder", current, () => track("ranking every head…", api.rankHeads(p.model, $("view-attention").dataset.sentence, state.focus, state.key)));
  if (!current()) return;
  finder = f;
  state.payloads.finder = f;
  V.headRanking($("finder-result"), f, { limit: 10, onPick: (l, h) => { state.layer = l; state.head = h; pushState(); drawAttention(); } });
  drawAttention();
}

function drawGrid() {
  const p = state.payloads.attention;
  const highlight = Object.fromEntries((finder?.heads || []).slice(0, 3).map((h, i) => [`${h.layer},${h.head}`, i + 1]));
  V.headGrid($("att-grid"), p, { layer: state.layer, head: state.head }, (l, h) => { state.layer = l; state.head = h; pushState(); drawAttention(); }, { highlight });
  V.roleLegend($("role-legend"));
}

function fillSelect(select, n, value, what, withMean = false) {
  V.clear(select);
  for (let i = 0; i < n; i += 1) V.el("option", { value: i }, select, `${what} ${i}`);
  if (withMean) V.el("option", { value: "mean" }, select, "average of heads");
  select.value = String(value);
}

function attentionMatrix(p) {
  return state.head === "mean" ? p.mean_weights[state.layer] : p.weights[state.layer][state.head];
}

function drawAttention() {
  const p = state.payloads.attention;
  if (!p) return;
  $("att-layer").value = String(state.layer);
  $("att-head").value = String(state.head);
  const w = attentionMatrix(p);
  const role = state.head === "mean" ? null : p.roles[state.layer][state.head].role;
  $("att-focus-label").textContent = `focus: “${p.tokens[state.focus]}” (token ${state.focus})` + (role ? ` · role: ${role}` : "");
  $("finder-query").value = String(state.focus);
  if (state.key !== null) $("finder-key").value = String(state.key);
  V.tokenLines($("att-lines"), p.tokens, w, state.focus, (i) => { state.focus = i; pushState(); drawAttention(); });
  V.heatmap($("att-heatmap"), w, { rows: p.tokens, cols: p.tokens, min: 0, cell: Math.max(12, Math.min(22, Math.floor(420 / p.tokens.length))),
    masked: p.causal ? (i, j) => j > i : null, xLabel: "keys", yLabel: "queries" });
  V.weightsTable($("weights-table"), p.tokens, w[state.focus], { layer: state.layer, head: state.head, focus: state.focus });
  drawGrid();
}

// --- Q, K, V --------------------------------------------------------------------------------------------

async function drawQKV() {
  const head = state.head === "mean" ? 0 : state.head;
  const current = ticket("qkv");
  return clearingOnError("qkv", current, () => qkvFor(head, current));
}

async function qkvFor(head, current) {
  await needModel(state.model);
  // The layer and head pickers need the model's shape: from the attention payload of this sentence.
  let att = state.payloads.attention;
  if (!att || att.model !== state.model || $("view-attention").dataset.sentence !== state.text) {
    att = await track("computing…", api.attention(state.model, state.text));
    state.payloads.attention = att;
    $("view-attention").dataset.sentence = state.text;
  }
  fillSelect($("qkv-layer"), att.n_layers, state.layer = Math.min(state.layer, att.n_layers - 1), "layer");
  fillSelect($("qkv-head"), att.n_heads, Math.min(head, att.n_heads - 1), "head");
  let p = await track("computing…", api.qkv(state.model, state.text, state.layer, Math.min(head, att.n_heads - 1), state.focus ?? 0));
  if (state.focus === null || state.focus !== p.focus) { // no focus chosen yet: the sentence's meaningful default
    state.focus = defaultFocus(p.tokens);
    p = await track("computing…", api.qkv(state.model, state.text, state.layer, p.head, state.focus));
  }
  if (!current()) return;
  setHashFor("qkv", stateParams());
  state.payloads.qkv = p;
  $("qkv-title").textContent = `${p.model} · layer ${p.layer} · head ${p.head} · focus “${p.tokens[p.focus]}” (click a row to make it the query)`;
  $("qkv-formula").innerHTML = FORMULA;
  V.qkvSteps($("qkv-body"), p, (j) => { state.focus = j; pushState(); guarded(drawQKV); });
  V.softmaxSteps($("qkv-body"), p);
}

const FORMULA = `<math display="block"><mrow><mi>Attention</mi><mo>(</mo><mi>Q</mi><mo>,</mo><mi>K</mi><mo>,</mo><mi>V</mi><mo>)</mo><mo>=</mo>
<mi>softmax</mi><mo>(</mo><mfrac><mrow><mi>Q</mi><msup><mi>K</mi><mi>T</mi></msup></mrow><msqrt><msub><mi>d</mi><mi>k</mi></msub></msqrt></mfrac><mo>+</mo><mi>M</mi><mo>)</mo><mi>V</mi></mrow></math>`;

// --- order, masks, heads side by side ---------------------------------------------------------------------

async function drawOrder() {
  const current = ticket("order");
  return clearingOnError("order", current, () => orderFor(current));
}

async function orderFor(current) {
  // The order experiment runs through an encoder: the chosen model if it is one, else the first available.
  const m = currentModel();
  const encoder = m && m.family === "encoder" ? m : state.models.find((x) => x.family === "encoder" && x.available);
  // The mask needs a causal model: the chosen one if it is a decoder, else the word-level decoder default.
  const maskModel = m && m.family === "decoder" ? m.name : (viewDefaults.generate || state.model);
  await Promise.all([needModel(state.model), encoder ? needModel(encoder.name) : null, needModel(maskModel)]);
  const [pos, att, maskAtt] = await track("computing…", Promise.all([api.positions(state.model), api.attention(state.model, state.text),
    maskModel === state.model ? null : api.attention(maskModel, state.text)]));
  if (!current()) return;
  state.payloads.order = { positions: pos, attention_layer: { layer: state.layer, weights: att.weights[state.layer] } };
  V.heatmap($("pe-heatmap"), pos.table, { cell: 6, cellH: 7, diverging: true, min: -1, max: 1, title: "PE(pos, dim)",
    rows: pos.table.map((_, i) => String(i)), cols: pos.table[0].map((_, j) => String(j)), xLabel: "dimension", yLabel: "position" });
  const ma = maskAtt || att;
  V.heatmap($("mask-triangle"), ma.mean_weights[0], { rows: ma.tokens, cols: ma.tokens, min: 0, cell: 14, masked: (i, j) => ma.causal && j > i, xLabel: "keys", yLabel: "queries" });
  $("mask-note").textContent = ma.causal ? `${ma.model}, layer 0, average of heads: grey cells are masked (weight exactly 0).`
    : `${ma.model} attends without a causal mask (every token sees every token); pick a decoder model to see the triangle.`;
  const body = V.clear($("order-body"));
  $("order-note").textContent = pos.note || (pos.model ? `Model ${pos.model} (${pos.model_positions} positions). ` +
    "Each cell: distance between a final vector of the first sentence and one of the second. Without positions every token finds an exact twin (a zero in its row): the same set of vectors, just reordered." : "");
  for (const c of pos.comparisons) {
    const box = V.el("div", {}, body);
    V.el("h4", {}, box, `${c.positions ? "with" : "without"} positional information · largest nearest-match distance ${Math.max(...c.nearest).toExponential(2)}`);
    const same = Math.max(...c.nearest) < 1e-3;
    V.el("p", { class: "verdict", "data-positions": String(c.positions) }, box, same
      ? "Verdict: every token of the first order has an exact twin in the second: the encoder gives the same vectors for both orders, so it cannot tell them apart."
      : "Verdict: the vectors differ between the two orders: with positions the encoder can tell “who did what to whom”.");
    V.heatmap(V.el("svg:svg", { "data-positions": String(c.positions) }, box), c.distances, { rows: pos.first_tokens, cols: pos.second_tokens, cell: 18,
      xLabel: "2nd order", yLabel: "1st order" });
  }
  const row = V.clear($("heads-row"));
  att.weights[state.layer].forEach((w, h) => {
    const cell = V.el("div", { class: "cell" }, row);
    V.el("span", {}, cell, `layer ${state.layer}, head ${h} ${att.roles[state.layer][h].role || ""}`);
    V.heatmap(V.el("svg:svg", {}, cell), w, { min: 0, bar: false, cell: Math.max(3, Math.min(10, Math.floor(160 / w.length))) });
  });
}

// --- generation -------------------------------------------------------------------------------------------

const sampling = { temperature: 0.8, top_k: 0, top_p: 0.95 };
let nextToken = null;
let promptTimer = null;

function generationModel() {
  return currentModel()?.family === "decoder" ? state.model : (viewDefaults.generate || state.model);
}

// The prompt's next-token logits, fetched once; the sliders then redraw from them without a request.
async function loadNextToken() {
  if (!$("gen-sliders").firstChild) V.samplingSliders($("gen-sliders"), sampling, drawNextToken);
  const model = generationModel();
  const text = $("gen-prompt").value;
  if (!text.trim()) return;
  const current = ticket("next-token");
  const data = await clearingOnError("next-token", current, async () => {
    await needModel(model);
    return track("computing…", api.nextToken(model, text));
  });
  if (!current()) return;
  nextToken = data;
  setHashFor("generate", { model, text });
  $("gen-model").textContent = model === state.model ? `(${model})` : `(${model}: ${state.model} cannot write text, so this view uses a decoder)`;
  drawNextToken();
}

function drawNextToken() {
  if (!nextToken) return;
  V.probabilityBars($("gen-next"), nextTokenCandidates(nextToken, sampling));
}

async function runGeneration() {
  const current = ticket("generate");
  // Generation needs a decoder: the chosen model if it is one, else the word-level default (smollm2).
  const model = generationModel();
  const p = await clearingOnError("generate", current, async () => {
    await needModel(model);
    return track("generating…", api.generate({
      model, text: $("gen-prompt").value, max_new_tokens: Number($("gen-n").value),
      temperature: sampling.temperature, top_k: sampling.top_k, top_p: sampling.top_p, seed: 0,
    }));
  });
  if (!current()) return;
  state.payloads.generate = p;
  $("gen-result").hidden = false;
  $("gen-step").max = String(p.steps.length - 1);
  $("gen-step").value = "0";
  state.genStep = 0;
  drawGenStep();
}

function drawGenStep() {
  const p = state.payloads.generate;
  if (!p) return;
  const step = p.steps[state.genStep];
  const text = V.clear($("gen-text"));
  V.el("span", { class: "prompt" }, text, p.prompt_tokens.join(""));
  p.steps.forEach((s, i) => V.el("span", { class: i === state.genStep ? "current" : "" }, text, s.token));
  $("gen-step-label").textContent = `step ${state.genStep + 1} of ${p.steps.length}: chose ${JSON.stringify(step.token)}`;
  V.probabilityBars($("gen-bars"), step);
  const last = step.attention[step.attention.length - 1];
  const keys = [...p.prompt_tokens, ...p.steps.map((s) => s.token)].slice(0, step.cache_length);
  V.heatmap($("gen-attn"), last, { rows: last.map((_, h) => `H${h}`), cols: keys, xLabel: "cached keys", yLabel: "heads", min: 0, cell: Math.max(6, Math.min(16, Math.floor(440 / keys.length))) });
  V.kvCache($("gen-cache"), step.cache_length, p.prompt_tokens.length + p.steps.length);
}

// --- training timeline --------------------------------------------------------------------------------------

async function loadTimeline() {
  const m = currentModel();
  const name = m && m.timeline ? m.name : state.models.find((x) => x.timeline && x.available)?.name;
  if (!name) { $("timeline-note").textContent = "No available model ships training snapshots (the bundled bible-bpe model does)."; return; }
  const current = ticket("timeline-index");
  await needModel(name);
  const data = await track("reading the snapshots…", api.timeline(name));
  if (!current()) return;
  timelineData = data;
  const lastSnap = timelineData.snapshots[timelineData.snapshots.length - 1]?.step ?? 0;
  const lastCurve = Math.max(0, ...timelineData.curve.map((p) => p.step));
  // A new model (or a head it lacks) opens on the head that learned most, unless the URL named one.
  const fits = state.tlLayer !== null && state.tlLayer < data.n_layers && state.tlHead !== null && state.tlHead < data.n_heads;
  if (!fits || (state.tlModel !== name && !state.tlFromUrl)) { state.tlLayer = data.learning_layer; state.tlHead = data.learning_head; }
  state.tlModel = name; state.tlFromUrl = false;
  $("timeline-note").textContent = `${name}: the same sentence through the weights saved at each training step. “${timelineData.sentence}”` +
    ` Layer ${data.learning_layer} head ${data.learning_head} is the head whose attention changed most over training` +
    ` (${Math.round(100 * data.learning_change)}% of its attention moved to other tokens); the view opens on it.` +
    (lastCurve > lastSnap ? ` Weights were saved up to step ${lastSnap} only; the loss curve goes on to step ${lastCurve}.` : "");
  const slider = $("timeline-slider");
  slider.max = String(timelineData.snapshots.length - 1);
  const fromUrl = state.tlStep === undefined ? -1 : timelineData.snapshots.findIndex((s) => s.step === state.tlStep);
  state.timelineIndex = fromUrl >= 0 ? fromUrl : Math.min(state.timelineIndex, timelineData.snapshots.length - 1);
  slider.value = String(state.timelineIndex);
  fillSelect($("tl-layer"), timelineData.n_layers, state.tlLayer, "layer");
  fillSelect($("tl-head"), timelineData.n_heads, state.tlHead, "head");
  await drawTimelineStep();
}

async function drawTimelineStep() {
  if (!timelineData) return;
  const snap = timelineData.snapshots[state.timelineIndex];
  const current = ticket("timeline");
  const p = await track("computing…", api.timelineAttention(timelineData.model, snap.step, state.tlLayer, state.tlHead));
  if (!current()) return;
  state.payloads.timeline = { timeline: timelineData, attention: p };
  state.tlStep = snap.step;
  setHashFor("timeline", { layer: state.tlLayer, head: state.tlHead, step: snap.step });
  $("timeline-step").textContent = `step ${snap.step}` + (snap.loss !== null ? ` · loss ${snap.loss.toFixed(3)}` : "") + (p.role.role ? ` · role: ${p.role.role}` : "");
  V.lossCurve($("loss-curve"), timelineData.curve, snap.step);
  const svg = $("tl-heatmap");
  svg.dataset.step = String(snap.step);
  svg.dataset.model = p.model;
  V.heatmap(svg, p.weights, { rows: p.tokens, cols: p.tokens, min: 0, cell: Math.max(6, Math.min(14, Math.floor(560 / p.tokens.length))), masked: (i, j) => j > i,
    xLabel: "keys", yLabel: "queries" });
}

// --- translation: cross-attention as alignment ---------------------------------------------------------

let typingTimer = null;

// Fill the model list with the encoder-decoder models (the translator first) and say what is missing.
function startTranslation() {
  const select = $("tr-model");
  const candidates = state.models.filter((m) => m.family === "encoder-decoder");
  // The catalogue's translator first, then the demo translators (stand-ins), then the rest.
  const translates = (m) => m.preferred_view === "translate";
  const rank = (m) => (translates(m) && !m.demo ? 0 : translates(m) ? 1 : 2) + (m.available ? 0 : 3);
  candidates.sort((a, b) => rank(a) - rank(b));
  if (select.options.length !== candidates.length) {
    V.clear(select);
    for (const m of candidates) V.el("option", { value: m.name, disabled: m.available ? null : "" }, select, modelLabel(m));
  }
  const translator = state.models.find((m) => translates(m) && !m.demo);
  const missing = !translator ? "This installation's catalogue has no “translator” model (the English→Spanish encoder-decoder): update attnlab to get it."
    : !translator.available ? `The “${translator.name}” model is in the catalogue but its files are missing. Install: ${translator.install_hint}` : "";
  const usable = candidates.filter((m) => m.available);
  if (!state.trModel || !usable.some((m) => m.name === state.trModel)) state.trModel = usable[0]?.name || null;
  $("tr-missing")?.remove();
  if (missing) {
    const standIns = usable.filter((m) => rank(m) === 1).map((m) => m.name);
    const others = standIns.length ? ` Meanwhile you can try the view with ${standIns.join(", ")} (random weights: the “translation” is noise, the alignment is still exactly what that model computes).`
      : " No stand-in is available either (`attnlab serve --demo` adds a random-weight one).";
    $("tr-note").after(V.el("p", { id: "tr-missing", class: "note" }, null, missing + others));
  }
  if (!state.trModel) { $("tr-run").disabled = true; return null; }
  $("tr-run").disabled = false;
  select.value = state.trModel;
  if (!state.payloads.translate) return runTranslation();
  return null;
}

async function runTranslation() {
  if (!state.trModel) return;
  const text = $("tr-text").value;
  if (!text.trim()) return;
  const current = ticket("translate");
  const p = await clearingOnError("translate", current, async () => {
    await needModel(state.trModel);
    return track("translating…", api.translate(state.trModel, text, Number($("tr-beam").value)));
  });
  if (!current()) return;
  state.payloads.translate = p;
  $("view-translate").dataset.sentence = text;
  const layer = state.trLayer === null ? p.n_layers - 1 : Math.min(state.trLayer, p.n_layers - 1);
  fillSelect($("tr-layer"), p.n_layers, layer, "layer");
  state.trHead = state.trHead === "mean" ? "mean" : Math.min(state.trHead, p.n_heads - 1);
  fillSelect($("tr-head"), p.n_heads, state.trHead, "head", true);
  state.trLayer = layer;
  state.trFocus = Math.min(state.trFocus, p.target_tokens.length - 1);
  drawTranslation();
}

function drawTranslation() {
  const p = state.payloads.translate;
  if (!p) return;
  const w = state.trHead === "mean" ? p.mean_weights[state.trLayer] : p.weights[state.trLayer][state.trHead];
  const out = V.clear($("tr-output"));
  V.el("span", {}, out, p.text || "(empty translation)");
  V.el("span", { class: "prompt" }, out, `   ${p.model}, ${p.beam_size === 1 ? "greedy" : `beam ${p.beam_size}`}, log-probability ${p.logprob.toFixed(2)}`);
  setHashFor("translate", { text: $("view-translate").dataset.sentence, layer: state.trLayer, head: state.trHead, query: state.trFocus });
  $("tr-focus-label").textContent = `target token ${state.trFocus}: “${p.target_tokens[state.trFocus]}”`;
  const svg = $("tr-lines");
  svg.dataset.layer = String(state.trLayer); svg.dataset.head = String(state.trHead);
  V.alignment(svg, p.source_tokens, p.target_tokens, w, state.trFocus, (i) => { state.trFocus = i; drawTranslation(); });
  V.heatmap($("tr-heatmap"), w, { rows: p.target_tokens, cols: p.source_tokens, min: 0, xLabel: "source", yLabel: "target",
    cell: Math.max(8, Math.min(22, Math.floor(440 / Math.max(p.source_tokens.length, p.target_tokens.length)))) });
  V.weightsTable($("tr-table"), p.source_tokens, w[state.trFocus], { layer: state.trLayer, head: state.trHead, focus: state.trFocus });
}

// --- experiments -----------------------------------------------------------------------------------------

async function drawExperiments(name) {
  const current = ticket("experiments");
  const data = await api.experiments();
  if (!current()) return;
  $("exp-note").textContent = data.note;
  const nav = V.clear($("exp-index"));
  for (const e of data.experiments) V.el("a", { href: formatHash("experiments", e.name) }, nav, e.name);
  const body = V.clear($("exp-body"));
  for (const e of data.experiments) {
    const section = V.el("section", { class: "experiment" }, body);
    const draw = () => V.experiment(section, e, state.expRuns[e.name] || 0, (i) => { state.expRuns[e.name] = i; draw(); });
    draw();
  }
  state.payloads.experiments = data;
  if (name) document.getElementById(`exp-${name}`)?.scrollIntoView();
}

// --- learn ----------------------------------------------------------------------------------------------------

async function drawLearn(slug) {
  const index = await api.contentIndex();
  const nav = V.clear($("learn-index"));
  for (const p of index.pages) V.el("a", { href: formatHash("learn", p.slug), "data-slug": p.slug }, nav, p.title);
  const page = await api.content(slug || "why-attention");
  $("learn-page").innerHTML = page.html; // server-rendered from our Markdown; text is escaped there
  state.payloads.learn = page;
  // Each page links to the tour step that teaches it and to its live view.
  if (!tourData) tourData = await api.tour();
  const step = tourData.steps.findLast((s) => s.learn === page.slug); // the last step on it shows it with a real model
  nav.querySelectorAll("a").forEach((a) => a.setAttribute("aria-current", a.dataset.slug === page.slug ? "page" : "false"));
  if (step) {
    const live = V.el("p", { class: "learn-live" }, $("learn-page"));
    V.el("a", { href: `#tour/${step.n}` }, live, `See it live: tour step ${step.n}, “${step.title}”`);
    if (step.view) { live.append(" · "); V.el("a", { href: `#${step.view}` }, live, "explore it freely"); }
  }
}

// --- export ------------------------------------------------------------------------------------------------------

function addExportButtons(span) {
  const name = span.dataset.export;
  for (const kind of ["SVG", "PNG", "JSON"]) {
    const b = V.el("button", { type: "button", "data-kind": kind.toLowerCase() }, span, kind);
    b.addEventListener("click", () => guarded(() => exportView(name, kind.toLowerCase())));
  }
}

function download(blob, filename) {
  const a = V.el("a", { href: URL.createObjectURL(blob), download: filename }, document.body);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

async function exportView(name, kind) {
  if (kind === "json") {
    const data = state.payloads[name];
    if (!data) throw new Error("nothing to export yet: run this view first");
    return download(new Blob([JSON.stringify(data, null, 1)], { type: "application/json" }), `attnlab-${name}.json`);
  }
  const svg = document.querySelector(`#view-${name} svg.primary`);
  if (!svg || !svg.firstChild) throw new Error("nothing drawn yet in this view");
  const text = new XMLSerializer().serializeToString(svg);
  if (kind === "svg") return download(new Blob([text], { type: "image/svg+xml" }), `attnlab-${name}.svg`);
  const image = new Image();
  const url = URL.createObjectURL(new Blob([text], { type: "image/svg+xml" }));
  await new Promise((resolve, reject) => { image.onload = resolve; image.onerror = () => reject(new Error("could not draw the SVG")); image.src = url; });
  const canvas = V.el("canvas", { width: svg.viewBox.baseVal.width * 2, height: svg.viewBox.baseVal.height * 2 });
  const ctx = canvas.getContext("2d");
  ctx.scale(2, 2);
  ctx.drawImage(image, 0, 0);
  URL.revokeObjectURL(url);
  canvas.toBlob((blob) => download(blob, `attnlab-${name}.png`), "image/png");
}

start().catch((e) => showError(e.message || String(e)));
