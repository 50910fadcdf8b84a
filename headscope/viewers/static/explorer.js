// The atlas explorer: draws what headscope.viewers.explorer_data computed; no network, no model.
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("atlas-data").textContent);
  const A = DATA.atlas, B = DATA.compare;
  const CONFIG = { displaylogo: false, responsive: true };
  const DIRECTION = { higher: "higher = stronger", lower: "lower = stronger", flag: "0/1 flag: 1 = the head has it",
                      neither: "a description, not a score: no direction" };
  const state = { metric: null, layer: null, head: null, text: null };
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  const fmt = (v) => (v === null || v === undefined) ? "no value" : (Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(2) : (+v.toPrecision(4)).toString());
  const range = (n) => Array.from({ length: n }, (_, i) => i);
  const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };

  function kvShapes(atlas, xref, yref) {
    const group = atlas.n_heads / atlas.n_kv_heads, shapes = [];
    if (group > 1 && group < atlas.n_heads) {
      for (let b = group; b < atlas.n_heads; b += group) {
        shapes.push({ type: "line", xref: xref || "x", yref: (yref || "y") + " domain", x0: b - 0.5, x1: b - 0.5, y0: 0, y1: 1,
                      line: { color: "#ffffff", width: 2, dash: "dot" } });
      }
    }
    return shapes;
  }
  function headAxes(atlas) {
    return { xaxis: { title: { text: "head" }, dtick: 1, range: [-0.5, atlas.n_heads - 0.5], zeroline: false, showgrid: false },
             yaxis: { title: { text: "layer (0 at the top)" }, autorange: "reversed", dtick: atlas.n_layers > 16 ? 2 : 1, zeroline: false } };
  }
  function heatmapTrace(atlas, metric, extra) {
    const m = atlas.metrics[metric];
    const text = m.values.map((row, l) => row.map((v, h) => `L${l}H${h}: ${fmt(v)}` + (m.ranks[l][h] ? ` (rank ${m.ranks[l][h]} / ${m.n_values})` : " (no value)")));
    const trace = { type: "heatmap", z: m.values, x: range(atlas.n_heads), y: range(atlas.n_layers), text: text,
                    hovertemplate: "%{text}<extra></extra>", xgap: 1, ygap: 1, hoverongaps: false };
    if (m.binary) {
      Object.assign(trace, { zmin: 0, zmax: 1, colorscale: [[0, "#c6dbef"], [0.5, "#c6dbef"], [0.5, "#d62728"], [1, "#d62728"]],
                             colorbar: { tickvals: [0.25, 0.75], ticktext: ["0: no", "1: yes"], title: { text: esc(metric) }, len: 0.5 } });
    } else {
      // bright = strong: a "lower is stronger" metric gets the scale reversed
      Object.assign(trace, { colorscale: "Viridis", reversescale: m.direction === "lower", colorbar: { title: { text: esc(metric) } } });
    }
    return Object.assign(trace, extra || {});
  }

  // ---- head map ----
  function drawHeadMap() {
    const m = A.metrics[state.metric];
    const layout = Object.assign(headAxes(A), {
      title: { text: `${esc(state.metric)} (${esc(m.analyzer)})`, font: { size: 15 } }, margin: { t: 40, l: 60, r: 10, b: 50 },
      height: Math.max(380, 17 * A.n_layers + 110), plot_bgcolor: "#ffffff", shapes: kvShapes(A).concat(selectionShape()),
    });
    Plotly.react("head-map", [heatmapTrace(A, state.metric)], layout, CONFIG);
    const group = A.n_heads / A.n_kv_heads;
    $("map-note").textContent = (group > 1 ? `Dotted lines: KV groups (${group} query heads share one key/value head). ` : "") +
      (m.n_nan ? `White cells: no value for ${m.n_nan} heads (the metric is undefined there, e.g. no event to measure); they rank last. ` : "") +
      "Click a head for its card and pattern.";
    $("meaning").innerHTML = "";
    const b = el("b", state.metric + ": ");
    $("meaning").append(b, document.createTextNode((m.meaning || "no meaning recorded in this atlas (written before analyzers declared them, or undeclared)") + ". "), el("i", DIRECTION[m.direction] || ""));
  }
  function selectionShape() {
    if (state.layer === null) return [];
    return [{ type: "rect", x0: state.head - 0.5, x1: state.head + 0.5, y0: state.layer - 0.5, y1: state.layer + 0.5,
              line: { color: "#ff00aa", width: 3 } }];
  }

  // ---- role map: one colour per role, a marker per (head, role) ----
  function drawRoleMap() {
    if (!A.roles.length) { $("role-note").textContent = "No head passes any role threshold in this atlas."; return; }
    const perHead = {};
    A.roles.forEach((r) => r.heads.forEach(([l, h]) => { (perHead[l + "," + h] = perHead[l + "," + h] || []).push(r.name); }));
    const traces = A.roles.map((r) => {
      const x = [], y = [], text = [];
      r.heads.forEach(([l, h]) => {
        const mine = perHead[l + "," + h], k = mine.indexOf(r.name), n = mine.length;
        x.push(h + (n > 1 ? (k - (n - 1) / 2) * (0.7 / n) : 0)); y.push(l);
        text.push(`L${l}H${h}: ${mine.map(esc).join(", ")}`);
      });
      return { type: "scatter", mode: "markers", name: `${esc(r.name)} (${r.heads.length})`, x: x, y: y, text: text,
               hovertemplate: "%{text}<extra></extra>", marker: { symbol: "square", size: Math.max(5, Math.min(14, 300 / A.n_heads / 2)), color: r.colour } };
    });
    const layout = Object.assign(headAxes(A), { height: Math.max(380, 17 * A.n_layers + 110), margin: { t: 30, l: 60, r: 10, b: 50 },
      legend: { title: { text: "role (heads)" } }, shapes: kvShapes(A), title: { text: "roles", font: { size: 15 } } });
    layout.yaxis.range = [A.n_layers - 0.5, -0.5]; delete layout.yaxis.autorange;
    Plotly.react("role-map", traces, layout, CONFIG);
    $("role-note").textContent = "Rules: " + A.roles.map((r) => `${r.name}: ${r.rule}`).join("; ") + ". Click a legend entry to hide a role.";
  }

  // ---- head card ----
  function selectHead(layer, head) {
    state.layer = layer; state.head = head;
    const group = A.n_heads / A.n_kv_heads;
    $("card-title").textContent = `L${layer}H${head}` + (group > 1 ? ` · kv head ${Math.floor(head / group)}` : "") + ` · ${A.model}`;
    const roles = $("card-roles"); roles.innerHTML = "";
    const mine = A.roles.filter((r) => r.heads.some(([l, h]) => l === layer && h === head));
    if (!mine.length) roles.append(el("span", "roles: none", "note"));
    mine.forEach((r) => { const c = el("span", r.name, "chip"); c.style.background = r.colour; c.title = r.rule; roles.append(c); });
    const body = $("card-rows"); body.innerHTML = "";
    A.groups.forEach((g) => g.metrics.forEach((metric) => {
      const m = A.metrics[metric], v = m.values[layer][head], r = m.ranks[layer][head];
      const tr = el("tr"); if (metric === state.metric) tr.className = "selected-metric";
      const flagged = m.values.flat().filter((x) => x === 1).length;
      const rank = m.direction === "flag" ? (v === 1 ? `flagged (1 of ${flagged})` : (v === null ? "no value" : "not flagged"))
                                          : (r ? `${r} / ${m.n_values}` : "last (no value)");
      const strong = m.direction === "flag" ? v === 1 : (r && r <= 5 && m.direction !== "neither");
      tr.append(el("td", g.analyzer), el("td", metric), el("td", fmt(v), "num"), el("td", rank, "num" + (strong ? " top" : "")));
      tr.title = m.meaning; body.append(tr);
    }));
    drawHeadMap(); drawPattern();
  }

  // ---- attention pattern on real tokens ----
  function drawPattern() {
    if (!A.exemplars) { $("pattern-note").textContent = "This atlas has no exemplars (scanned before they were recorded): re-scan to see patterns on tokens."; return; }
    const ex = A.exemplars[state.text], t = ex.tokens.length, flat = ex.patterns[state.layer + "," + state.head];
    const z = range(t).map(() => range(t).map(() => null));
    let i = 0;
    for (let q = 0; q < t; q++) for (let k = 0; k <= q; k++) z[q][k] = flat[i++] / 1000;
    const labels = ex.tokens.map((s, j) => `${j} ${JSON.stringify(s).slice(1, -1)}`);
    const hover = z.map((row, q) => row.map((w, k) => w === null ? "" : `${esc(labels[q])} → ${esc(labels[k])}: ${w.toFixed(3)}`));
    const trace = { type: "heatmap", z: z, x: range(t), y: range(t), text: hover, hovertemplate: "%{text}<extra></extra>",
                    colorscale: [[0, "#f7fbff"], [0.2, "#9ecae1"], [1, "#08306b"]], zmin: 0, zmax: 1, hoverongaps: false, colorbar: { title: { text: "attention" }, len: 0.8 } };
    const axis = (title) => ({ title: { text: title }, tickmode: "array", tickvals: range(t), ticktext: labels.map(esc), tickfont: { size: 10 }, automargin: true, zeroline: false, showgrid: false });
    const layout = { height: 470, margin: { t: 36, l: 10, r: 10, b: 10 }, xaxis: Object.assign(axis("key (attended to)"), { tickangle: -60 }),
                     yaxis: Object.assign(axis("query (attending)"), { autorange: "reversed" }), plot_bgcolor: "#ffffff",
                     title: { text: `L${state.layer}H${state.head} on "${esc(state.text)}"`, font: { size: 14 } } };
    Plotly.react("pattern", [trace], layout, CONFIG);
    $("pattern-note").textContent = state.text === "repeated"
      ? "The sentence is said twice: an induction head draws a stripe parallel to the diagonal in the second copy, each token attending to the token that followed its first occurrence."
      : "Rows: the token attending; columns: the tokens it attends to (causal: only earlier ones).";
  }

  // ---- compare ----
  function drawCompare() {
    if (!B) return;
    const metric = state.metric, mb = B.metrics[metric];
    if (!mb) { Plotly.purge("compare"); $("compare-note").textContent = `${metric} is not in ${B.label}: pick a metric both atlases hold.`; return; }
    $("compare-note").textContent = `${metric}: ${A.label} (left), ${B.label} (middle), their difference (right).`;
    if (A.n_layers === B.n_layers && A.n_heads === B.n_heads) {
      const a = A.metrics[metric].values, b = mb.values;
      const diff = a.map((row, l) => row.map((v, h) => (v === null || b[l][h] === null) ? null : v - b[l][h]));
      const all = a.flat().concat(b.flat()).filter((v) => v !== null);
      const lo = Math.min(...all), hi = Math.max(...all);
      const lim = Math.max(0, ...diff.flat().filter((v) => v !== null).map(Math.abs)) || 1;  // equal atlases: a plain 0 scale
      const common = { type: "heatmap", x: range(A.n_heads), y: range(A.n_layers), hoverongaps: false, xgap: 1, ygap: 1 };
      const traces = [
        Object.assign({}, common, { z: a, zmin: lo, zmax: hi, colorscale: "Viridis", showscale: false, xaxis: "x", yaxis: "y", hovertemplate: "L%{y}H%{x}: %{z:.4g}<extra>" + esc(A.label) + "</extra>" }),
        Object.assign({}, common, { z: b, zmin: lo, zmax: hi, colorscale: "Viridis", xaxis: "x2", yaxis: "y2", hovertemplate: "L%{y}H%{x}: %{z:.4g}<extra>" + esc(B.label) + "</extra>",
                                    colorbar: { x: 0.635, len: 0.9, thickness: 12, title: { text: esc(metric) } } }),
        Object.assign({}, common, { z: diff, zmid: 0, zmin: -lim, zmax: lim, colorscale: "RdBu", xaxis: "x3", yaxis: "y3", hovertemplate: "L%{y}H%{x}: %{z:+.4g}<extra>difference</extra>",
                                    colorbar: { x: 1.0, len: 0.9, thickness: 12, title: { text: "left − middle" } } }),
      ];
      const ax = (d, n) => ({ domain: d, title: { text: "head" }, anchor: "y" + n, zeroline: false, showgrid: false });
      const ay = (n) => ({ title: { text: "layer (0 at the top)" }, autorange: "reversed", anchor: "x" + n, zeroline: false });
      const layout = { height: Math.max(380, 15 * A.n_layers + 140), margin: { t: 50, l: 60, r: 40, b: 50 }, plot_bgcolor: "#ffffff",
        xaxis: ax([0, 0.27], ""), yaxis: ay(""), xaxis2: ax([0.34, 0.61], "2"), yaxis2: ay("2"), xaxis3: ax([0.72, 0.97], "3"), yaxis3: ay("3"),
        annotations: [[A.label, 0.135], [B.label, 0.475], ["difference (left − middle)", 0.845]].map(([t, x]) => ({ text: "<b>" + esc(t) + "</b>", x: x, y: 1.0, xref: "paper", yref: "paper", yanchor: "bottom", showarrow: false, font: { size: 13 } })) };
      Plotly.react("compare", traces, layout, CONFIG);
    } else {
      const curves = [];
      [[A, A.metrics[metric].values], [B, mb.values]].forEach(([atlas, grid]) => {
        const depth = range(atlas.n_layers).map((l) => l / Math.max(atlas.n_layers - 1, 1));
        const vals = grid.map((row) => row.filter((v) => v !== null));
        curves.push({ type: "scatter", mode: "lines+markers", name: esc(atlas.label) + " max", x: depth, y: vals.map((r) => r.length ? Math.max(...r) : null) });
        curves.push({ type: "scatter", mode: "lines", line: { dash: "dot" }, name: esc(atlas.label) + " mean", x: depth, y: vals.map((r) => r.length ? r.reduce((s, v) => s + v, 0) / r.length : null) });
      });
      Plotly.react("compare", curves, { height: 400, title: { text: esc(metric) + " by normalised depth (the models differ in shape)" },
        xaxis: { title: { text: "layer / (n_layers − 1)" } }, yaxis: { title: { text: esc(metric) } } }, CONFIG);
    }
  }

  // ---- sortable model-level table ----
  function sortable(table) {
    table.querySelectorAll("th").forEach((th, column) => th.addEventListener("click", () => {
      const body = table.tBodies[0], rows = Array.from(body.rows), up = th.dataset.order !== "asc";
      th.dataset.order = up ? "asc" : "desc";
      const key = (r) => { const s = r.cells[column].textContent, n = Number(s); return s.trim() === "" || isNaN(n) ? s : n; };
      const numeric = (v) => typeof v === "number";
      rows.sort((x, y) => {
        const a = key(x), b = key(y);
        if (numeric(a) !== numeric(b)) return numeric(a) ? -1 : 1;  // numbers first, "nan" and text after, either way
        return (a < b ? -1 : a > b ? 1 : 0) * (up ? 1 : -1);
      });
      rows.forEach((r) => body.append(r));
    }));
  }

  // ---- wiring ----
  function init() {
    const picker = $("metric-picker");
    A.groups.forEach((g) => {
      const og = document.createElement("optgroup"); og.label = g.analyzer;
      g.metrics.forEach((m) => { const o = el("option", m); o.value = m; og.append(o); });
      picker.append(og);
    });
    const first = DATA.initial_metric && A.metrics[DATA.initial_metric] ? DATA.initial_metric : A.groups[0].metrics[0];
    picker.value = state.metric = first;
    picker.addEventListener("change", () => { state.metric = picker.value; drawHeadMap(); selectHead(state.layer, state.head); drawCompare(); });
    const texts = $("text-picker");
    if (A.exemplars) {
      Object.keys(A.exemplars).forEach((t) => { const o = el("option", t); o.value = t; texts.append(o); });
      state.text = Object.keys(A.exemplars)[0];
      texts.addEventListener("change", () => { state.text = texts.value; drawPattern(); });
    } else texts.style.display = "none";
    const m = A.metrics[first];
    let best = null;  // open on the strongest head of the first metric
    m.ranks.forEach((row, l) => row.forEach((r, h) => { if (r === 1 && best === null) best = [l, h]; }));
    drawHeadMap(); drawRoleMap(); drawCompare();
    selectHead(...(best || [0, 0]));
    const onClick = (ev) => { const p = ev.points[0]; selectHead(Math.round(p.y), Math.round(p.x)); };
    $("head-map").on("plotly_click", onClick);
    if (A.roles.length) $("role-map").on("plotly_click", onClick);
    document.querySelectorAll("table.model-level").forEach(sortable);
    window.headscopeExplorer = { selectHead: selectHead, state: state };  // for tests and the console
    document.body.dataset.ready = "1";
  }
  init();
})();
