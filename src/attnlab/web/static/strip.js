// The model strip: one small picture of the whole chosen model, on screen through the tour and the views, with the
// part the current step or view is about lit up. Drawn from the model's own config (POST /api/shape, web/ffn.py):
// its family, depth, width, heads, norm placement, positions and output head; the residual stream runs along it,
// each sub-layer branches off it and is added back (⊕), so the skip paths around attention and the feed-forward
// network are drawn. Clicking a part opens the tour step that teaches it (in the tour) or its explanation (in a view).

import { api } from "./model.js";
import * as V from "./views.js";

// Strip parts (web/tour.py STRIP_PARTS): their explanation page and their name on the page.
const PAGE = { embed: "embeddings", position: "positional-encoding", attention: "self-attention", cross: "cross-attention",
  ffn: "feed-forward", residual: "add-norm", output: "linear" };
const NAME = { embed: "embedding", position: "positions", attention: "attention", cross: "cross-attention",
  ffn: "feed-forward", residual: "residual connections and norms", output: "output layer" };
// The part each explore view is about (arch: the part of its open box, ARCH_PART); a view missing here shows the whole model.
const VIEW_PART = { attention: "attention", qkv: "attention", why: "attention", timeline: "attention", order: "position",
  generate: "output", translate: "cross" };
const ARCH_PART = { embed: "embed", pos: "position", attn: "attention", cross: "cross", ff: "ffn", norm1: "residual",
  norm2: "residual", norm3: "residual", linear: "output", softmax: "output" };

const FAMILY = { encoder: "encoder-only", decoder: "decoder-only", "encoder-decoder": "encoder–decoder" };
const shapes = new Map(); // model name -> promise of its POST /api/shape answer
let ticket = 0;

const $ = (id) => document.getElementById(id);

// The model's shape (POST /api/shape), asked once per model; `need` loads the model first.
export function shapeOf(name, need) {
  if (!shapes.has(name)) {
    const p = need(name).then(() => api.shape(name));
    p.catch(() => shapes.delete(name)); // asked again next time
    shapes.set(name, p);
  }
  return shapes.get(name);
}

// The strip of the tour's step n: its preset's model (the timeline's model for the timeline widget, a model of the
// family a diagram step shows; the page's model for steps without one), its `strip` parts lit; a click goes to the first step about that part.
export function stripForStep(tour, n, state, need) {
  const step = tour.steps[n - 1];
  const pre = step.preset;
  // A step that shows a family's diagram (preset `variant`) draws a real model of that family.
  const family = { "encoder-decoder": "encoder-decoder", "encoder-only": "encoder", "decoder-only": "decoder" }[pre.variant];
  const model = pre.model || (pre.widget === "timeline" ? state.models.find((m) => m.timeline && m.available)?.name : null) ||
    (family ? state.models.find((m) => m.family === family && m.available && !m.demo)?.name : null) || state.model;
  const onPick = (part) => {
    const first = tour.steps.find((s) => (s.strip || "").split(" ").includes(part));
    location.hash = first ? `#tour/${first.n}` : `#learn/${PAGE[part]}`;
  };
  // A step whose figure is not computed from a model says so beside the model the strip shows.
  const apart = { toy: "its figure is a hand-set toy, not this model", figure: "its figure is an experiment's plot, not this model" }[pre.widget];
  return showStrip(model, step.strip, need, onPick, apart && !pre.model ? `step ${n} (${apart})` : `step ${n}`);
}

// The strip of explore view `id`: the model it shows (its last answer's, else the page's), the part it is about.
// `model`: the one the view says it shows (a view's optional stripModel(ctx), e.g. Generate's decoder).
export function stripForView(id, state, need, model = null) {
  const drawn = state.payloads[id];
  model = model || (id === "translate" && state.trModel) || (id === "timeline" && state.tlModel) || drawn?.model || state.model;
  const part = id === "arch" ? ARCH_PART[(state.part || "").replace(/^(enc|dec)-/, "")] : VIEW_PART[id];
  return showStrip(model, part || null, need, (p) => { location.hash = `#learn/${PAGE[p]}`; }, "this view");
}

export function hideStrip() {
  ticket += 1;
  const box = $("model-strip");
  if (box) box.hidden = true;
}

async function showStrip(model, lit, need, onPick, where) {
  const box = $("model-strip");
  if (!box || !model) { hideStrip(); return; }
  const mine = (ticket += 1);
  box.hidden = false;
  box.dataset.state = "loading";
  let shape;
  try { shape = await shapeOf(model, need); } catch (e) {
    if (mine !== ticket) return;
    V.clear(box).dataset.state = "error";
    V.el("p", { class: "note" }, box, `No model picture: ${e.message || e}`);
    return;
  }
  if (mine !== ticket) return;
  drawStrip(box, shape, lit ? lit.split(" ") : [], onPick, where);
  box.dataset.state = "ready";
}

// --- drawing ----------------------------------------------------------------------------------------------

const LINE = 58, TOP = 16, BOX_H = 26, MAIN_H = 24, HEIGHT = 92;

function label(shape) {
  const ff = shape.attn_only ? "no feed-forward (attention only)" : `feed-forward ${shape.d_ff.toLocaleString("en")}`;
  const depth = shape.family === "encoder-decoder" ? `${shape.n_layers} + ${shape.n_decoder_layers} blocks` : `${shape.n_layers} blocks`;
  const heads = shape.n_kv_heads !== shape.n_heads ? `${shape.n_heads} heads (${shape.n_kv_heads} K/V)` : `${shape.n_heads} heads`;
  return [`${FAMILY[shape.family]}`, depth, `width ${shape.d_model}`, heads, ff, `${shape.norm_placement}-norm`];
}

// The strip of `shape` in `box`: a caption (model, family, sizes, what is lit) and the SVG.
export function drawStrip(box, shape, lit, onPick, where = "") {
  V.clear(box);
  Object.assign(box.dataset, { model: shape.model, family: shape.family, lit: lit.join(" ") });
  const caption = V.el("div", { class: "strip-caption" }, box);
  V.el("strong", {}, caption, shape.model);
  V.el("span", {}, caption, ` ${label(shape).join(" · ")}`);
  V.el("span", { class: "strip-here" }, caption, lit.length ? `${where ? `${where}: ` : ""}${lit.map((p) => NAME[p]).join(", ")}` : `${where ? `${where}: ` : ""}the whole model`);
  const scroll = V.el("div", { class: "strip-figure" }, box);
  const svg = V.el("svg:svg", { role: "group", "aria-label": `${shape.model}: the whole model, ${lit.length ? `${lit.join(", ")} lit` : "nothing lit"}` }, scroll);
  const g = (part) => {
    const node = V.el("svg:g", { class: `strip-part${lit.includes(part) ? " lit" : ""}`, "data-strip-part": part, tabindex: 0, role: "link",
      "aria-label": `${NAME[part]}: open its ${where.startsWith("step") ? "tour step" : "explanation"}` }, svg);
    if (lit.includes(part)) node.setAttribute("aria-current", "true");
    node.addEventListener("click", () => onPick(part));
    node.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onPick(part); } });
    return node;
  };
  const rect = (parent, x, y, w, h, text, title) => {
    V.el("svg:title", {}, parent, title);
    V.el("svg:rect", { x, y, width: w, height: h, rx: 5 }, parent);
    V.el("svg:text", { x: x + w / 2, y: y + h / 2 + 4, "text-anchor": "middle" }, parent, text);
  };
  const base = V.el("svg:g", { class: "strip-base" }, svg); // the residual stream, under everything
  let x = 6;
  const ends = [];
  const stack = (side) => {
    const start = x;
    rect(g("embed"), x, LINE - MAIN_H / 2, 62, MAIN_H, side === "decoder" && shape.family === "encoder-decoder" ? "target" : "embed",
      `${side === "decoder" && shape.family === "encoder-decoder" ? "target tokens → " : "tokens → "}embedding: a learned row of ${shape.d_model} numbers per token`);
    x += 68;
    if (shape.positions === "learned" || shape.positions === "sinusoidal") {
      rect(g("position"), x, LINE - MAIN_H / 2, 72, MAIN_H, "+ position", `+ a ${shape.positions} position vector per position`);
      x += 78;
    }
    const frameX = x + 2;
    x += 14;
    const n = side === "decoder" && shape.family === "encoder-decoder" ? shape.n_decoder_layers : shape.n_layers;
    const subs = [[side === "decoder" ? "masked attn." : "attention", "attention"]];
    if (side === "decoder" && shape.family === "encoder-decoder") subs.push(["cross-attn.", "cross"]);
    if (!shape.attn_only) subs.push(["feed-forward", "ffn"]);
    let cross = null;
    for (const [text, part] of subs) {
      const x0 = x, pre = shape.norm_placement === "pre";
      const skip = g("residual");
      V.el("svg:title", {}, skip, "residual connection: the sub-layer's output is added (⊕) to its input, which skips around it");
      const node = g(part);
      let bx = x0 + 8;
      if (pre) {
        const nb = g("residual");
        rect(nb, bx, TOP + 3, 34, BOX_H - 6, "norm", `${shape.norm} before the sub-layer (pre-norm)`);
        bx += 40;
      }
      const w = 92;
      const rope = part === "attention" && shape.positions === "rotary" ? " (RoPE)" : "";
      rect(node, bx, TOP, w, BOX_H, text, {
        attention: `${side === "decoder" ? "masked (causal) " : ""}self-attention: ${shape.n_heads} heads of ${shape.d_model / shape.n_heads} numbers${rope ? ", queries and keys rotated by position (RoPE)" : ""}`,
        cross: "cross-attention: the target's queries look at the encoder's output (keys and values)",
        ffn: `feed-forward: ${shape.d_model} → ${shape.d_ff} → ${shape.d_model}, per token (${shape.activation})`,
      }[part]);
      if (rope) V.el("svg:text", { x: bx + w / 2, y: TOP - 4, "text-anchor": "middle", class: "strip-small" }, node, "rotary positions");
      if (part === "cross") cross = bx + w / 2;
      const xr = bx + w, cx = xr + 14;
      // the branch: off the stream, through the sub-layer, back onto it at ⊕
      V.el("svg:path", { d: `M${x0},${LINE} L${x0},${TOP + BOX_H / 2} L${x0 + 8},${TOP + BOX_H / 2} M${xr},${TOP + BOX_H / 2} L${cx},${TOP + BOX_H / 2} L${cx},${LINE - 7}`, class: "strip-branch" }, node);
      V.el("svg:line", { x1: x0, y1: LINE, x2: cx - 7, y2: LINE, class: "strip-skip" }, skip); // the skip path
      V.el("svg:circle", { cx, cy: LINE, r: 7, class: "strip-add" }, skip);
      V.el("svg:text", { x: cx, y: LINE + 4, "text-anchor": "middle", class: "strip-plus" }, skip, "+");
      x = cx + 10;
      if (!pre) {
        rect(skip, x, LINE - 10, 34, 20, "norm", `${shape.norm} after the addition (post-norm)`);
        x += 40;
      }
      x += 6;
    }
    const frameW = x - frameX;
    V.el("svg:rect", { x: frameX, y: 2, width: frameW, height: HEIGHT - 8, rx: 8, class: "strip-frame" }, svg);
    V.el("svg:text", { x: frameX + frameW - 6, y: HEIGHT - 10, "text-anchor": "end", class: "strip-small" }, svg,
      `${side === "decoder" && shape.family === "encoder-decoder" ? "decoder " : shape.family === "encoder-decoder" ? "encoder " : ""}block × ${n}`);
    x += 8;
    ends.push({ start, end: x, cross });
    return cross;
  };
  if (shape.family === "encoder-decoder") {
    stack("encoder");
    const encEnd = x;
    x += 22;
    const cross = stack("decoder");
    const m = g("cross");
    V.el("svg:title", {}, m, "the encoder's output: the keys and values of every decoder block's cross-attention");
    V.el("svg:path", { d: `M${encEnd - 8},${LINE} L${encEnd + 6},${LINE} L${encEnd + 6},${HEIGHT - 4} L${cross},${HEIGHT - 4} L${cross},${TOP + BOX_H}`, class: "strip-memory" }, m);
  } else {
    stack(shape.family === "decoder" ? "decoder" : "encoder");
  }
  if (shape.output) {
    if (shape.norm_placement === "pre") {
      const nb = g("residual");
      rect(nb, x, LINE - 10, 34, 20, "norm", `final ${shape.norm}`);
      x += 40;
    }
    const out = g("output");
    const words = shape.output === "vocabulary";
    rect(out, x, LINE - MAIN_H / 2, 54, MAIN_H, words ? "linear" : "classifier", words ? "linear: a score (logit) for every token of the vocabulary" : "a score per class");
    x += 60;
    if (words) { rect(out, x, LINE - MAIN_H / 2, 58, MAIN_H, "softmax", "softmax: the scores become probabilities for the next (or masked) token"); x += 64; }
  }
  const tail = x - 4; // where the stream ends: at the output layer's last box, or just before the "→ vectors" label
  if (!shape.output) {
    V.el("svg:text", { x: x + 2, y: LINE + 4, class: "strip-small" }, svg, "→ vectors");
    x += 58;
  }
  for (const { start, end } of ends) V.el("svg:line", { x1: start + 58, y1: LINE, x2: Math.min(end, tail), y2: LINE, class: "strip-stream" }, base);
  V.el("svg:line", { x1: ends[ends.length - 1].end - 8, y1: LINE, x2: tail, y2: LINE, class: "strip-stream" }, base);
  svg.setAttribute("viewBox", `0 0 ${x} ${HEIGHT}`);
  svg.setAttribute("width", String(x));
  svg.setAttribute("height", String(HEIGHT));
  svg.prepend(base);
}
