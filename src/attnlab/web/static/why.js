// The "Why" view: for the head and focus token the learner picks, where the focus token looks, why (the
// attention score split into parts), what the head does for the prediction after the focus token (remove it
// and compare), every head removed in turn, the logit lens, and which tokens the prediction rests on.
// Data from POST /api/why (attnlab.interpret) in two stages: the first answers at once (the head map is attribution
// patching's gradient estimate, no saliency yet), then the page asks for the exact stage (every head removed in
// turn, integrated gradients, the estimate's measured agreement) and redraws with it if the selection is still the
// one it was asked for. The sentences and the ledger are the server's, computed from the numbers. Drawing with views.js. The view (listed in registry.js) is the default export at the end;
// web/why.py is its server side.

import * as V from "./views.js";
import { call } from "./model.js";

const { el, clear } = V;

// --- colours a reader can read: text chosen by the background's luminance (WCAG 2.x) ----------------------

function channel(c) {
  const s = c / 255;
  return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
}

// Relative luminance of "rgb(r,g,b)" or "#rrggbb".
export function luminance(colour) {
  const m = colour.match(/^rgb\((\d+),\s*(\d+),\s*(\d+)\)$/);
  const rgb = m ? m.slice(1).map(Number) : [1, 3, 5].map((i) => parseInt(colour.slice(i, i + 2), 16));
  const [r, g, b] = rgb.map(channel);
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

export function contrast(a, b) {
  const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p);
  return (x + 0.05) / (y + 0.05);
}

// Black or white, whichever contrasts more with `background`: at least 4.58 against any colour.
export function textOn(background) {
  return contrast(background, "#000000") >= contrast(background, "#ffffff") ? "#000000" : "#ffffff";
}

function paint(node, background) {
  node.style.background = background; // CSSOM: allowed by the page's CSP
  node.style.color = textOn(background);
}

// --- pieces -----------------------------------------------------------------------------------------------

const INTRO =
  "Pick a head (click a cell of the map) and a focus token (click a token). The page then answers, for that pair: " +
  "where the focus token looks in the head, why it looks there (the attention score split into parts), and what the " +
  "head does for ";
const INTRO_END = " (the model is run again with the head removed).";

const LEGEND = [
  ["#2456c7", "blue: a negative number. In the head map: removing the head lowers the measure (the head helped it). " +
    "On a token: it pushes the prediction down. In the score parts: it lowers the attention score."],
  ["#c81e1e", "red: a positive number. In the head map: removing the head raises the measure (the head held it back). " +
    "On a token: it pushes the prediction up. In the score parts: it raises the attention score."],
  ["#ffffff", "white: about zero. The stronger the colour, the larger the number."],
];

const TERMS =
  "Score parts: the attention score is the query vector of the focus token dotted with the key vector of the key token. " +
  "Each side is a sum of what earlier parts of the model wrote into that token (its embedding, position, each head's " +
  "output, each feed-forward block's output, constant biases, the norms' offsets), so the score is a sum of " +
  "(query-side part × key-side part) terms; a bar is one such term.";

function sentence(parent, p, key) {
  if (p.sentences[key]) el("p", { class: "sentence", "data-sentence": key }, parent, p.sentences[key]);
}

function unavailable(parent, p, key) {
  if (p.unavailable[key]) el("p", { class: "note", "data-unavailable": key }, parent, p.unavailable[key]);
}

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
  const rowH = 18, width = 820, height = 10 + labels.length * rowH;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const m = Math.max(...values.map(Math.abs), 1e-12);
  labels.forEach((label, i) => {
    const y = 4 + i * rowH, v = values[i], w = 100 * Math.abs(v) / m;
    el("svg:text", { x: 520, y: y + 12, "text-anchor": "end", "font-size": 12, fill: "#1d2330" }, svg, label);
    el("svg:rect", { x: v >= 0 ? 640 : 640 - w, y: y + 2, width: Math.max(w, 0.5), height: rowH - 5,
      fill: v >= 0 ? "#c81e1e" : "#2456c7", "data-label": label, "data-value": String(v) }, svg);
    el("svg:text", { x: 820, y: y + 12, "text-anchor": "end", "font-size": 11, fill: "#1d2330" }, svg, V.fmt(v, 3));
  });
}

function tokenButtons(parent, tokens, attrs, onClick) {
  return tokens.map((t, i) => {
    const b = el("button", attrs(i), parent, t);
    if (onClick) b.addEventListener("click", () => onClick(i));
    return b;
  });
}

// The results on the page belong to this model and sentence: call before asking for another answer, so that
// nothing of another model's or sentence's results stays beside the new one while it is computed.
export function clearWhyIfOther(root, model, text) {
  if (root.dataset.model !== model || root.dataset.text !== text) {
    clear(root);
    delete root.dataset.model;
    delete root.dataset.text;
  }
}

// What a WhyResponse answers: its model, sentence, head and focus (the page compares it with what it shows).
export function whyKey(p) {
  return JSON.stringify([p.model, p.text, p.layer, p.head, p.score.query]);
}

const STAGE = {
  first: "Estimate: the map of heads is attribution patching's gradient estimate (one forward and one backward pass); " +
    "the exact map (every head removed in turn) and the token scores (integrated gradients) are being computed…",
  exact: "Exact: the map of heads is measured (every head removed in turn); the ledger below gives how far attribution " +
    "patching's instant estimate was from it.",
};

// Draw `p` (a WhyResponse) into `root`; `onPick(layer, head)` and `onFocus(token)` change the selection.
export function drawWhy(root, p, onPick, onFocus, text = "") {
  clear(root);
  root.dataset.model = p.model;
  root.dataset.text = text;
  root.dataset.stage = p.exact ? "exact" : "first";
  root.dataset.key = whyKey(p);
  el("p", { class: "note", id: "why-stage", "data-stage": root.dataset.stage }, root, p.exact ? STAGE.exact : STAGE.first);
  const kind = p.cross ? "cross-attention head" : "head";
  const queries = p.target_tokens.length ? p.target_tokens : p.tokens;
  const measured = p.prediction.target === null ? "the sentence embedding" : "the prediction after the focus token";
  el("p", { class: "intro" }, root, INTRO + measured + INTRO_END + (p.cross
    ? " This model translates: the focus is a token of its translation (what the decoder has written so far), the " +
      "heads are the decoder's cross-attention heads, and the keys are the tokens of your sentence."
    : ""));
  const legend = el("div", { class: "why-legend", id: "why-legend" }, root);
  LEGEND.forEach(([colour, words]) => {
    const item = el("span", { class: "legend-item" }, legend);
    el("span", { class: "swatch" }, item).style.background = colour;
    el("span", {}, item, " " + words);
  });

  // the focus token (query) and the tokens
  const tokens = el("div", { class: "why-tokens" }, root);
  if (p.cross) {
    el("h4", {}, tokens, "the translation so far (click a token to make it the focus)");
    tokenButtons(el("div", {}, tokens), p.target_tokens, (i) => ({ "data-target": i, "aria-pressed": String(i === p.score.query) }),
      onFocus).forEach((b, i) => { if (i === p.score.query) b.style.outline = "3px solid #2456c7"; });
  }
  const pending = p.saliency.length ? "" : " (computing…)";
  el("h4", {}, tokens, p.cross
    ? `which tokens of your sentence the prediction rests on (integrated gradients${pending})`
    : `which tokens the prediction rests on (integrated gradients${pending}; click one to make it the focus)`);
  const scores = p.saliency.length ? p.saliency : p.tokens.map(() => 0);
  const m = Math.max(...scores.map(Math.abs), 1e-12);
  const causal = p.family === "decoder";
  tokenButtons(el("div", {}, tokens), p.tokens, (i) => ({ "data-token": i,
    ...(p.saliency.length ? { "data-score": String(p.saliency[i]) } : {}),
    "aria-pressed": String(!p.cross && i === p.score.query) }), p.cross ? null : onFocus).forEach((b, i) => {
    if (causal && i > p.score.query) {
      b.classList.add("after-focus");
      b.title = "after the focus token: it cannot change the prediction there";
    }
    paint(b, V.colour(scores[i], { min: -m, max: m, diverging: true }));
    if (!p.cross && i === p.score.query) b.style.outline = "3px solid #2456c7";
  });
  sentence(tokens, p, "saliency");

  // where the focus looks, and why
  const score = el("div", { class: "why-score" }, root);
  el("h4", {}, score, `why “${queries[p.score.query]}” looks at “${p.tokens[p.score.key]}” in layer ${p.layer} ${kind} ${p.head}`);
  sentence(score, p, "attention");
  if (p.score.available) {
    sentence(score, p, "score");
    el("p", { class: "note" }, score, TERMS);
    bars(el("svg:svg", { id: "why-score" }, score), p.score.top_pairs_plain.map(([q, k]) => `${q} × ${k}`),
      p.score.top_pairs.map((x) => x[2]));
  } else {
    el("p", { class: "note", "data-unavailable": "score" }, score, p.score.reason);
  }

  // remove the head
  const pred = el("div", { class: "split" }, root);
  const info = el("div", {}, pred);
  el("h4", {}, info, `remove layer ${p.layer} ${kind} ${p.head}`);
  sentence(info, p, "prediction");
  unavailable(info, p, "prediction");
  if (p.prediction.clean_top.length) {
    const lists = el("div", { class: "split" }, info);
    candidates(lists, `after “${queries[p.score.query]}”`, p.prediction.clean_top);
    candidates(lists, `without layer ${p.layer} ${kind} ${p.head}`, p.prediction.ablated_top);
  }
  const effects = el("div", {}, pred);
  el("h4", {}, effects, p.exact ? `every ${kind} removed in turn, measured (click one)`
    : `every ${kind} removed in turn, estimated by attribution patching (click one)`);
  sentence(effects, p, "effects");
  const heads = p.head_effects[0].map((_, h) => "H" + h), layers = p.head_effects.map((_, l) => "L" + l);
  const map = V.heatmap(el("svg:svg", { id: "why-effects", "data-exact": String(p.exact) }, effects), p.head_effects, { rows: layers, cols: heads, diverging: true, cell: 26, yLabel: "layer", xLabel: "head" });
  map.querySelectorAll("rect[data-i]").forEach((r) => r.addEventListener("click", () => onPick(Number(r.dataset.i), Number(r.dataset.j))));

  // the logit lens
  const lens = el("div", { class: "why-lens" }, root);
  el("h4", {}, lens, `the prediction after each layer (logit lens, after “${queries[p.score.query]}”)`);
  unavailable(lens, p, "logit_lens");
  if (p.logit_lens) {
    const table = el("table", { class: "numbers", id: "why-lens" }, lens);
    p.logit_lens.labels.forEach((label, i) => {
      const tr = el("tr", {}, table);
      el("th", {}, tr, label);
      p.logit_lens.top[i].forEach((c) => paint(el("td", { "data-id": c.id }, tr, `${JSON.stringify(c.token)} ${V.fmt(c.prob, 2)}`), V.colour(c.prob)));
    });
  }

  // the fidelity ledger
  const ledger = el("div", { class: "why-ledger" }, root);
  el("h4", {}, ledger, "how far to trust these numbers (checked on this sentence)");
  const list = el("ul", { id: "why-ledger" }, ledger);
  p.ledger.forEach((c) => el("li", { "data-holds": String(c.holds) }, list, `${c.holds ? "✓" : "✗"} ${c.text}`));
}

// Each load is numbered: an exact answer arriving after another load began (a click, another model or sentence) is
// dropped, and so is one whose (model, sentence, head, focus) is not what the page shows.
let asked = 0;

async function exactStage(root, first, request, mine, redraw) {
  let p;
  try {
    p = await call("/api/why", { ...request, stage: "exact" });
  } catch (e) {
    if (mine === asked && root.dataset.key === whyKey(first)) {
      el("p", { class: "note", id: "why-exact-error" }, root, `The exact stage failed: ${e.message}`);
    }
    return;
  }
  if (mine !== asked || root.dataset.key !== whyKey(first) || whyKey(p) !== whyKey(first)) return; // stale: drop it
  redraw(p);
}

// The view: its URL state is the shared one (model, text, layer, head, query), its results are in #why-root.
export default {
  id: "why",
  title: "Why",
  params: "shared",
  results: ["why-root"],
  mount: (section) => el("div", { id: "why-root" }, section),
  async load({ state, track }) {
    const text = state.text;
    const mine = ++asked;
    clearWhyIfOther(document.getElementById("why-root"), state.model, text); // nothing of another model or sentence while this one computes
    const request = {
      model: state.model, text, layer: state.layer, head: state.head === "mean" ? 0 : state.head, focus: state.focus,
    };
    const p = await track(call("/api/why", { ...request, stage: "first" }));
    return { p, text, request, mine };
  },
  payload: ({ p }) => p,
  draw: ({ p, text, request, mine }, ctx) => {
    const root = document.getElementById("why-root");
    const redraw = (q) => drawWhy(root, q, (layer, head) => ctx.select({ layer, head }), (focus) => ctx.select({ focus }), text);
    redraw(p);
    if (!p.exact && mine === asked) {
      exactStage(root, p, request, mine, (q) => { ctx.state.payloads.why = q; redraw(q); }); // not awaited: the page is usable meanwhile
    }
  },
};
