// ec2er viewer: one page, no libraries, nothing from the internet.
// Every piece of model or data text enters the document through text nodes (h() below turns
// strings into text nodes; innerHTML is never used), so generated markup shows as text.
"use strict";

const BASE = document.querySelector('meta[name="ec2er-base"]').content;
const PAGE = 50;
const LIVE_EVERY_MS = 3000;
let RUN = null;          // /api/run
let liveTimer = null;    // polls progress while a generation session runs
let lastWritten = null;  // dialogues written, as last seen

// ---------------------------------------------------------------- helpers

function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  append(e, children);
  return e;
}

function append(e, ...children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs, ...children) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

async function api(path, params) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== null && v !== undefined && v !== "" && v !== false) query.set(k, String(v));
  }
  const url = BASE + "api/" + path + (query.toString() ? "?" + query : "");
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(`${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return response.json();
}

function fileUrl(path) { return BASE + "api/file?path=" + encodeURIComponent(path); }
function link(route, params, ...children) { return h("a", { href: routeHref(route, params) }, ...children); }
function routeHref(route, params) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined && v !== "" && v !== false) query.set(k, v);
  return "#/" + route + (query.toString() ? "?" + query : "");
}
function go(route, params) { location.hash = routeHref(route, params).slice(1); }
function num(x, digits) {
  if (x === null || x === undefined) return "–";
  return typeof x === "number" ? (digits === undefined ? x.toLocaleString() : x.toFixed(digits)) : String(x);
}
function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(0) + "%"; }
function duration(s) {
  if (s === null || s === undefined) return "?";
  s = Math.round(s);
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}
function badge(text, kind) { return h("span", { class: "badge " + (kind || "") }, text); }
function kv(pairs, wide) {
  return h("dl", { class: wide ? "kv wide" : "kv" }, pairs.filter(p => p[1] !== undefined).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v === null ? "–" : v)]));
}
function table(headers, rows) {
  return h("table", {}, h("thead", {}, h("tr", {}, headers.map(x => h("th", {}, x)))), h("tbody", {}, rows));
}
function counts(obj) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return h("p", { class: "muted" }, "none");
  return table(["", "count"], entries.map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, num(v)))));
}
function select(name, label, options, value, onchange) {
  const s = h("select", { name, "aria-label": label, onchange: e => onchange(e.target.value) },
    h("option", { value: "" }, label + ": all"),
    options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)));
  return s;
}
function fill(e, ...children) { e.replaceChildren(); return append(e, children); }
function setMain(...children) { return fill(document.getElementById("main"), children); }
function errorBox(e) { return h("p", { class: "error" }, String(e.message || e)); }
function stagesOf(kind) { return (RUN && RUN.stages || []).filter(s => s.kind === kind); }
function stagePicker(kind, current, route, params) {
  const all = stagesOf(kind);
  if (all.length < 2) return null;
  return select("stage", "stage", all.map(s => [s.key, s.label]), current || all[0].key,
    v => go(route, { ...params, stage: v || null, offset: 0 }));
}
function answerText(a) {
  if (a === null || a === undefined) return "none";
  if (typeof a === "object") return Object.entries(a).map(([k, v]) => `${k} ${v === null ? "?" : v}`).join(", ");
  return String(a);
}

// ---------------------------------------------------------------- routing

const ROUTES = {
  "": overviewPage, overview: overviewPage, dialogues: dialoguesPage, dialogue: dialoguePage,
  curation: curationPage, training: trainingPage, evaluation: evaluationPage,
};

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?");
  const [route, ...rest] = path.split("/");
  return { route: route || "overview", arg: rest.length ? decodeURIComponent(rest.join("/")) : null,
           params: Object.fromEntries(new URLSearchParams(query || "")) };
}

let renders = 0;  // counts route renders: one that a newer render overtook writes nowhere

// A page awaits the API before it shows anything, so a click during the overview's fetches can let
// the overview finish last and cover the page clicked to. Each render writes into a box of its
// own, put into <main> on its first write only while it is the newest (a newer one replaces it).
async function render() {
  const mine = ++renders;
  const { route, arg, params } = parseHash();
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.route === (route === "dialogue" ? "dialogues" : route));
  const box = document.createElement("div");
  const show = (...children) => {
    if (mine === renders && !box.isConnected) document.getElementById("main").replaceChildren(box);
    return fill(box, children);
  };
  const page = ROUTES[route] || overviewPage;
  try { await page(show, params, arg); } catch (e) { show(errorBox(e)); }
}

function drawTabs() {
  const tabs = document.getElementById("tabs");
  tabs.replaceChildren();
  const kinds = new Set((RUN.stages || []).map(s => s.kind));
  const items = [["overview", "Overview"], ["dialogues", "Dialogues", "generate"], ["curation", "Curation", "curate"],
                 ["training", "Training", "train"], ["evaluation", "Evaluation", "evaluate"]];
  for (const [route, label, kind] of items) {
    if (kind && !kinds.has(kind)) continue;
    const a = h("a", { href: "#/" + route }, label);
    a.dataset.route = route;
    tabs.appendChild(a);
  }
}

async function start() {
  try { RUN = await api("run"); } catch (e) { setMain(errorBox(e)); return; }
  document.getElementById("run-name").textContent = RUN.run;
  document.title = "ec2er · " + RUN.run;
  drawTabs();
  window.addEventListener("hashchange", render);
  await render();
  watchLive();
}

// ---------------------------------------------------------------- live progress

function progressLine(p, written) {
  if (!p) return null;
  const rate = p.tokens_per_s === null || p.tokens_per_s === undefined ? "starting" : `${num(p.tokens_per_s, 0)} tok/s`;
  const left = p.state === "running" ? ` · ETA ${duration(p.eta_s)}` : ` · session took ${duration(p.updated - p.started)}`;
  return `${num(written ?? (p.already + (p.dialogues || 0)))}/${num(p.planned)} dialogues · ${num(p.turns || 0)} turns · ` +
         `${num(p.completion_tokens || 0)} tokens · ${rate}${left}`;
}

function isLive(p) { return p && p.state === "running" && Date.now() / 1000 - p.updated < 60; }

function watchLive() {
  if (!stagesOf("generate").length) return;
  const tick = async () => {
    let data = null;
    try {
      data = await api("progress");
      showProgress(data);
    } catch (e) {
      // one failed poll (the server restarting, a file caught mid-write) must not end live
      // updates: say so, and try again on the next tick
      const live = document.getElementById("live");
      if (live) live.replaceChildren(badge("progress not read: " + e.message + " (retrying)", "warn"));
    } finally {
      liveTimer = setTimeout(tick, data && !isLive(data.progress) ? 4 * LIVE_EVERY_MS : LIVE_EVERY_MS);
    }
  };
  tick();
}

function showProgress(data) {
  const live = document.getElementById("live");
  live.replaceChildren();
  if (isLive(data.progress)) {
    append(live, [h("span", { class: "dot" }), "generating: " + progressLine(data.progress, data.written)]);
    const bar = document.getElementById("progress-bar");
    if (bar) bar.style.width = (100 * (data.progress.fraction || 0)).toFixed(1) + "%";
    const line = document.getElementById("progress-line");
    if (line) line.textContent = progressLine(data.progress, data.written);
  } else if (data.progress && data.progress.state === "running") {
    append(live, "generation: no progress for " + duration(Date.now() / 1000 - data.progress.updated) + " (stopped?)");
  }
  if (lastWritten !== null && data.written !== lastWritten) newDialogues(data.written - lastWritten);
  lastWritten = data.written;
}

function newDialogues(n) {
  const { route, params } = parseHash();
  if (route !== "dialogues") return;
  if (params.newest && !Number(params.offset || 0)) { render(); return; }  // the live view follows by itself
  const note = document.getElementById("new-dialogues");
  if (note) {
    note.replaceChildren(`${n > 0 ? n : 0} more dialogues written since this page was shown `,
      h("button", { onclick: () => render() }, "refresh"));
  }
}

// ---------------------------------------------------------------- overview

async function overviewPage(show) {
  RUN = await api("run");
  const parts = [h("h1", {}, "Run ", RUN.run), h("p", { class: "muted" }, RUN.uri,
    RUN.chain && RUN.chain.seconds ? ` · chain took ${duration(RUN.chain.seconds)}` : "")];
  parts.push(h("div", { class: "grid" }, (RUN.stages || []).map(stageCard)));
  for (const g of RUN.generate || []) parts.push(generationSection(g));
  for (const c of RUN.curate || []) parts.push(curationSection(c));
  for (const t of RUN.train || []) parts.push(trainingSection(t));
  for (const e of RUN.evaluate || []) parts.push(await evaluationSection(e));
  show(parts);
}

function stageCard(s) {
  const sum = s.summary || {};
  const took = sum.reused ? badge("reused", "info") : sum.seconds !== undefined ? badge(duration(sum.seconds)) : badge("no record yet", "warn");
  return h("div", { class: "card" }, h("h3", {}, s.kind, s.label !== s.kind ? h("span", { class: "muted" }, " " + s.label) : null), took,
    (s.damaged || []).map(problem => h("p", { class: "damaged" }, badge("damaged", "warn"), " " + problem)),
    h("p", {}, sum.headline || ""),
    sum.counts ? kv(Object.entries(sum.counts).filter(([, v]) => typeof v !== "object" || v === null).map(([k, v]) => [k.replace(/_/g, " "), typeof v === "number" ? num(v) : String(v)])) : null,
    (sum.details || []).length ? h("details", {}, h("summary", {}, "details"), h("ul", { class: "muted" }, sum.details.map(line => h("li", {}, line)))) : null);
}

function generationSection(g) {
  const stats = g.stats || {};
  const p = g.progress;
  const section = [h("h2", {}, "Generation ", h("span", { class: "muted" }, g.key || "."))];
  if (p) {
    section.push(h("div", { class: "card" },
      h("p", {}, badge(p.state, p.state === "done" ? "ok" : p.state === "running" ? "info" : "warn"), " ",
        h("span", { id: "progress-line" }, progressLine(p, g.written))),
      h("div", { class: "bar" }, h("div", { id: "progress-bar", style: null })),
      h("p", { class: "muted" }, `failed ${num(p.failed || 0)} · redo ${num(p.redo || 0)} · items ${num(p.items || 0)}`)));
    const bar = section[section.length - 1].querySelector(".bar > div");
    bar.style.width = (100 * (p.fraction || 0)).toFixed(1) + "%";
  }
  section.push(h("p", {}, `${num(g.written)} dialogues written in ${num(g.files)} files · `, link("dialogues", { stage: g.key || null }, "read them")));
  if (stats.dialogues) {
    const d = stats.distributions || {};
    section.push(h("div", { class: "grid" },
      h("div", { class: "card" }, h("h3", {}, "Dialogues"), kv([["ok", num(stats.dialogues.ok)], ["failed", num(stats.dialogues.failed)], ["planned", num(stats.dialogues.planned)],
        ["EU items", num(stats.items.eu)], ["EA items", num(stats.items.ea)], ["items failed", num(stats.items.failed)],
        ["completion tokens", num((stats.tokens || {}).completion)]])),
      h("div", { class: "card" }, h("h3", {}, "EU categories"), counts(d.eu_coarse)),
      h("div", { class: "card" }, h("h3", {}, "EA categories"), counts(d.ea_category)),
      h("div", { class: "card" }, h("h3", {}, "Themes"), counts(d.theme_category)),
      h("div", { class: "card" }, h("h3", {}, "Stop reasons"), counts(d.stop_reason)),
      h("div", { class: "card" }, h("h3", {}, "Turns (ok dialogues)"), counts(d.turns))));
  }
  return section;
}

function curationSection(c) {
  const section = [h("h2", {}, "Curation ", h("span", { class: "muted" }, c.key || "."))];
  section.push(h("div", { class: "grid" },
    h("div", { class: "card" }, h("h3", {}, "Items"), kv(Object.entries(c.counts || {}).map(([k, v]) => [k, num(v)])),
      h("p", {}, link("curation", { stage: c.key || null }, "every item and its decision"))),
    h("div", { class: "card" }, h("h3", {}, "Rejection reasons"), counts(c.rejections)),
    h("div", { class: "card" }, h("h3", {}, "Decontamination"), kv(Object.entries(c.decontamination || {}).map(([k, v]) => [k, String(v)]))),
    h("div", { class: "card" }, h("h3", {}, "Near-duplicates"), kv(Object.entries(c.dedup || {}).map(([k, v]) => [k, String(v)])))));
  if (c.plots && c.plots.length) section.push(h("div", { class: "grid" }, c.plots.map(p => h("img", { class: "plot", src: fileUrl(p), alt: p }))));
  if (c.datacard) {
    const holder = h("div", { class: "card md" }, h("p", { class: "muted" }, "loading the data card…"));
    const details = h("details", {}, h("summary", {}, "Data card (DATACARD.md)"), holder);
    details.addEventListener("toggle", () => loadMarkdown(c.datacard, holder), { once: true });
    section.push(details);
  }
  return section;
}

async function loadMarkdown(path, holder) {
  try {
    const response = await fetch(fileUrl(path), { credentials: "same-origin" });
    if (!response.ok) throw new Error(response.status + " " + response.statusText);
    holder.replaceChildren(markdown(await response.text(), path.split("/").slice(0, -1).join("/")));
  } catch (e) { holder.replaceChildren(errorBox(e)); }
}

// A small markdown reader for the data card: headings, tables, lists, quotes, images (files of
// the run only), paragraphs; everything else as text.
function markdown(text, dir) {
  const out = h("div", {});
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (/^#{1,6} /.test(line)) { const level = Math.min(line.match(/^#+/)[0].length + 1, 6); out.appendChild(h("h" + level, {}, line.replace(/^#+ /, ""))); continue; }
    if (line.startsWith("|")) {
      const rows = [];
      while (i < lines.length && lines[i].startsWith("|")) { rows.push(lines[i]); i++; }
      i--;
      const cells = r => r.replace(/^\||\|$/g, "").split("|").map(c => c.trim());
      const body = rows.filter((r, k) => k !== 1 || !/^\|[-:| ]+\|$/.test(r));
      out.appendChild(table(cells(body[0]), body.slice(1).map(r => h("tr", {}, cells(r).map(c => h("td", {}, c))))));
      continue;
    }
    const image = line.match(/^!\[([^\]]*)\]\(([^)]+)\)$/);
    if (image) {
      const target = image[2];
      if (!/^[a-z]+:|^\/|\.\./i.test(target)) out.appendChild(h("img", { class: "plot", alt: image[1], src: fileUrl(dir ? dir + "/" + target : target) }));
      continue;
    }
    if (line.startsWith("- ")) { out.appendChild(h("li", {}, line.slice(2))); continue; }
    if (line.startsWith("> ")) { out.appendChild(h("blockquote", {}, line.slice(2))); continue; }
    if (line.trim()) out.appendChild(h("p", {}, line));
  }
  return out;
}

function trainingSection(t) {
  const r = t.record;
  return [h("h2", {}, "Training ", h("span", { class: "muted" }, t.key || ".")),
    h("div", { class: "card" }, r ? kv([["adapter", r.adapter], ["base model", r.base_model], ["examples", num(r.examples)],
      ["loss", `${num(r.loss_first, 3)} → ${num(r.loss_final, 3)}` + (r.val_final !== null && r.val_final !== undefined ? ` (val ${num(r.val_final, 3)})` : "")],
      ["steps", num(r.steps)], ["tokens/s", num(r.tokens_per_s)]]) : noTrainingRecord(t, "no training.json yet (training runs, or failed)"),
      h("p", {}, link("training", { stage: t.key || null }, "loss curve and what is learned")))];
}

function noTrainingRecord(t, notYet) {
  return t.damaged ? h("p", { class: "damaged" }, badge("damaged", "warn"), " " + t.damaged) : h("p", { class: "muted" }, notYet);
}

async function evaluationSection(e) {
  const section = [h("h2", {}, "Evaluation ", h("span", { class: "muted" }, e.key || "."))];
  if (e.table && e.table.length) section.push(evalTable(e.table));
  try {
    const view = await api("evaluation", { stage: e.key || null });
    if (view.bars.length) section.push(h("div", { class: "card" }, h("h3", {}, "Accuracy, and the replies the strict parser could not read"), evalChart(view.bars)));
  } catch (err) { section.push(errorBox(err)); }
  if (e.chart) section.push(h("details", {}, h("summary", {}, "chart.png (the report's chart)"), h("img", { class: "plot", src: fileUrl(e.chart), alt: "evaluation chart" })));
  section.push(h("p", {}, link("evaluation", { stage: e.key || null }, "every prediction, base and adapter side by side")));
  return section;
}

function evalTable(rows) {
  const headers = Object.keys(rows[0]).filter(k => rows.some(r => r[k]));
  return h("div", { class: "card scroll" }, table(headers, rows.map(r => h("tr", {}, headers.map(k => h("td", {}, r[k]))))));
}

// Bars of accuracy per model, in groups per protocol, one panel per language and task; on each
// bar a hatched segment marks the share of replies the strict parser could not read.
function evalChart(bars) {
  const panels = [...new Set(bars.map(b => b.language + " " + b.task))].sort();
  const models = [...new Set(bars.map(b => b.model))].sort();
  const protocols = [...new Set(bars.map(b => b.protocol))].sort();
  const colors = ["#4c7bd0", "#e08a2e", "#4a9c66", "#b3372f", "#7d5bb5", "#5f6b7a"];
  const W = Math.max(260, 50 + protocols.length * (models.length * 28 + 24)), H = 210, top = 16, bottom = 170;
  const holder = h("div", { class: "grid" });
  for (const panel of panels) {
    const s = svg("svg", { width: W, height: H, role: "img" });
    s.appendChild(svg("defs", {}, models.map((m, k) => svg("pattern", { id: `hatch-${panel.replace(/\W/g, "")}-${k}`, width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
      svg("rect", { width: 6, height: 6, fill: "#fff" }), svg("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: colors[k % colors.length], "stroke-width": 3 })))));
    const sizes = [...new Set(bars.filter(b => b.language + " " + b.task === panel).map(b => b.n))].sort((a, b) => a - b);
    s.appendChild(svg("text", { x: 4, y: 12 }, `${panel}, n = ${sizes.length > 1 ? sizes[0] + "-" + sizes[sizes.length - 1] : sizes[0]}`));
    s.appendChild(svg("line", { x1: 40, y1: bottom, x2: W - 4, y2: bottom, stroke: "#999" }));
    for (const tick of [0, 0.5, 1]) {
      const y = bottom - tick * (bottom - top - 10);
      s.appendChild(svg("text", { x: 6, y: y + 4 }, tick.toFixed(1)));
      s.appendChild(svg("line", { x1: 36, y1: y, x2: 40, y2: y, stroke: "#999" }));
    }
    protocols.forEach((proto, p) => {
      const x0 = 48 + p * (models.length * 28 + 24);
      s.appendChild(svg("text", { x: x0, y: bottom + 16 }, proto));
      models.forEach((m, k) => {
        const b = bars.find(x => x.language + " " + x.task === panel && x.protocol === proto && x.model === m);
        if (!b) return;
        const scale = bottom - top - 10, x = x0 + k * 28;
        const acc = b.accuracy * scale, un = b.unparsed * scale;
        s.appendChild(svg("rect", { x, y: bottom - acc, width: 24, height: acc, fill: colors[k % colors.length] },
          svg("title", {}, `${m} ${proto}: accuracy ${pct(b.accuracy)}, unparsed ${pct(b.unparsed)} (n=${b.n})`)));
        if (b.unparsed > 0) {
          s.appendChild(svg("rect", { x, y: bottom - acc - un, width: 24, height: un, fill: `url(#hatch-${panel.replace(/\W/g, "")}-${k})`, stroke: colors[k % colors.length], class: "unparsed" },
            svg("title", {}, `${m} ${proto}: ${pct(b.unparsed)} of replies unparsed (not in the asked format)`)));
        }
        s.appendChild(svg("text", { x: x + 2, y: bottom - acc - un - 3 }, pct(b.accuracy)));
        const cx = x + 12, cy = bottom - acc - un / 2;
        if (un >= 70) s.appendChild(svg("text", { x: cx, y: cy + 4, "text-anchor": "middle", transform: `rotate(-90 ${cx} ${cy})` }, `${pct(b.unparsed)} unparsed`));
      });
    });
    holder.appendChild(s);
  }
  const legend = h("p", { class: "legend" }, models.map((m, k) => [h("span", { class: "swatch", style: null }), m]), " · hatched: unparsed share (no answer in the asked format); empty: answered wrong");
  legend.querySelectorAll(".swatch").forEach((e, k) => { e.style.background = colors[k % colors.length]; });
  return [holder, legend];
}

// ---------------------------------------------------------------- dialogues

const FILTER_KEYS = ["status", "error", "theme", "stop", "eu", "ea", "q"];

async function dialoguesPage(show, params) {
  const stage = params.stage || null;
  const offset = Number(params.offset || 0);
  const filters = Object.fromEntries(FILTER_KEYS.map(k => [k, params[k] || ""]));
  const main = show(h("h1", {}, "Dialogues"), h("p", { class: "muted" }, "reading…"));
  const [facets, page] = await Promise.all([api("dialogues/facets", { stage }), api("dialogues", { stage, offset, limit: PAGE, newest: params.newest, ...filters })]);
  const change = (key, value) => go("dialogues", { ...params, [key]: value || null, offset: 0 });
  const opts = obj => Object.entries(obj || {}).sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, `${k} (${num(v)})`]);
  const search = h("input", { type: "search", name: "q", placeholder: "search text (Enter)", value: filters.q });
  search.addEventListener("keydown", e => { if (e.key === "Enter") change("q", search.value.trim()); });
  const newest = h("label", {}, h("input", { type: "checkbox", name: "newest", checked: !!params.newest, onchange: e => change("newest", e.target.checked ? "1" : "") }), " newest first");
  const euOptions = [...opts(facets.eu_coarse).map(([k, t]) => [k, "all " + t]), ...opts(facets.eu)];
  const bar = h("div", { class: "filters" },
    stagePicker("generate", stage, "dialogues", params),
    select("status", "status", opts(facets.status), filters.status, v => change("status", v)),
    select("error", "failure", opts(facets.error), filters.error, v => change("error", v)),
    select("theme", "theme", opts(facets.theme), filters.theme, v => change("theme", v)),
    select("stop", "stop reason", opts(facets.stop), filters.stop, v => change("stop", v)),
    select("eu", "EU category", euOptions, filters.eu, v => change("eu", v)),
    select("ea", "EA category", opts(facets.ea), filters.ea, v => change("ea", v)),
    search, newest);
  const status = h("p", { class: "muted", id: "page-status" });
  const rows = page.rows.map(r => h("tr", { class: "clickable", "data-id": r.id, onclick: () => go("dialogue/" + encodeURIComponent(r.id), { stage }) },
    h("td", {}, link("dialogue/" + encodeURIComponent(r.id), { stage }, r.id)),
    h("td", {}, r.status === "ok" ? badge("ok", "ok") : [badge(r.status, "bad"), h("div", { class: "muted" }, r.error || "")]),
    h("td", {}, r.theme || "–"), h("td", {}, r.stop || "–"), h("td", {}, num(r.turns)),
    h("td", {}, r.eu.map(x => badge(x))), h("td", {}, r.ea.map(x => badge(x))),
    h("td", {}, safetyBadge(r.safety)), h("td", {}, num(r.tokens)), h("td", { class: "text" }, r.persona)));
  const pager = h("div", { class: "pager" },
    h("button", { disabled: offset === 0, onclick: () => go("dialogues", { ...params, offset: Math.max(0, offset - PAGE) }) }, "← previous"),
    status,
    h("button", { disabled: page.rows.length < PAGE && !page.partial, onclick: () => go("dialogues", { ...params, offset: offset + PAGE }) }, "next →"));
  fill(main, h("h1", {}, "Dialogues"), bar, h("p", { id: "new-dialogues", class: "muted" }), pager,
    page.rows.length ? table(["id", "status", "theme", "stop", "turns", "EU", "EA", "crisis", "tokens", "persona"], rows) : h("p", { class: "muted", id: "no-rows" }, page.partial ? "" : "No dialogue matches."));
  const showStatus = (total, exact) => {
    status.replaceChildren(page.rows.length ? `${num(offset + 1)}–${num(offset + page.rows.length)}` : "none", total === null ? "" : ` of ${exact === false ? "≥ " : ""}${num(total)}`);
  };
  showStatus(page.total, true);
  if (page.partial) {
    status.append(` · searched ${pct(page.scanned_rows / Math.max(page.total_rows, 1))} of ${num(page.total_rows)} dialogues `,
      h("button", { onclick: () => render() }, "search further"));
  } else if (page.total === null) {
    api("dialogues/count", { stage, ...filters }).then(c => { if (!page.partial) showStatus(c.count, c.exact); }).catch(() => {});
  }
  lastWritten = null;
}

async function dialoguePage(show, params, id) {
  const stage = params.stage || null;
  const d = await api("dialogue", { stage, id });
  const m = d.metadata || {}, dialogue = d.dialogue;
  const turns = (dialogue && dialogue.turns) || [];
  const safety = m.safety || null;
  const riskTurns = new Set(((safety && safety.risk_turns) || []).map(r => Number(r.turn)));
  const turnList = h("div", { id: "turns" }, turns.map(t => h("div", { class: "turn " + t.speaker + (riskTurns.has(Number(t.index)) ? " risk" : ""), "data-index": t.index },
    h("div", { class: "who" }, `[${t.index}] ${t.speaker}`), h("div", { class: "text" }, t.text))));
  const items = [...(d.eu || []).map(x => ["EU", x]), ...(d.ea || []).map(x => ["EA", x])];
  const cards = items.map(([task, item]) => itemCard(task, item, { onclick: card => highlight(card, item) }));
  const verdicts = (dialogue && dialogue.verdicts) || m.verdicts || [];
  const criteria = ["scenario_clear", "emotions_present", "causes_present", "dilemma_present", "rich_enough"];
  show(
    h("p", {}, link("dialogues", { stage }, "← dialogues")),
    h("h1", {}, "Dialogue ", d.id),
    h("div", { class: "card" }, kv([["status", m.status === "ok" ? badge("ok", "ok") : badge(m.status || "?", "bad")], ["error", m.error],
      ["pipeline", m.pipeline], ["theme", m.theme_category], ["stop reason", m.stop_reason], ["turns", num(m.turns)],
      ["items", `${num(m.eu)} EU, ${num(m.ea)} EA`], ["tokens", `${num(m.prompt_tokens)} prompt (${num(m.cached_prompt_tokens)} cached), ${num(m.completion_tokens)} completion`],
      ["model", m.model], ["seconds", num(m.seconds)], ["file", `${d.file} row ${d.row}`]], true)),
    h("div", { class: "cols" },
      h("div", {},
        h("h2", {}, "Persona"), h("div", { class: "card text" }, m.persona || "–"),
        h("h2", {}, "Background"), h("div", { class: "card text" }, (dialogue && dialogue.background) || "–"),
        h("h2", {}, "Turns"), turns.length ? turnList : h("p", { class: "muted" }, "no transcript (the dialogue failed)"),
        h("h2", {}, "Crisis safety"), safetySection(safety),
        h("h2", {}, "Supervisor"), verdicts.length ? table(["check", ...criteria.map(c => c.replace("_", " ")), "reason"],
          verdicts.map((v, k) => h("tr", {}, h("td", {}, String(k + 1)), criteria.map(c => h("td", {}, v[c] ? "✓" : "✗")), h("td", { class: "text" }, v.reason || "")))) : h("p", { class: "muted" }, "no verdicts"),
        (m.supervisor_errors || []).length ? [h("h3", {}, "Supervisor errors"), h("ul", {}, m.supervisor_errors.map(e => h("li", {}, e)))] : null),
      h("div", {},
        h("h2", {}, "Items ", h("span", { class: "muted" }, "(click one to mark the turns it came from)")),
        cards.length ? cards : h("p", { class: "muted" }, "no items"),
        (m.item_failures || []).length ? [h("h3", {}, "Items that failed"), h("ul", {}, m.item_failures.map(f => h("li", {}, `${f.qid}: ${f.error}`)))] : null)));
}

// A dialogue's crisis-safety record (ec2er.safety.dialogue.DialogueSafety): the client's highest
// risk, and how the therapist turn after each risky client turn handled it.
const HANDLING_KIND = { safe: "ok", unsafe: "bad", unanswered: "warn", not_needed: "" };
function safetyBadge(safety) {
  if (!safety) return "–";
  if (safety.client_risk === "none") return badge("no risk");
  return badge(`${safety.client_risk} · ${safety.handling}`, HANDLING_KIND[safety.handling]);
}

function safetySection(safety) {
  if (!safety) return h("p", { class: "muted" }, "no safety record (no transcript, or written before safety records)");
  const mark = ok => ok ? "✓" : "✗";
  const head = kv([["client risk", safety.client_risk], ["category", safety.category],
    ["handling", badge(safety.handling, HANDLING_KIND[safety.handling])], ["rules", safety.rules_version]], true);
  const rows = (safety.risk_turns || []).map(r => {
    const c = r.handling;
    return h("tr", {}, h("td", {}, String(r.turn)), h("td", {}, `${r.level} (${r.category})`),
      h("td", { class: "text" }, (r.evidence || []).map(e => `“${e.text}”`).join(" ")),
      c ? [h("td", {}, String(c.therapist_turn)), ...["acknowledged", "argued", "means_information", "pointed_to_help", "asked_about_safety"].map(k => h("td", {}, mark(c[k]))),
        h("td", {}, badge(c.safe ? "safe" : "unsafe", c.safe ? "ok" : "bad"))]
        : h("td", { colspan: 7, class: "muted" }, "no therapist turn followed"));
  });
  return h("div", { class: "card", id: "safety" }, head, rows.length ? table(["client turn", "risk", "evidence", "therapist turn", "acknowledged",
    "argued", "means info", "pointed to help", "asked about safety", "handled"], rows) : null);
}

function highlight(card, item) {
  const wanted = new Set(((item.provenance || {}).turn_indices || []).map(Number));
  for (const c of document.querySelectorAll(".item.selected")) c.classList.remove("selected");
  card.classList.add("selected");
  let first = null;
  for (const t of document.querySelectorAll("#turns .turn")) {
    const on = wanted.has(Number(t.dataset.index));
    t.classList.toggle("evidence", on);
    if (on && !first) first = t;
  }
  if (first) first.scrollIntoView({ behavior: "smooth", block: "center" });
}

function optionList(choices, gold) {
  return h("ol", { class: "options", type: "A" }, (choices || []).map(c => h("li", { class: c === gold ? "gold" : null }, c)));
}

function itemCard(task, item, opts) {
  const prov = item.provenance || {};
  const evidence = (prov.turn_indices || []);
  const card = h("div", { class: "card item", "data-qid": item.qid });
  append(card, [
    h("div", {}, badge(task, "info"), badge(item.finegrained_category || item.category || "?"), item["question type"] ? badge(item["question type"]) : null,
      h("span", { class: "muted" }, " ", item.qid)),
    h("p", { class: "text" }, item.scenario),
    h("p", {}, h("b", {}, "subject: "), item.subject),
    task === "EU" ? [h("div", {}, "emotion:"), optionList(item.emotion_choices, item.emotion_label), h("div", {}, "cause:"), optionList(item.cause_choices, item.cause_label)]
      : [h("div", {}, "best choice:"), optionList(item.choices, item.label)],
    item.explanation ? h("p", { class: "muted text" }, "explanation: ", item.explanation) : null,
    h("p", { class: "muted" }, evidence.length ? `from turns ${evidence.join(", ")}` : "the extractor named no turns",
      item.confidence !== undefined && item.confidence !== null ? ` · confidence ${num(item.confidence, 2)}` : "",
      (item.flags || []).length ? " · flags: " + item.flags.join(", ") : "")]);
  if (opts && opts.onclick) card.addEventListener("click", () => opts.onclick(card));
  return card;
}

// ---------------------------------------------------------------- curation

async function curationPage(show, params) {
  const stage = params.stage || null;
  const offset = Number(params.offset || 0);
  const main = show(h("h1", {}, "Curation"), h("p", { class: "muted" }, "reading…"));
  const page = await api("curation", { stage, offset, limit: PAGE, decision: params.decision, reason: params.reason, task: params.task, q: params.q });
  const change = (key, value) => go("curation", { ...params, [key]: value || null, offset: 0 });
  const search = h("input", { type: "search", name: "q", placeholder: "search text (Enter)", value: params.q || "" });
  search.addEventListener("keydown", e => { if (e.key === "Enter") change("q", search.value.trim()); });
  const c = page.counts || {};
  const bar = h("div", { class: "filters" },
    stagePicker("curate", stage, "curation", params),
    select("decision", "decision", [["train", `kept: train (${num(c.train)})`], ["val", `kept: val (${num(c.val)})`], ["rejected", `rejected (${num(c.rejected)})`]], params.decision || "", v => change("decision", v)),
    select("reason", "reason", Object.entries(page.rejections || {}).map(([k, v]) => [k, `${k} (${num(v)})`]), params.reason || "", v => change("reason", v)),
    select("task", "task", [["EU", "EU"], ["EA", "EA"]], params.task || "", v => change("task", v)),
    search);
  const generate = stagesOf("generate")[0];
  const rows = page.rows.map(r => decisionCard(r, generate, stage));
  const end = offset + page.rows.length;
  const pager = h("div", { class: "pager" },
    h("button", { disabled: offset === 0, onclick: () => go("curation", { ...params, offset: Math.max(0, offset - PAGE) }) }, "← previous"),
    h("span", { class: "muted" }, page.rows.length ? `${num(offset + 1)}–${num(end)}` : "none", page.total !== null && page.total !== undefined ? ` of ${num(page.total)}` : "",
      page.partial ? " (search stopped at its time budget: next continues)" : ""),
    h("button", { disabled: page.rows.length < PAGE && !page.partial, onclick: () => go("curation", { ...params, offset: end }) }, "next →"));
  fill(main, h("h1", {}, "Curation"), bar, pager, rows.length ? rows : h("p", { class: "muted" }, "No item matches."));
}

function decisionCard(r, generate, stage) {
  const item = r.item || {};
  const card = h("div", { class: "card" });
  const head = h("div", {}, r.decision === "rejected" ? badge("rejected", "bad") : badge("kept: " + r.decision, "ok"), " ",
    h("span", { class: "muted" }, r.qid || "(no qid)", r.where ? " · " + r.where : ""));
  const dialogueId = (item.provenance || {}).dialogue_id;
  if (dialogueId && generate) head.append(" · ", link("dialogue/" + encodeURIComponent(dialogueId), { stage: generate.key || null }, "its dialogue"));
  append(card, [head, r.reasons.length ? h("ul", {}, r.reasons.map(x => h("li", {}, h("b", {}, x.code), x.detail ? ": " + x.detail : ""))) : null]);
  const dup = r.matches.find(m => m.code === "near_duplicate");
  const bench = r.matches.find(m => m.code === "benchmark_contamination");
  if (dup) {
    append(card, h("div", { class: "side" },
      h("div", {}, h("h3", {}, "this item (removed)"), h("p", { class: "text" }, item.scenario)),
      h("div", {}, h("h3", {}, "the kept near-duplicate ", h("span", { class: "muted" }, String(dup.qid))), h("p", { class: "text" }, dup.scenario || "–"))));
  }
  if (bench) {
    const theirs = h("div", {}, h("h3", {}, "EmoBench item ", h("span", { class: "muted" }, `${bench.ref} (score ${bench.score})`)), h("p", { class: "muted" }, "loading…"));
    append(card, h("div", { class: "side" }, h("div", {}, h("h3", {}, "this item (removed)"), h("p", { class: "text" }, item.scenario)), theirs));
    api("curation/benchmark", { stage, ref: bench.ref }).then(found => {
      theirs.lastChild.replaceWith(found.item ? h("p", { class: "text" }, found.item.scenario) : h("p", { class: "muted" }, found.missing || "not found"));
    }).catch(e => theirs.lastChild.replaceWith(errorBox(e)));
  }
  if (!dup && !bench && (item.scenario || item.qid)) {
    const task = r.task || (item.emotion_choices ? "EU" : "EA");
    card.appendChild(itemCard(task, item));
  }
  return card;
}

// ---------------------------------------------------------------- training

async function trainingPage(show, params) {
  const stage = params.stage || null;
  const t = await api("training", { stage });
  const r = t.record;
  const parts = [h("h1", {}, "Training ", h("span", { class: "muted" }, t.key || ".")), stagePicker("train", stage, "training", params)];
  if (r) {
    parts.push(h("div", { class: "card" }, kv([["adapter", r.adapter], ["base model", r.base_model], ["examples", num(r.examples)],
      ["steps", num(r.steps)], ["epochs", num(r.epochs)], ["loss", `${num(r.loss_first, 3)} → ${num(r.loss_final, 3)}`],
      ["val loss", num(r.val_final, 3)], ["tokens/s", num(r.tokens_per_s)], ["timings", JSON.stringify(r.timings || {})]])));
    parts.push(h("h2", {}, "Loss"), h("div", { class: "card" }, lossChart(t.curves || { train: [], val: [] })));
  } else {
    parts.push(noTrainingRecord(t, "No training.json yet: training is running, or did not finish."));
  }
  parts.push(h("h2", {}, "What is learned"), h("p", { class: "legend" }, "The first training examples as the model sees them.",
    h("span", { class: "swatch span trained" }), "carries loss (the answer the model learns, with its end-of-turn token)",
    h("span", { class: "swatch", style: null }), "context only (no loss)"));
  if (!(t.preview || []).length) parts.push(h("p", { class: "muted" }, "No preview.jsonl in this training folder."));
  for (const ex of t.preview || []) {
    parts.push(h("div", { class: "card" }, h("h3", {}, ex.example_id),
      h("div", { class: "preview" }, ex.spans.map(s => h("span", { class: "span" + (s.trained ? " trained" : "") }, s.text)))));
  }
  show(parts);
}

function lossChart(curves) {
  const series = [["train", curves.train || [], "#4c7bd0"], ["val", curves.val || [], "#e08a2e"]].filter(s => s[1].length);
  if (!series.length) return h("p", { class: "muted" }, "no loss logged");
  const all = series.flatMap(s => s[1]);
  const steps = all.map(p => p[0]), losses = all.map(p => p[1]);
  const [x0, x1] = [Math.min(...steps), Math.max(...steps)], [y0, y1] = [Math.min(...losses), Math.max(...losses)];
  const W = 640, H = 260, L = 50, R = 10, T = 10, B = 30;
  const sx = x => L + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (W - L - R);
  const sy = y => T + (y1 === y0 ? 0.5 : 1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const s = svg("svg", { width: W, height: H, role: "img", id: "loss-chart" },
    svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999" }), svg("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#999" }),
    svg("text", { x: 4, y: T + 10 }, y1.toFixed(3)), svg("text", { x: 4, y: H - B }, y0.toFixed(3)),
    svg("text", { x: L, y: H - 8 }, `step ${x0}`), svg("text", { x: W - R - 60, y: H - 8 }, `step ${x1}`));
  for (const [name, points, color] of series) {
    s.appendChild(svg("polyline", { fill: "none", stroke: color, "stroke-width": 2, points: points.map(p => `${sx(p[0])},${sy(p[1])}`).join(" ") }));
    for (const p of points) s.appendChild(svg("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: color }, svg("title", {}, `${name} step ${p[0]}: ${p[1]}`)));
  }
  const legend = h("p", { class: "legend" }, series.map(([name]) => [h("span", { class: "swatch", "data-name": name }), name]));
  legend.querySelectorAll(".swatch").forEach((e, k) => { e.style.background = series[k][2]; });
  return [s, legend];
}

// ---------------------------------------------------------------- evaluation

async function evaluationPage(show, params) {
  const stage = params.stage || null;
  const offset = Number(params.offset || 0);
  const main = show(h("h1", {}, "Evaluation"), h("p", { class: "muted" }, "reading…"));
  const [view, page] = await Promise.all([api("evaluation", { stage }),
    api("predictions", { stage, offset, limit: 20, protocol: params.protocol, language: params.language, task: params.task,
      model: params.model, disagree: params.disagree, unparsed: params.unparsed, wrong: params.wrong, q: params.q })]);
  const change = (key, value) => go("evaluation", { ...params, [key]: value || null, offset: 0 });
  const check = (key, label) => h("label", {}, h("input", { type: "checkbox", name: key, checked: !!params[key], onchange: e => change(key, e.target.checked ? "1" : "") }), " " + label);
  const search = h("input", { type: "search", name: "q", placeholder: "search replies and prompts (Enter)", value: params.q || "" });
  search.addEventListener("keydown", e => { if (e.key === "Enter") change("q", search.value.trim()); });
  const f = view.facets || {};
  const bar = h("div", { class: "filters" }, stagePicker("evaluate", stage, "evaluation", params),
    ...["protocol", "language", "task", "model"].map(k => select(k, k, (f[k] || []).map(v => [v, v]), params[k] || "", v => change(k, v))),
    check("disagree", `models disagree (${num(view.disagree)} of ${num(view.items)})`), check("unparsed", "a reply unparsed"), check("wrong", "a reply wrong"), search);
  const pager = h("div", { class: "pager" },
    h("button", { disabled: offset === 0, onclick: () => go("evaluation", { ...params, offset: Math.max(0, offset - 20) }) }, "← previous"),
    h("span", { class: "muted", id: "prediction-count" }, page.rows.length ? `${num(offset + 1)}–${num(offset + page.rows.length)} of ${num(page.total)} items` : "no item matches"),
    h("button", { disabled: offset + 20 >= page.total, onclick: () => go("evaluation", { ...params, offset: offset + 20 }) }, "next →"));
  fill(main, h("h1", {}, "Evaluation ", h("span", { class: "muted" }, view.key || ".")),
    view.table && view.table.length ? evalTable(view.table) : null,
    view.bars.length ? h("div", { class: "card" }, evalChart(view.bars)) : null,
    h("h2", {}, "Predictions"), bar, pager, page.rows.map(predictionGroup));
}

function predictionGroup(g) {
  const card = h("div", { class: "card prediction-group", "data-qid": g.qid });
  append(card, h("div", {}, badge(g.protocol, "info"), badge(g.language), badge(g.task), h("b", {}, " qid " + g.qid),
    g.rotation ? h("span", { class: "muted" }, ` · options rotated by ${g.rotation}`) : null,
    " · gold: ", g.gold === null || g.gold === undefined ? h("span", { class: "muted" }, "not recorded") : answerText(g.gold),
    g.disagree ? badge("models disagree", "warn") : null));
  const first = g.predictions[0];
  if (first && first.prompts) {
    append(card, h("details", {}, h("summary", {}, "prompt"), Object.entries(first.prompts).map(([part, messages]) =>
      h("div", {}, Object.keys(first.prompts).length > 1 ? h("h3", {}, part) : null,
        messages.map(m => [h("div", { class: "muted" }, m.role), h("pre", { class: "prompt" }, m.content)])))));
  } else {
    append(card, h("p", { class: "muted" }, "prompt not recorded in this predictions file"));
  }
  append(card, h("div", { class: "grid" }, g.predictions.map(p => h("div", { class: "pred " + (p.correct ? "right" : "wrong") },
    h("div", {}, h("b", {}, p.model)),
    kv([["strict", [answerText(p.answer), " ", p.parsed ? (p.correct ? badge("right", "ok") : badge("wrong", "bad")) : badge("parse failure", "warn")]],
        ["lenient", [answerText(p.lenient_answer), " ", p.lenient_parsed ? (p.lenient_correct ? badge("right", "ok") : badge("wrong", "bad")) : badge("unparsed", "warn")]],
        ["error", p.error || null]]),
    h("div", { class: "muted" }, "reply:"),
    p.parts ? Object.entries(p.parts).map(([part, text]) => [h("div", { class: "muted" }, part), h("pre", { class: "reply" }, text)])
      : h("pre", { class: "reply" }, p.response || (p.option_scores ? JSON.stringify(p.option_scores) : "(empty)"))))));
  return card;
}

start();
