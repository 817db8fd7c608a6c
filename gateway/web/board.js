// One board: facts, a time-series chart per sensor (uPlot), and its readings with
// their state (stored / batched / anchored / flagged) and a proof download.
"use strict";

const ADDRESS = decodeURIComponent(location.pathname.split("/").pop());
const CHART_POINTS = 300; // readings in the charts: one page of the API
const TABLE_ROWS = 50;
let oldest = null; // seq of the oldest reading in the table (paging backwards)
const charts = new Map(); // "name|unit" -> {plot, box}

function fact(k, v) {
  return T.el("div", { class: "card" }, T.el("div", { class: "k" }, k), T.el("div", { class: "v" }, v));
}

async function loadFacts(pending) {
  const b = await (pending || T.api("/api/boards/" + ADDRESS));
  document.title = (b.label || T.short(b.address)) + " · Terrapin gateway";
  document.getElementById("title").replaceChildren(
    (b.label ? b.label + " " : "Board "), T.el("code", {}, b.address));
  const online = b.online === null ? "no status yet" : b.online ? "online" : b.state;
  document.getElementById("facts").replaceChildren(
    fact("status", online), fact("last seen", T.when(b.last_seen)),
    fact("owner", b.owner ? T.short(b.owner) : "not bound"), fact("firmware", b.firmware || "–"),
    fact("free heap", T.kb(b.heap_free)), fact("outbox", b.outbox ?? "–"),
    ...(T.asOf(b) ? [fact("values", T.asOf(b))] : []),
    fact("highest seq", b.highest_seq ?? "–"), fact("readings", b.readings),
    fact("rejections", Object.entries(b.rejections).map(([k, n]) => k + " " + n).join(", ") || "none"));
}

// One series per (name, unit); x is the board's time (the arrival time when unset).
function series(readings) {
  const out = new Map();
  for (const r of readings) {
    const x = r.time || r.received_at;
    for (const rec of r.records) {
      const key = rec.name + "|" + rec.unit;
      if (!out.has(key)) out.set(key, []);
      out.get(key).push([x, rec.value, r.seq]);
    }
  }
  for (const pts of out.values()) pts.sort((a, b) => a[0] - b[0]);
  return out;
}

function drawCharts(readings) {
  const box = document.getElementById("charts");
  if (typeof uPlot === "undefined") {
    document.getElementById("chart-note").textContent =
      "Charts unavailable: the chart library is missing from this install (run `make web`).";
    return;
  }
  document.getElementById("chart-note").textContent =
    "The last " + readings.length + " readings, local time.";
  for (const [key, pts] of series(readings)) {
    const [name, unit] = key.split("|");
    const data = [pts.map((p) => p[0]), pts.map((p) => p[1])];
    let c = charts.get(key);
    if (!c) {
      const div = T.el("div", { class: "chart", "data-series": key });
      box.append(div);
      const opts = {
        title: name + " (" + unit + ")", width: Math.max(300, div.clientWidth - 16), height: 220,
        series: [{}, { label: name, unit, stroke: "#0b5fa5", points: { show: pts.length < 80 } }],
        axes: [{}, { label: unit }],
      };
      c = { plot: new uPlot(opts, data, div), div };
      charts.set(key, c);
    } else {
      c.plot.setData(data);
    }
    c.div.setAttribute("data-points", String(pts.length));
    c.div.setAttribute("data-last-seq", String(pts.length ? pts[pts.length - 1][2] : ""));
  }
}

function readingRow(r) {
  const proof = r.state === "anchored"
    ? T.el("a", { class: "button proof", href: "/api/readings/" + ADDRESS + "/" + r.seq + "/proof",
      download: "reading-" + ADDRESS + "-" + r.seq + ".json" }, "Proof")
    : T.el("button", { disabled: true, title: "a proof exists once the batch is anchored" }, "Proof");
  return T.el("tr", { "data-seq": r.seq },
    T.el("td", { class: "num" }, r.seq),
    T.el("td", {}, T.when(r.time || r.received_at)),
    T.el("td", {}, T.values(r.records)),
    T.el("td", {}, T.state(r)),
    T.el("td", { class: "num" }, r.batch ?? "–"),
    T.el("td", {}, T.txLink(r.tx, r.explorer)),
    T.el("td", { class: "num" }, r.block ?? "–"),
    T.el("td", {}, proof));
}

const HEAD = ["Seq", "Time", "Values", "State", "Batch", "Tx", "Block", ""];

function showTable(readings, append) {
  const rows = readings.slice().reverse().map(readingRow);
  const holder = document.getElementById("readings");
  const body = holder.querySelector("tbody");
  if (append && body) body.append(...rows);
  else holder.replaceChildren(T.table(HEAD, rows));
}

async function loadReadings(pending) {
  const page = await pending;
  drawCharts(page.readings);
  const shown = page.readings.slice(-TABLE_ROWS);
  showTable(shown, false);
  oldest = shown.length ? shown[0].seq : null;
  document.getElementById("older").disabled = !(oldest > 0 && (page.more || shown.length < page.readings.length));
}

async function older() {
  try {
    const page = await T.api("/api/boards/" + ADDRESS + "/readings?limit=" + TABLE_ROWS + "&before=" + oldest);
    showTable(page.readings, true);
    oldest = page.readings.length ? page.readings[0].seq : oldest;
    document.getElementById("older").disabled = !page.more;
  } catch (err) {
    T.fail("older readings", err);
  }
}

async function load() {
  try {
    // Both requests at once; the facts are drawn first.
    const facts = T.api("/api/boards/" + ADDRESS);
    const readings = T.api("/api/boards/" + ADDRESS + "/readings?limit=" + CHART_POINTS);
    readings.catch(() => {}); // reported by loadReadings, not as an unhandled rejection
    await loadFacts(facts);
    await loadReadings(readings);
    T.clear();
    T.ready();
  } catch (err) {
    T.fail("board", err);
  }
}

document.getElementById("older").addEventListener("click", older);
load();
setInterval(() => { if (!document.hidden) loadFacts().catch((e) => T.fail("board", e)); }, 5000);
