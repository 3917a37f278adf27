// The Order & masks view: the sinusoidal table, two word orders through an encoder with and without positions
// (POST /api/positions, web/order.py), a decoder's causal mask and one layer's heads (POST /api/attention).
// Drawing with views.js; listed in registry.js.

import { api, currentModel } from "./model.js";
import * as V from "./views.js";

const $ = (id) => document.getElementById(id);

export default {
  id: "order",
  title: "Order & masks",
  params: "shared",
  results: ["pe-heatmap", "mask-triangle", "order-note", "order-body", "heads-row"],
  mount(section) {
    section.innerHTML = `<div class="toolbar"><span>Positional encoding and masking</span><span class="export" data-export="order"></span></div>
      <div class="split">
        <div><h3>Sinusoidal positional encoding <small>(positions × dimensions)</small></h3><svg id="pe-heatmap" class="primary"></svg></div>
        <div><h3>Causal mask of a decoder <small>(query i may see keys ≤ i)</small></h3><p id="mask-note" class="note"></p><svg id="mask-triangle"></svg></div>
      </div>
      <h3>“Jake learned AI” vs “AI learned Jake”</h3>
      <p id="order-note" class="summary"></p>
      <div id="order-body" class="split"></div>
      <h3>Heads of one layer side by side</h3>
      <div id="heads-row" class="grid"></div>`;
  },
  async load({ state, need, track, viewDefaults }) {
    // The order experiment runs through an encoder: the chosen model if it is one, else the first available.
    const m = currentModel();
    const encoder = m && m.family === "encoder" ? m : state.models.find((x) => x.family === "encoder" && x.available);
    // The mask needs a causal model: the chosen one if it is a decoder, else the word-level decoder default.
    const maskModel = m && m.family === "decoder" ? m.name : (viewDefaults().generate || state.model);
    await Promise.all([need(state.model), encoder ? need(encoder.name) : null, need(maskModel)]);
    const [pos, att, maskAtt] = await track(Promise.all([api.positions(state.model), api.attention(state.model, state.text),
      maskModel === state.model ? null : api.attention(maskModel, state.text)]));
    return { pos, att, maskAtt, layer: state.layer };
  },
  payload: ({ pos, att, layer }) => ({ positions: pos, attention_layer: { layer, weights: att.weights[layer] } }),
  draw({ pos, att, maskAtt }, { state }) {
    V.heatmap($("pe-heatmap"), pos.table, { cell: 6, cellH: 7, diverging: true, min: -1, max: 1, title: "PE(pos, dim)",
      rows: pos.table.map((_, i) => String(i)), cols: pos.table[0].map((_, j) => String(j)), xLabel: "dimension", yLabel: "position" });
    const ma = maskAtt || att;
    V.heatmap($("mask-triangle"), ma.mean_weights[0], { rows: ma.tokens, cols: ma.tokens, min: 0, cell: 14, masked: (i, j) => ma.causal && j > i, xLabel: "keys", yLabel: "queries" });
    $("mask-note").textContent = ma.causal ? `${ma.model}, layer 0, average of heads: grey cells are masked (weight exactly 0).`
      : `${ma.model} attends without a causal mask (every token sees every token); pick a decoder model to see the triangle.`;
    const body = V.clear($("order-body"));
    $("order-note").textContent = pos.note || (pos.model ? `Model ${pos.model} (${pos.model_positions} positions). ` +
      "Each cell: distance between a final vector of the first sentence and one of the second. Without positions every token finds an exact twin (a zero in its row): the same set of vectors, just reordered." : "");
    const top = Math.max(...pos.comparisons.flatMap((c) => c.distances.flat())); // one colour scale for both grids
    for (const c of pos.comparisons) {
      const box = V.el("div", {}, body);
      V.el("h4", {}, box, `${c.positions ? "with" : "without"} positional information · largest nearest-match distance ${V.distance(Math.max(...c.nearest))}`);
      const same = Math.max(...c.nearest) < V.TWIN;
      V.el("p", { class: "verdict", "data-positions": String(c.positions) }, box, same
        ? "Verdict: every token of the first order has an exact twin in the second: the encoder gives the same vectors for both orders, so it cannot tell them apart."
        : "Verdict: the vectors differ between the two orders: with positions the encoder can tell “who did what to whom”.");
      V.heatmap(V.el("svg:svg", { "data-positions": String(c.positions) }, box), c.distances, { rows: pos.first_tokens, cols: pos.second_tokens, cell: 18,
        xLabel: "2nd order", yLabel: "1st order", min: 0, max: top });
    }
    const row = V.clear($("heads-row"));
    att.weights[state.layer].forEach((w, h) => {
      const cell = V.el("div", { class: "cell" }, row);
      V.el("span", {}, cell, `layer ${state.layer}, head ${h} ${att.roles[state.layer][h].role || ""}`);
      V.heatmap(V.el("svg:svg", {}, cell), w, { min: 0, bar: false, cell: Math.max(3, Math.min(10, Math.floor(160 / w.length))) });
    });
  },
};
