// The Experiments view: the plots `attnlab experiment NAME` writes, with what they show and how to read them
// (GET /api/experiments, web/experiments.py). Needs no model; #experiments/NAME scrolls to one. Listed in registry.js.

import { api, formatHash } from "./model.js";
import * as V from "./views.js";

const $ = (id) => document.getElementById(id);

export default {
  id: "experiments",
  title: "Experiments",
  params: null, // the URL names an experiment (#experiments/NAME), not the sentence's state
  routeOnly: true, // loads when the URL routes to it, not when the model or sentence changes
  results: null, // a failed request leaves what it drew
  mount(section) {
    section.innerHTML = `<p class="summary">Explanations of Transformers make claims; each experiment below tests one on a real machine. Plots are the ones <code>attnlab experiment NAME</code> writes, with what they show and how to read them.</p>
      <p id="exp-note" class="note"></p>
      <nav id="exp-index" class="toolbar" aria-label="Experiments"></nav>
      <div id="exp-body"></div>`;
  },
  load: () => api.experiments(),
  draw(data, { state, arg }) {
    $("exp-note").textContent = data.note;
    const nav = V.clear($("exp-index"));
    for (const e of data.experiments) V.el("a", { href: formatHash("experiments", e.name) }, nav, e.name);
    const body = V.clear($("exp-body"));
    for (const e of data.experiments) {
      const section = V.el("section", { class: "experiment" }, body);
      const draw = () => V.experiment(section, e, state.expRuns[e.name] || 0, (i) => { state.expRuns[e.name] = i; draw(); });
      draw();
    }
    if (arg) document.getElementById(`exp-${arg}`)?.scrollIntoView();
  },
};
