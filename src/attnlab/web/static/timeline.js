// The Training timeline view: one fixed sentence through the weights saved at each training step
// (GET /api/timeline, POST /api/timeline/attention; web/timeline.py), with the chosen head's role scores at every snapshot. Its URL state is its own snapshot, layer
// and head. Drawing with views.js; listed in registry.js.

import { api, currentModel } from "./model.js";
import * as V from "./views.js";

const $ = (id) => document.getElementById(id);
let timelineData = null;
let stepTicket = 0; // only the answer to the latest snapshot request is drawn

async function drawStep({ state, track, setHash }) {
  if (!timelineData) return;
  const snap = timelineData.snapshots[state.timelineIndex];
  const mine = (stepTicket += 1);
  const p = await track(api.timelineAttention(timelineData.model, snap.step, state.tlLayer, state.tlHead));
  if (mine !== stepTicket) return;
  state.payloads.timeline = { timeline: timelineData, attention: p };
  state.tlStep = snap.step;
  setHash({ layer: state.tlLayer, head: state.tlHead, step: snap.step });
  $("timeline-step").textContent = `step ${snap.step}` + (snap.loss !== null ? ` · loss ${snap.loss.toFixed(3)}` : "") + (p.role.role ? ` · role: ${p.role.role}` : "");
  V.lossCurve($("loss-curve"), timelineData.curve, snap.step);
  V.roleCurves($("tl-roles"), p.role_steps, p.role_scores, p.role_thresholds, snap.step);
  $("tl-roles-note").textContent = `Layer ${p.layer} head ${p.head} (dashed: the thresholds at which a head is given a role; ` +
    `induction on random tokens repeated twice, the others on the sentence): ${p.role_summary}`;
  const svg = $("tl-heatmap");
  svg.dataset.step = String(snap.step);
  svg.dataset.model = p.model;
  V.heatmap(svg, p.weights, { rows: p.tokens, cols: p.tokens, min: 0, cell: Math.max(6, Math.min(14, Math.floor(560 / p.tokens.length))), masked: (i, j) => j > i,
    xLabel: "keys", yLabel: "queries" });
}

export default {
  id: "timeline",
  title: "Training timeline",
  params: "own",
  results: null,
  mount(section, ctx) {
    section.innerHTML = `<div class="toolbar">
        <label>Snapshot <input id="timeline-slider" type="range" min="0" max="0" value="0"></label>
        <span id="timeline-step"></span>
        <label>Layer <select id="tl-layer"></select></label>
        <label>Head <select id="tl-head"></select></label>
        <span class="export" data-export="timeline"></span>
      </div>
      <p id="timeline-note" class="summary"></p>
      <div class="split">
        <div><h3>Loss</h3><svg id="loss-curve"></svg>
          <h3>This head's role scores at each snapshot</h3><svg id="tl-roles"></svg><p id="tl-roles-note" class="summary"></p></div>
        <div><h3>Attention on a fixed sentence at this step</h3><svg id="tl-heatmap" class="primary"></svg></div>
      </div>`;
    const { state, guarded } = ctx;
    $("timeline-slider").addEventListener("input", () => { state.timelineIndex = Number($("timeline-slider").value); guarded(() => drawStep(ctx)); });
    $("tl-layer").addEventListener("change", () => { state.tlLayer = Number($("tl-layer").value); guarded(() => drawStep(ctx)); });
    $("tl-head").addEventListener("change", () => { state.tlHead = Number($("tl-head").value); guarded(() => drawStep(ctx)); });
  },
  readParams(params, { state }) {
    const int = (x) => (x !== undefined && /^\d+$/.test(x) ? Number(x) : null);
    if (int(params.layer) !== null) state.tlLayer = int(params.layer);
    if (int(params.head) !== null) state.tlHead = int(params.head);
    if (int(params.step) !== null) state.tlStep = int(params.step);
    state.tlFromUrl = int(params.layer) !== null && int(params.head) !== null;
  },
  async load({ state, need, track }) {
    stepTicket += 1; // a snapshot still in flight from before would set the step back under the new URL's
    const m = currentModel();
    const name = m && m.timeline ? m.name : state.models.find((x) => x.timeline && x.available)?.name;
    if (!name) { $("timeline-note").textContent = "No available model ships training snapshots (the bundled bible-bpe model does)."; return null; }
    await need(name);
    return { name, data: await track(api.timeline(name), "reading the snapshots…") };
  },
  payload: (_, { state }) => state.payloads.timeline, // set by each snapshot drawn
  async draw({ name, data }, ctx) {
    const { state } = ctx;
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
    V.fillSelect($("tl-layer"), timelineData.n_layers, state.tlLayer, "layer");
    V.fillSelect($("tl-head"), timelineData.n_heads, state.tlHead, "head");
    await drawStep(ctx);
  },
};
