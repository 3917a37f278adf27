// Wiring for attnlab.show: one renderView(kind, root, data, V) per notebook view. All drawing goes
// through V, the walkthrough's views.js (inlined by attnlab/show/_html.py); only layout lives here.

function renderView(kind, root, data, V) {
  const { el, clear } = V;

  function select(parent, label, n, value, onChange) {
    const lab = el("label", {}, parent, label + " ");
    const s = el("select", {}, lab);
    for (let i = 0; i < n; i += 1) el("option", { value: i }, s, String(i));
    s.value = String(value);
    s.addEventListener("change", () => onChange(Number(s.value)));
    return s;
  }

  function numbers(parent, header, rows, { colour = null } = {}) {
    const table = el("table", { class: "numbers" }, parent);
    const hr = el("tr", {}, el("thead", {}, table));
    header.forEach((h) => el("th", {}, hr, h));
    const body = el("tbody", {}, table);
    rows.forEach((r) => {
      const tr = el("tr", {}, body);
      r.forEach((c, j) => {
        const td = el(j === 0 ? "th" : "td", {}, tr, typeof c === "object" && c !== null ? c.text : String(c));
        if (typeof c === "object" && c !== null) {
          if (c.value !== undefined) td.setAttribute("data-value", String(c.value));
          if (colour && c.value !== undefined) td.setAttribute("style", "background:" + colour(c.value));
        }
      });
    });
    return table;
  }

  function shaded(parent, tokens, scores) {
    const m = Math.max(...scores.map(Math.abs), 1e-12);
    const line = el("div", { class: "tokens" }, parent);
    tokens.forEach((t, i) => {
      const s = el("span", { "data-score": String(scores[i]),
        style: "background:" + V.colour(scores[i], { min: -m, max: m, diverging: true }) }, line, t);
      el("title", {}, s, V.fmt(scores[i], 4));
    });
  }

  const views = {
    attention() {
      const state = { layer: data.layer, head: data.head, focus: data.focus };
      const controls = el("div", { class: "controls" }, root);
      const row = el("div", { class: "row" }, root);
      const lines = el("svg:svg", {}, row);
      const map = el("svg:svg", {}, row);
      function draw() {
        const w = data.weights[state.layer][state.head];
        V.tokenLines(lines, data.tokens, w, state.focus, (i) => { state.focus = i; draw(); });
        V.heatmap(map, w, { rows: data.tokens, cols: data.tokens, min: 0, max: 1,
          masked: data.causal ? (i, j) => j > i : null, title: `layer ${state.layer} head ${state.head}` });
      }
      select(controls, "layer", data.weights.length, state.layer, (v) => { state.layer = v; draw(); });
      select(controls, "head", data.weights[0].length, state.head, (v) => { state.head = v; draw(); });
      draw();
    },
    head_finder() {
      // the web's head grid (POST /api/attention's payload) and, with key=, its head finder (POST /api/heads/rank)
      const ranked = data.ranking ? data.ranking.heads : [];
      const highlight = Object.fromEntries(ranked.slice(0, 3).map((h, i) => [`${h.layer},${h.head}`, i + 1]));
      const finder = data.ranking ? el("div", { class: "finder" }, root) : null;
      const grid = el("div", { class: "grid" }, root);
      const detail = el("div", { class: "row" }, root);
      const pick = (l, h) => {
        V.headGrid(grid, data, { layer: l, head: h }, pick, { highlight });
        clear(detail);
        V.heatmap(el("svg:svg", {}, detail), data.weights[l][h], { rows: data.tokens, cols: data.tokens, min: 0, max: 1 });
      };
      if (finder) V.headRanking(finder, data.ranking, { limit: 10, onPick: pick });
      pick(ranked.length ? ranked[0].layer : 0, ranked.length ? ranked[0].head : 0);
      const scores = el("div", { class: "row" }, root);
      const heads = data.weights[0].map((_, h) => "H" + h);
      const layers = data.weights.map((_, l) => "L" + l);
      for (const [name, matrix] of Object.entries(data.detection.scores)) {
        const box = el("div", {}, scores);
        el("h4", {}, box, `${name} score (repeated random tokens)`);
        V.heatmap(el("svg:svg", { "data-pattern": name }, box), matrix, { rows: layers, cols: heads, min: 0, max: 1, cell: 24 });
      }
    },
    logit_lens() {
      const header = ["read-out"].concat(data.tokens);
      const rows = data.labels.map((label, i) => [label].concat(data.top_ids[i].map((ids, p) => ({
        text: `${JSON.stringify(data.vocab[ids[0]])} ${data.top_probs[i][p][0].toFixed(2)}`,
        value: data.top_probs[i][p][0] }))));
      numbers(root, header, rows, { colour: (v) => V.colour(v) });
      if (data.target !== null && data.target_rank) {
        el("h4", {}, root, `rank of ${JSON.stringify(data.target_token)} after each layer (0 = top)`);
        numbers(root, header, data.labels.map((label, i) => [label].concat(data.target_rank[i].map((r, p) => ({
          text: String(r), value: data.target_prob[i][p] })))), { colour: (v) => V.colour(v) });
      }
    },
    head_effects() {
      const heads = data.effects[0].map((_, h) => "H" + h);
      const layers = data.effects.map((_, l) => "L" + l);
      const row = el("div", { class: "row" }, root);
      V.heatmap(el("svg:svg", {}, row), data.effects, { rows: layers, cols: heads, diverging: true, cell: 28 });
      numbers(row, ["layer"].concat(heads), data.effects.map((r, l) => ["L" + l].concat(r.map((v) => ({ text: V.fmt(v, 3), value: v })))));
    },
    saliency() {
      shaded(root, data.tokens, data.scores);
      numbers(root, ["token", "score"], data.tokens.map((t, i) => [JSON.stringify(t), { text: V.fmt(data.scores[i], 4), value: data.scores[i] }]));
    },
    why() {
      // POST /api/why's payload (attnlab.web.why.why_of): the sentences and the ledger are the server's
      const queries = data.target_tokens.length ? data.target_tokens : data.tokens;
      const sc = data.score;
      const said = el("div", { class: "sentences" }, root);
      for (const [what, text] of Object.entries(data.sentences)) el("p", { "data-result": what }, said, text);
      for (const [what, text] of Object.entries(data.unavailable)) el("p", { class: "note", "data-unavailable": what }, said, text);
      const p = data.prediction;
      const head = `L${data.layer} H${data.head}`;
      el("h4", {}, root, `Prediction after ${JSON.stringify(queries[sc.query])}: ${p.metric}`);
      numbers(root, ["", "with the head", `without ${head}`], [
        ["metric", { text: V.fmt(p.clean, 4), value: p.clean }, { text: V.fmt(p.ablated, 4), value: p.ablated }],
      ].concat(p.clean_top.map((c, i) => [`#${i + 1}`, `${JSON.stringify(c.token)} ${c.prob.toFixed(3)}`,
        p.ablated_top[i] ? `${JSON.stringify(p.ablated_top[i].token)} ${p.ablated_top[i].prob.toFixed(3)}` : ""])));
      const row = el("div", { class: "row" }, root);
      const effects = el("div", {}, row);
      el("h4", {}, effects, `Every ${data.cross ? "cross-attention " : ""}head removed in turn`);
      V.heatmap(el("svg:svg", {}, effects), data.head_effects, { rows: data.head_effects.map((_, l) => "L" + l),
        cols: data.head_effects[0].map((_, h) => "H" + h), diverging: true, cell: 24 });
      if (sc.available) {
        const box = el("div", {}, row);
        el("h4", {}, box, `Why ${JSON.stringify(queries[sc.query])} looks at ${JSON.stringify(data.tokens[sc.key])}: ` +
          `its score ${V.fmt(sc.score, 3)} split into parts`);
        V.heatmap(el("svg:svg", {}, box), sc.terms, { rows: sc.query_labels, cols: sc.key_labels, diverging: true, cell: 24 });
      } else el("p", { class: "note" }, root, sc.reason);
      if (data.logit_lens) {
        el("h4", {}, root, "Logit lens at the focus token (top tokens after each layer)");
        numbers(root, ["read-out"].concat(data.logit_lens.top[0].map((_, i) => "#" + (i + 1))), data.logit_lens.labels.map(
          (label, r) => [label].concat(data.logit_lens.top[r].map((c) => ({ text: `${JSON.stringify(c.token)} ${c.prob.toFixed(2)}`, value: c.prob })))),
          { colour: (v) => V.colour(v) });
      }
      el("h4", {}, root, "Saliency (integrated gradients)");
      shaded(root, data.tokens, data.saliency);
      el("h4", {}, root, "Ledger: every number's check on this input");
      numbers(root, ["check", "error", "tolerance", "holds"], data.ledger.map((c) => [c.text, c.error.toExponential(1),
        String(c.tolerance), c.holds ? "yes" : "no"]));
    },
    head_contexts() {
      V.headContexts(root, data);
    },
  };
  if (!views[kind]) throw new Error("attnlab.show: unknown view " + kind);
  views[kind]();
}
