// Wiring: reads the controls and the URL hash, asks model.js for data, hands it to views.js.

import { api, currentModel, DEFAULT_SENTENCE, formatHash, parseHash, state } from "./model.js";
import * as V from "./views.js";

const $ = (id) => document.getElementById(id);
let layout = null;
let view = "arch";
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

function setHash(arg) {
  const next = formatHash(view, arg);
  if (location.hash !== next) history.replaceState(null, "", next);
}

// --- start-up ---------------------------------------------------------------------------------------

async function start() {
  $("sentence").value = DEFAULT_SENTENCE;
  const [models, arch] = await Promise.all([api.models(), api.architecture()]);
  layout = arch;
  state.models = models.models;
  state.model = models.default;
  for (const m of models.models) {
    const opt = V.el("option", { value: m.name, disabled: m.available ? null : "" }, $("model"),
      `${m.name} (${m.family}${m.available ? "" : ", not installed"})`);
    opt.title = m.available ? m.description : `Install: ${m.install_hint}`;
  }
  if (state.model) $("model").value = state.model;
  $("model-note").hidden = !models.note;
  $("model-note").textContent = models.note || "";
  document.querySelectorAll(".export").forEach(addExportButtons);
  wire();
  await route();
  document.body.dataset.ready = "true";
}

function wire() {
  $("input-form").addEventListener("submit", (e) => { e.preventDefault(); state.text = $("sentence").value; state.focus = 0; refresh(); });
  $("model").addEventListener("change", () => { state.model = $("model").value; state.layer = 0; state.head = 0; state.focus = 0; refresh(); });
  document.querySelectorAll("button.variant").forEach((b) => b.addEventListener("click", () => { state.variant = b.dataset.variant; drawArch(); }));
  $("att-layer").addEventListener("change", () => { state.layer = Number($("att-layer").value); drawAttention(); });
  $("att-head").addEventListener("change", () => { const v = $("att-head").value; state.head = v === "mean" ? "mean" : Number(v); drawAttention(); });
  $("gen-form").addEventListener("submit", (e) => { e.preventDefault(); guarded(runGeneration); });
  $("gen-step").addEventListener("input", () => { state.genStep = Number($("gen-step").value); drawGenStep(); });
  $("timeline-slider").addEventListener("input", () => { state.timelineIndex = Number($("timeline-slider").value); guarded(drawTimelineStep); });
  $("tl-layer").addEventListener("change", () => { state.tlLayer = Number($("tl-layer").value); guarded(drawTimelineStep); });
  $("tl-head").addEventListener("change", () => { state.tlHead = Number($("tl-head").value); guarded(drawTimelineStep); });
  window.addEventListener("hashchange", () => route());
}

async function route() {
  const { view: v, arg } = parseHash(location.hash);
  view = document.getElementById(`view-${v}`) ? v : "arch";
  document.querySelectorAll(".view").forEach((s) => { s.hidden = s.id !== `view-${view}`; });
  document.querySelectorAll("#tabs a").forEach((a) => a.setAttribute("aria-current", a.dataset.view === view ? "page" : "false"));
  if (view === "arch") { if (arg) state.part = arg; await guarded(drawArch); }
  else if (view === "learn") await guarded(() => drawLearn(arg));
  else await refresh();
}

async function refresh() {
  await guarded(async () => {
    if (!state.model) throw new Error("no model is available: install one (see the README)");
    if (view === "arch") return drawArch();
    if (view === "attention") return loadAttention();
    if (view === "qkv") return drawQKV();
    if (view === "order") return drawOrder();
    if (view === "generate") return null;
    if (view === "timeline") return loadTimeline();
    return null;
  });
}

// --- architecture -----------------------------------------------------------------------------------

async function drawArch() {
  const variant = layout.variants.find((v) => v.id === state.variant) || layout.variants[0];
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
  V.drawDiagram($("diagram"), layout, variant, state.part, (box) => selectPart(box));
  state.payloads.arch = { architecture: variant };
  const box = variant.boxes.find((b) => b.id === state.part);
  if (box) await showPart(box);
}

async function selectPart(box) {
  state.part = box.id;
  setHash(box.id);
  await guarded(() => drawArch());
  document.querySelector(`[data-box="${box.id}"]`)?.focus();
}

const CONTENT_OF_PART = {
  "input-embedding": "embeddings", "output-embedding": "embeddings", "positional-encoding": "positional-encoding",
  "self-attention": "self-attention", "masked-self-attention": "masking", "cross-attention": "cross-attention",
  "add-norm": "add-norm", "feed-forward": "feed-forward", linear: "linear", softmax: "softmax",
};

async function showPart(box) {
  const panel = V.clear($("part-panel"));
  panel.dataset.part = box.part;
  const current = ticket("content");
  const page = await api.content(CONTENT_OF_PART[box.part]);
  if (!current()) return;
  const article = V.el("div", { class: "explanation", "data-slug": page.slug }, panel);
  article.innerHTML = page.html; // rendered server-side from our own Markdown, everything else escaped
  if (box.changed) V.el("p", { class: "note" }, panel, `In this family: ${box.changed}`);
  V.el("h3", {}, panel, `Live values: ${state.model}, “${state.text}”`);
  const live = V.el("div", { id: "part-live" }, panel, "computing…");
  const currentPart = ticket("part");
  const part = await api.part(state.model, state.text, box.part, 0);
  if (!currentPart()) return;
  V.clear(live);
  V.tensorViews(live, part);
  state.payloads.arch = { architecture: state.payloads.arch.architecture, part };
}

// --- attention explorer -------------------------------------------------------------------------------

async function loadAttention() {
  const current = ticket("attention");
  const text = state.text;
  const p = await api.attention(state.model, text);
  if (!current()) return;
  $("view-attention").dataset.sentence = text;
  state.payloads.attention = p;
  fillSelect($("att-layer"), p.n_layers, state.layer = Math.min(state.layer, p.n_layers - 1), "layer");
  fillSelect($("att-head"), p.n_heads, state.head, "head", true);
  state.focus = Math.min(state.focus, p.tokens.length - 1);
  drawAttention();
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
  V.tokenLines($("att-lines"), p.tokens, w, state.focus, (i) => { state.focus = i; drawAttention(); });
  V.heatmap($("att-heatmap"), w, { rows: p.tokens, cols: p.tokens, min: 0, cell: Math.max(8, Math.min(22, Math.floor(420 / p.tokens.length))),
    masked: p.causal ? (i, j) => j > i : null });
  V.weightsTable($("weights-table"), p.tokens, w[state.focus], { layer: state.layer, head: state.head, focus: state.focus });
  V.headGrid($("att-grid"), p, { layer: state.layer, head: state.head }, (l, h) => { state.layer = l; state.head = h; drawAttention(); });
}

// --- Q, K, V --------------------------------------------------------------------------------------------

async function drawQKV() {
  const head = state.head === "mean" ? 0 : state.head;
  const current = ticket("qkv");
  const p = await api.qkv(state.model, state.text, state.layer, head, state.focus);
  if (!current()) return;
  state.payloads.qkv = p;
  $("qkv-title").textContent = `${p.model} · layer ${p.layer} · head ${p.head} · focus “${p.tokens[p.focus]}” (click a row to make it the query; layer and head are chosen in the Attention view)`;
  $("qkv-formula").innerHTML = FORMULA;
  V.qkvSteps($("qkv-body"), p, (j) => { state.focus = j; guarded(drawQKV); });
}

const FORMULA = `<math display="block"><mrow><mi>Attention</mi><mo>(</mo><mi>Q</mi><mo>,</mo><mi>K</mi><mo>,</mo><mi>V</mi><mo>)</mo><mo>=</mo>
<mi>softmax</mi><mo>(</mo><mfrac><mrow><mi>Q</mi><msup><mi>K</mi><mi>T</mi></msup></mrow><msqrt><msub><mi>d</mi><mi>k</mi></msub></msqrt></mfrac><mo>+</mo><mi>M</mi><mo>)</mo><mi>V</mi></mrow></math>`;

// --- order, masks, heads side by side ---------------------------------------------------------------------

async function drawOrder() {
  const current = ticket("order");
  const [pos, att] = await Promise.all([api.positions(state.model), api.attention(state.model, state.text)]);
  if (!current()) return;
  state.payloads.order = { positions: pos, attention_layer: { layer: state.layer, weights: att.weights[state.layer] } };
  V.heatmap($("pe-heatmap"), pos.table, { cell: 6, diverging: true, min: -1, max: 1, title: "PE(pos, dim)" });
  const mean = att.mean_weights[0];
  V.heatmap($("mask-triangle"), mean, { rows: att.tokens, cols: att.tokens, min: 0, cell: 12, masked: (i, j) => att.causal && j > i });
  $("mask-note").textContent = att.causal ? `${att.model}, layer 0, average of heads: grey cells are masked (weight exactly 0).`
    : `${att.model} attends without a causal mask (every token sees every token); pick a decoder model to see the triangle.`;
  const body = V.clear($("order-body"));
  $("order-note").textContent = pos.note || (pos.model ? `Model ${pos.model} (${pos.model_positions} positions). ` +
    "Each cell: distance between a final vector of the first sentence and one of the second. Without positions every token finds an exact twin (a zero in its row): the same set of vectors, just reordered." : "");
  for (const c of pos.comparisons) {
    const box = V.el("div", {}, body);
    V.el("h4", {}, box, `${c.positions ? "with" : "without"} positional information · largest nearest-match distance ${Math.max(...c.nearest).toExponential(2)}`);
    V.heatmap(V.el("svg:svg", { "data-positions": String(c.positions) }, box), c.distances, { rows: pos.first_tokens, cols: pos.second_tokens, cell: 18 });
  }
  const row = V.clear($("heads-row"));
  att.weights[state.layer].forEach((w, h) => {
    const cell = V.el("div", { class: "cell" }, row);
    V.el("span", {}, cell, `layer ${state.layer}, head ${h} ${att.roles[state.layer][h].role || ""}`);
    V.heatmap(V.el("svg:svg", {}, cell), w, { min: 0, cell: Math.max(3, Math.min(10, Math.floor(160 / w.length))) });
  });
}

// --- generation -------------------------------------------------------------------------------------------

async function runGeneration() {
  const current = ticket("generate");
  const p = await api.generate({
    model: state.model, text: $("gen-prompt").value, max_new_tokens: Number($("gen-n").value),
    temperature: Number($("gen-temp").value), top_k: Number($("gen-topk").value), top_p: Number($("gen-topp").value), seed: 0,
  });
  if (!current()) return;
  state.payloads.generate = p;
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
  V.heatmap($("gen-attn"), last, { rows: last.map((_, h) => `head ${h}`), cols: keys, min: 0, cell: Math.max(6, Math.min(16, Math.floor(440 / keys.length))) });
  V.kvCache($("gen-cache"), step.cache_length, p.prompt_tokens.length + p.steps.length);
}

// --- training timeline --------------------------------------------------------------------------------------

async function loadTimeline() {
  const m = currentModel();
  const name = m && m.timeline ? m.name : state.models.find((x) => x.timeline && x.available)?.name;
  if (!name) { $("timeline-note").textContent = "No available model ships training snapshots (the bundled shakespeare-char model does)."; return; }
  const current = ticket("timeline-index");
  const data = await api.timeline(name);
  if (!current()) return;
  timelineData = data;
  $("timeline-note").textContent = `${name}: the same sentence through the weights saved at each training step. “${timelineData.sentence}”`;
  const slider = $("timeline-slider");
  slider.max = String(timelineData.snapshots.length - 1);
  state.timelineIndex = Math.min(state.timelineIndex, timelineData.snapshots.length - 1);
  slider.value = String(state.timelineIndex);
  fillSelect($("tl-layer"), timelineData.n_layers, state.tlLayer, "layer");
  fillSelect($("tl-head"), timelineData.n_heads, state.tlHead, "head");
  await drawTimelineStep();
}

async function drawTimelineStep() {
  if (!timelineData) return;
  const snap = timelineData.snapshots[state.timelineIndex];
  const current = ticket("timeline");
  const p = await api.timelineAttention(timelineData.model, snap.step, state.tlLayer, state.tlHead);
  if (!current()) return;
  state.payloads.timeline = { timeline: timelineData, attention: p };
  $("timeline-step").textContent = `step ${snap.step}` + (snap.loss !== null ? ` · loss ${snap.loss.toFixed(3)}` : "") + (p.role.role ? ` · role: ${p.role.role}` : "");
  V.lossCurve($("loss-curve"), timelineData.curve, snap.step);
  const svg = $("tl-heatmap");
  svg.dataset.step = String(snap.step);
  svg.dataset.model = p.model;
  V.heatmap(svg, p.weights, { rows: p.tokens, cols: p.tokens, min: 0, cell: Math.max(6, Math.min(14, Math.floor(560 / p.tokens.length))), masked: (i, j) => j > i });
}

// --- learn ----------------------------------------------------------------------------------------------------

async function drawLearn(slug) {
  const index = await api.contentIndex();
  const nav = V.clear($("learn-index"));
  for (const p of index.pages) V.el("a", { href: formatHash("learn", p.slug), "data-slug": p.slug }, nav, p.title);
  const page = await api.content(slug || "why-attention");
  $("learn-page").innerHTML = page.html; // server-rendered from our Markdown; text is escaped there
  state.payloads.learn = page;
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
