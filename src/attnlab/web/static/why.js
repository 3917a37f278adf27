// The "Why" view: remove a head and see the prediction change; the head-effects map; the logit lens;
// why the focus token looks where it does (score decomposition); which tokens the prediction rests on.
// Data from POST /api/why (attnlab.interpret); drawing with views.js. The view (listed in registry.js) is the
// default export at the end; web/why.py is its server side.

import * as V from "./views.js";
import { call } from "./model.js";

const { el, clear } = V;

function candidates(parent, title, list) {
  const box = el("div", { class: "why-candidates" }, parent);
  el("h4", {}, box, title);
  list.forEach((c) => {
    const row = el("div", { "data-id": c.id, "data-prob": String(c.prob) }, box);
    el("code", {}, row, JSON.stringify(c.token));
    el("span", {}, row, ` ${V.fmt(c.prob, 3)}`);
  });
}

function bars(svg, labels, values) {
  clear(svg);
  const rowH = 18, width = 520, height = 10 + labels.length * rowH;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const m = Math.max(...values.map(Math.abs), 1e-12);
  labels.forEach((label, i) => {
    const y = 4 + i * rowH, v = values[i], w = 180 * Math.abs(v) / m;
    el("svg:text", { x: 150, y: y + 12, "text-anchor": "end", "font-size": 12, fill: "#1d2330" }, svg, label);
    el("svg:rect", { x: v >= 0 ? 340 : 340 - w, y: y + 2, width: Math.max(w, 0.5), height: rowH - 5,
      fill: v >= 0 ? "#d0641c" : "#2456c7", "data-label": label, "data-value": String(v) }, svg);
    el("svg:text", { x: 520, y: y + 12, "text-anchor": "end", "font-size": 11, fill: "#1d2330" }, svg, V.fmt(v, 3));
  });
}

// Draw `p` (a WhyResponse) into `root`; `onPick(layer, head)` and `onFocus(token)` change the selection.
export function drawWhy(root, p, onPick, onFocus) {
  clear(root);
  const pred = el("div", { class: "split" }, root);
  const info = el("div", {}, pred);
  el("p", { class: "summary" }, info,
    `Removing layer ${p.layer} head ${p.head} changes the ${p.prediction.metric} from ${V.fmt(p.prediction.clean, 3)} to ` +
    `${V.fmt(p.prediction.ablated, 3)}.`);
  if (p.prediction.clean_top.length) {
    const lists = el("div", { class: "split" }, info);
    candidates(lists, "next token", p.prediction.clean_top);
    candidates(lists, `without L${p.layer} H${p.head}`, p.prediction.ablated_top);
  }
  const effects = el("div", {}, pred);
  el("h4", {}, effects, "every head removed in turn (click one)");
  const heads = p.head_effects[0].map((_, h) => "H" + h), layers = p.head_effects.map((_, l) => "L" + l);
  const map = V.heatmap(el("svg:svg", { id: "why-effects" }, effects), p.head_effects, { rows: layers, cols: heads, diverging: true, cell: 26 });
  map.querySelectorAll("rect[data-i]").forEach((r) => r.addEventListener("click", () => onPick(Number(r.dataset.i), Number(r.dataset.j))));

  const tokens = el("div", { class: "why-tokens" }, root);
  el("h4", {}, tokens, "which tokens the prediction rests on (integrated gradients; click one to make it the focus)");
  const m = Math.max(...p.saliency.map(Math.abs), 1e-12);
  p.tokens.forEach((t, i) => {
    const s = el("button", { "data-token": i, "data-score": String(p.saliency[i]), "aria-pressed": String(i === p.score.query) }, tokens, t);
    s.style.background = V.colour(p.saliency[i], { min: -m, max: m, diverging: true }); // CSSOM: allowed by the page's CSP
    s.style.color = "#1d2330";
    if (i === p.score.query) s.style.outline = "3px solid #2456c7";
    s.addEventListener("click", () => onFocus(i));
  });

  const score = el("div", {}, root);
  el("h4", {}, score, `why “${p.tokens[p.score.query]}” looks at “${p.tokens[p.score.key]}” in L${p.layer} H${p.head}`);
  if (p.score.available) {
    el("p", { class: "note" }, score, `score ${V.fmt(p.score.score, 4)} = the sum of these query-side × key-side terms (largest shown)`);
    bars(el("svg:svg", { id: "why-score" }, score), p.score.top_pairs.map(([q, k]) => `${q} × ${k}`), p.score.top_pairs.map((x) => x[2]));
  } else {
    el("p", { class: "note" }, score, p.score.reason);
  }
  if (p.logit_lens) {
    const lens = el("div", {}, root);
    el("h4", {}, lens, "the prediction after each layer (logit lens, last position)");
    const table = el("table", { class: "numbers", id: "why-lens" }, lens);
    p.logit_lens.labels.forEach((label, i) => {
      const tr = el("tr", {}, table);
      el("th", {}, tr, label);
      p.logit_lens.top[i].forEach((c) => {
        el("td", { "data-id": c.id }, tr, `${JSON.stringify(c.token)} ${V.fmt(c.prob, 2)}`).style.background = V.colour(c.prob);
      });
    });
  }
}

// The view: its URL state is the shared one (model, text, layer, head, query), its results are in #why-root.
export default {
  id: "why",
  title: "Why",
  params: "shared",
  results: ["why-root"],
  mount: (section) => el("div", { id: "why-root" }, section),
  load: ({ state, track }) => track(call("/api/why", {
    model: state.model, text: state.text, layer: state.layer, head: state.head === "mean" ? 0 : state.head, focus: state.focus,
  })),
  draw: (p, ctx) => drawWhy(document.getElementById("why-root"), p, (layer, head) => ctx.select({ layer, head }),
    (focus) => ctx.select({ focus })),
};
