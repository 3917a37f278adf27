// The Attention view: one head's weights as lines and a matrix, every head of every layer, and the head finder
// and what the selected head does across a corpus (POST /api/attention, POST /api/heads/rank,
// POST /api/heads/contexts; web/attention.py). Drawing with views.js; listed in registry.js.

import { api, defaultFocus, findToken } from "./model.js";
import * as V from "./views.js";

const $ = (id) => document.getElementById(id);
let finder = null; // the head finder's last answer (for the grid's outlines)
let finderTicket = 0; // only the answer to the latest ranking is drawn
let contextsTicket = 0; // only the answer to the latest corpus reading is drawn

async function runFinder(ctx) {
  const { state } = ctx;
  const p = state.payloads.attention;
  if (!p) return;
  const mine = (finderTicket += 1);
  let f;
  try {
    f = await ctx.track(api.rankHeads(p.model, $("view-attention").dataset.sentence, state.focus, state.key), "ranking every head…");
  } catch (e) {
    if (mine === finderTicket) { V.clear($("finder-result")); delete state.payloads.finder; }
    throw e;
  }
  if (mine !== finderTicket) return;
  finder = f;
  state.payloads.finder = f;
  V.headRanking($("finder-result"), f, { limit: 10, onPick: (l, h) => { state.layer = l; state.head = h; ctx.pushState(); drawAttention(ctx); } });
  drawAttention(ctx);
}

// "What does L3H1 do?": the selected head's most specific links over a corpus (POST /api/heads/contexts);
// the first head of a model reads the whole corpus once, then the grid's legend carries every head's roles.
async function runContexts(ctx) {
  const { state } = ctx;
  const p = state.payloads.attention;
  if (!p) return;
  const mine = (contextsTicket += 1);
  let c;
  try {
    c = await ctx.track(api.headContexts(p.model, state.layer, state.head),
      `reading L${state.layer}H${state.head} across the corpus (the first head of a model takes minutes)…`);
  } catch (e) {
    if (mine === contextsTicket) { V.clear($("contexts-result")); delete $("contexts-result").dataset.model; }
    throw e;
  }
  if (mine !== contextsTicket) return;
  V.headContexts($("contexts-result"), c);
  $("contexts-result").dataset.model = p.model;
  p.corpus_roles = c.corpus_roles; // the grid's legend and tooltips: every head's roles over this corpus
  drawGrid(ctx);
}

function drawGrid(ctx) {
  const { state } = ctx;
  const p = state.payloads.attention;
  const highlight = Object.fromEntries((finder?.heads || []).slice(0, 3).map((h, i) => [`${h.layer},${h.head}`, i + 1]));
  V.headGrid($("att-grid"), p, { layer: state.layer, head: state.head }, (l, h) => { state.layer = l; state.head = h; ctx.pushState(); drawAttention(ctx); }, { highlight });
  V.roleLegend($("role-legend"), p.corpus_roles);
  const contexts = $("contexts-result");
  if (contexts.dataset.model && contexts.dataset.model !== p.model) { V.clear(contexts); delete contexts.dataset.model; }
}

// Draws the payload of the current model and sentence only: while a new one loads (a model or sentence change reset
// the focus), a click on the previous figure changes the state, which the new payload's draw then uses.
function drawAttention(ctx) {
  const { state } = ctx;
  const p = state.payloads.attention;
  if (!p || p.model !== state.model || $("view-attention").dataset.sentence !== state.text) return;
  $("att-layer").value = String(state.layer);
  $("att-head").value = String(state.head);
  const w = state.head === "mean" ? p.mean_weights[state.layer] : p.weights[state.layer][state.head];
  const role = state.head === "mean" ? null : p.roles[state.layer][state.head].role;
  $("att-focus-label").textContent = `focus: “${p.tokens[state.focus]}” (token ${state.focus})` + (role ? ` · role: ${role}` : "");
  $("finder-query").value = String(state.focus);
  if (state.key !== null) $("finder-key").value = String(state.key);
  V.tokenLines($("att-lines"), p.tokens, w, state.focus, (i) => { state.focus = i; ctx.pushState(); drawAttention(ctx); });
  V.heatmap($("att-heatmap"), w, { rows: p.tokens, cols: p.tokens, min: 0, cell: Math.max(12, Math.min(22, Math.floor(420 / p.tokens.length))),
    masked: p.causal ? (i, j) => j > i : null, xLabel: "keys", yLabel: "queries" });
  V.weightsTable($("weights-table"), p.tokens, w[state.focus], { layer: state.layer, head: state.head, focus: state.focus });
  drawGrid(ctx);
}

export default {
  id: "attention",
  title: "Attention",
  params: "shared",
  fromTour: true, // a first visit without URL state starts where the tour showed it
  results: ["att-focus-label", "att-lines", "att-heatmap", "finder-result", "att-grid", "weights-table", "finder-query", "finder-key"],
  cleared: () => { delete $("view-attention").dataset.sentence; finder = null; },
  forget: (state) => { delete state.payloads.attention; }, // another view's new model or sentence makes it stale
  mount(section, ctx) {
    section.innerHTML = `<div class="toolbar">
        <label>Layer <select id="att-layer"></select></label>
        <label>Head <select id="att-head"></select></label>
        <span id="att-focus-label"></span>
        <span class="export" data-export="attention"></span>
      </div>
      <p class="summary">Click a token on the left to make it the focus: lines show how much of its attention goes to each token (thicker = more, relative to its largest weight; the numbers are the weights). Below: the full weight matrix and every head of every layer (colour scale from 0 to each map's largest weight).</p>
      <div class="split">
        <svg id="att-lines" class="primary" aria-label="Attention lines"></svg>
        <div><h3>Weights (rows: queries, columns: keys)</h3><svg id="att-heatmap"></svg></div>
      </div>
      <h3>Head finder <small>(which heads link one token to another, more than the other tokens look there?)</small></h3>
      <div class="toolbar" id="finder-bar">
        <label>From (query) <select id="finder-query"></select></label>
        <label>to (key) <select id="finder-key"></select></label>
        <button type="button" id="finder-run">Rank every head</button>
      </div>
      <div id="finder-result"></div>
      <h3>All layers × heads <small>(a row per layer, a column per head; click one to select it; outlined: the head finder's best three)</small></h3>
      <div id="att-grid"></div>
      <p id="role-legend" class="legend"></p>
      <div class="toolbar"><button type="button" id="contexts-run">What does the selected head do across a corpus?</button></div>
      <div id="contexts-result"></div>
      <table id="weights-table" class="visually-hidden" aria-label="Attention weights of the focus token"></table>`;
    const { state } = ctx;
    $("finder-run").addEventListener("click", () => { state.focus = Number($("finder-query").value); state.key = Number($("finder-key").value); ctx.pushState(); ctx.guarded(() => runFinder(ctx)); });
    $("contexts-run").addEventListener("click", () => ctx.guarded(() => runContexts(ctx)));
    $("att-layer").addEventListener("change", () => { state.layer = Number($("att-layer").value); ctx.pushState(); drawAttention(ctx); });
    $("att-head").addEventListener("change", () => { const v = $("att-head").value; state.head = v === "mean" ? "mean" : Number(v); ctx.pushState(); drawAttention(ctx); });
  },
  async load({ state, need, track }) {
    const text = state.text;
    await need(state.model);
    return { p: await track(api.attention(state.model, text)), text };
  },
  payload: ({ p }) => p,
  async draw({ p, text }, ctx) {
    const { state } = ctx;
    $("view-attention").dataset.sentence = text;
    V.fillSelect($("att-layer"), p.n_layers, state.layer = Math.min(state.layer, p.n_layers - 1), "layer");
    V.fillSelect($("att-head"), p.n_heads, state.head = state.head === "mean" ? "mean" : Math.min(state.head, p.n_heads - 1), "head", true);
    if (state.pendingWords) { // the tour preset's query/key words, resolved now that the tokens are known
      state.focus = findToken(p.tokens, state.pendingWords.query) ?? state.focus;
      state.key = findToken(p.tokens, state.pendingWords.key);
      state.pendingWords = null;
    }
    state.focus = state.focus === null || state.focus >= p.tokens.length ? defaultFocus(p.tokens) : state.focus;
    for (const id of ["finder-query", "finder-key"]) {
      V.clear($(id));
      p.tokens.forEach((t, i) => V.el("option", { value: i }, $(id), `${i}: ${t}`));
    }
    drawAttention(ctx);
    if (state.key !== null && state.key < p.tokens.length) await runFinder(ctx);
    else { finder = null; V.clear($("finder-result")); drawGrid(ctx); }
  },
};
