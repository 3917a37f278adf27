// The Translate view: an encoder-decoder writes the translation, then its cross-attention is read as a soft
// alignment (POST /api/translate, web/translation.py). Its URL state is its own (text, layer, head, query); it
// needs no chosen model (it lists the encoder-decoders). Drawing with views.js; listed in registry.js.

import { api, linkedText, modelLabel } from "./model.js";
import * as V from "./views.js";

const $ = (id) => document.getElementById(id);
let typingTimer = null;

// Fill the model list with the encoder-decoder models (the translator first) and say what is missing.
function start(state) {
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
  if (!state.trModel) { $("tr-run").disabled = true; return false; }
  $("tr-run").disabled = false;
  select.value = state.trModel;
  return true;
}

function drawTranslation(ctx) {
  const { state } = ctx;
  const p = state.payloads.translate;
  if (!p) return;
  const w = state.trHead === "mean" ? p.mean_weights[state.trLayer] : p.weights[state.trLayer][state.trHead];
  const out = V.clear($("tr-output"));
  V.el("span", {}, out, p.text || "(empty translation)");
  V.el("span", { class: "prompt" }, out, `   ${p.model}, ${p.beam_size === 1 ? "greedy" : `beam ${p.beam_size}`}, log-probability ${p.logprob.toFixed(2)}`);
  ctx.setHash({ text: $("view-translate").dataset.sentence, layer: state.trLayer, head: state.trHead, query: state.trFocus });
  $("tr-focus-label").textContent = `target token ${state.trFocus}: “${p.target_tokens[state.trFocus]}”`;
  const svg = $("tr-lines");
  svg.dataset.layer = String(state.trLayer); svg.dataset.head = String(state.trHead);
  V.alignment(svg, p.source_tokens, p.target_tokens, w, state.trFocus, (i) => { state.trFocus = i; drawTranslation(ctx); });
  V.heatmap($("tr-heatmap"), w, { rows: p.target_tokens, cols: p.source_tokens, min: 0, xLabel: "source", yLabel: "target",
    cell: Math.max(8, Math.min(22, Math.floor(440 / Math.max(p.source_tokens.length, p.target_tokens.length)))) });
  V.weightsTable($("tr-table"), p.source_tokens, w[state.trFocus], { layer: state.trLayer, head: state.trHead, focus: state.trFocus });
}

export default {
  id: "translate",
  title: "Translate",
  params: "own",
  needsModel: false,
  results: ["tr-output", "tr-focus-label", "tr-lines", "tr-heatmap", "tr-table"],
  cleared: () => { delete $("view-translate").dataset.sentence; },
  mount(section, ctx) {
    section.innerHTML = `<form id="tr-form" class="toolbar" autocomplete="off">
        <label>Model <select id="tr-model"></select></label>
        <label class="grow">English <input id="tr-text" type="text" maxlength="400" value="The word of Yahweh came to me, saying,"></label>
        <label>Beam <select id="tr-beam"><option value="1">1 (greedy)</option><option value="2">2</option><option value="4">4</option></select></label>
        <button type="submit" id="tr-run">Translate</button>
        <span class="export" data-export="translate"></span>
      </form>
      <p id="tr-note" class="summary">The translation is written while you type. Then the model reads its own translation once more (teacher forcing) and every decoder layer records where each target token's cross-attention looks in the source: a soft alignment. The <code>translator</code> model was trained on Bible verses (English→Spanish), so it translates best, and speaks, like one: try a verse rather than a modern sentence.</p>
      <p id="tr-output" class="gen-text" aria-live="polite"></p>
      <div class="toolbar">
        <label>Layer <select id="tr-layer"></select></label>
        <label>Head <select id="tr-head"></select></label>
        <span id="tr-focus-label"></span>
      </div>
      <div class="split">
        <div><h3>Alignment <small>(click a target token to see where it looks; line width ∝ weight)</small></h3><svg id="tr-lines" class="primary" aria-label="Cross-attention alignment lines"></svg></div>
        <div><h3>Cross-attention weights <small>(rows: target tokens as written, columns: source tokens)</small></h3><svg id="tr-heatmap"></svg></div>
      </div>
      <table id="tr-table" class="visually-hidden" aria-label="Cross-attention weights of the focus target token"></table>`;
    const { state, reload } = ctx;
    $("tr-form").addEventListener("submit", (e) => { e.preventDefault(); clearTimeout(typingTimer); reload(); });
    $("tr-text").addEventListener("input", () => { clearTimeout(typingTimer); typingTimer = setTimeout(reload, 600); });
    $("tr-model").addEventListener("change", () => { state.trModel = $("tr-model").value; reload(); });
    $("tr-beam").addEventListener("change", () => reload());
    $("tr-layer").addEventListener("change", () => { state.trLayer = Number($("tr-layer").value); drawTranslation(ctx); });
    $("tr-head").addEventListener("change", () => { const v = $("tr-head").value; state.trHead = v === "mean" ? "mean" : Number(v); drawTranslation(ctx); });
  },
  readParams(params, { state }) {
    const int = (x) => (x !== undefined && /^\d+$/.test(x) ? Number(x) : null);
    const text = linkedText(params, $("tr-text").value, $("tr-text").defaultValue);
    if (text !== $("tr-text").value) { $("tr-text").value = text; delete state.payloads.translate; state.trFocus = 0; }
    if (int(params.layer) !== null) state.trLayer = int(params.layer);
    if (params.head === "mean" || int(params.head) !== null) state.trHead = params.head === "mean" ? "mean" : int(params.head);
    if (int(params.query) !== null) state.trFocus = int(params.query);
  },
  // Routing or Run: list the models, and translate only if nothing is shown yet; the form's inputs: translate.
  async load({ state, need, track, forced }) {
    if (!forced && (!start(state) || state.payloads.translate)) return null;
    if (!state.trModel) return null;
    const text = $("tr-text").value;
    if (!text.trim()) return null;
    await need(state.trModel);
    return { p: await track(api.translate(state.trModel, text, Number($("tr-beam").value)), "translating…"), text };
  },
  payload: ({ p }) => p,
  draw({ p, text }, ctx) {
    const { state } = ctx;
    $("view-translate").dataset.sentence = text;
    const layer = state.trLayer === null ? p.n_layers - 1 : Math.min(state.trLayer, p.n_layers - 1);
    V.fillSelect($("tr-layer"), p.n_layers, layer, "layer");
    state.trHead = state.trHead === "mean" ? "mean" : Math.min(state.trHead, p.n_heads - 1);
    V.fillSelect($("tr-head"), p.n_heads, state.trHead, "head", true);
    state.trLayer = layer;
    state.trFocus = Math.min(state.trFocus, p.target_tokens.length - 1);
    drawTranslation(ctx);
  },
};
