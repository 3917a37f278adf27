// The guided tour: steps come from /api/tour (Markdown + a preset per step, web/content/tour/); each
// preset names a widget of WIDGETS below. Adding a step is a Markdown file; adding a widget is one entry.

import { api, findToken, formatHash, nextTokenCandidates, softmax } from "./model.js";
import * as V from "./views.js";

// The hook a layer's weights were read from: "{stack}.blocks.{layer}.attn.hook_weights".
const hookOf = (p, layer) => `${p.stack.replace(/\.$/, "")}.blocks.${layer}.attn.hook_weights`;

// widget name -> async (box, preset, ctx) that draws it. ctx: { toy, need(model), track(text, promise), go(hash) }.
export const WIDGETS = {
  async attention(box, pre, ctx) {
    await ctx.need(pre.model);
    const p = await ctx.track(api.attention(pre.model, pre.text));
    const w = p.weights[pre.layer][pre.head];
    let focus = findToken(p.tokens, pre.query) ?? p.tokens.length - 1;
    const caption = V.el("p", { class: "widget-caption" }, box);
    const split = V.el("div", { class: "split" }, box);
    const lines = V.el("svg:svg", { class: "primary", "aria-label": "attention lines" }, split);
    const map = V.el("svg:svg", { "aria-label": "attention weights" }, split);
    const check = V.el("div", {}, box);
    const draw = () => {
      V.clear(caption).append(`${p.model} · layer ${pre.layer} · head ${pre.head} · focus “${p.tokens[focus]}” (token ${focus}). Click a word to move the focus.`);
      V.tokenLines(lines, p.tokens, w, focus, (i) => { focus = i; draw(); });
      V.heatmap(map, w, { rows: p.tokens, cols: p.tokens, min: 0, cell: Math.max(10, Math.min(22, Math.floor(300 / p.tokens.length))),
        masked: p.causal ? (i, j) => j > i : null, xLabel: "keys", yLabel: "queries" });
      V.clear(check);
      V.checkTable(check, hookOf(p, pre.layer), [0, pre.head, focus], p.tokens, w[focus]);
    };
    draw();
    return { model: p.model, text: pre.text, layer: pre.layer, head: pre.head, query: focus, key: findToken(p.tokens, pre.key) };
  },

  async qkv(box, pre, ctx) {
    await ctx.need(pre.model);
    const first = await ctx.track(api.attention(pre.model, pre.text));
    let focus = findToken(first.tokens, pre.query) ?? first.tokens.length - 1;
    const draw = async () => {
      const p = await ctx.track(api.qkv(pre.model, pre.text, pre.layer, pre.head, focus));
      V.clear(box);
      V.el("p", { class: "widget-caption" }, box, `${p.model} · layer ${p.layer} · head ${p.head} · query “${p.tokens[p.focus]}”` +
        (pre.softmax ? "" : " (click a row to change it)"));
      const inner = V.el("div", {}, box);
      if (pre.softmax) V.softmaxSteps(inner, p);
      else V.qkvSteps(inner, p, (j) => { focus = j; draw(); });
      V.checkTable(box, p.hooks.weights, [0, p.head, p.focus], p.tokens, p.weights);
    };
    await draw();
    return { model: pre.model, text: pre.text, layer: pre.layer, head: pre.head, query: focus };
  },

  async toy(box, pre, ctx) {
    V.toyAttention(box, ctx.toy);
  },

  // Token -> id -> embedding + position = input: the part's token embeddings and block-0 input, and the
  // positional-encoding part's vectors (POST /api/part twice), drawn side by side with each token's id.
  async embed(box, pre, ctx) {
    await ctx.need(pre.model);
    const [p, q] = await ctx.track(Promise.all([api.part(pre.model, pre.text, pre.part, 0),
      api.part(pre.model, pre.text, "positional-encoding", 0)]));
    V.el("p", { class: "widget-caption" }, box, `${p.model} · “${pre.text}”`);
    if (!p.tensors.length || !q.tensors.length) { V.el("p", { class: "note" }, box, q.reason || p.reason || "no vectors"); return {}; }
    const [tok, input] = p.tensors, pos = q.tensors[0];
    const cols = 16, cut = (t) => t.values.map((r) => r.slice(0, cols));
    const lim = Math.max(...[tok, pos, input].flatMap((t) => cut(t).flat().map(Math.abs)));
    const row = V.el("div", { class: "embed-sum" }, box);
    const ids = V.el("table", { class: "numbers embed-ids" }, row);
    const hr = V.el("tr", {}, V.el("thead", {}, ids));
    ["pos", "token", "id"].forEach((h) => V.el("th", {}, hr, h));
    const body = V.el("tbody", {}, ids);
    const focus = findToken(tok.rows, pre.query);
    p.tokens.forEach((t, i) => {
      const tr = V.el("tr", { class: i === focus ? "focus" : "", "data-id": t.id }, body);
      [String(i), JSON.stringify(t.token), String(t.id)].forEach((x) => V.el("td", {}, tr, x));
    });
    [[tok, "token embedding"], [pos, "+ position vector"], [input, "= input of block 0"]].forEach(([t, label], k) => {
      const fig = V.el("figure", { class: "embed-part", "data-hook": t.hook }, row);
      V.el("figcaption", {}, fig, `${label} (first ${cols} of ${t.shape[t.shape.length - 1]})`);
      V.heatmap(V.el("svg:svg", {}, fig), cut(t), { diverging: true, min: -lim, max: lim, cell: 8, cellH: 20,
        rows: k === 0 ? tok.rows : [], bar: k === 2 });
    });
    if (focus !== null && focus !== undefined) {
      [tok, pos, input].forEach((t) => V.checkTable(box, t.hook, [0, focus], t.values[focus].slice(0, 8).map((_, j) => `dim ${j}`), t.values[focus].slice(0, 8)));
    }
    return { model: p.model, text: pre.text, query: focus };
  },

  // The Order view's experiment (POST /api/positions): two word orders through an encoder, with and without positions.
  async order(box, pre, ctx) {
    await ctx.need(pre.model);
    const p = await ctx.track(api.positions(pre.model));
    V.el("p", { class: "widget-caption" }, box, `${p.model} · “Jake learned AI” (rows) vs “AI learned Jake” (columns) · distance between final vectors`);
    const split = V.el("div", { class: "split" }, box);
    const top = Math.max(...p.comparisons.flatMap((c) => c.distances.flat())); // one colour scale: the grids compare
    for (const c of [...p.comparisons].sort((a, b) => a.positions - b.positions)) {
      const fig = V.el("div", { class: "order-fig", "data-positions": String(c.positions) }, split);
      const worst = Math.max(...c.nearest);
      V.el("h4", {}, fig, `${c.positions ? "with" : "without"} positions · largest nearest-match distance ${V.distance(worst)}`);
      V.heatmap(V.el("svg:svg", { "data-positions": String(c.positions) }, fig), c.distances, { rows: p.first_tokens, cols: p.second_tokens,
        min: 0, max: top, cell: 26 });
    }
    return { model: p.model };
  },

  async part(box, pre, ctx) {
    await ctx.need(pre.model);
    const p = await ctx.track(api.part(pre.model, pre.text, pre.part, pre.layer ?? 0));
    V.el("p", { class: "widget-caption" }, box, `${p.model} · “${pre.text}”${pre.layer ? ` · layer ${pre.layer}` : ""}`);
    V.tensorViews(box, p, { only: 1 });
    const t = p.tensors[0];
    if (t) {
      const row = findToken(t.rows, pre.query) ?? 0;
      V.checkTable(box, t.hook, [0, row], t.values[row].map((_, j) => `dim ${j}`), t.values[row]);
    }
    return { model: p.model, text: pre.text, layer: pre.layer ?? 0, query: t ? findToken(t.rows, pre.query) : null };
  },

  async timeline(box, pre, ctx) {
    const m = ctx.models.find((x) => x.timeline && x.available);
    if (!m) { V.el("p", { class: "note" }, box, "No installed model ships training snapshots."); return; }
    await ctx.need(m.name);
    const tl = await ctx.track(api.timeline(m.name));
    // A preset may name a head; by default the head whose attention changed most over training.
    const layer = Math.min(pre.layer ?? tl.learning_layer, tl.n_layers - 1), head = Math.min(pre.head ?? tl.learning_head, tl.n_heads - 1);
    const ends = [tl.snapshots[0], tl.snapshots[tl.snapshots.length - 1]];
    const answers = await ctx.track(Promise.all(ends.map((s) => api.timelineAttention(m.name, s.step, layer, head))));
    V.el("p", { class: "widget-caption" }, box, `${m.name} · layer ${layer} · head ${head} · “${tl.sentence}”`);
    const split = V.el("div", { class: "split" }, box);
    answers.forEach((a, k) => {
      const fig = V.el("div", {}, split);
      const s = ends[k];
      V.el("h4", {}, fig, `${k ? "after training" : "before training"}: step ${s.step}${s.loss !== null ? `, loss ${s.loss.toFixed(2)}` : ""}`);
      V.heatmap(V.el("svg:svg", { "data-step": s.step }, fig), a.weights, { rows: a.tokens, cols: a.tokens, min: 0,
        cell: Math.max(4, Math.min(12, Math.floor(300 / a.tokens.length))), masked: (i, j) => j > i, xLabel: "keys", yLabel: "queries" });
    });
  },

  async heads(box, pre, ctx) {
    await ctx.need(pre.model);
    const p = await ctx.track(api.attention(pre.model, pre.text));
    const q = findToken(p.tokens, pre.query), k = findToken(p.tokens, pre.key);
    const f = q !== null && k !== null ? await ctx.track(api.rankHeads(pre.model, pre.text, q, k)) : null;
    const highlight = Object.fromEntries((f?.heads || []).slice(0, 3).map((h, i) => [`${h.layer},${h.head}`, i + 1]));
    V.el("p", { class: "widget-caption" }, box, `${p.model}: ${p.n_layers} layers × ${p.n_heads} heads on “${pre.text}”. Click a head to open it in the Attention view.`);
    const grid = V.el("div", { class: "grid" }, box);
    V.headGrid(grid, p, { layer: pre.layer, head: pre.head }, (l, h) => ctx.go(`#attention?model=${encodeURIComponent(p.model)}&text=${encodeURIComponent(pre.text)}&layer=${l}&head=${h}&query=${q ?? ""}`), { highlight, thumb: 40 });
    V.roleLegend(V.el("p", { class: "legend" }, box));
    const params = { model: p.model, text: pre.text, layer: pre.layer, head: pre.head, query: q, key: k };
    V.checkTable(box, hookOf(p, pre.layer), [0, pre.head, q ?? 0], p.tokens, p.weights[pre.layer][pre.head][q ?? 0]);
    return params;
  },

  async translate(box, pre, ctx) {
    await ctx.need(pre.model);
    const p = await ctx.track(api.translate(pre.model, pre.text, 1));
    const layer = p.n_layers - 1;
    let focus = findToken(p.target_tokens, pre.query) ?? 0;
    const w = p.mean_weights[layer];
    V.el("p", { class: "gen-text" }, box, p.text);
    const caption = V.el("p", { class: "widget-caption" }, box);
    const svg = V.el("svg:svg", { class: "primary" }, box);
    const draw = () => {
      V.clear(caption).append(`${p.model} (trained on Bible verses, so it translates like one) · last layer, average of heads · target token “${p.target_tokens[focus]}”: click another`);
      V.alignment(svg, p.source_tokens, p.target_tokens, w, focus, (i) => { focus = i; draw(); });
    };
    draw();
    return { text: pre.text, query: focus };
  },

  async arch(box, pre, ctx) {
    const layout = await api.architecture();
    const bar = V.el("div", { class: "toolbar" }, box);
    const svg = V.el("svg:svg", { class: "primary", id: "tour-diagram" }, box);
    const draw = (id) => {
      bar.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.variant === id)));
      V.drawDiagram(svg, layout, layout.variants.find((v) => v.id === id), null, (b) => ctx.go(`#arch/${b.id}`));
    };
    for (const v of layout.variants) {
      const b = V.el("button", { type: "button", "data-variant": v.id }, bar, v.title);
      b.addEventListener("click", () => draw(v.id));
    }
    draw(pre.variant || "encoder-decoder");
  },

  async generate(box, pre, ctx) {
    await ctx.need(pre.model);
    const data = await ctx.track(api.nextToken(pre.model, pre.text));
    const settings = { temperature: 1, top_k: 0, top_p: 1 };
    V.el("p", { class: "widget-caption" }, box, `${data.model}: the most likely next tokens after “${pre.text}”. Move a slider: the bars redraw at once.`);
    const svg = V.el("svg:svg", { class: "primary", id: "tour-bars" }, box);
    const draw = () => V.probabilityBars(svg, nextTokenCandidates(data, settings));
    V.samplingSliders(box, settings, draw);
    draw();
    V.checkTable(box, data.hook, [0, data.prompt_tokens.length - 1], [], data.logits.slice(0, 50));
    return { model: data.model, text: pre.text };
  },

  async figure(box, pre, ctx) {
    const data = await ctx.track(api.experiments());
    const exp = data.experiments.find((e) => e.name === pre.experiment);
    const fig = exp?.results[0]?.figures[0];
    if (!fig) { V.el("p", { class: "note" }, box, `No results for the ${pre.experiment} experiment yet: run attnlab experiment ${pre.experiment}`); return; }
    const f = V.el("figure", { "data-figure": fig.file }, box);
    // a plot drawn for a wide page is shrunk to the figure's box (at 1024 px its labels are ~5 px): a click opens it full size
    const full = V.el("a", { href: fig.url, target: "_blank", rel: "noopener", title: "open the plot full size" }, f);
    V.el("img", { src: fig.url, alt: fig.title, class: "tour-figure" }, full);
    V.el("p", { class: "note" }, f, "Click the plot to open it full size.");
    const cap = V.el("figcaption", {}, f);
    V.el("h4", {}, cap, fig.title);
    V.el("div", {}, cap).innerHTML = fig.caption_html; // server-rendered from our Markdown
  },

  // Remove the preset's head (zero ablation, attnlab.interpret via POST /api/ablation): the prediction with and
  // without it, and every head removed in turn.
  async ablation(box, pre, ctx) {
    await ctx.need(pre.model);
    const p = await ctx.track(api.ablation(pre.model, pre.text, pre.layer, pre.head));
    V.el("p", { class: "widget-caption" }, box, `${p.model} · “${pre.text}” · ${p.metric}`);
    const split = V.el("div", { class: "split" }, box);
    const lists = [["with every head", p.clean_top, p.clean], [`without layer ${p.layer}, head ${p.head}`, p.ablated_top, p.ablated]];
    for (const [title, top, metric] of lists) {
      const col = V.el("div", { class: "ablation-side" }, split);
      V.el("h4", {}, col, `${title}: ${V.fmt(metric, 2)}`);
      const ol = V.el("ol", { class: "candidates" }, col);
      top.forEach((c) => V.el("li", { "data-id": c.id, "data-prob": String(c.prob) }, ol, `${JSON.stringify(c.token)} ${V.fmt(c.prob, 3)}`));
    }
    V.el("h4", {}, box, "every head removed in turn: metric without the head minus with it");
    const heads = p.head_effects[0].map((_, h) => `H${h}`), layers = p.head_effects.map((_, l) => `L${l}`);
    V.heatmap(V.el("svg:svg", { class: "primary", id: "tour-effects" }, box), p.head_effects, { rows: layers, cols: heads, diverging: true, cell: 26,
      xLabel: "head", yLabel: "layer" });
    return { model: p.model, text: pre.text, layer: p.layer, head: p.head };
  },

  ffn: (box, pre, ctx) => ffnWidget(box, pre, ctx),

  async finder(box, pre, ctx) {
    await ctx.need(pre.model);
    const p = await ctx.track(api.attention(pre.model, pre.text));
    const q = findToken(p.tokens, pre.query), k = findToken(p.tokens, pre.key);
    const f = await ctx.track(api.rankHeads(pre.model, pre.text, q, k));
    V.headRanking(box, f, { limit: 8, onPick: (l, h) => ctx.go(`#attention?model=${encodeURIComponent(p.model)}&text=${encodeURIComponent(pre.text)}&layer=${l}&head=${h}&query=${q}&key=${k}`) });
    const best = f.heads[0];
    V.checkTable(box, hookOf(p, best.layer), [0, best.head, q], p.tokens, p.weights[best.layer][best.head][q]);
    return { model: p.model, text: pre.text, layer: best.layer, head: best.head, query: q, key: k };
  },
};

// The tour's frame: progress, title, text, links, Back / Next; the widget drawn into `widgetBox`.
export function drawStep(section, tour, n, ctx) {
  const step = tour.steps[n - 1];
  const total = tour.steps.length;
  V.clear(section);
  section.dataset.step = String(n);
  const progress = V.el("nav", { class: "tour-progress", "aria-label": "Tour steps" }, section);
  V.el("span", { class: "tour-count" }, progress, `Step ${n} of ${total}`);
  tour.steps.forEach((s) => V.el("a", { href: `#tour/${s.n}`, class: "dot", title: `${s.n}. ${s.title}`, "aria-label": `step ${s.n}: ${s.title}`,
    "aria-current": s.n === n ? "step" : null }, progress));
  const body = V.el("div", { class: "tour-body" }, section);
  const text = V.el("article", { class: "tour-text", "data-claims": "loading" }, body);
  const prose = V.el("div", { class: "tour-prose" }, text);
  prose.innerHTML = step.html; // rendered server-side from our own Markdown, everything else escaped
  const note = V.el("p", { class: "note", hidden: step.note ? null : "" }, text, step.note || "");
  const links = V.el("p", { class: "tour-links" }, text);
  if (step.learn) V.el("a", { href: `#learn/${step.learn}` }, links, "Read more");
  // "arch/enc-ff": the view and its argument; until the widget answers its state, the link carries the preset's sentence
  const [view, arg = null] = (step.view || "").split("/");
  const explore = step.view ? V.el("a", { href: formatHash(view, arg, { model: step.preset.model, text: step.preset.text }), class: "explore" },
    links, "Explore freely") : null;
  const buttons = V.el("div", { class: "tour-buttons" }, text);
  const back = V.el("a", { class: "button", id: "tour-back", href: `#tour/${Math.max(1, n - 1)}`, "aria-disabled": String(n === 1) }, buttons, "← Back");
  const next = V.el("a", { class: "button primary-button", id: "tour-next", href: `#tour/${Math.min(total, n + 1)}`, "aria-disabled": String(n === total) }, buttons, n === total ? "Done" : "Next →");
  if (n === 1) back.removeAttribute("href");
  if (n === total) next.setAttribute("href", "#attention");
  V.el("p", { class: "hint" }, text, "Keys: ← → move through the tour · P presents (large type, no chrome)");
  const widget = V.el("div", { class: "tour-widget", "data-widget": step.preset.widget }, body);
  const gate = step.preset.predict ? revealGate(prose, text) : null; // predict, then see: the answer first
  // A widget may answer its URL state (model, text, layer, head, query, key): "Explore freely" then opens
  // the view exactly there.
  const figure = async () => {
    const params = await WIDGETS[step.preset.widget](widget, step.preset, ctx);
    if (params && explore) explore.setAttribute("href", formatHash(view, arg, params));
  };
  const draw = () => (gate ? askFirst(widget, step.preset, ctx, gate, figure) : figure());
  // The text's numbers and comparisons are computed on the server from the widget's payload (GET /api/tour/N).
  const fill = (rendered) => {
    prose.innerHTML = rendered.html; // server-rendered, as above
    note.hidden = !rendered.note;
    note.textContent = rendered.note || "";
    text.dataset.claims = "ready";
    gate?.fill(rendered);
  };
  return { step, widget, draw, fill };
}

// --- Predict, then see -----------------------------------------------------------------------------------
// A step with `predict: true` asks before it draws. PREDICTS[widget] builds the question from the widget's own
// payload, fetched now from the live model: the choices, the model's answer, and for any pick a sentence with the
// model's numbers for it. The figure, its check tables and the step's reveal text enter the page only after an
// answer or "Skip: show me", so neither the eye nor a screen reader meets the answer first.

const argmax = (xs) => xs.reduce((best, x, i) => (x > xs[best] ? i : best), 0);
const quoted = (t) => `“${t}”`;
const ordinal = (n) => `${n}${n % 100 >= 11 && n % 100 <= 13 ? "th" : ["th", "st", "nd", "rd"][n % 10] || "th"}`;
const share = (x) => (x >= 0.005 ? x.toFixed(2) : x.toExponential(1)); // a weight or probability; a small one keeps its digits

export const PREDICTS = {
  // "Which word will the focus look at most?": every token of the sentence is a choice (a causal model's later
  // words, which it cannot see, are disabled); the answer is the largest weight of the focus's row.
  async attention(pre, ctx) {
    await ctx.need(pre.model);
    const p = await ctx.track(api.attention(pre.model, pre.text));
    const q = findToken(p.tokens, pre.query) ?? p.tokens.length - 1;
    const row = p.weights[pre.layer][pre.head][q];
    const answer = argmax(row);
    const runnerUp = argmax(row.map((w, i) => (i === answer ? -Infinity : w)));
    const who = quoted(p.tokens[q]), word = (i) => quoted(p.tokens[i]);
    return {
      question: `Which word will ${who} send the most attention to, in ${p.model}'s layer ${pre.layer}, head ${pre.head}? Click one.`,
      choices: p.tokens.map((t, i) => ({ value: i, label: t, focus: i === q, disabled: p.causal && i > q })),
      answer, values: row,
      right: (i) => row[i] === row[answer],
      explain: (i) => (row[i] === row[answer]
        ? `Right: ${word(i)} gets ${share(row[i])} of the attention of ${who} in this head, the most of any word (next: ${word(runnerUp)}, ${share(row[runnerUp])}).`
        : `You picked ${word(i)}: it gets ${share(row[i])} of the attention of ${who} in this head; ${word(answer)} gets ${share(row[answer])}, the most of any word.`),
      skipped: () => `The model's answer: ${word(answer)}, with ${share(row[answer])} of the attention of ${who}, the most of any word.`,
    };
  },

  // "Which token comes next?": the model's three likeliest next tokens and the two likeliest of the sentence's own
  // tokens (distractors), in alphabetical order; the answer is the highest logit.
  async generate(pre, ctx) {
    await ctx.need(pre.model);
    const data = await ctx.track(api.nextToken(pre.model, pre.text));
    const probs = softmax(data.logits);
    const ranked = Object.keys(data.labels).map(Number).sort((a, b) => data.logits[b] - data.logits[a]);
    const answer = ranked[0], favourites = ranked.slice(0, 3);
    const fromSentence = [...new Set(data.prompt_ids)].filter((id) => !favourites.includes(id))
      .sort((a, b) => probs[b] - probs[a]).slice(0, 2);
    const label = (id) => data.labels[id] ?? data.prompt_tokens[data.prompt_ids.indexOf(id)];
    const rank = (id) => 1 + data.logits.filter((x) => x > data.logits[id]).length;
    const tok = (id) => JSON.stringify(label(id)); // as the bars write tokens (their spaces visible)
    const choices = [...favourites, ...fromSentence].map((id) => ({ value: id, label: tok(id) }))
      .sort((a, b) => a.label.localeCompare(b.label));
    return {
      question: `Which token will ${data.model} find most likely after “…${data.prompt_tokens.slice(-3).join("")}”? Pick one.`,
      choices, answer, values: Object.fromEntries(choices.map((c) => [c.value, probs[c.value]])),
      right: (id) => data.logits[id] === data.logits[answer],
      explain: (id) => (data.logits[id] === data.logits[answer]
        ? `Right: ${data.model} gives ${tok(id)} a probability of ${share(probs[id])}, its first choice (next: ${tok(ranked[1])}, ${share(probs[ranked[1]])}).`
        : `You picked ${tok(id)}: ${data.model} gives it ${share(probs[id])} (its ${ordinal(rank(id))} choice); it gives ${tok(answer)} ${share(probs[answer])}, its first choice.`),
      skipped: () => `The model's answer: ${tok(answer)}, with a probability of ${share(probs[answer])}, its first choice.`,
    };
  },

  // "Without positions, how many tokens come out with an exact twin in the other order?" (all / some / none); the
  // answer is counted from the Order experiment's nearest-match distances (a twin: under V.TWIN, the view's verdict).
  async order(pre, ctx) {
    await ctx.need(pre.model);
    const p = await ctx.track(api.positions(pre.model));
    const n = p.first_tokens.length;
    const of = (positions) => p.comparisons.find((c) => c.positions === positions);
    const twins = (c) => c.nearest.filter((d) => d < V.TWIN).length;
    const without = of(false), withPos = of(true);
    const count = twins(without);
    const answer = count === n ? "all" : count === 0 ? "none" : "some";
    const choices = [{ value: "all", label: `all ${n}` }, { value: "some", label: `some, not all ${n}` }, { value: "none", label: "none" }];
    const label = (v) => quoted(choices.find((c) => c.value === v).label);
    const facts = `without positions ${count} of the ${n} tokens have an exact twin in the other order (the largest distance to a nearest match is ${V.distance(Math.max(...without.nearest))}); with positions, ${twins(withPos)} do (largest ${V.distance(Math.max(...withPos.nearest))})`;
    return {
      question: `${p.model} without its position vectors reads “Jake learned AI” and “AI learned Jake”: how many of the ${n} tokens come out with an exact twin in the other order?`,
      choices, answer, values: { without: count, with: twins(withPos), tokens: n },
      right: (v) => v === answer,
      explain: (v) => (v === answer ? `Right: ${facts}.` : `You picked ${label(v)}: ${facts}.`),
      skipped: () => `The model's answer: ${label(answer)}: ${facts}.`,
    };
  },
};

// Ask the step's question in `box` (its data-state "asking"); resolves once it is asked. A pick (or a skip) marks the
// pick and the answer, writes the explanation in a live region, opens the reveal text and draws the figure
// (`figure`), data-state "ready" once both are in; a failure shows on the page's error line.
export async function askFirst(box, pre, ctx, gate, figure) {
  const quiz = await PREDICTS[pre.widget](pre, ctx);
  const panel = V.el("div", { class: "predict", role: "group", "aria-label": "Predict first" }, box);
  V.el("p", { class: "predict-question" }, panel, quiz.question);
  const list = V.el("div", { class: "predict-choices" }, panel);
  const buttons = quiz.choices.map((c) => V.el("button", { type: "button", class: c.focus ? "choice focus" : "choice", "data-choice": String(c.value),
    disabled: c.disabled ? "" : null, "aria-pressed": "false" }, list, c.label));
  const skip = V.el("button", { type: "button", class: "predict-skip" }, panel, "Skip: show me");
  const result = V.el("p", { class: "predict-result", "aria-live": "polite" }, panel);
  const answered = (pick) => {
    skip.remove();
    buttons.forEach((b, k) => {
      const v = quiz.choices[k].value;
      b.disabled = true;
      b.setAttribute("aria-pressed", String(v === pick));
      if (v === quiz.answer) b.classList.add("answer");
    });
    panel.dataset.picked = pick === null ? "" : String(pick);
    panel.dataset.answer = String(quiz.answer);
    panel.dataset.right = pick === null ? "skipped" : String(quiz.right(pick));
    result.textContent = pick === null ? quiz.skipped() : quiz.explain(pick);
    box.dataset.state = "loading";
    gate.open();
    return ctx.guarded(async () => {
      try {
        await Promise.all([figure(), gate.shown]);
        box.dataset.state = "ready";
      } catch (e) {
        if (box.isConnected) { box.dataset.state = "error"; throw e; } // not when the learner has moved on
      }
    });
  };
  buttons.forEach((b, k) => b.addEventListener("click", () => answered(quiz.choices[k].value)));
  skip.addEventListener("click", () => answered(null));
  box.dataset.state = "asking";
}

// The reveal text of a predict step (GET /api/tour/N's reveal_html): added to `prose` once both the answer is given
// and the text has come, whichever is last.
function revealGate(prose, article) {
  let rendered = null, open = false, done;
  const shown = new Promise((resolve) => { done = resolve; });
  article.dataset.reveal = "waiting";
  const show = () => {
    if (!open || !rendered || article.dataset.reveal === "shown") return;
    if (rendered.reveal_html) prose.insertAdjacentHTML("beforeend", rendered.reveal_html); // server-rendered, as step.html
    article.dataset.reveal = "shown";
    done();
  };
  return { shown, fill: (r) => { rendered = r; show(); }, open: () => { open = true; show(); } };
}

// One token through a feed-forward network (POST /api/ffn, web/ffn.py): the hidden units before and after the
// non-linearity and the residual addition; the sentence's tokens are buttons that move the focus.
async function ffnWidget(box, pre, ctx) {
  await ctx.need(pre.model);
  const first = await ctx.track(api.attention(pre.model, pre.text));
  let focus = findToken(first.tokens, pre.query) ?? first.tokens.length - 1;
  const draw = async () => {
    const p = await ctx.track(api.ffn(pre.model, pre.text, pre.layer ?? 0, focus));
    V.clear(box);
    V.el("p", { class: "widget-caption" }, box, `${p.model} · layer ${p.layer} · token “${p.tokens[p.focus]}” (click another)`);
    const chips = V.el("p", { class: "qkv-keys" }, box);
    p.tokens.forEach((t, i) => {
      const b = V.el("button", { type: "button", class: "chip", "aria-pressed": String(i === p.focus), "data-token": String(i) }, chips, t);
      b.addEventListener("click", () => { focus = i; draw(); });
    });
    V.ffnStep(V.el("div", {}, box), p);
    V.checkTable(box, p.hooks.after, [0, p.focus], p.after.slice(0, 8).map((_, j) => `unit ${j}`), p.after.slice(0, 8));
    V.checkTable(box, p.hooks.before, [0, p.focus], p.before.slice(0, 8).map((_, j) => `unit ${j}`), p.before.slice(0, 8));
  };
  await draw();
  return { model: pre.model, text: pre.text, layer: pre.layer, query: focus };
}
