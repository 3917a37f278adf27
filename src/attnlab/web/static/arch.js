// The Architecture view: the diagram of a family (the current model's, until the reader picks another), each
// box's explanation and live values (GET /api/architecture, POST /api/part; web/arch.py), and the hover card.
// #arch/PART opens a part. Drawing with views.js; listed in registry.js.

import { api, currentModel, defaultFocus } from "./model.js";
import { shapeOf, stripForView } from "./strip.js";
import * as V from "./views.js";

const $ = (id) => document.getElementById(id);
let layout = null; // GET /api/architecture, asked once when the page starts
const tickets = { content: 0, part: 0 }; // only the latest answer of each is drawn

// The diagram of the current model's family, until the reader picks another with the buttons.
const FAMILY_VARIANT = { encoder: "encoder-only", decoder: "decoder-only", "encoder-decoder": "encoder-decoder" };

async function drawArch(ctx) {
  const { state } = ctx;
  const wanted = state.variantPicked ? state.variant : FAMILY_VARIANT[currentModel()?.family] || state.variant;
  let variant = (await layout).variants.find((v) => v.id === wanted) || (await layout).variants[0];
  // The current model's own family is drawn as the model has it (POST /api/shape: an attention-only model has no
  // feed-forward boxes); a family picked with the buttons is the textbook one.
  const m = currentModel();
  if (!state.variantPicked && m?.available && variant.id === FAMILY_VARIANT[m.family]) {
    variant = await shapeOf(m.name, ctx.need).then((shape) => shape.variant, () => variant);
  }
  if (state.part && !variant.boxes.some((b) => b.id === state.part)) {
    const other = (await layout).variants.find((v) => v.boxes.some((b) => b.id === state.part));
    if (other) return drawArchVariant(other, ctx);
  }
  return drawArchVariant(variant, ctx);
}

async function drawArchVariant(variant, ctx) {
  const { state } = ctx;
  state.variant = variant.id;
  document.querySelectorAll("button.variant").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.variant === variant.id)));
  $("variant-summary").textContent = variant.summary;
  V.drawDiagram($("diagram"), await layout, variant, state.part, (box) => selectPart(box, ctx), (box) => liveValues(box, ctx));
  state.payloads.arch = { architecture: variant };
  const box = variant.boxes.find((b) => b.id === state.part);
  if (box) await showPart(box, ctx);
}

// The hover card's live values: the same /api/part answer as the click panel (one forward pass through
// run_with_cache), without its heatmaps, at the chosen layer and head; the focus token's row of it.
// Answers are kept per (model, text, part, layer, head), which fixes the request: every focus token is
// in one answer, and two boxes of the same part (the add & norms) share it.
const hoverAnswers = new Map();
const HOVER_KEEP = 64;

// The layer chosen in the Attention view for this model (layer 0 before it has shown this model).
function chosenLayer(state) {
  const seen = state.payloads.attention;
  return seen && seen.model === state.model && state.layer < seen.n_layers ? state.layer : 0;
}

async function liveValues(box, { state, need }) {
  const model = state.model, layer = chosenLayer(state), head = state.head === "mean" ? 0 : state.head;
  const key = JSON.stringify([model, state.text, box.part, layer, head]);
  if (!hoverAnswers.has(key)) {
    const answer = need(model).then(() => api.part(model, state.text, box.part, layer, { head, tensors: false }));
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

async function selectPart(box, ctx) {
  ctx.state.part = box.id;
  ctx.setArg(box.id);
  stripForView("arch", ctx.state, ctx.need); // the strip lights the part opened
  await ctx.guarded(() => drawArch(ctx));
  document.querySelector(`[data-box="${box.id}"]`)?.focus();
}

async function showPart(box, { state, need, track }) {
  const panel = V.clear($("part-panel"));
  panel.dataset.part = box.part;
  const content = (tickets.content += 1);
  const page = await api.content(box.content); // the box names its explanation page (diagram.CONTENT_OF_PART)
  if (content !== tickets.content) return;
  const article = V.el("div", { class: "explanation", "data-slug": page.slug }, panel);
  article.innerHTML = page.html; // rendered server-side from our own Markdown, everything else escaped
  if (box.changed) V.el("p", { class: "note" }, panel, `In this family: ${box.changed}`);
  const layer = chosenLayer(state);
  V.el("h3", {}, panel, `Live values: ${state.model}, “${state.text}”, layer ${layer}`);
  const live = V.el("div", { id: "part-live" }, panel, "computing…");
  const mine = (tickets.part += 1);
  let part;
  try {
    await need(state.model);
    part = await track(api.part(state.model, state.text, box.part, layer));
  } catch (e) {
    if (mine === tickets.part) V.clear(live); // the error line says why; no "computing…" stays beside it
    throw e;
  }
  if (mine !== tickets.part) return;
  V.clear(live);
  V.tensorViews(live, part);
  state.payloads.arch = { architecture: state.payloads.arch.architecture, part };
}

export default {
  id: "arch",
  title: "Architecture",
  params: "shared",
  needsModel: false, // the diagram draws without a model (its live values ask for one)
  results: null, // a failed part request leaves the diagram
  payload: null, // state.payloads.arch: the variant drawn and the part shown
  mount(section, ctx) {
    section.innerHTML = `<div class="toolbar">
        <span>Family:</span>
        <button type="button" class="variant" data-variant="encoder-decoder">Encoder–decoder (2017)</button>
        <button type="button" class="variant" data-variant="encoder-only">Encoder-only (BERT)</button>
        <button type="button" class="variant" data-variant="decoder-only">Decoder-only (GPT/Llama)</button>
        <span class="export" data-export="arch"></span>
      </div>
      <p id="variant-summary" class="summary"></p>
      <div class="split">
        <svg id="diagram" class="primary" role="group" aria-label="Architecture diagram"></svg>
        <article id="part-panel" aria-live="polite"><p class="hint">Click a box (or Tab to it and press Enter) to open its explanation and its live values for the current sentence.</p></article>
      </div>`;
    layout = api.architecture();
    layout.catch(() => {}); // a failure is shown when the view draws
    section.querySelectorAll("button.variant").forEach((b) => b.addEventListener("click", () => {
      ctx.state.variant = b.dataset.variant; ctx.state.variantPicked = true; drawArch(ctx);
    }));
  },
  // The URL's #arch/PART opens that part; then the diagram (and the part's panel) is drawn here: its answers
  // are drawn as they come (the layout, the part's page, its live values), so there is no draw step.
  async load(ctx) {
    if (ctx.arg) ctx.state.part = ctx.arg;
    stripForView("arch", ctx.state, ctx.need); // the strip lights the part the URL opens
    await drawArch(ctx);
    return null;
  },
};
