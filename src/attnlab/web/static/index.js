// Plumbing: reads the controls and the URL hash, routes to the views of registry.js (each loads and draws
// itself), keeps the URL state, the error line and the tour; status.js shows what is in flight.

import { api, DEFAULT_SENTENCE, formatHash, linkedText, modelLabel, parseHash, state } from "./model.js";
import { addExportButtons } from "./export.js";
import { VIEWS } from "./registry.js";
import { track } from "./status.js";
import { hideStrip, stripForStep, stripForView } from "./strip.js";
import { drawStep } from "./tour.js";
import * as V from "./views.js";

const $ = (id) => document.getElementById(id);
let view = "tour";
let tourData = null;
let tourStep = 1;
let viewDefaults = {};
const REGISTERED = Object.fromEntries(VIEWS.map((v) => [v.id, v])); // registry.js
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

// What a view drew from its last answer (its `results`): cleared when its request fails while it is still the
// view's latest, so an error line never stands above the previous sentence's (or model's) results.
async function clearingOnError(v, current, fn) {
  try { return await fn(); } catch (e) {
    if (current()) {
      for (const id of v.results) V.clear($(id));
      if (v.payload !== null) delete state.payloads[v.id];
      v.cleared?.();
    }
    throw e;
  }
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

// Each view of registry.js gets its tab (before Learn) and its section, which it fills.
function mountViews() {
  const learn = document.querySelector('#tabs a[data-view="learn"]');
  for (const v of VIEWS) {
    learn.before(V.el("a", { href: `#${v.id}`, "data-view": v.id }, null, v.title));
    const section = V.el("section", { id: `view-${v.id}`, class: "view", hidden: "" }, null);
    $("view-learn").before(section);
    v.mount(section, contextOf(v));
  }
}

async function start() {
  mountViews();
  $("sentence").value = DEFAULT_SENTENCE;
  const models = await api.models();
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
  document.querySelectorAll(".export").forEach((span) => addExportButtons(span, guarded));
  wire();
  if (!location.hash) history.replaceState(null, "", "#tour/1"); // the landing page is the guided tour
  await route();
  document.body.dataset.ready = "true";
}

function wire() {
  $("input-form").addEventListener("submit", (e) => { e.preventDefault(); state.text = $("sentence").value; state.focus = null; state.key = null; refresh(); });
  $("model").addEventListener("change", () => { state.model = $("model").value; state.layer = 0; state.head = 0; state.focus = null; state.key = null; refresh(); });
  $("present").addEventListener("click", togglePresenter);
  document.addEventListener("keydown", onKey);
  window.addEventListener("hashchange", () => route());
}

// The first visit to Attention or Q·K·V without a URL state starts where the tour showed it: the step
// presetting that view for this model and sentence gives the layer, head, focus and key (tour content,
// not code, decides what a good first picture is).
let startedFromTour = false;

async function startFromTour() {
  startedFromTour = true;
  if (!tourData) tourData = await api.tour();
  const step = tourData.steps.find((s) => s.view === view && s.preset.model === state.model && s.preset.text === state.text &&
    s.preset.layer !== null && s.preset.head !== null);
  if (!step) return;
  state.layer = step.preset.layer; state.head = step.preset.head;
  state.pendingWords = { query: step.preset.query, key: step.preset.key }; // resolved once the view has the tokens
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
    toy: tourData.toy, models: state.models, need: needModel, guarded,
    track: (promise, message = "computing…") => track(message, promise), go: (hash) => { location.hash = hash; },
  };
  const { widget, draw, fill } = drawStep($("view-tour"), tourData, n, ctx);
  stripForStep(tourData, n, state, needModel); // the model strip (strip.js): this step's model, its part lit
  widget.dataset.state = "loading";
  const text = api.tourStep(n).then((rendered) => { if (current()) fill(rendered); });
  try {
    await Promise.all([draw(), text]);
    if (current() && widget.dataset.state === "loading") widget.dataset.state = "ready"; // (a predict step: "asking")
  } catch (e) {
    if (current()) { widget.dataset.state = "error"; throw e; }
  }
}

async function route() {
  const { view: v, arg, params } = parseHash(location.hash);
  view = document.getElementById(`view-${v}`) ? v : "tour";
  document.body.dataset.view = view;
  if (REGISTERED[view]?.readParams) REGISTERED[view].readParams(params, contextOf(REGISTERED[view], arg));
  else if (applyParams(params)) VIEWS.forEach((w) => { if (w.id !== view) w.forget?.(state); });
  if (REGISTERED[view]?.fromTour && !Object.keys(params).length && !startedFromTour) await guarded(startFromTour);
  V.hideCard();
  document.querySelectorAll(".view").forEach((s) => { s.hidden = s.id !== `view-${view}`; });
  document.querySelectorAll("#tabs a").forEach((a) => a.setAttribute("aria-current", a.dataset.view === view ? "page" : "false"));
  if (view === "tour") await guarded(() => drawTour(arg));
  else if (view === "learn") { hideStrip(); await guarded(() => drawLearn(arg)); }
  else { stripForView(view, state, needModel, REGISTERED[view]?.stripModel?.(contextOf(REGISTERED[view], arg))); await refresh(arg, true); }
}

// Load the view shown (on routing, Run, a new model); the tour and Learn are drawn on routing only, and so is
// a routeOnly view.
async function refresh(arg = null, routed = false) {
  await guarded(async () => {
    const v = REGISTERED[view];
    if (!v || (v.routeOnly && !routed)) return null;
    if (v.needsModel !== false && !v.routeOnly && !state.model) throw new Error("no model is available: install one (see the README)");
    return loadView(v, arg);
  });
}

// --- a registered view (registry.js): load its answer, keep it, put its state in the URL, draw it ----------

// What a view's mount, load and draw get (registry.js lists it): the page state, the URL's argument, needModel,
// the loading notice, guarded, the URL setters, reload() (load again, forced) and select(changes) (set state,
// push a history entry, load again).
function contextOf(v, arg = null, forced = false) {
  return {
    state, arg, forced, need: needModel, track: (promise, text = "computing…") => track(text, promise), guarded,
    viewDefaults: () => viewDefaults, reload: () => guarded(() => loadView(v, arg, true)),
    setHash: (params) => setHashFor(v.id, params), setArg: (a) => setHash(a), pushState, stateParams,
    select: (changes) => { Object.assign(state, changes); pushState(); return guarded(() => loadView(v)); },
  };
}

async function loadView(v, arg = null, forced = false) {
  const current = ticket(v.id);
  const ctx = contextOf(v, arg, forced);
  const p = await (v.results ? clearingOnError(v, current, () => v.load(ctx)) : v.load(ctx));
  if (!current() || p === null) return; // null: the view said why it has nothing to show
  if (v.payload !== null) state.payloads[v.id] = v.payload ? v.payload(p, ctx) : p; // what its JSON button exports
  const drawn = v.draw(p, ctx); // its state changes are made before its first await
  if (v.params === "shared") setHashFor(v.id, stateParams());
  if (view === v.id) stripForView(v.id, state, needModel, v.stripModel?.(ctx)); // the strip follows the model the view drew
  await drawn;
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

start().catch((e) => showError(e.message || String(e)));
