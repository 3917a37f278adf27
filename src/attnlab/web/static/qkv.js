// The Q · K · V view: one head's attention for one query token, step by step (POST /api/qkv, web/qkv.py).
// Drawing with views.js; listed in registry.js.

import { api, defaultFocus } from "./model.js";
import * as V from "./views.js";

const FORMULA = `<math display="block"><mrow><mi>Attention</mi><mo>(</mo><mi>Q</mi><mo>,</mo><mi>K</mi><mo>,</mo><mi>V</mi><mo>)</mo><mo>=</mo>
<mi>softmax</mi><mo>(</mo><mfrac><mrow><mi mathcolor="#d9480f">Q</mi><msup><mi mathcolor="#1971c2">K</mi><mi>T</mi></msup></mrow><msqrt><msub><mi>d</mi><mi>k</mi></msub></msqrt></mfrac><mo>+</mo><mi>M</mi><mo>)</mo><mi mathcolor="#2b8a3e">V</mi></mrow></math>`;

const $ = (id) => document.getElementById(id);

export default {
  id: "qkv",
  title: "Q · K · V",
  params: "shared",
  fromTour: true, // a first visit without URL state starts where the tour showed it
  results: ["qkv-title", "qkv-body"],
  mount(section, ctx) {
    section.innerHTML = `<div class="toolbar"><label>Layer <select id="qkv-layer"></select></label><label>Head <select id="qkv-head"></select></label>
        <span id="qkv-title"></span><span class="export" data-export="qkv"></span></div>
      <div id="qkv-formula" class="formula"></div>
      <div id="qkv-body"></div>`;
    $("qkv-layer").addEventListener("change", () => ctx.select({ layer: Number($("qkv-layer").value) }));
    $("qkv-head").addEventListener("change", () => ctx.select({ head: Number($("qkv-head").value) }));
  },
  async load({ state, need, track }) {
    const head = state.head === "mean" ? 0 : state.head;
    await need(state.model);
    // The layer and head pickers need the model's shape: from the attention payload of this sentence.
    let att = state.payloads.attention;
    if (!att || att.model !== state.model || $("view-attention").dataset.sentence !== state.text) {
      att = await track(api.attention(state.model, state.text));
      state.payloads.attention = att;
      $("view-attention").dataset.sentence = state.text;
    }
    V.fillSelect($("qkv-layer"), att.n_layers, state.layer = Math.min(state.layer, att.n_layers - 1), "layer");
    V.fillSelect($("qkv-head"), att.n_heads, Math.min(head, att.n_heads - 1), "head");
    let p = await track(api.qkv(state.model, state.text, state.layer, Math.min(head, att.n_heads - 1), state.focus ?? 0));
    if (state.focus === null || state.focus !== p.focus) { // no focus chosen yet: the sentence's meaningful default
      state.focus = defaultFocus(p.tokens);
      p = await track(api.qkv(state.model, state.text, state.layer, p.head, state.focus));
    }
    return p;
  },
  draw(p, ctx) {
    $("qkv-title").textContent = `${p.model} · layer ${p.layer} · head ${p.head} · focus “${p.tokens[p.focus]}” (click a row to make it the query)`;
    $("qkv-formula").innerHTML = FORMULA;
    V.qkvSteps($("qkv-body"), p, (j) => ctx.select({ focus: j }));
    V.softmaxSteps($("qkv-body"), p);
  },
};
