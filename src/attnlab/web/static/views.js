// Drawing: pure functions from data to SVG/HTML. Colours are written as attributes (not CSS classes)
// so an exported SVG looks the same outside the page.

const SVG = "http://www.w3.org/2000/svg";

export function el(tag, attrs = {}, parent = null, text = null) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

function size(svg, width, height) {
  svg.setAttribute("xmlns", SVG);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  el("svg:rect", { x: 0, y: 0, width, height, fill: "#ffffff" }, svg);
}

// Sequential white -> blue for weights in [0, 1]; diverging blue-white-red for signed values.
export function colour(value, { min = 0, max = 1, diverging = false } = {}) {
  if (!Number.isFinite(value)) return "#e6e8ee";
  if (diverging) {
    const m = Math.max(Math.abs(min), Math.abs(max)) || 1;
    const t = Math.max(-1, Math.min(1, value / m));
    const a = Math.round(255 * (1 - Math.abs(t)));
    return t >= 0 ? `rgb(255,${a},${a})` : `rgb(${a},${a},255)`;
  }
  const t = Math.max(0, Math.min(1, (value - min) / ((max - min) || 1)));
  return `rgb(${Math.round(255 - 219 * t)},${Math.round(255 - 169 * t)},${Math.round(255 - 56 * t)})`;
}

// Token labels: whitespace made visible, long ones cut.
const short = (s, n = 10) => (s.length > n ? s.slice(0, n - 1) + "…" : s).replace(/\n/g, "⏎").replace(/ /g, "␣");
// A distance as the tour prints it (claims.distance is the same rule): "< 1e-4" below float32 rounding, else two
// decimals, or two digits in scientific notation below 0.01.
// A token with an exact twin in the Order experiment: its nearest match is closer than this (claims' twins slot too).
export const TWIN = 1e-3;
export const distance = (x) => (x < 1e-4 ? "< 1e-4" : x >= 0.01 ? x.toFixed(2) : x.toExponential(1));
export const fmt = (v, d = 4) => (v === null || v === undefined ? "−∞" : Number(v).toFixed(d));

// --- the architecture diagram ---------------------------------------------------------------------

const KIND_FILL = { embed: "#fde7c8", position: "#f3f0ff", attention: "#fbd3d0", norm: "#fff8c4", ffn: "#cfe8ff", output: "#d9f2dc" };

// `live(box)` (optional) resolves to the box's live values for the hover card (see openCard).
export function drawDiagram(svg, layout, variant, selected, onSelect, live = null) {
  hideCard(); // the box it described is about to go
  clear(svg);
  size(svg, layout.width, layout.height);
  const defs = el("svg:defs", {}, svg);
  const marker = el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto" }, defs);
  el("svg:path", { d: "M0,0 L10,5 L0,10 z", fill: "#5b6475" }, marker);
  const frameLabels = variant.frames.map((f) => {
    el("svg:rect", { x: f.x, y: f.y, width: f.w, height: f.h, rx: 10, fill: "none", stroke: "#9aa1ad", "stroke-dasharray": "5 4" }, svg);
    return { f, node: el("svg:text", { x: f.x + f.w + 4, y: f.y + 14, "font-size": 11, fill: "#5b6475", "writing-mode": "tb" }, svg, f.label) };
  });
  // The label of the frame a box sits in: the hover card goes beside it too, never over it.
  const labelOf = (b) => frameLabels.find(({ f }) => b.x >= f.x && b.x + b.w <= f.x + f.w && b.y >= f.y && b.y + b.h <= f.y + f.h)?.node;
  const byId = Object.fromEntries(variant.boxes.map((b) => [b.id, b]));
  for (const a of variant.arrows) {
    const s = byId[a.from], t = byId[a.to];
    if (!s || !t) continue;
    const sideways = Math.abs(s.x - t.x) > 1;
    const x1 = sideways ? s.x + s.w : s.x + s.w / 2, y1 = sideways ? s.y + s.h / 2 : s.y;
    const x2 = sideways ? t.x : t.x + t.w / 2, y2 = sideways ? t.y + t.h / 2 : t.y + t.h;
    const d = sideways ? `M${x1},${y1} C${x1 + 50},${y1} ${x2 - 50},${y2} ${x2},${y2}` : `M${x1},${y1} L${x2},${y2}`;
    el("svg:path", { d, fill: "none", stroke: "#5b6475", "stroke-width": 1.4, "marker-end": "url(#arrow)" }, svg);
  }
  for (const b of variant.boxes) {
    // The formula is in the label for screen readers; the hover card (not a native title, which would
    // show a second tooltip) shows it to everyone else.
    const g = el("svg:g", { class: "box", tabindex: 0, role: "button", "data-box": b.id, "data-part": b.part,
      "aria-label": `${b.label}: ${b.formula}` + (b.changed ? ` (changed: ${b.changed})` : ""), "aria-pressed": String(b.id === selected) }, svg);
    const stroke = b.id === selected ? "#2456c7" : b.changed ? "#d0641c" : "#7d8597";
    el("svg:rect", { x: b.x, y: b.y, width: b.w, height: b.h, rx: 6, fill: KIND_FILL[b.kind] || "#fff", stroke,
      "stroke-width": b.id === selected || b.changed ? 2.5 : 1.2 }, g);
    el("svg:text", { x: b.x + b.w / 2, y: b.y + b.h / 2 + 5, "text-anchor": "middle", "font-size": 13, fill: "#1d2330" }, g, b.label);
    if (b.changed) el("svg:circle", { cx: b.x + b.w - 6, cy: b.y + 6, r: 4, fill: "#d0641c" }, g);
    g.addEventListener("click", () => onSelect(b));
    g.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onSelect(b); } });
    const label = labelOf(b);
    g.addEventListener("mouseenter", () => openCard(g, b, live, label));
    g.addEventListener("mouseleave", hideCard);
    // Keyboard focus only: the focus a click leaves behind (or a script gives) does not reopen the card.
    g.addEventListener("focus", () => { if (g.matches(":focus-visible")) openCard(g, b, live, label); });
    g.addEventListener("blur", hideCard);
  }
  // The orange outline and dot mean "changed in this family": say so on the figure, in its empty top corner.
  if (variant.boxes.some((b) => b.changed)) {
    const top = Math.min(...variant.boxes.map((b) => b.y), ...variant.frames.map((f) => f.y));
    const key = el("svg:g", { class: "diagram-legend" }, svg);
    el("svg:circle", { cx: 14, cy: Math.min(18, top - 10), r: 4, fill: "#d0641c" }, key);
    el("svg:text", { x: 24, y: Math.min(18, top - 10) + 4, "font-size": 12, fill: "#5b6475" }, key,
      "orange outline: changed from the 2017 Transformer (click the box: how)");
  }
}

// --- the diagram's hover card ---------------------------------------------------------------------------

// One card for the page, opened CARD_DELAY_MS after the pointer rests on a box (or a box gets keyboard
// focus), so sweeping across the diagram asks for nothing. It shows the box's formula and, when
// `live(box)` is given, resolves it to { part, row, model, family, layer, head, headNote }: the
// /api/part answer (summary only) and the focus token's row of it. Closed by mouseleave, blur and Escape;
// placed beside the box, never over it, and inside the window (again after a scroll or resize).
const CARD_DELAY_MS = 120;
const card = { node: null, box: null, label: null, timer: null, ticket: 0 };

// The box's rectangle, widened to the right over its frame's label (if any), for placing the card.
function anchorRect() {
  const r = card.box.getBoundingClientRect();
  const l = card.label?.getBoundingClientRect();
  if (!l || l.left < r.right - 1) return r;
  return { left: r.left, top: r.top, bottom: r.bottom, right: Math.max(r.right, l.right) };
}

function cardNode() {
  if (card.node) return card.node;
  card.node = el("div", { id: "diagram-card", class: "hover-card", role: "tooltip", hidden: "" }, document.body);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") hideCard(); });
  const follow = () => { if (card.box && !card.node.hidden) placeCard(card.node, anchorRect()); };
  window.addEventListener("scroll", follow, { passive: true });
  window.addEventListener("resize", follow);
  return card.node;
}

export function hideCard() {
  clearTimeout(card.timer);
  card.ticket += 1; // an answer still on its way is dropped
  card.box?.removeAttribute("aria-describedby");
  card.box = null;
  card.label = null;
  if (card.node) card.node.hidden = true;
}

function openCard(g, b, live, label = null) {
  hideCard();
  const mine = card.ticket;
  card.timer = setTimeout(async () => {
    const node = cardNode();
    card.box = g;
    card.label = label;
    g.setAttribute("aria-describedby", node.id);
    node.dataset.box = b.id;
    fillCard(node, b, live ? { state: "loading" } : null);
    node.hidden = false;
    placeCard(node, anchorRect());
    if (!live) return;
    let values;
    try { values = { state: "ready", ...(await live(b)) }; } catch (e) { values = { state: "error", message: e.message || String(e) }; }
    if (mine !== card.ticket) return;
    fillCard(node, b, values);
    placeCard(node, anchorRect());
  }, CARD_DELAY_MS);
}

// Beside the box (right, else left), top-aligned and moved up near the bottom of the window; where
// neither side has room, below the box (else above it).
export function placeCard(node, box, margin = 8, gap = 10) {
  const vw = document.documentElement.clientWidth, vh = document.documentElement.clientHeight;
  node.style.left = "0px"; node.style.top = "0px"; // measured where nothing squeezes it
  const w = node.offsetWidth, h = node.offsetHeight;
  let x = box.right + gap, y = box.top;
  if (x + w > vw - margin) x = box.left - gap - w;
  if (x < margin) {
    x = Math.max(margin, Math.min(box.left, vw - margin - w));
    y = box.bottom + gap + h <= vh - margin ? box.bottom + gap : box.top - gap - h;
  } else {
    y = Math.min(y, vh - margin - h);
  }
  node.style.left = `${Math.round(x)}px`;
  node.style.top = `${Math.round(Math.max(margin, y))}px`;
}

const num = (name, value, digits = 4) => el("span", { class: "num", "data-name": name, "data-value": String(value) }, null, fmt(value, digits));

function line(parent, ...parts) {
  const p = el("p", {}, parent);
  p.append(...parts);
  return p;
}

// A vector's first numbers (the summary holds the first few of its d_model).
function vectorLine(parent, values) {
  const p = line(parent, "[");
  values.forEach((v, i) => { if (i) p.append(", "); p.append(num("first", v)); });
  p.append(", …]");
  p.classList.add("vec-line");
  return p;
}

function fillCard(node, b, v) {
  clear(node);
  node.dataset.state = v ? v.state : "formula";
  el("strong", {}, node, b.label);
  // Once a model's values are in, its own formula (sizes, norm, activation, positions) replaces the paper's.
  const own = v?.state === "ready" && v.part.formula;
  const f = el("div", { class: "formula-line", "data-source": own ? "model" : "paper" }, node, own ? v.part.formula : b.formula);
  f.title = own ? `in ${v.model}; the 2017 paper: ${b.formula}` : "the 2017 paper's formula";
  if (b.changed) el("p", { class: "changed" }, node, `In this family: ${b.changed}`);
  if (v) {
    const live = el("div", { class: "live" }, node);
    if (v.state === "loading") el("p", { class: "muted" }, live, "computing live values…");
    else if (v.state === "error") el("p", { class: "error" }, live, v.message);
    else liveLines(live, b, v);
  }
  el("p", { class: "click-hint" }, node, "Click for the explanation");
}

// A few lines a newcomer can read, per kind of box, from the focus token's summary.
function liveLines(live, b, v) {
  const { part, row } = v;
  if (!part.available) { el("p", { class: "note" }, live, part.reason); return; }
  const tok = `“${short(row.token, 16)}”`;
  const layered = ["attention", "norm", "ffn"].includes(b.kind);
  el("p", { class: "context" }, live, `${v.model} · token ${row.position} ${tok}` + (layered ? ` · layer ${v.layer}` : "") +
    (b.kind === "attention" ? `, head ${v.head}` : ""));
  const [first, second] = row.vectors;
  if (b.kind === "embed") {
    const id = el("span", { class: "num", "data-name": "id" }, null, String(row.id));
    line(live, "Token id ", id, " picks its row of E:");
    vectorLine(live, first.first);
    line(live, "length |E[token]| = ", num("norm", first.norm));
    if (second) line(live, `${second.label}: length `, num("norm", second.norm));
  } else if (b.kind === "position") {
    line(live, `Position ${row.position} adds the vector`);
    vectorLine(live, first.first);
    line(live, "length |PE| = ", num("norm", first.norm));
  } else if (b.kind === "attention") {
    line(live, `${tok} attends most to:`);
    const list = el("ol", { class: "top" }, live);
    for (const k of row.attends) {
      const li = el("li", { "data-key": k.key }, list, `“${short(k.token, 16)}” (token ${k.key}) `);
      li.append(num("weight", k.weight));
    }
    if (v.headNote) el("p", { class: "muted" }, live, v.headNote);
  } else if (b.kind === "norm" || b.kind === "ffn") {
    for (const vec of row.vectors) {
      const p = line(live, `${vec.label}: length `, num("norm", vec.norm), " · mean ", num("mean", vec.mean), " · std ", num("std", vec.std));
      p.dataset.hook = vec.hook;
    }
  } else if (b.kind === "output") {
    const top = (part.top[row.position] || []).slice(0, 3);
    if (!top.length) { el("p", { class: "note" }, live, "no vocabulary output to list"); return; }
    const what = b.part === "softmax" ? "probability" : "logit";
    line(live, v.family === "encoder" ? `At ${tok}'s position the output layer's top ${what}s:` : `Next token after ${tok}, top ${what}s:`);
    const list = el("ol", { class: "top" }, live);
    for (const t of top) {
      const li = el("li", {}, list, `“${short(t.token, 16)}” `);
      li.append(num(what, t.value));
    }
  }
}

// --- heatmaps -----------------------------------------------------------------------------------------

// The value at quantile q (0..1) of the finite numbers in `values` (used to clip colour scales).
export function quantile(values, q) {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (!sorted.length) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))))];
}

// Every how-many labels to print so that labels `need` px tall never overlap in cells `cell` px apart.
export const labelStride = (cell, need = 13) => Math.max(1, Math.ceil(need / cell));

// A heatmap with axes: row labels on the left, column labels vertical on top (thinned so they never
// overlap), axis names in the corner, a colour bar on the right and each cell's value on hover.
// `clip` (a quantile such as 0.99) bounds the colour scale so one outlier cannot wash the map out;
// the bar then says so. `masked(i, j)` greys out cells.
export function heatmap(svg, matrix, { rows = [], cols = [], cell = 18, diverging = false, min, max, masked = null, title = "",
  xLabel = "", yLabel = "", clip = null, bar = true, cellH = null, hover = true } = {}) {
  const ch = cellH ?? cell;
  clear(svg);
  const nr = matrix.length, nc = nr ? matrix[0].length : 0;
  const flat = matrix.flat().filter(Number.isFinite);
  let lo = min ?? Math.min(...flat, 0), hi = max ?? Math.max(...flat, 0);
  let clipped = false;
  if (clip !== null && flat.length) {
    if (diverging) {
      const m = quantile(flat.map(Math.abs), clip);
      if (m < Math.max(Math.abs(lo), Math.abs(hi))) { lo = -m; hi = m; clipped = true; }
    } else {
      const q = quantile(flat, clip);
      if (q < hi) { hi = q; clipped = true; }
    }
  }
  const labelW = rows.length ? 12 + 7 * Math.min(10, Math.max(...rows.map((r) => short(r).length))) : 4;
  const left = Math.max(rows.length ? 70 : 4, labelW);
  let top = cols.length ? 12 + 7 * Math.min(10, Math.max(...cols.map((c) => short(c).length))) : (xLabel ? 18 : 4);
  if (cols.length && (xLabel || yLabel)) top = Math.max(top, 36); // room for the axis names in the corner
  const barW = bar && nr ? 70 : 0;
  const width = left + nc * cell + 8 + barW, height = Math.max(top + nr * ch + 8, bar && nr ? top + 110 : 0);
  size(svg, width, height);
  svg.dataset.lo = String(lo); svg.dataset.hi = String(hi);
  if (title) el("svg:title", {}, svg, title);
  if (yLabel) el("svg:text", { x: 4, y: top - 18, "font-size": 10, fill: "#5b6475", class: "axis" }, svg, `↓ ${yLabel}`);
  if (xLabel) el("svg:text", { x: 4, y: top - 5, "font-size": 10, fill: "#5b6475", class: "axis" }, svg, `→ ${xLabel}`);
  const cs = labelStride(cell), rs = labelStride(ch, 12);
  cols.forEach((c, j) => {
    if (j % cs) return;
    const x = left + j * cell + cell / 2 + 4, y = top - 4;
    el("svg:text", { x, y, "font-size": 11, fill: "#1d2330", transform: `rotate(-90 ${x} ${y})`, class: "label" }, svg, short(c));
  });
  rows.forEach((r, i) => {
    if (i % rs) return;
    el("svg:text", { x: left - 4, y: top + i * ch + ch / 2 + 4, "font-size": 11, "text-anchor": "end", fill: "#1d2330", class: "label" }, svg, short(r));
  });
  matrix.forEach((row, i) => row.forEach((v, j) => {
    const isMasked = masked ? masked(i, j) : false;
    const r = el("svg:rect", { x: left + j * cell, y: top + i * ch, width: Math.max(1, cell - 1), height: Math.max(1, ch - 1),
      fill: isMasked ? "#c9ced8" : colour(v, { min: lo, max: hi, diverging }), "data-i": i, "data-j": j }, svg);
    if (hover) el("svg:title", {}, r, `${rows[i] ?? i} → ${cols[j] ?? j}: ${isMasked ? "masked" : fmt(v)}`);
  }));
  if (barW) colourBar(svg, left + nc * cell + 12, top, { lo, hi, diverging, clipped });
  return svg;
}

// A vertical colour bar with its two end values; "clipped" marks a scale cut at a high percentile.
function colourBar(svg, x, y, { lo, hi, diverging, clipped }) {
  const h = 90, n = 18;
  for (let k = 0; k < n; k += 1) {
    const v = hi - ((hi - lo) * k) / (n - 1);
    el("svg:rect", { x, y: y + (k * h) / n, width: 10, height: h / n + 0.5, fill: colour(v, { min: lo, max: hi, diverging }) }, svg);
  }
  el("svg:rect", { x, y, width: 10, height: h, fill: "none", stroke: "#9aa1ad" }, svg);
  const num = (v) => (Math.abs(v) >= 100 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(1) : v.toFixed(2));
  el("svg:text", { x: x + 13, y: y + 9, "font-size": 10, fill: "#1d2330", class: "label" }, svg, `${clipped ? "≥" : ""}${num(hi)}`);
  el("svg:text", { x: x + 13, y: y + h, "font-size": 10, fill: "#1d2330", class: "label" }, svg, `${clipped && diverging ? "≤" : ""}${num(lo)}`);
  if (clipped) el("svg:text", { x: x + 13, y: y + h / 2 + 4, "font-size": 9, fill: "#5b6475", class: "label" }, svg, "99th pct");
}

// --- attention as lines between tokens ----------------------------------------------------------------

export function tokenLines(svg, tokens, weights, focus, onFocus) {
  clear(svg);
  const rowH = 22, top = 20, width = 560, height = top + tokens.length * rowH + 10;
  size(svg, width, height);
  const lx = 190, rx = 370;
  el("svg:text", { x: lx, y: 12, "text-anchor": "end", "font-size": 11, fill: "#5b6475" }, svg, "query (focus)");
  el("svg:text", { x: rx, y: 12, "font-size": 11, fill: "#5b6475" }, svg, "keys");
  const row = weights[focus] || [];
  const top1 = Math.max(...row, 1e-9); // widths relative to the row's largest weight, printed values absolute
  row.forEach((w, j) => {
    if (w <= 0) return;
    el("svg:line", { x1: lx + 6, y1: top + focus * rowH + 10, x2: rx - 6, y2: top + j * rowH + 10, stroke: "#2456c7",
      "stroke-width": (0.5 + 7 * w / top1).toFixed(2), "stroke-opacity": (0.1 + 0.9 * w / top1).toFixed(3), "data-key": j, "data-weight": w }, svg);
  });
  tokens.forEach((t, i) => {
    const g = el("svg:g", { class: "box", tabindex: 0, role: "button", "data-token": i, "aria-label": `focus on token ${i}: ${t}` }, svg);
    el("svg:rect", { x: lx - 170, y: top + i * rowH, width: 172, height: rowH - 3, rx: 3, fill: i === focus ? "#ffe18a" : "#ffffff" }, g);
    el("svg:text", { x: lx, y: top + i * rowH + 14, "text-anchor": "end", "font-size": 13, fill: "#1d2330", "font-weight": i === focus ? 700 : 400 }, g, short(t, 22));
    g.addEventListener("click", () => onFocus(i));
    g.addEventListener("keydown", (e) => { if (e.key === "Enter") onFocus(i); });
    const w = row[i] ?? 0;
    el("svg:rect", { x: rx, y: top + i * rowH, width: 170, height: rowH - 3, rx: 3, fill: colour(w, { max: top1 }) }, svg);
    el("svg:text", { x: rx + 4, y: top + i * rowH + 14, "font-size": 13, fill: "#1d2330" }, svg, `${short(t, 14)}  ${fmt(w, 3)}`);
  });
}

// The focus row's numbers, in full precision, in a table (for screen readers and the tests).
export function weightsTable(table, tokens, row, { layer, head, focus }) {
  clear(table);
  table.dataset.layer = layer; table.dataset.head = head; table.dataset.focus = focus;
  const head_ = el("tr", {}, el("thead", {}, table));
  el("th", {}, head_, "key"); el("th", {}, head_, "weight");
  const body = el("tbody", {}, table);
  row.forEach((w, j) => {
    const tr = el("tr", {}, body);
    el("td", {}, tr, tokens[j]);
    el("td", { "data-key": j, "data-value": String(w) }, tr, String(w));
  });
}

// --- small multiples of layers x heads -----------------------------------------------------------------

// What each role label of attnlab.inspect.roles means (the grid's legend).
export const ROLE_HELP = {
  "previous-token": "puts at least half its attention on the token just before",
  "first-token": "parks at least half its attention on the first token (a \u201cnowhere\u201d to look when nothing is relevant)",
  "same-token": "puts at least half its attention on the token itself",
  broad: "spreads its attention almost evenly (a bag-of-words average)",
};

// The layers x heads grid as a true matrix: one row per layer, one column per head, labelled axes.
// `highlight` maps "l,h" to a rank (1 = best) to outline the head finder's top heads.
export function headGrid(container, payload, selected, onPick, { highlight = {}, thumb = 84 } = {}) {
  clear(container);
  container.classList.add("head-matrix");
  container.style.gridTemplateColumns = `auto repeat(${payload.n_heads}, minmax(0, 1fr))`;
  el("div", { class: "axis corner" }, container, "layer ↓ · head →");
  for (let h = 0; h < payload.n_heads; h += 1) el("div", { class: "axis col" }, container, `H${h}`);
  const px = Math.max(1, Math.min(6, Math.floor(thumb / payload.tokens.length)));
  payload.weights.forEach((layer, l) => {
    el("div", { class: "axis row" }, container, `L${l}`);
    layer.forEach((w, h) => {
      const rank = highlight[`${l},${h}`];
      const role = payload.roles[l][h].role;
      const cell = el("div", { class: "cell" + (rank ? " top" : ""), role: "button", tabindex: 0, "data-layer": l, "data-head": h,
        "data-rank": rank ?? null, "aria-pressed": String(selected.layer === l && selected.head === h),
        "aria-label": `layer ${l} head ${h}${role ? `, role ${role}` : ""}`, title: `L${l} H${h}${role ? ` · ${role}` : ""}\n${roleTitle(payload.roles[l][h])}${corpusTitle(payload.corpus_roles, l, h)}` }, container);
      heatmap(el("svg:svg", {}, cell), w, { cell: px, min: 0, bar: false, hover: false }); // the cell's own title names it
      el("span", { class: "role" }, cell, rank ? `#${rank}` : (role ? ROLE_ABBR[role] || role : ""));
      cell.addEventListener("click", () => onPick(l, h));
      cell.addEventListener("keydown", (e) => { if (e.key === "Enter") onPick(l, h); });
    });
  });
}

// A head's corpus role scores for its cell's tooltip ("" before any corpus pass of the model).
function corpusTitle(corpus, l, h) {
  if (!corpus) return "";
  const parts = Object.entries(corpus.scores).map(([role, s]) => `${role} ${s[l][h] === null ? "–" : s[l][h].toFixed(2)}/${corpus.thresholds[role]}`);
  return `\nover ${corpus.sentences} corpus sentences: ${parts.join(", ")}`;
}

const ROLE_ABBR = { "first-token": "first", "previous-token": "prev", "same-token": "self", broad: "broad" };

export function roleLegend(container, corpus = null) {
  clear(container);
  el("strong", {}, container, "Role labels: ");
  for (const [role, help] of Object.entries(ROLE_HELP)) {
    const item = el("span", { class: "legend-item" }, container);
    el("code", {}, item, ROLE_ABBR[role] || role);
    item.append(` ${help}`);
  }
  el("span", { class: "legend-item" }, container, "· #1, #2, #3: the head finder's best heads (orange outline)");
  if (corpus) corpusRoleLegend(container, corpus);
}

// The head grid payload's corpus_roles (attnlab.interpret.corpus): per role its threshold and the heads
// whose mean share of attention over the corpus reaches it.
function corpusRoleLegend(container, corpus) {
  const box = el("span", { class: "legend-item corpus-roles", "data-sentences": String(corpus.sentences) }, container,
    `· Over ${corpus.sentences} corpus sentences, a head has a role when its mean share of attention on the pattern is at least the threshold: `);
  for (const [role, threshold] of Object.entries(corpus.thresholds)) {
    const heads = [];
    corpus.roles.forEach((row, l) => row.forEach((given, h) => { if (given.includes(role)) heads.push(`L${l}H${h}`); }));
    const cases = corpus.cases[role] ? "" : " (no case in the corpus)";
    el("span", { class: "corpus-role", "data-role": role, "data-heads": heads.join(" ") }, box,
      `${role} ≥ ${threshold}: ${heads.length ? heads.join(", ") : "no head"}${cases}; `);
  }
}

// The head finder's answer: every head ranked by specificity (the query's weight on the key minus the mean
// weight the other real tokens put there), weight and specificity side by side, links marked against the
// threshold the answer states.
export function headRanking(container, f, { limit = 12, onPick = null } = {}) {
  clear(container);
  const skipped = f.special.length ? ` and the special tokens ${f.special.map((i) => f.tokens[i]).join(", ")}` : "";
  el("p", { class: "summary" }, container, `Every head of ${f.model}, ranked by how specifically “${f.tokens[f.query]}” (token ${f.query}) ` +
    `attends to “${f.tokens[f.key]}” (token ${f.key}). Specificity = its weight minus the mean weight the ${f.others} other words put on that key ` +
    `(the key itself${skipped} left out).`);
  el("p", { class: "threshold", "data-threshold": String(f.threshold) }, container,
    `A head is called a link only when its specificity is at least ${f.threshold}: a high weight alone can be a head that looks at this key from everywhere.`);
  const ol = el("ol", { class: "ranking", "data-query": f.query, "data-key": f.key }, container);
  const hr = el("li", { class: "ranking-head", "aria-hidden": "true" }, ol);
  ["head", "weight", "specificity", ""].forEach((h) => el("span", {}, hr, h));
  f.heads.slice(0, limit).forEach((h, i) => {
    const li = el("li", { "data-label": h.label, "data-weight": String(h.weight), "data-specificity": String(h.specificity),
      "data-link": String(h.link), class: (i < 3 ? "top" : "") + (h.link ? " link" : "") }, ol);
    const b = el("button", { type: "button" }, li, h.label);
    if (onPick) b.addEventListener("click", () => onPick(h.layer, h.head));
    else b.disabled = true;
    for (const [v, colour] of [[h.weight, "#2456c7"], [h.specificity, "#d0641c"]]) {
      const cell = el("span", { class: "bar-cell" }, li);
      const barBox = el("svg:svg", { width: 70, height: 10, "aria-hidden": "true" }, cell);
      el("svg:rect", { x: 0, y: 1, width: Math.max(0.5, 70 * Math.max(0, v)), height: 8, fill: colour }, barBox);
      cell.append(` ${v >= 0 || colour === "#2456c7" ? "" : "−"}${Math.abs(v).toFixed(3)}`);
    }
    el("span", { class: "finder-verdict" }, li, h.verdict);
  });
  if (f.heads.length > limit) el("p", { class: "note" }, container, `…and ${f.heads.length - limit} more heads below these (all ${f.heads.length} are in the JSON export).`);
}

// Exact numbers a widget shows, for screen readers and tests: `hook` and `index` name where they were
// recorded (cache[hook][index...]); the table is visually hidden and takes no space.
export function checkTable(parent, hook, index, labels, values) {
  const table = el("table", { class: "visually-hidden check", "data-hook": hook, "data-index": index.join(",") }, parent);
  const body = el("tbody", {}, table);
  values.forEach((v, j) => {
    const tr = el("tr", {}, body);
    el("td", {}, tr, labels[j] ?? String(j));
    el("td", { "data-value": String(v) }, tr, String(v));
  });
  return table;
}

// The toy: hand-set vectors through attnlab.nn.attention, every step of the arithmetic in a table, for the
// focus query (toy.rows[focus]); clicking a token (or Enter on it) moves the focus and redraws its row.
export function toyAttention(container, toy, focus = toy.query) {
  clear(container);
  const r = toy.rows[focus];
  el("p", { class: "toy-badge" }, container, "Toy, not a real model: three words, hand-set 2-number vectors");
  const pick = el("p", { class: "toy-tokens" }, container, "Focus (click a word): ");
  toy.tokens.forEach((tok, i) => {
    const b = el("button", { type: "button", class: i === focus ? "toy-token focus" : "toy-token", "data-token": i,
      "aria-pressed": String(i === focus) }, pick, tok);
    b.addEventListener("click", () => toyAttention(container, toy, i));
  });
  el("p", { class: "toy-query" }, container, `Query of “${toy.tokens[focus]}”: q = [${r.q.join(", ")}], d_k = ${toy.d_k}, √d_k = ${Math.sqrt(toy.d_k).toFixed(3)}`);
  const table = el("table", { class: "numbers", id: "toy-table", "data-focus": focus }, container);
  const hr = el("tr", {}, el("thead", {}, table));
  ["key token", "key k", "q · k", "÷ √d_k (score)", "softmax (weight)", "value v"].forEach((h) => el("th", {}, hr, h));
  const body = el("tbody", {}, table);
  toy.tokens.forEach((tok, j) => {
    const tr = el("tr", { class: j === focus ? "focus" : "" }, body);
    el("td", {}, tr, tok);
    el("td", { class: "vec" }, tr, `[${toy.keys[j].join(", ")}]`);
    el("td", {}, tr, r.dots[j].toFixed(3));
    el("td", {}, tr, r.scores[j].toFixed(3));
    const w = el("td", { "data-value": String(r.weights[j]) }, tr);
    const barBox = el("svg:svg", { width: 80, height: 10 }, w);
    el("svg:rect", { x: 0, y: 1, width: Math.max(0.5, 80 * r.weights[j]), height: 8, fill: "#2456c7" }, barBox);
    w.append(" " + r.weights[j].toFixed(3));
    el("td", { class: "vec" }, tr, `[${toy.values[j].join(", ")}]`);
  });
  el("p", {}, container, `Output = Σ weight · v = [${r.output.map((x) => x.toFixed(3)).join(", ")}]: mostly the value of “${toy.tokens[r.weights.indexOf(Math.max(...r.weights))]}”.`);
}

// The softmax of one query row as exp -> sum -> divide, from the recorded scores (hook_scores); the
// last column is the model's own hook_weights, so the arithmetic can be checked against it.
export function softmaxSteps(container, p) {
  const visible = p.scores.map((s, j) => (p.masked[j] ? null : s));
  const m = Math.max(...visible.filter((v) => v !== null));
  const ex = visible.map((s) => (s === null ? 0 : Math.exp(s - m)));
  const sum = ex.reduce((a, b) => a + b, 0);
  el("h4", {}, container, "The softmax, step by step");
  el("p", { class: "summary" }, container, `1. exp: e^(score − max), with max = ${m.toFixed(3)} subtracted for numerical safety (it cancels). ` +
    `2. sum: ${sum.toFixed(4)}. 3. divide each exp by the sum. The model's own weights (hook_weights) are in the last column.`);
  const table = el("table", { class: "numbers", id: "softmax-table" }, container);
  const hr = el("tr", {}, el("thead", {}, table));
  ["key token", "score", "1. exp", "3. ÷ sum", "hook_weights"].forEach((h) => el("th", {}, hr, h));
  const body = el("tbody", {}, table);
  p.tokens.forEach((t, j) => {
    const tr = el("tr", {}, body);
    el("td", {}, tr, short(t, 16));
    el("td", { class: p.masked[j] ? "masked" : "" }, tr, p.masked[j] ? "−∞" : fmt(p.scores[j], 3));
    el("td", {}, tr, fmt(ex[j], 4));
    el("td", {}, tr, fmt(ex[j] / sum, 4));
    el("td", {}, tr, fmt(p.weights[j], 4));
  });
  const tr = el("tr", {}, body);
  el("th", {}, tr, "2. sum"); el("td", {}, tr, ""); el("td", {}, tr, sum.toFixed(4)); el("td", {}, tr, "1.0000"); el("td", {}, tr, p.weights.reduce((a, b) => a + b, 0).toFixed(4));
}

function roleTitle(role) {
  return Object.entries(role.scores).map(([k, v]) => `${k}: ${v.toFixed(2)}`).join(", ");
}

// --- tensors of a diagram part --------------------------------------------------------------------------

export function tensorViews(container, part, { only = null } = {}) {
  if (!part.available) { el("p", { class: "note" }, container, part.reason); return; }
  const attention = part.tensors.length && part.tensors[0].hook.endsWith("hook_weights");
  const holder = attention ? el("div", { class: "grid" }, container) : container;
  for (const t of only ? part.tensors.slice(0, only) : part.tensors) {
    const box = el("div", { class: "tensor" }, holder);
    el("div", { class: "meta" }, box, `${t.label} · ${t.hook} · shape [${t.shape.join(", ")}]` +
      (t.shown_columns < t.shape[t.shape.length - 1] ? ` · first ${t.shown_columns} columns` : "") +
      ` · min ${fmt(t.min, 3)} max ${fmt(t.max, 3)}` + (attention ? "" : " · colours clipped at the 99th percentile of |value| so one outlier cannot wash the map out; hover a cell for its value"));
    const dims = Array.from({ length: t.shown_columns }, (_, j) => String(j));
    heatmap(el("svg:svg", {}, box), t.values, { rows: t.rows, cell: attention ? Math.max(5, Math.min(14, Math.floor(300 / t.rows.length))) : 8, cellH: attention ? null : 14,
      diverging: !attention, min: attention ? 0 : t.min, max: t.max, cols: attention ? t.rows : dims, clip: attention ? null : 0.99,
      xLabel: attention ? "keys" : "dimension", yLabel: attention ? "queries" : "token" });
  }
  if (part.top.length) {
    el("h4", {}, container, part.top_label);
    const table = el("table", { class: "numbers" }, container);
    part.top.forEach((row, i) => {
      const tr = el("tr", {}, table);
      el("th", {}, tr, part.tensors[0]?.rows[i] ?? String(i));
      row.forEach((c) => el("td", {}, tr, `${short(c.token, 12)} ${fmt(c.value, 3)}`));
    });
  }
}

// --- Q, K, V step by step ---------------------------------------------------------------------------------

const vec = (v, n = 6) => "[" + v.slice(0, n).map((x) => x.toFixed(3)).join(", ") + (v.length > n ? ", …" : "") + "]";

export function qkvSteps(container, p, onFocus = null) {
  clear(container);
  qkvVectors(el("div", { class: "qkv-vectors" }, container), p);
  el("p", {}, container, `Query of “${p.tokens[p.focus]}” (hook_q, d_k = ${p.d_k}): `).appendChild(el("span", { class: "vec" }, null, vec(p.query, 8)));
  const table = el("table", { class: "numbers", id: "qkv-table" }, container);
  const hr = el("tr", {}, el("thead", {}, table));
  ["key token", "key k (hook_k)", "q · k", `÷ √d_k = ${p.sqrt_d_k.toFixed(3)} (hook_scores)`, "mask", "softmax (hook_weights)", "value v (hook_v)"]
    .forEach((h) => el("th", {}, hr, h));
  const body = el("tbody", {}, table);
  p.tokens.forEach((t, j) => {
    const tr = el("tr", { class: j === p.focus ? "focus" : "", "data-token": j, title: "click: make this the query" }, body);
    if (onFocus) tr.addEventListener("click", () => onFocus(j));
    el("td", {}, tr, short(t, 16));
    el("td", { class: "vec", title: `k = ${vec(p.keys[j], p.keys[j].length)}` }, tr, vec(p.keys[j], 4));
    el("td", {}, tr, fmt(p.dots[j]));
    el("td", { class: p.masked[j] ? "masked" : "" }, tr, p.masked[j] ? "−∞" : fmt(p.scores[j]));
    el("td", { class: p.masked[j] ? "masked" : "" }, tr, p.masked[j] ? "masked" : "visible");
    const w = el("td", { "data-value": String(p.weights[j]) }, tr);
    const bar = el("svg:svg", { width: 80, height: 10 }, w);
    el("svg:rect", { x: 0, y: 1, width: Math.max(0.5, 80 * p.weights[j]), height: 8, fill: "#2456c7" }, bar);
    w.appendChild(document.createTextNode(" " + fmt(p.weights[j])));
    el("td", { class: "vec", title: `v = ${vec(p.values[j], p.values[j].length)}` }, tr, vec(p.values[j], 4));
  });
  el("p", {}, container, "Weighted sum of the values, Σ softmax · v (hook_z): ").appendChild(el("span", { class: "vec" }, null, vec(p.output, 8)));
  el("p", { class: "note" }, container, `Check: |q·k/√d_k − hook_scores| ≤ ${p.max_scale_error.toExponential(2)} over the visible keys.`);
}

// Q, K, V as coloured vectors tied to the formula's terms: the focus's query q, the key k and value v of one key
// token (the one it weighs most; click another key), their first QKV_DIMS numbers from the payload (hook_q/k/v), each
// in its term's colour, beside softmax(q·k/√d_k)·v with this key's own numbers filled in.
const QKV_DIMS = 8;
const TERM = { q: "#d9480f", k: "#1971c2", v: "#2b8a3e" };

export function qkvVectors(container, p, key = null) {
  clear(container);
  const visible = p.weights.map((w, j) => (p.masked[j] ? -1 : w));
  const j = key ?? visible.indexOf(Math.max(...visible));
  const dims = Math.min(QKV_DIMS, p.d_k);
  const term = (name, parent, text = name) => el("span", { class: `term term-${name}` }, parent, text);
  const formula = el("p", { class: "qkv-formula", "data-key": String(j) }, container);
  formula.append("softmax( ");
  term("q", formula); formula.append(" · "); term("k", formula); formula.append(` / √d_k ) · `); term("v", formula);
  formula.append(`   with d_k = ${p.d_k}, for the query “${p.tokens[p.focus]}” and the key “${p.tokens[j]}”:`);
  const rows = [["q", p.query, `q: query of “${p.tokens[p.focus]}” (${p.hooks.q.split(".").pop()})`],
    ["k", p.keys[j], `k: key of “${p.tokens[j]}” (${p.hooks.k.split(".").pop()})`],
    ["v", p.values[j], `v: value of “${p.tokens[j]}” (${p.hooks.v.split(".").pop()})`]];
  const lim = Math.max(...rows.flatMap(([, x]) => x.slice(0, dims).map(Math.abs))) || 1;
  const cw = 46, lw = 230, svg = el("svg:svg", { class: "qkv-vecs", "aria-label": "q, k and v, first numbers" }, container);
  size(svg, lw + dims * cw + 70, rows.length * 30 + 6);
  rows.forEach(([name, x, text], r) => {
    const g = el("svg:g", { "data-term": name }, svg);
    const y = 4 + r * 30;
    el("svg:text", { x: lw - 8, y: y + 17, "text-anchor": "end", "font-size": 12, fill: TERM[name], "font-weight": 600 }, g, text);
    x.slice(0, dims).forEach((value, d) => {
      el("svg:rect", { x: lw + d * cw, y, width: cw - 2, height: 24, rx: 3, fill: TERM[name], "fill-opacity": (0.08 + 0.6 * Math.abs(value) / lim).toFixed(3),
        stroke: TERM[name], "data-value": String(value) }, g);
      el("svg:text", { x: lw + d * cw + (cw - 2) / 2, y: y + 16, "text-anchor": "middle", "font-size": 11, fill: "#1d2330" }, g, value.toFixed(2));
    });
    el("svg:text", { x: lw + dims * cw + 4, y: y + 16, "font-size": 11, fill: "#5b6475" }, g, `… ${x.length} in all`);
  });
  const sum = el("p", { class: "qkv-sum" }, container);
  term("q", sum); sum.append(" · "); term("k", sum);
  sum.append(` = ${fmt(p.dots[j])}, ÷ √${p.d_k} = ${p.masked[j] ? "−∞ (masked)" : fmt(p.scores[j])}; softmax over all keys gives ${fmt(p.weights[j])}, so “${p.tokens[p.focus]}” takes ${fmt(p.weights[j])} × `);
  term("v", sum); sum.append(` of “${p.tokens[j]}”.`);
  const keys = el("p", { class: "qkv-keys" }, container, "Other keys: ");
  p.tokens.forEach((t, i) => {
    if (p.masked[i]) return;
    const b = el("button", { type: "button", class: "chip", "aria-pressed": String(i === j), "data-token": String(i) }, keys, short(t, 12));
    b.addEventListener("click", () => qkvVectors(container, p, i));
  });
}

// One token through a feed-forward network (POST /api/ffn): every hidden unit before and after the non-linearity
// (ff.hook_pre vs ff.hook_hidden, a point per unit, so the curve drawn is the model's own activation), the counts of
// negative units, then the residual addition: stream (hook_resid_mid) + output (ff.hook_out) = sum, and the block's
// output (hook_resid_post; after the norm in a post-norm block), their first FFN_DIMS numbers.
const FFN_DIMS = 24;

export function ffnStep(container, p) {
  clear(container);
  const split = el("div", { class: "split ffn-split" }, container);
  const left = el("figure", { class: "ffn-units" }, split);
  el("figcaption", {}, left, `All ${p.d_ff.toLocaleString("en")} hidden units of “${p.tokens[p.focus]}”: before (x) and after (y) the non-linearity (${p.activation})`);
  const svg = el("svg:svg", { "aria-label": "hidden units before and after the non-linearity" }, left);
  const W = 320, H = 220, pad = 34;
  size(svg, W, H);
  const xs = p.before, ys = p.after;
  const x0 = Math.min(0, ...xs), x1 = Math.max(0, ...xs), y0 = Math.min(0, ...ys), y1 = Math.max(0, ...ys);
  const X = (v) => pad + (v - x0) / (x1 - x0 || 1) * (W - pad - 8), Y = (v) => H - pad + 8 - (v - y0) / (y1 - y0 || 1) * (H - pad - 8);
  el("svg:line", { x1: X(x0), y1: Y(0), x2: X(x1), y2: Y(0), stroke: "#9aa1ad" }, svg);
  el("svg:line", { x1: X(0), y1: Y(y0), x2: X(0), y2: Y(y1), stroke: "#9aa1ad" }, svg);
  xs.forEach((v, i) => el("svg:circle", { cx: X(v).toFixed(1), cy: Y(ys[i]).toFixed(1), r: 1.6, fill: v < 0 ? "#9aa1ad" : "#2456c7", "fill-opacity": 0.7 }, svg));
  el("svg:text", { x: W - 8, y: H - 4, "text-anchor": "end", "font-size": 11, fill: "#5b6475" }, svg, `before → (${x0.toFixed(2)} to ${x1.toFixed(2)})`);
  el("svg:text", { x: X(0) - 4, y: 12, "text-anchor": "end", "font-size": 11, fill: "#5b6475" }, svg, `after ↑ (${y0.toFixed(2)} to ${y1.toFixed(2)})`);
  const counts = el("p", { class: "ffn-counts" }, left);
  counts.append(`negative before: ${p.negative_before.toLocaleString("en")} of ${p.d_ff.toLocaleString("en")} · after: ${p.negative_after.toLocaleString("en")}` +
    ` (lowest ${Math.min(...ys).toFixed(2)}) · exactly 0 after: ${p.zero_after.toLocaleString("en")}`);
  const right = el("figure", { class: "ffn-residual" }, split);
  const post = p.norm_placement === "post";
  el("figcaption", {}, right, `The residual addition (first ${FFN_DIMS} of ${p.d_model} numbers)`);
  const length = (v) => Math.sqrt(v.reduce((a, b) => a + b * b, 0)).toFixed(2);
  const rows = [[p.stream, "stream", "the residual stream entering the sub-layer (hook_resid_mid)"],
    [p.out, "+ ffn out", "what the feed-forward network adds (ff.hook_out)"], [p.added, "= sum", "their sum: the residual addition"],
    [p.result, "output", post ? "the block's output: the layer norm of the sum (hook_resid_post)" : "the block's output (hook_resid_post)"]];
  const lim = Math.max(...rows.flatMap(([v]) => v.slice(0, FFN_DIMS).map(Math.abs)));
  heatmap(el("svg:svg", { "aria-label": "residual stream plus feed-forward output" }, right), rows.map(([v]) => v.slice(0, FFN_DIMS)),
    { rows: rows.map(([, l]) => l.replace(/ /g, "\u00a0")), diverging: true, min: -lim, max: lim, cell: 15, cellH: 24 }); // no-break spaces: these labels are names, not tokens (a token's space is drawn ␣)
  const list = el("ul", { class: "ffn-lengths" }, right);
  rows.forEach(([v, name, text]) => el("li", {}, list, `${name}: ${text}, length ${length(v)}`));
  el("p", { class: "note" }, right, post
    ? `A post-norm block: its output is the layer norm of the sum (largest change the norm makes: ${p.max_add_error.toFixed(2)}).`
    : `A pre-norm block: its output is the sum itself (largest difference ${p.max_add_error.toExponential(1)}, rounding).`);
}

// --- generation ---------------------------------------------------------------------------------------------

export function probabilityBars(svg, step) {
  clear(svg);
  const rowH = 20, width = 480, height = step.candidates.length * rowH + 30;
  size(svg, width, height);
  el("svg:text", { x: 110, y: 12, "font-size": 11, fill: "#5b6475" }, svg, "grey: softmax(logits / T) · blue: after top-k / top-p");
  step.candidates.forEach((c, i) => {
    const y = 20 + i * rowH;
    el("svg:text", { x: 100, y: y + 13, "text-anchor": "end", "font-size": 13, fill: c.id === step.id ? "#b3261e" : "#1d2330",
      "font-weight": c.id === step.id ? 700 : 400 }, svg, JSON.stringify(c.token));
    el("svg:rect", { x: 110, y: y + 2, width: Math.max(0.5, 300 * c.prob), height: 7, fill: "#9aa1ad" }, svg);
    el("svg:rect", { x: 110, y: y + 10, width: Math.max(0, 300 * c.kept), height: 7, fill: "#2456c7" }, svg);
    el("svg:text", { x: 420, y: y + 13, "font-size": 11, fill: "#1d2330" }, svg, c.kept.toFixed(3));
  });
}

// Three sliders (temperature, top-k, top-p) that call `onChange(settings)` on every move.
export function samplingSliders(container, settings, onChange) {
  const bar = el("div", { class: "toolbar sliders" }, container);
  const specs = [["temperature", "Temperature", 0, 2, 0.05, (v) => (v === 0 ? "0 (greedy)" : v.toFixed(2))],
    ["top_k", "Top-k", 0, 50, 1, (v) => (v === 0 ? "off" : String(v))],
    ["top_p", "Top-p", 0.05, 1, 0.01, (v) => (v >= 1 ? "off" : v.toFixed(2))]];
  for (const [key, label, min, max, step, show] of specs) {
    const l = el("label", {}, bar, `${label} `);
    const input = el("input", { type: "range", min, max, step, value: settings[key], "data-setting": key }, l);
    const out = el("output", {}, l, show(settings[key]));
    input.addEventListener("input", () => { settings[key] = Number(input.value); out.textContent = show(settings[key]); onChange(settings); });
  }
  return bar;
}

export function kvCache(svg, length, capacity) {
  clear(svg);
  const cell = 10, width = Math.max(340, capacity * (cell + 1) + 10);
  size(svg, width, 34);
  for (let i = 0; i < capacity; i += 1) {
    el("svg:rect", { x: 4 + i * (cell + 1), y: 4, width: cell, height: 14, fill: i < length ? "#2456c7" : "#e6e8ee" }, svg);
  }
  el("svg:text", { x: 4, y: 30, "font-size": 11, fill: "#1d2330" }, svg, `${length} positions cached (keys and values of every layer)`);
}

// --- loss curve -----------------------------------------------------------------------------------------------

export function lossCurve(svg, curve, step) {
  clear(svg);
  const width = 480, height = 240, pad = 40;
  size(svg, width, height);
  if (!curve.length) { el("svg:text", { x: 20, y: 40, fill: "#5b6475" }, svg, "no loss log shipped with this model"); return; }
  const xs = curve.map((p) => p.step), ys = curve.map((p) => p.value);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || 1, y0 = Math.min(...ys), y1 = Math.max(...ys);
  const X = (v) => pad + ((v - x0) / ((x1 - x0) || 1)) * (width - 2 * pad);
  const Y = (v) => height - pad - ((v - y0) / ((y1 - y0) || 1)) * (height - 2 * pad);
  const series = [...new Set(curve.map((p) => p.series))];
  const colours = ["#2456c7", "#d0641c", "#3a8a3a"];
  series.forEach((name, k) => {
    const pts = curve.filter((p) => p.series === name).map((p) => `${X(p.step).toFixed(1)},${Y(p.value).toFixed(1)}`);
    el("svg:polyline", { points: pts.join(" "), fill: "none", stroke: colours[k % 3], "stroke-width": 1.5 }, svg);
    el("svg:text", { x: width - pad, y: 14 + 14 * k, "text-anchor": "end", "font-size": 11, fill: colours[k % 3] }, svg, name);
  });
  el("svg:line", { x1: pad, y1: height - pad, x2: width - pad, y2: height - pad, stroke: "#5b6475" }, svg);
  el("svg:line", { x1: pad, y1: pad, x2: pad, y2: height - pad, stroke: "#5b6475" }, svg);
  el("svg:text", { x: pad, y: height - 20, "font-size": 11, fill: "#5b6475" }, svg, `step ${x0}`);
  el("svg:text", { x: width - pad, y: height - 20, "font-size": 11, fill: "#5b6475", "text-anchor": "end" }, svg, `step ${x1}`);
  el("svg:text", { x: 4, y: pad, "font-size": 11, fill: "#5b6475" }, svg, y1.toFixed(2));
  el("svg:text", { x: 4, y: height - pad, "font-size": 11, fill: "#5b6475" }, svg, y0.toFixed(2));
  el("svg:line", { x1: X(step), y1: pad - 10, x2: X(step), y2: height - pad, stroke: "#b3261e", "stroke-width": 2, id: "step-marker" }, svg);
}

// One head's role scores at each snapshot (x: the snapshots in order, labelled with their steps; y: 0..1),
// one polyline per role (its points skip the snapshots where the role has no case), a dashed line at each
// threshold value labelled with its roles, and the current snapshot marked.
export const ROLE_COLOURS = ["#2456c7", "#d0641c", "#3a8a3a", "#8e3bb5", "#b3261e"];
export function roleCurves(svg, steps, scores, thresholds, step) {
  clear(svg);
  const width = 520, height = 250, pad = 40, right = 170;
  size(svg, width, height);
  const X = (k) => pad + (k / Math.max(1, steps.length - 1)) * (width - pad - right);
  const Y = (v) => height - pad - v * (height - 2 * pad);
  el("svg:line", { x1: pad, y1: height - pad, x2: width - right, y2: height - pad, stroke: "#5b6475" }, svg);
  el("svg:line", { x1: pad, y1: pad, x2: pad, y2: height - pad, stroke: "#5b6475" }, svg);
  el("svg:text", { x: 4, y: pad + 4, "font-size": 11, fill: "#5b6475" }, svg, "1");
  el("svg:text", { x: 4, y: height - pad + 4, "font-size": 11, fill: "#5b6475" }, svg, "0");
  steps.forEach((s, k) => el("svg:text", { x: X(k), y: height - pad + 14, "font-size": 9, fill: "#5b6475", "text-anchor": "middle" }, svg, String(s)));
  el("svg:text", { x: (pad + width - right) / 2, y: height - 8, "font-size": 11, fill: "#5b6475", "text-anchor": "middle" }, svg, "snapshot (training step)");
  const byValue = {};
  Object.entries(thresholds).forEach(([role, v]) => { (byValue[v] = byValue[v] || []).push(role); });
  Object.entries(byValue).forEach(([v, roles]) => {
    el("svg:line", { x1: pad, y1: Y(Number(v)), x2: width - right, y2: Y(Number(v)), stroke: "#9aa1ad", "stroke-dasharray": "4 3",
      class: "role-threshold", "data-threshold": v, "data-roles": roles.join(",") }, svg);
    el("svg:text", { x: pad - 4, y: Y(Number(v)) + 4, "font-size": 10, fill: "#5b6475", "text-anchor": "end" }, svg, String(v));
  });
  Object.entries(scores).forEach(([role, values], r) => {
    const c = ROLE_COLOURS[r % ROLE_COLOURS.length];
    const pts = values.map((v, k) => (v === null ? null : `${X(k).toFixed(1)},${Y(v).toFixed(1)}`)).filter((p) => p !== null);
    el("svg:polyline", { points: pts.join(" "), fill: "none", stroke: c, "stroke-width": 1.8, class: "role-line",
      "data-role": role, "data-values": JSON.stringify(values) }, svg);
    const known = values.some((v) => v !== null);
    el("svg:text", { x: width - right + 8, y: pad + 14 * r, "font-size": 11, fill: c }, svg,
      `${role} (≥ ${thresholds[role]})` + (known ? "" : ": no case"));
  });
  const k = steps.indexOf(step);
  if (k >= 0) el("svg:line", { x1: X(k), y1: pad - 6, x2: X(k), y2: height - pad, stroke: "#b3261e", "stroke-width": 1, "stroke-opacity": 0.5, id: "role-step-marker" }, svg);
}

// --- translation: cross-attention as an alignment ------------------------------------------------------

// Source tokens on the left, target tokens (as written) on the right. Every target row's weights are
// drawn as grey lines (opacity = weight); the focus row in blue, width relative to its largest weight.
export function alignment(svg, source, target, matrix, focus, onFocus) {
  clear(svg);
  const rowH = 22, top = 20, width = 560;
  const height = top + Math.max(source.length, target.length) * rowH + 10;
  size(svg, width, height);
  const lx = 190, rx = 370;
  el("svg:text", { x: lx, y: 12, "text-anchor": "end", "font-size": 11, fill: "#5b6475" }, svg, "source (read by the encoder)");
  el("svg:text", { x: rx, y: 12, "font-size": 11, fill: "#5b6475" }, svg, "target (written by the decoder)");
  const y = (i) => top + i * rowH + 10;
  matrix.forEach((row, i) => {
    if (i === focus) return;
    row.forEach((w, j) => {
      if (w < 0.02) return;
      el("svg:line", { x1: lx + 6, y1: y(j), x2: rx - 6, y2: y(i), stroke: "#9aa1ad", "stroke-width": 1.2, "stroke-opacity": w.toFixed(3) }, svg);
    });
  });
  const row = matrix[focus] || [];
  const top1 = Math.max(...row, 1e-9);
  row.forEach((w, j) => {
    if (w <= 0) return;
    el("svg:line", { x1: lx + 6, y1: y(j), x2: rx - 6, y2: y(focus), stroke: "#2456c7", "stroke-width": (0.5 + 7 * w / top1).toFixed(2),
      "stroke-opacity": (0.15 + 0.85 * w / top1).toFixed(3), "data-target": focus, "data-source": j, "data-weight": w }, svg);
  });
  source.forEach((t, j) => {
    const w = row[j] ?? 0;
    el("svg:rect", { x: lx - 170, y: top + j * rowH, width: 172, height: rowH - 3, rx: 3, fill: colour(w, { max: top1 }) }, svg);
    el("svg:text", { x: lx, y: top + j * rowH + 14, "text-anchor": "end", "font-size": 13, fill: "#1d2330" }, svg, `${fmt(w, 3)}  ${short(t, 14)}`);
  });
  target.forEach((t, i) => {
    const g = el("svg:g", { class: "box", tabindex: 0, role: "button", "data-target-token": i, "aria-label": `show where target token ${i} (${t}) looks` }, svg);
    el("svg:rect", { x: rx, y: top + i * rowH, width: 172, height: rowH - 3, rx: 3, fill: i === focus ? "#ffe18a" : "#ffffff", stroke: "#d8dde6" }, g);
    el("svg:text", { x: rx + 4, y: top + i * rowH + 14, "font-size": 13, fill: "#1d2330", "font-weight": i === focus ? 700 : 400 }, g, short(t, 22));
    g.addEventListener("click", () => onFocus(i));
    g.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onFocus(i); } });
  });
}

// --- experiments ----------------------------------------------------------------------------------------

// One experiment: its explanation (server-rendered from our Markdown), a choice of result set, and for
// the chosen one the recorded summary and command, then each plot with how to read it.
export function experiment(container, exp, chosen, onPick) {
  clear(container);
  container.dataset.experiment = exp.name;
  el("h2", { id: `exp-${exp.name}` }, container, exp.title);
  if (exp.subtitle) el("p", { class: "subtitle" }, container, exp.subtitle);
  el("div", { class: "explanation" }, container).innerHTML = exp.intro_html;
  if (!exp.results.length) {
    el("p", { class: "note" }, container, `No results for this experiment yet: run ${exp.command}`);
    return;
  }
  const run = exp.results[chosen] || exp.results[0];
  const bar = el("div", { class: "toolbar" }, container);
  if (exp.results.length > 1) {
    const label = el("label", {}, bar, "Results ");
    const select = el("select", { "data-runs": exp.name }, label);
    exp.results.forEach((r, i) => el("option", { value: i }, select, r.label));
    select.value = String(exp.results.indexOf(run));
    select.addEventListener("change", () => onPick(Number(select.value)));
  } else {
    el("span", {}, bar, run.label);
  }
  el("a", { href: run.results_url, download: `${exp.name}-results.json` }, bar, "results.json");
  const meta = el("p", { class: "run-meta" }, container);
  meta.append("Command: ");
  el("code", {}, meta, run.command || exp.command);
  const machine = [run.machine.cpu, run.machine.cores && `${run.machine.cores} cores`, run.machine.torch_threads && `${run.machine.torch_threads} torch thread(s)`,
    run.machine.torch && `torch ${run.machine.torch}`].filter(Boolean).join(", ");
  if (machine || run.elapsed_s !== null) meta.append(` · ${machine}${run.elapsed_s !== null ? ` · ${Math.round(run.elapsed_s)} s` : ""}`);
  const lines = el("ul", { class: "summary-lines" }, container);
  run.summary.forEach((s) => el("li", {}, lines, s));
  run.notes.forEach((s) => el("p", { class: "note" }, container, `Note: ${s}`));
  for (const f of run.figures) {
    const fig = el("figure", { "data-figure": f.file }, container);
    el("img", { src: f.url, alt: `${exp.name}: ${f.title}`, loading: "eager" }, fig);
    const cap = el("figcaption", {}, fig);
    el("h4", {}, cap, f.title);
    el("div", {}, cap).innerHTML = f.caption_html;
  }
  el("div", { class: "explanation" }, container).innerHTML = exp.discussion_html;
}

// A head across a corpus (POST /api/heads/contexts, attnlab.show.head_contexts): its summary sentence,
// one line per sentence with the query token (blue) and the key it links to (orange) marked, weight and
// specificity beside it, then the head's role scores over the corpus with the threshold each was held to.
export function headContexts(container, p) {
  clear(container);
  el("p", { class: "summary" }, container, p.summary);
  const ol = el("ol", { class: "contexts", "data-layer": String(p.layer), "data-head": String(p.head) }, container);
  p.contexts.forEach((c) => {
    const li = el("li", { "data-weight": String(c.weight), "data-specificity": String(c.specificity),
      class: c.specificity >= p.link_threshold ? "link" : "" }, ol);
    const line = el("span", { class: "tokens" }, li);
    c.tokens.forEach((t, i) => {
      const mark = i === c.query ? "query" : i === c.key ? "key" : null;
      el("span", mark ? { class: mark } : {}, line, t); // coloured by the stylesheet (no inline style: the app's CSP)
    });
    li.append(` weight ${c.weight.toFixed(3)}, specificity ${c.specificity.toFixed(3)}`);
  });
  const table = el("table", { class: "numbers roles" }, container);
  const hr = el("tr", {}, el("thead", {}, table));
  ["role", "score", "threshold", "cases", "given"].forEach((h) => el("th", {}, hr, h));
  const body = el("tbody", {}, table);
  p.roles.forEach((r) => {
    const tr = el("tr", { "data-role": r.role, "data-given": String(r.given) }, body);
    el("th", {}, tr, r.role);
    el("td", {}, tr, r.score === null ? "no case" : r.score.toFixed(3));
    el("td", {}, tr, String(r.threshold));
    el("td", {}, tr, String(r.cases));
    el("td", {}, tr, r.given ? "yes" : "no");
  });
}

// Fill a <select> with n options "what 0", "what 1", ... (and "average of heads" when withMean); select `value`.
export function fillSelect(select, n, value, what, withMean = false) {
  clear(select);
  for (let i = 0; i < n; i += 1) el("option", { value: i }, select, `${what} ${i}`);
  if (withMean) el("option", { value: "mean" }, select, "average of heads");
  select.value = String(value);
}
