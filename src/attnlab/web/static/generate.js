// The Generate view: the prompt's next-token distribution under the sampler's sliders (POST /api/next-token,
// web/sampling.py), and a generation step by step with its attention and KV cache (POST /api/generate,
// web/generation.py). Its URL state is its own (model, prompt). Drawing with views.js; listed in registry.js.

import { api, currentModel, linkedText, nextTokenCandidates } from "./model.js";
import * as V from "./views.js";

const $ = (id) => document.getElementById(id);
const sampling = { temperature: 0.8, top_k: 0, top_p: 0.95 };
const GENERATED = ["gen-text", "gen-step-label", "gen-bars", "gen-attn", "gen-cache"]; // cleared when a generation fails
let nextToken = null;
let promptTimer = null;
let generation = 0; // only the answer to the latest generation request is drawn

// Generation needs a decoder: the chosen model if it is one, else the word-level default (smollm2).
function generationModel({ state, viewDefaults }) {
  return currentModel()?.family === "decoder" ? state.model : (viewDefaults().generate || state.model);
}

function drawNextToken() {
  if (!nextToken) return;
  V.probabilityBars($("gen-next"), nextTokenCandidates(nextToken, sampling));
}

async function runGeneration(ctx) {
  const { state } = ctx;
  const mine = (generation += 1);
  const model = generationModel(ctx);
  let p;
  try {
    await ctx.need(model);
    p = await ctx.track(api.generate({
      model, text: $("gen-prompt").value, max_new_tokens: Number($("gen-n").value),
      temperature: sampling.temperature, top_k: sampling.top_k, top_p: sampling.top_p, seed: 0,
    }), "generating…");
  } catch (e) {
    if (mine === generation) { for (const id of GENERATED) V.clear($(id)); delete state.payloads.generate; $("gen-result").hidden = true; }
    throw e;
  }
  if (mine !== generation) return;
  state.payloads.generate = p;
  $("gen-result").hidden = false;
  $("gen-step").max = String(p.steps.length - 1);
  $("gen-step").value = "0";
  state.genStep = 0;
  drawGenStep(state);
}

function drawGenStep(state) {
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

export default {
  id: "generate",
  title: "Generate",
  params: "own",
  stripModel: generationModel, // the model strip (strip.js) draws the decoder this view uses
  payload: null, // state.payloads.generate is the last generation (set by runGeneration), not the next-token answer
  results: ["gen-next"], // the next-token answer's; a failed generation clears GENERATED
  cleared: () => { nextToken = null; },
  mount(section, ctx) {
    section.innerHTML = `<form id="gen-form" class="toolbar" autocomplete="off">
        <label class="grow">Prompt <input id="gen-prompt" type="text" value="John gave the book to Sarah because she" maxlength="400"></label>
        <label>Tokens <input id="gen-n" type="number" min="1" max="40" value="16"></label>
        <button type="submit" id="gen-run">Generate</button>
        <span class="export" data-export="generate"></span>
      </form>
      <div id="gen-sliders"></div>
      <div class="split">
        <div><h3>Next token after the prompt <span id="gen-model"></span> <small>(the sliders act at once: the page filters the model's logits with the sampler's rule)</small></h3><svg id="gen-next"></svg></div>
        <p id="gen-next-note" class="summary">Temperature divides the logits before the softmax: below 1 the likely tokens get likelier, above 1 the distribution flattens, 0 always picks the top token. Top-k keeps the k highest; top-p keeps the smallest set holding p of the probability. Press Generate to write with these settings, one token at a time.</p>
      </div>
      <div id="gen-result" hidden>
      <p id="gen-text" class="gen-text"></p>
      <div class="toolbar"><label>Step <input id="gen-step" type="range" min="0" max="0" value="0"></label><span id="gen-step-label"></span></div>
      <div class="split">
        <div><h3>Next-token probabilities</h3><svg id="gen-bars" class="primary"></svg></div>
        <div><h3>Its attention <small>(heads × cached positions, last layer)</small></h3><svg id="gen-attn"></svg>
          <h3>KV cache</h3><svg id="gen-cache"></svg></div>
      </div>
      </div>`;
    $("gen-form").addEventListener("submit", (e) => { e.preventDefault(); ctx.guarded(() => runGeneration(ctx)); });
    $("gen-prompt").addEventListener("input", () => { clearTimeout(promptTimer); promptTimer = setTimeout(ctx.reload, 600); });
    $("gen-step").addEventListener("input", () => { ctx.state.genStep = Number($("gen-step").value); drawGenStep(ctx.state); });
  },
  readParams(params, { state }) {
    $("gen-prompt").value = linkedText(params, $("gen-prompt").value, $("gen-prompt").defaultValue);
    if (params.model && state.models.some((m) => m.name === params.model && m.available)) { state.model = params.model; $("model").value = params.model; }
  },
  // The prompt's next-token logits, fetched once; the sliders then redraw from them without a request.
  async load(ctx) {
    if (!$("gen-sliders").firstChild) V.samplingSliders($("gen-sliders"), sampling, drawNextToken);
    const model = generationModel(ctx);
    const text = $("gen-prompt").value;
    if (!text.trim()) return null;
    await ctx.need(model);
    return { model, text, data: await ctx.track(api.nextToken(model, text)) };
  },
  draw({ model, text, data }, { state, setHash }) {
    nextToken = data;
    setHash({ model, text });
    $("gen-model").textContent = model === state.model ? `(${model})` : `(${model}: ${state.model} cannot write text, so this view uses a decoder)`;
    drawNextToken();
  },
};
